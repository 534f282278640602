"""What observability costs a run: the same 50-property import with and without it, side by side.

"With" means everything a production ``serve`` has switched on: the metrics listener and the state
collector, the HTTP endpoint scraped every 100 ms (150 times more often than a usual 15 s scrape
interval), and the alert webhook posting to a receiver on loopback. "Without" is the bare run.
Rounds alternate (A B A B ...) on a fresh sandbox and state each time, so drift on this shared
machine hits both sides alike; the script prints each round and the ratio of the medians.

    python bench/bench_observe.py              # 50 properties, 3 rounds each
    python bench/bench_observe.py --properties 10 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.compile import compile_mappings  # noqa: E402
from engine.connectors import load_connector_config  # noqa: E402
from engine.connectors.casavi import CasaviClient  # noqa: E402
from engine.connectors.scalara import ScalaraClient  # noqa: E402
from engine.observe.wiring import Observability, ObserveConfig  # noqa: E402
from engine.paths import default_mappings  # noqa: E402
from engine.sandbox import Clock, FaultConfig, Sandbox  # noqa: E402
from engine.state import StateStore  # noqa: E402
from engine.sync.runner import SyncOptions  # noqa: E402
from engine.sync.session import run_for_tenant  # noqa: E402
from engine.validate import load_mapping_set  # noqa: E402

NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)
CONFIG = """scalara:
  rate_limit: {rate_per_s: 5000, burst: 500}
casavi:
  rate_limit: {rate_per_s: 5000, burst: 500}
"""


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.count += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def one_run(properties: int, observed: bool, receiver: Receiver) -> tuple[float, int]:
    """Seconds of one initial import (and the number of scrapes while it ran)."""
    with tempfile.TemporaryDirectory() as tmp:
        # no server-side rate limit: the run is as fast as this machine, so any overhead shows
        sb = Sandbox(properties=properties, seed=7, clock=Clock(NOW), scalara_faults=FaultConfig(),
                     casavi_faults=FaultConfig()).start()
        try:
            cfg = Path(tmp) / "connectors.yaml"
            cfg.write_text(CONFIG, encoding="utf-8")
            config = load_connector_config(cfg, env={"CASAVI_SYNC_SCALARA_URL": sb.scalara_url,
                                                     "CASAVI_SYNC_CASAVI_URL": sb.casavi_url})
            state = Path(tmp) / "state.db"
            store = StateStore.open(state)
            store.add_tenant("default", sb.casavi_key, sb.casavi_secret)
            store.activate_tenant("default")
            store.save_connection("default", sb.generate_scalara_token(), "bench")
            mset = compile_mappings(load_mapping_set([default_mappings()]))
            scalara = ScalaraClient(config, store.connection_token("default") or "")
            casavi = CasaviClient(config, sb.casavi_key, sb.casavi_secret)
            obs = Observability(ObserveConfig("127.0.0.1:0", webhook_url=receiver.url, webhook_secret="bench"),
                                lambda: StateStore.open(state)) if observed else None
            scrapes = 0
            done = threading.Event()

            def scrape() -> None:
                nonlocal scrapes
                while not done.wait(0.1):
                    with urllib.request.urlopen(f"{obs.url}/metrics", timeout=5) as r:  # type: ignore[union-attr]
                        r.read()
                    scrapes += 1

            try:
                if obs is not None:
                    obs.__enter__()
                    threading.Thread(target=scrape, daemon=True).start()
                t0 = time.perf_counter()
                outcome = run_for_tenant(store, "default", mset, scalara, casavi, SyncOptions(concurrency=8),
                                         report_dir=Path(tmp) / "reports",
                                         stats=lambda: {"casavi": casavi.stats.snapshot(),
                                                        "scalara": scalara.stats.snapshot()})
                elapsed = time.perf_counter() - t0
            finally:
                done.set()
                if obs is not None:
                    obs.__exit__(None, None, None)
                scalara.close()
                casavi.close()
                store.close()
            if outcome.outcome not in ("clean", "partial"):
                raise SystemExit(f"the run ended {outcome.outcome}: {outcome.error}")
            return elapsed, scrapes
        finally:
            sb.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--properties", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    receiver = Receiver()
    one_run(2, True, receiver)  # warm-up: imports, caches
    bare: list[float] = []
    observed: list[float] = []
    for i in range(args.rounds):
        for with_obs in ((False, True) if i % 2 == 0 else (True, False)):
            seconds, scrapes = one_run(args.properties, with_obs, receiver)
            (observed if with_obs else bare).append(seconds)
            what = f"observed ({scrapes} scrapes)" if with_obs else "bare"
            print(f"round {i + 1}: {what:24s} {seconds:7.2f} s", flush=True)
    b, o = statistics.median(bare), statistics.median(observed)
    print(f"\n{args.properties} properties: bare median {b:.2f} s, observed median {o:.2f} s, "
          f"overhead {100 * (o / b - 1):+.1f}% (target < 2%); alerts delivered: {receiver.count}")


if __name__ == "__main__":
    main()
