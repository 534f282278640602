"""The Sandbox facade and ``casavi-sync sandbox``: both servers, one clock, tokens, faults, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.errors import ConfigError
from engine.sandbox import FaultConfig, Sandbox
from engine.sandbox.http import serve

NO_LIMITS = FaultConfig()


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with Sandbox(properties=2, seed=3, scalara_faults=NO_LIMITS, casavi_faults=NO_LIMITS,
                 casavi_page_size=5, casavi_token_lifetime_s=30) as sandbox:
        yield sandbox


def test_both_apis_answer_with_their_credentials(box: Sandbox) -> None:
    token = box.generate_scalara_token()
    assert token.startswith("scl_")
    units = httpx.get(f"{box.scalara_url}/units", headers={"Authorization": f"Bearer {token}"})
    assert units.status_code == 200 and units.json()["items"]
    auth = httpx.post(f"{box.casavi_url}/v2/authenticate", json={"key": box.casavi_key, "secret": box.casavi_secret})
    assert auth.status_code == 200
    listed = httpx.get(f"{box.casavi_url}/v2/units", headers={"token": auth.json()["token"]})
    assert listed.json() == {"list": [], "_links": {"next": None}}
    assert box.scalara_server.counters.requests("GET", "units") == 1
    assert box.casavi_server.counters.requests("GET", "units") == 1


def test_a_new_scalara_token_revokes_the_old_one(box: Sandbox) -> None:
    old = box.generate_scalara_token()
    new = box.generate_scalara_token()
    assert old != new
    assert httpx.get(f"{box.scalara_url}/units", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    with pytest.raises(ConfigError, match="'nobody'"):
        box.generate_scalara_token("nobody")


def test_one_clock_expires_casavi_tokens(box: Sandbox) -> None:
    auth = httpx.post(f"{box.casavi_url}/v2/authenticate", json={"key": box.casavi_key, "secret": box.casavi_secret})
    headers = {"token": auth.json()["token"]}
    assert httpx.get(f"{box.casavi_url}/v2/units", headers=headers).status_code == 200
    box.clock.advance(seconds=31)
    assert box.casavi.clock is box.clock and box.scalara.clock is box.clock
    assert httpx.get(f"{box.casavi_url}/v2/units", headers=headers).status_code == 401


def test_contract_rate_limits_are_the_default() -> None:
    sandbox = Sandbox(properties=1)
    assert sandbox.scalara_faults == FaultConfig.contract_defaults("scalara")
    assert sandbox.casavi_faults == FaultConfig(rate_limit_per_s=20, burst=40)
    with pytest.raises(ConfigError, match="not running"):
        _ = sandbox.casavi_url


def test_faults_reach_the_servers() -> None:
    with Sandbox(properties=1, scalara_faults=NO_LIMITS,
                 casavi_faults=FaultConfig(error_rate_503=1.0)) as sandbox:
        assert httpx.post(f"{sandbox.casavi_url}/v2/authenticate", json={}).status_code == 503
        sandbox.casavi_server.set_faults(None)
        assert httpx.post(f"{sandbox.casavi_url}/v2/authenticate", json={}).status_code == 400
        assert sandbox.generate_scalara_token()          # control paths are never faulted


def test_busy_port_is_a_config_error() -> None:
    with serve(Sandbox(properties=1).casavi) as taken:
        sandbox = Sandbox(properties=1, casavi_port=taken.port)
        with pytest.raises(ConfigError, match=f"casavi sandbox on 127.0.0.1:{taken.port}"):
            sandbox.start()
        with pytest.raises(ConfigError):
            _ = sandbox.scalara_url                     # the half-started SCALARA side was stopped


def test_cli_rejects_bad_options() -> None:
    result = CliRunner().invoke(main, ["sandbox", "--error-rate", "1.5"])
    assert result.exit_code == 2 and "1.5" in result.output
    assert "--outage-after-writes" in CliRunner().invoke(main, ["sandbox", "--help"]).output


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    code = "from engine.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "sandbox", "--properties", "1",
                             "--port-scalara", "0", "--port-casavi", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    shown: dict[str, str] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.startswith("Serving"):
            break
        parts = line.split()
        if len(parts) >= 2:
            shown.setdefault(parts[0], parts[1])
    return proc, shown


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM])
def test_cli_serves_until_signalled(sig: signal.Signals) -> None:
    proc, shown = _start_cli("--rate-limit", "0", "--token-lifetime", "60")
    try:
        assert shown["SCALARA"].startswith("http://127.0.0.1:") and shown["token"].startswith("scl_")
        units = httpx.get(shown["SCALARA"] + "/units", headers={"Authorization": "Bearer " + shown["token"]})
        assert units.status_code == 200
        auth = httpx.post(shown["casavi"] + "/v2/authenticate", json={"key": shown["key"], "secret": shown["secret"]})
        assert auth.status_code == 200
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "sandbox stopped." in out
