"""Benchmark of the initial import's order: when do properties become complete, kind by kind
(before) and property by property (after), side by side in one run.

Why: casavi's rate limit fixes how long an import takes (calls / rate); the order decides what the
customer sees meanwhile. Kind by kind, no property is complete before the last kind (contracts)
is written, near the end; property by property, the first is complete within seconds. The goal
(issue 14): the first complete property within 1% of the import time, the median property
complete by 50% of it, the total still within 1.05x of the rate floor.

    python bench/bench_order.py                    # 200 properties, 20 ms latency, casavi 200 writes/s (~6 min)
    python bench/bench_order.py --rate 20 --properties 20   # the issue's 20 writes/s, on 20 properties (~5 min)
    python bench/bench_order.py --quick            # 10 properties: a smoke check (~1 min)

The issue's setting (200 properties at 20 writes/s) writes about 25,000 records, 21 minutes per
order; the default keeps the 200 properties and the 20 ms latency and raises the rate tenfold,
which keeps every share (they depend on the order, not on the speed) and makes the pipeline's
job harder (ten times as many calls must be in flight to saturate the limit). ``--rate 20`` runs
the issue's rate.

Setup as bench/bench_sync.py: the sandbox as ``casavi-sync sandbox`` in its own process (a fresh
one per order, same seed: the same tenant), the sync as ``casavi-sync run --write-order ...`` in
another. Times come from the run report: ``properties.completed[].afterS`` (seconds from the
run's start until all records of that property were written) and ``durationS`` (the whole run:
extraction, mapping, planning and writes). The floor is casavi calls / rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sync import child_env, cli, prepare, start_sandbox

LATENCY_MS = 20.0
SEED = "1"


def run_order(properties: int, rate: float, latency_ms: float, order: str) -> dict[str, Any]:
    server_burst = max(2, int(2 * rate / 10))   # API.md: burst = 2 x rate / 10
    client_burst = max(1, server_burst // 2)    # under the server's: arrival jitter never drains it
    sb = start_sandbox(properties, "--seed", SEED, "--latency-ms", f"{latency_ms:g}", "--rate-limit", f"{rate:g}",
                       "--burst", str(server_burst))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-order-") as tmp:
            workdir = Path(tmp)
            state, config = prepare(workdir, sb, casavi_rate=rate, casavi_burst=client_burst,
                                    scalara_rate=200, scalara_burst=20)
            out, err = workdir / "report.json", workdir / "stderr"
            started = time.perf_counter()
            with out.open("wb") as o, err.open("wb") as e:
                code = subprocess.call([*cli(), "run", "--state", str(state), "--config", str(config),
                                        "--format", "json", "--quiet", "--write-order", order],
                                       stdout=o, stderr=e, env=child_env())
            wall = time.perf_counter() - started
            if code not in (0, 1):
                raise SystemExit(f"{order}: casavi-sync run exited {code}: {err.read_text()[-2000:]}")
            report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    finally:
        sb.stop()
    return summarize(report, rate, wall)


def summarize(report: dict[str, Any], rate: float, wall: float) -> dict[str, Any]:
    props = report["properties"]
    run_s = float(report["durationS"])
    times = sorted(float(p["afterS"]) for p in props["completed"])
    calls = int(report["calls"]["casavi"].get("requests", 0))
    writes = int(report["calls"]["casavi"].get("writes", 0))

    def share(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] / run_s

    timings = report.get("timings", {})
    before_writes = sum(float(timings.get(k, 0.0)) for k in ("extract_s", "map_s", "reconcile_read_s", "plan_s"))
    return {"run_s": run_s, "before_writes_s": before_writes, "wall_s": wall, "calls": calls, "writes": writes, "floor_s": calls / rate,
            "properties": props["total"], "complete": props["complete"], "first_s": times[0],
            "first": times[0] / run_s, "median": share(0.5), "p90": share(0.9), "last": times[-1] / run_s,
            "throttled": int(report["calls"]["casavi"].get("throttled", 0)), "outcome": report["outcome"]}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--properties", type=int, default=None, help="tenant size (default 200)")
    parser.add_argument("--rate", type=float, default=200.0, help="casavi writes/s, sandbox and client (default 200)")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS, help="both APIs (default 20)")
    parser.add_argument("--quick", action="store_true", help="10 properties: a smoke check")
    parser.add_argument("--together", action="store_true",
                        help="run both orders at the same time (each against its own sandbox): halves the wall "
                             "time when the rate limit, not the CPU, is what the runs wait for (20 writes/s)")
    args = parser.parse_args()
    properties = args.properties or (10 if args.quick else 200)
    print(f"initial import, {properties} properties (sandbox seed {SEED}), {args.latency_ms:g} ms latency, "
          f"casavi {args.rate:g} writes/s, {os.cpu_count()} cores; before = --write-order kind, "
          f"after = --write-order property", flush=True)
    results: dict[str, dict[str, Any]] = {}

    def one(order: str) -> None:
        results[order] = r = run_order(properties, args.rate, args.latency_ms, order)
        print(f"  {order}: {r['writes']} writes in {r['run_s']:.1f} s", flush=True)

    if args.together:
        threads = [threading.Thread(target=one, args=(order,)) for order in ("kind", "property")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(results) < 2:
            raise SystemExit("a run failed (see above)")
    else:
        for order in ("kind", "property"):
            one(order)
    before, after = results["kind"], results["property"]
    rows = [
        ("casavi calls / writes", lambda r: f"{r['calls']} / {r['writes']}"),
        ("429s", lambda r: f"{r['throttled']}"),
        ("floor = calls / rate (s)", lambda r: f"{r['floor_s']:.1f}"),
        ("run time, report durationS (s)", lambda r: f"{r['run_s']:.1f}"),
        ("run / floor", lambda r: f"{r['run_s'] / r['floor_s']:.3f}"),
        ("  extract + reconcile read + map + plan (s)", lambda r: f"{r['before_writes_s']:.1f}"),
        ("process wall / floor", lambda r: f"{r['wall_s'] / r['floor_s']:.3f}"),
        ("properties complete", lambda r: f"{r['complete']} of {r['properties']}"),
        ("first complete property (s)", lambda r: f"{r['first_s']:.1f}"),
        ("first complete, share of the import", lambda r: f"{r['first']:.1%}"),
        ("median property complete, share", lambda r: f"{r['median']:.1%}"),
        ("90th percentile, share", lambda r: f"{r['p90']:.1%}"),
        ("last property complete, share", lambda r: f"{r['last']:.1%}"),
        ("outcome", lambda r: r["outcome"]),
    ]
    width = max(len(k) for k, _ in rows) + 2
    print(f"\n  {'':<{width}}{'before (kind)':>16}{'after (property)':>18}")
    for key, fmt in rows:
        print(f"  {key:<{width}}{fmt(before):>16}{fmt(after):>18}")
    verdict = [
        ("first complete property within 1% of the import", after["first"] <= 0.01),
        ("median property complete by 50%", after["median"] <= 0.50),
        ("total within 1.05x of the floor (run)", after["run_s"] <= 1.05 * after["floor_s"]),
        ("no slower than kind by kind (+2%)", after["run_s"] <= 1.02 * before["run_s"]),
    ]
    print()
    for key, ok in verdict:
        print(f"  {key:<{width + 12}}{'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
