"""`casavi-sync web` itself: the URL it prints is the one it serves, and only once the state store is good."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from engine.cli import main
from engine.secrets import KEY_ENV
from engine.state import StateStore


def test_a_wrong_secrets_key_fails_before_any_url_is_printed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state.db"
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    with StateStore.open(state) as store:
        store.add_tenant("acme", "casavi-key-1234", "casavi-secret-5678")
    other = Fernet.generate_key().decode()
    result = CliRunner().invoke(main, ["web", "--state", str(state), "--port", "0"], env={KEY_ENV: other})
    assert result.exit_code == 3, result.output
    assert "error: the stored secrets were encrypted with key" in result.output
    assert "http://" not in result.output


@pytest.mark.slow
def test_port_zero_prints_the_port_actually_bound(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    StateStore.open(state).close()
    exe = Path(sys.executable).with_name("casavi-sync")
    env = {**os.environ, "CASAVI_SYNC_STATE": str(state)}
    proc = subprocess.Popen([str(exe), "web", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert found and found.group(1) != "0", first
        r = httpx.get(f"http://127.0.0.1:{found.group(1)}/login", timeout=5)  # bound by the time it says so
        assert r.status_code == 200
        assert "no console users yet" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
