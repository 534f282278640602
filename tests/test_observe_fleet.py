"""A worker of the fleet serves the same metrics, liveness and readiness as serve (PostgreSQL state)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.sandbox import FaultConfig, Sandbox
from engine.state import StateStore
from tests.conftest import fast_connector_config
from tests.test_observe import free_port, get, samples, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_worker_exposes_metrics_health_and_readiness(tmp_path: Path, pg_url: str) -> None:
    assert CliRunner().invoke(main, ["state", "migrate", "--state", pg_url]).exit_code == 0
    sb = Sandbox(properties=1, seed=1, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()).start()
    worker = None
    try:
        with StateStore.open(pg_url) as store:
            store.add_tenant("solo", sb.casavi_key, sb.casavi_secret)
            store.activate_tenant("solo")
            store.save_connection("solo", sb.generate_scalara_token(), "demo")
        env = {**os.environ, "CASAVI_SYNC_SCALARA_URL": sb.scalara_url, "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path)), "CASAVI_SYNC_STATE": pg_url,
               "CASAVI_SYNC_REPORTS": str(tmp_path / "reports"), "PYTHONPATH": str(Path.cwd())}
        port = free_port()
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        worker = subprocess.Popen(
            [sys.executable, "-c", "from engine.cli import main; main()", "worker", "--at", f"{now:%H:%M}",
             "--timezone", "UTC", "--jitter", "0", "--tick", "1", "--heartbeat", "0.5", "--stall-timeout", "4",
             "--metrics-address", f"127.0.0.1:{port}", "--log-format", "json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        status, body = wait_for(f"{base}/readyz", timeout=30)
        assert status == 200, body
        deadline = time.monotonic() + 60
        runs: dict[object, float] = {}
        while time.monotonic() < deadline and not runs:
            found = samples(get(f"{base}/metrics")[1])
            runs = {labels: v for (name, labels), v in found.items() if name == "casavi_sync_runs_total"}
            time.sleep(0.3)
        assert runs, "the worker's scheduled run never showed up in its metrics"
        assert all(dict(labels)["tenant"] == "solo" for labels in runs)  # type: ignore[arg-type]
        assert get(f"{base}/healthz")[0] == 200
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "worker.metrics" in out + err
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.communicate()
        sb.stop()
