"""Benchmark of a whole sync: how close the initial import gets to casavi's rate limit, what an
unchanged rerun costs, and the memory of a 2,000-property tenant.

Why: casavi throttles per token, so an import can never be faster than (calls / rate limit). The
promise (issue 4, "How fast") is that the engine stays within 1.25x of that floor -- extraction,
mapping, state writes and the pauses between kinds together cost at most a quarter on top --, an
unchanged rerun costs at most a tenth of the import, and a 2,000-property tenant syncs in under
1 GB.

    python bench/bench_sync.py            # 50 properties at 20 ms / 200 req/s, then 2,000 properties
    python bench/bench_sync.py --quick    # 5 properties, 20 for memory: a smoke check

Setup, as in production: the sandbox runs as ``casavi-sync sandbox`` in its own process, the sync
as ``casavi-sync run --format json`` in another, so neither shares a GIL with the other and the
sync's peak RSS (``os.wait4``'s rusage of exactly that child) is measured alone. The run report
gives the client's own call counts; calls = every casavi request the client sent (authentication,
reconcile reads, writes, retries).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.state import StateStore  # noqa: E402

RATE = 200.0          # casavi requests/s: the sandbox's limit and the client's own pace
LATENCY_MS = 20.0     # both APIs
SERVER_BURST = 40     # the sandbox's bucket (as API.md's contract: burst = 2 x rate / 10)
CLIENT_BURST = 20     # below the server's, so arrival jitter never drains the server's bucket


def cli() -> list[str]:
    script = Path(sys.executable).with_name("casavi-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and not k.startswith("CASAVI_SYNC_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@dataclass
class SandboxProcess:
    proc: subprocess.Popen[str]
    scalara_url: str
    token: str
    casavi_url: str
    key: str
    secret: str

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def start_sandbox(properties: int, *extra: str) -> SandboxProcess:
    """``casavi-sync sandbox`` on free ports; its banner gives URLs and (local, fake) credentials,
    which this script keeps to itself."""
    proc = subprocess.Popen([*cli(), "sandbox", "--properties", str(properties), "--port-scalara", "0",
                             "--port-casavi", "0", *extra], stdout=subprocess.PIPE, text=True,
                            env=child_env())
    assert proc.stdout is not None
    shown: dict[str, list[str]] = {}
    for line in proc.stdout:
        if line.startswith("Serving"):
            break
        parts = line.split()
        if len(parts) >= 2:
            shown.setdefault(parts[0], []).append(parts[1])
    else:
        raise SystemExit(f"the sandbox did not start (exit {proc.wait()})")
    return SandboxProcess(proc, shown["SCALARA"][0], shown["token"][0], shown["casavi"][0],
                          shown["key"][0], shown["secret"][0])


def prepare(workdir: Path, sb: SandboxProcess, *, casavi_rate: float, casavi_burst: int,
            scalara_rate: float, scalara_burst: int) -> tuple[Path, Path]:
    """A state file with one connected tenant, and a connector file pointing at the sandbox."""
    state = workdir / "state.db"
    with StateStore.open(state) as store:
        store.add_tenant("default", sb.key, sb.secret)
        store.activate_tenant("default")
        store.save_connection("default", sb.token, "demo")
    config = workdir / "connectors.yaml"
    config.write_text(
        f"scalara:\n  base_url: {sb.scalara_url}\n"
        f"  rate_limit: {{rate_per_s: {scalara_rate:g}, burst: {scalara_burst}}}\n"
        f"casavi:\n  base_url: {sb.casavi_url}\n"
        f"  rate_limit: {{rate_per_s: {casavi_rate:g}, burst: {casavi_burst}}}\n", encoding="utf-8")
    return state, config


@dataclass
class RunResult:
    wall_s: float                 # the whole process: interpreter start, imports, the run
    report: dict[str, Any]
    peak_rss_mb: float
    exit_code: int

    @property
    def run_s(self) -> float:
        return float(self.report["durationS"])

    @property
    def casavi(self) -> dict[str, int]:
        calls: dict[str, int] = self.report["calls"].get("casavi", {})
        return calls


def run_sync(workdir: Path, state: Path, config: Path, name: str) -> RunResult:
    """One ``casavi-sync run`` process; its peak RSS from wait4 (this child only, not the sandbox)."""
    out_path, err_path = workdir / f"{name}.json", workdir / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([*cli(), "run", "--state", str(state), "--config", str(config),
                                 "--format", "json", "--quiet"], stdout=out, stderr=err, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{name}: casavi-sync run exited {code}: {err_path.read_text()[-2000:]}")
    report = json.loads(out_path.read_text(encoding="utf-8"))
    return RunResult(wall, report, usage.ru_maxrss / 1024, code)    # ru_maxrss is in KiB on Linux


def writes(result: RunResult) -> int:
    return int(result.casavi.get("writes", 0))


def rate_limited_import(properties: int) -> dict[str, Any]:
    sb = start_sandbox(properties, "--latency-ms", f"{LATENCY_MS:g}", "--rate-limit", f"{RATE:g}",
                       "--burst", str(SERVER_BURST))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
            workdir = Path(tmp)
            state, config = prepare(workdir, sb, casavi_rate=RATE, casavi_burst=CLIENT_BURST,
                                    scalara_rate=RATE, scalara_burst=CLIENT_BURST)
            first = run_sync(workdir, state, config, "initial")
            second = run_sync(workdir, state, config, "rerun")
    finally:
        sb.stop()
    calls = int(first.casavi.get("requests", 0))
    floor = calls / RATE
    return {"first": first, "second": second, "calls": calls, "floor": floor}


def big_tenant(properties: int, client_rate: float) -> dict[str, Any]:
    started = time.perf_counter()
    sb = start_sandbox(properties, "--rate-limit", "0")
    sandbox_s = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sync-big-") as tmp:
            workdir = Path(tmp)
            state, config = prepare(workdir, sb, casavi_rate=client_rate, casavi_burst=200,
                                    scalara_rate=client_rate, scalara_burst=200)
            first = run_sync(workdir, state, config, "big")
    finally:
        sb.stop()
    return {"first": first, "sandbox_start_s": sandbox_s}


def rejected(result: RunResult) -> str:
    """casavi's rejections in a run, by code (skipped dependents left out)."""
    codes: dict[str, int] = {}
    for f in result.report.get("writeFailures", []):
        if f.get("action") != "skipped":
            err = f.get("error") or {}
            code = str(err.get("code") or err.get("reason") or "?").split(":")[0]
            codes[code] = codes.get(code, 0) + 1
    return ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))


def resent(first: RunResult, second: RunResult) -> int:
    """Writes of the rerun that went to records the import had failed on (retried by design)."""
    failed = {(f["kind"], f["id"]) for f in first.report.get("writeFailures", []) if f.get("action") != "skipped"}
    again = {(f["kind"], f["id"]) for f in second.report.get("writeFailures", []) if f.get("action") != "skipped"}
    return len(failed & again)


def _counts(result: RunResult) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(result.casavi.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 properties (and 20 for memory): a smoke check")
    parser.add_argument("--properties", type=int, default=None, help="rate-limited import size (default 50)")
    parser.add_argument("--big-properties", type=int, default=None, help="memory run size (default 2000)")
    parser.add_argument("--big-rate", type=float, default=2000.0, help="client req/s for the memory run")
    parser.add_argument("--skip-big", action="store_true", help="only the rate-limited import")
    args = parser.parse_args()
    small = args.properties or (5 if args.quick else 50)
    big = args.big_properties or (20 if args.quick else 2000)

    print(f"initial import, {small} properties, {LATENCY_MS:g} ms latency, casavi limit {RATE:g} req/s "
          f"(sandbox burst {SERVER_BURST}, client burst {CLIENT_BURST})", flush=True)
    r = rate_limited_import(small)
    first, second = r["first"], r["second"]
    timings = first.report.get("timings", {})
    rows = [
        ("casavi calls (auth + reads + writes)", f"{r['calls']}"),
        ("  of which writes", f"{writes(first)}"),
        ("  throttled (429) / retries", f"{first.casavi.get('throttled', 0)} / {first.casavi.get('retries', 0)}"),
        ("floor = calls / 200 (s)", f"{r['floor']:.2f}"),
        ("run wall time, report durationS (s)", f"{first.run_s:.2f}"),
        ("process wall time (s)", f"{first.wall_s:.2f}"),
        ("ratio run / floor", f"{first.run_s / r['floor']:.3f}"),
        ("ratio process / floor", f"{first.wall_s / r['floor']:.3f}"),
        ("  extract / map / reconcile read / plan (s)",
         " / ".join(f"{timings.get(k, 0.0):.2f}" for k in ("extract_s", "map_s", "reconcile_read_s", "plan_s"))),
        ("outcome", f"{first.report['outcome']}"),
        ("records casavi rejected (by reason)", rejected(first) or "none"),
        ("unchanged rerun: writes", f"{writes(second)}"),
        ("  of which re-sent rejected records", f"{resent(first, second)}"),
        ("unchanged rerun: run / process wall (s)", f"{second.run_s:.2f} / {second.wall_s:.2f}"),
        ("rerun / import (process wall)", f"{second.wall_s / first.wall_s:.3f}"),
        ("rerun: casavi calls", _counts(second) or "none"),
    ]
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        print(f"  {key:<{width}}{value}")
    verdict = [
        ("process within 1.25x of the floor", first.wall_s <= 1.25 * r["floor"]),
        ("no 429s", first.casavi.get("throttled", 0) == 0),
        ("rerun writes nothing", writes(second) == 0),
        ("rerun writes nothing but retries of rejected", writes(second) == resent(first, second)),
        ("rerun <= 10% of the import", second.wall_s <= 0.10 * first.wall_s),
    ]
    for key, ok in verdict:
        print(f"  {key:<{width}}{'yes' if ok else 'NO'}")
    if args.quick:
        print("  (quick: the interpreter's start dominates so short a run; the verdicts are for the full run)")

    if args.skip_big:
        return
    print(f"\nmemory: {big} properties, sandbox unlimited (own process), client limit {args.big_rate:g} req/s",
          flush=True)
    b = big_tenant(big, args.big_rate)
    res = b["first"]
    rows = [
        ("sandbox start incl. data generation (s)", f"{b['sandbox_start_s']:.1f}"),
        ("SCALARA records extracted", f"{sum(res.report.get('extracted', {}).values())}"),
        ("casavi calls / writes", f"{res.casavi.get('requests', 0)} / {writes(res)}"),
        ("process wall time (s)", f"{res.wall_s:.1f}"),
        ("calls per second", f"{res.casavi.get('requests', 0) / res.run_s:.0f}"),
        ("peak RSS of the sync process (MB)", f"{res.peak_rss_mb:.0f}"),
        ("under 1 GB", "yes" if res.peak_rss_mb < 1024 else "NO"),
        ("outcome", res.report["outcome"]),
    ]
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        print(f"  {key:<{width}}{value}")


if __name__ == "__main__":
    main()
