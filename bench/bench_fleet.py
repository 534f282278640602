"""The worker fleet: N small tenants, sandbox at 20 ms latency, 1, 2 and 4 `casavi-sync worker`s.

    python bench/bench_fleet.py                      # 200 tenants, 1/2/4 workers (a few minutes)
    python bench/bench_fleet.py --tenants 40 --workers 1 2

Each configuration gets a fresh PostgreSQL database (a throwaway cluster, tests/pgserver.py; needs
Debian's postgresql package), a sandbox whose tenants each hold one generated property (~200
casavi writes), and W worker processes (``--concurrency 2`` each) whose schedule slot has just
passed, so every tenant is due at once. Printed per configuration:

- wall time from "all workers up" (the tenants were due then) to the last run's end;
- due -> first SCALARA request (the first request the sandbox saw);
- scheduling overhead per tenant: the worker slots' time not spent inside a run,
  ``(wall * slots - sum of run durations) / tenants`` (job fetch, tick, state bookkeeping, waits).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from engine.cli import main  # noqa: E402
from engine.sandbox import FaultConfig, Sandbox  # noqa: E402
from engine.sandbox.generator import generate  # noqa: E402
from engine.state import StateStore  # noqa: E402
from tests.conftest import fast_connector_config  # noqa: E402
from tests.pgserver import PgServer, find_bin_dir  # noqa: E402

CONCURRENCY = 2


def parse_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_alive(procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    for p, log in zip(procs, logs, strict=True):
        if p.poll() is not None:
            sys.exit(f"a worker exited ({p.returncode}): {log.read_text()[-500:]}")


def one(server: PgServer, tenants: int, workers: int, latency_ms: int, work: Path) -> dict[str, float]:
    url = server.create_database("bench")
    assert CliRunner().invoke(main, ["state", "migrate", "--state", url]).exit_code == 0
    faults = FaultConfig(latency_ms=latency_ms)
    sb = Sandbox(properties=1, seed=1, scalara_faults=faults, casavi_faults=faults)
    for i in range(tenants):
        sb.scalara.add_account(f"acc{i}", generate(1, 100 + i, today=sb.clock.today()))
    sb.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with StateStore.open(url) as store:
            for i in range(tenants):
                key, secret = sb.casavi.add_account(f"t{i:03d}")
                store.add_tenant(f"t{i:03d}", key, secret)
                store.activate_tenant(f"t{i:03d}")
                store.save_connection(f"t{i:03d}", sb.generate_scalara_token(f"acc{i}"), f"acc{i}")
        env = {**os.environ, "CASAVI_SYNC_SCALARA_URL": sb.scalara_url, "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(work)), "CASAVI_SYNC_STATE": url,
               "CASAVI_SYNC_REPORTS": str(work / "reports"), "PYTHONPATH": str(ROOT)}
        at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        logs = [work / f"w{workers}-{n}.log" for n in range(workers)]
        sb.scalara_server.counters.start_log()
        for log in logs:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", "from engine.cli import main; main()", "worker", "--at", f"{at:%H:%M}",
                 "--timezone", "UTC", "--jitter", "0", "--tick", "1", "--concurrency", str(CONCURRENCY),
                 "--log-format", "json"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT))
        while not all("worker.start" in log.read_text() for log in logs):
            check_alive(procs, logs)
            time.sleep(0.05)
        due_wall, due_mono = time.time(), time.monotonic()
        today = dt.datetime.now(dt.UTC).date()
        with StateStore.open(url) as store:
            names = [f"t{i:03d}" for i in range(tenants)]
            while not all(store.last_scheduled_day(n) == today for n in names):
                check_alive(procs, logs)
                time.sleep(0.2)
            runs = [r for n in names for r in store.runs(n, limit=5)]
        first_request = min(t for t, _, path, _ in sb.scalara_server.counters.log() if "sandbox" not in path)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=120)
        sb.stop()
    done = [r for r in runs if r.finished_at]
    end = max(parse_ts(r.finished_at) for r in done)
    wall = end - due_wall
    busy = sum(parse_ts(r.finished_at) - parse_ts(r.started_at) for r in done)
    slots = workers * CONCURRENCY
    return {"wall_s": wall, "first_request_ms": (first_request - due_mono) * 1000,
            "overhead_ms": (wall * slots - busy) / tenants * 1000,
            "run_s_median": statistics.median(parse_ts(r.finished_at) - parse_ts(r.started_at) for r in done),
            "runs": len(done)}


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the cluster (finally)
    server = PgServer(bin_dir).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["CASAVI_SYNC_SECRET_KEY_FILE"] = str(Path(tmp) / "secret.key")
            print(f"{args.tenants} tenants x 1 property, sandbox latency {args.latency_ms} ms, "
                  f"--concurrency {CONCURRENCY} per worker, {os.cpu_count()} CPU cores")
            print(f"{'workers':>7} {'wall s':>8} {'speed-up':>8} {'run s (median)':>14} {'due->1st SCALARA ms':>19} "
                  f"{'overhead/tenant ms':>18}")
            base = None
            for w in args.workers:
                work = Path(tmp) / f"w{w}"
                work.mkdir()
                r = one(server, args.tenants, w, args.latency_ms, work)
                base = base or r["wall_s"] * w
                speed = (base / args.workers[0]) / r["wall_s"] if base else 1.0
                print(f"{w:>7} {r['wall_s']:>8.1f} {speed:>7.2f}x {r['run_s_median']:>14.2f} "
                      f"{r['first_request_ms']:>19.0f} {r['overhead_ms']:>18.0f}", flush=True)
    finally:
        from engine.state.pg import close_pools

        close_pools()
        server.stop()


if __name__ == "__main__":
    main_()
