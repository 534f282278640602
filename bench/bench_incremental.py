"""Benchmark of daily runs: what an unchanged day and a 1%-changed day cost next to a full read,
and how a run's peak memory grows with the tenant.

Why: SCALARA's export API is someone else's production system. After the import, a daily run
should cost what changed, not what exists (issue 11): an unchanged day <= 2 SCALARA requests per
resource and <= 5% of a full read's wall time; a day with 1% of the records changed writes
exactly the changed casavi records. And peak RSS should grow by at most 50 KB per property.

    python bench/bench_incremental.py                  # 200 and 500 properties
    python bench/bench_incremental.py --sizes 2000     # the big tenant (minutes: import included)
    python bench/bench_incremental.py --quick          # 20 properties: a smoke check

Setup, as production: the sandbox in its own process (no server limits), every run a
``casavi-sync`` process of its own (peak RSS from ``os.wait4``). The SCALARA client keeps the
contract's pace (10 requests/s, burst 20: the budget a full read spends), casavi's client is
fast (2,000/s) so the import does not dominate the benchmark. Per size, side by side:

1. the import (full read, every casavi record written) -- its peak RSS is the memory point;
2. ``run --full`` on the unchanged tenant (the full read a daily run used to be);
3. ``run`` on the unchanged tenant, same day; 4. ``run --date <tomorrow>``;
5. 1% of the SCALARA records edited through the sandbox, ``plan --full`` says which casavi
   writes a full read would make, then ``run`` (incremental, mapping only what the changes
   touch) -- its writes must equal those. Both dated tomorrow, as step 4.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sync import SandboxProcess, child_env, cli, prepare, start_sandbox  # noqa: E402

RESOURCES = ("properties", "buildings", "units", "contacts", "ownerships", "usages", "property-roles")
EDITS = {  # resource -> a field edit that changes what casavi gets
    "contacts": lambda rng: {"lastName": f"Geändert{rng.randint(1, 10**6)}"},
    "units": lambda rng: {"label": f"Lage {rng.randint(1, 10**6)}"},
    "buildings": lambda rng: {"houseNumber": str(rng.randint(1, 999))},
    "properties": lambda rng: {"name": f"Objekt {rng.randint(1, 10**6)}"},
}


@dataclass
class Run:
    wall_s: float
    peak_rss_mb: float
    doc: dict[str, Any]

    @property
    def pages(self) -> dict[str, int]:
        return dict((self.doc.get("extraction") or {}).get("pages") or {})

    @property
    def writes(self) -> int:
        return int(((self.doc.get("calls") or {}).get("casavi") or {}).get("writes", 0))


def run_cli(workdir: Path, state: Path, config: Path, name: str, *args: str) -> Run:
    out_path, err_path = workdir / f"{name}.json", workdir / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([*cli(), *args, "--state", str(state), "--config", str(config), "--format", "json",
                                 "--quiet"], stdout=out, stderr=err, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1, 4):
        raise SystemExit(f"{name}: casavi-sync {args[0]} exited {code}: {err_path.read_text()[-2000:]}")
    return Run(wall, usage.ru_maxrss / 1024, json.loads(out_path.read_text(encoding="utf-8")))


def change_one_percent(sb: SandboxProcess, seed: int = 7) -> int:
    """Edit 1% of all SCALARA records (spread over the resources casavi shows) through the sandbox."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {sb.token}"}
    ids: dict[str, list[str]] = {}
    total = 0
    with httpx.Client(base_url=sb.scalara_url, headers=headers, trust_env=False, timeout=60) as client:
        for res in RESOURCES:
            cursor, got = None, []
            while True:
                params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
                body = client.get(f"/{res}", params=params).json()
                got.extend(r["id"] for r in body["items"])
                cursor = body["nextCursor"]
                if not cursor:
                    break
            total += len(got)
            if res in EDITS:
                ids[res] = sorted(got)
        n = max(1, total // 100)
        pool = [(res, rid) for res, rows in ids.items() for rid in rows]
        for res, rid in rng.sample(pool, n):
            r = client.patch(f"/sandbox/accounts/demo/records/{res}/{rid}", json=EDITS[res](rng))
            r.raise_for_status()
    return n


def written_records(doc: dict[str, Any]) -> int:
    """casavi records a run wrote (its report's outcomes). HTTP writes can be more: an address that
    moves between a property's buildings is written in two steps (engine.sync.addresses)."""
    return sum(row.get(k, 0) for row in doc["counts"].values() for k in ("create", "update", "restore", "archive"))


def planned_writes(doc: dict[str, Any]) -> int:
    return sum(row.get(k, 0) for row in doc["counts"].values() for k in ("create", "update", "restore", "archive"))


def one_size(properties: int, scalara_rate: float) -> dict[str, Any]:
    started = time.perf_counter()
    sb = start_sandbox(properties, "--rate-limit", "0")
    print(f"  sandbox with {properties} properties up in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
            workdir = Path(tmp)
            state, config = prepare(workdir, sb, casavi_rate=2000, casavi_burst=200,
                                    scalara_rate=scalara_rate, scalara_burst=int(2 * scalara_rate))
            out: dict[str, Any] = {"properties": properties}
            out["import"] = run_cli(workdir, state, config, "import", "run")
            out["full"] = run_cli(workdir, state, config, "full", "run", "--full")
            out["same_day"] = run_cli(workdir, state, config, "same-day", "run")
            tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
            out["next_day"] = run_cli(workdir, state, config, "next-day", "run", "--date", tomorrow)
            out["edited"] = change_one_percent(sb)
            # the changes land on the next day too (days move forward: a run dated before the
            # last one maps the whole tenant, its records' date horizons being later)
            out["plan_full"] = run_cli(workdir, state, config, "plan-full", "plan", "--full", "--date", tomorrow)
            out["changed_day"] = run_cli(workdir, state, config, "changed-day", "run", "--date", tomorrow)
            return out
    finally:
        sb.stop()


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares: peak RSS (MB) = intercept + slope * properties."""
    n = len(points)
    mx = sum(p for p, _ in points) / n
    my = sum(m for _, m in points) / n
    var = sum((p - mx) ** 2 for p, _ in points)
    slope = sum((p - mx) * (m - my) for p, m in points) / var if var else 0.0
    return slope, my - slope * mx


def _mapped(doc: dict[str, Any]) -> str:
    """How the 1% day mapped: only what the changes touch (closure, rounds), or the whole tenant and why."""
    how = (doc.get("extraction") or {}).get("targeted") or {}
    if how.get("mode") == "targeted":
        return (f"targeted: {how.get('closure')} records re-mapped for {how.get('changed')} changed, "
                f"{how.get('rounds')} round(s)")
    return f"whole tenant ({how.get('reason') or 'full read'})"


def report(r: dict[str, Any]) -> None:
    imp, full, same, nxt, plan, changed = (r[k] for k in ("import", "full", "same_day", "next_day", "plan_full",
                                                            "changed_day"))
    rows = [
        ("import: wall / peak RSS", f"{imp.wall_s:.1f} s / {imp.peak_rss_mb:.0f} MB, {imp.writes} writes"),
        ("full read, unchanged: wall / SCALARA pages", f"{full.wall_s:.2f} s / {sum(full.pages.values())}"),
        ("incremental, unchanged, same day: wall / pages",
         f"{same.wall_s:.2f} s ({same.wall_s / full.wall_s:.1%} of full) / {sum(same.pages.values())} "
         f"(max {max(same.pages.values(), default=0)} per resource), {same.writes} writes, "
         f"mapping skipped: {same.doc['extraction'].get('skippedMapping')}"),
        ("incremental, unchanged, next day: wall / pages",
         f"{nxt.wall_s:.2f} s ({nxt.wall_s / full.wall_s:.1%} of full) / {sum(nxt.pages.values())}, "
         f"{nxt.writes} writes, mapping skipped: {nxt.doc['extraction'].get('skippedMapping')}"),
        ("1% day: SCALARA records edited", f"{r['edited']}"),
        ("1% day: casavi writes a full read plans", f"{planned_writes(plan.doc)}"),
        ("1% day: incremental run: records written (HTTP writes) / pages / wall",
         f"{written_records(changed.doc)} ({changed.writes}) / {sum(changed.pages.values())} / {changed.wall_s:.2f} s "
         f"({changed.wall_s / full.wall_s:.1%} of full)"),
        ("1% day: mapped", _mapped(changed.doc)),
        ("peak RSS: full / same day / next day / 1% day",
         f"{full.peak_rss_mb:.0f} / {same.peak_rss_mb:.0f} / {nxt.peak_rss_mb:.0f} / {changed.peak_rss_mb:.0f} MB"),
    ]
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        print(f"    {key:<{width}}{value}", flush=True)
    verdicts = [
        ("unchanged day: <= 2 SCALARA requests per resource", max(same.pages.values(), default=0) <= 2
         and max(nxt.pages.values(), default=0) <= 2),
        ("unchanged day (same day): <= 5% of the full read", same.wall_s <= 0.05 * full.wall_s),
        ("unchanged day (next day): <= 5% of the full read", nxt.wall_s <= 0.05 * full.wall_s),
        ("unchanged days write nothing", same.writes == 0 and nxt.writes == 0),
        ("1% day: records written == what a full read plans", written_records(changed.doc) == planned_writes(plan.doc)),
        ("1% day: mapped only what the changes touch",
         ((changed.doc.get("extraction") or {}).get("targeted") or {}).get("mode") == "targeted"),
    ]
    for key, ok in verdicts:
        print(f"    {key:<{width}}{'yes' if ok else 'NO'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="200,500", help="comma-separated property counts (default 200,500)")
    parser.add_argument("--quick", action="store_true", help="20 properties: a smoke check")
    parser.add_argument("--scalara-rate", type=float, default=10.0, help="SCALARA client req/s (contract: 10)")
    args = parser.parse_args()
    sizes = [20] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    points: list[tuple[int, float]] = []
    for n in sizes:
        print(f"{n} properties (SCALARA client {args.scalara_rate:g} req/s, casavi client 2000 req/s)", flush=True)
        r = one_size(n, args.scalara_rate)
        report(r)
        points.append((n, r["import"].peak_rss_mb))
    if len(points) >= 2:
        slope, intercept = fit(points)
        print(f"memory: peak RSS of the import = {intercept:.0f} MB + {slope * 1024:.0f} KB x properties "
              f"(points: {', '.join(f'{n}: {m:.0f} MB' for n, m in points)}); target <= 50 KB/property: "
              f"{'yes' if slope * 1024 <= 50 else 'NO'}")


if __name__ == "__main__":
    main()
