"""Secrets stay secret: cassettes hold none, and the operator flow never shows one.

The canary runs the real CLI (tenant add, activate, connect with the initial import, plan, run,
status, history, report, explain, disconnect) and the demo against the in-process sandbox, collects everything they print, log and
write (reports), and asserts that no token, key or secret appears anywhere but the 0600 state file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import main
from tests.conftest import CASSETTES, fast_connector_config

SECRET_PATTERNS = [
    re.compile(r"scl_[A-Za-z0-9]{40}"),                               # SCALARA tokens
    re.compile(r"Bearer\s+[A-Za-z0-9._-]{8,}"),                      # bearer headers
    re.compile(r"\bc[ks]_[A-Za-z0-9_-]{12,}"),                       # sandbox casavi key / secret
    re.compile(r'"(?:secret|password|key)"\s*:\s*"(?!\*\*\*REDACTED)[^"]+"'),
    re.compile(r'"token"\s*:\s*"(?!\*\*\*REDACTED)[^"]+"'),
    re.compile(r"^\s*(?:token|authorization):\s*(?!\*\*\*REDACTED)\S+", re.IGNORECASE | re.MULTILINE),
]


def cassette_files() -> list[Path]:
    return sorted(CASSETTES.rglob("*.yaml"))


def test_there_are_cassettes_to_scan() -> None:
    assert len(cassette_files()) >= 10


@pytest.mark.parametrize("path", cassette_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_cassettes_hold_no_secrets(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern in SECRET_PATTERNS:
        match = pattern.search(text)
        assert match is None, f"{path.name}: looks like a secret: {match.group(0)[:30]}..."


def test_the_scanner_finds_a_planted_secret() -> None:
    planted = 'uri: x\nbody: {"token": "abc123def"}\nAuthorization: Bearer eyJhbGciOiJI.xyz'
    assert any(p.search(planted) for p in SECRET_PATTERNS)
    assert any(p.search("scl_" + "A1" * 20) for p in SECRET_PATTERNS)


@pytest.fixture
def sandbox() -> Iterator[Any]:
    from engine.sandbox import FaultConfig, Sandbox

    with Sandbox(properties=1, seed=3, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()) as sb:
        yield sb


def _secrets_absent(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked: ...{secret[-4:]} in {text[:200]!r}"
        for pattern in SECRET_PATTERNS[:3]:
            assert pattern.search(text) is None


def test_canary_operator_flow_never_shows_a_secret(sandbox: Any, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = sandbox.generate_scalara_token()
    key, secret = sandbox.casavi_key, sandbox.casavi_secret
    env = {"CASAVI_SYNC_STATE": str(tmp_path / "state" / "state.db"),
           "CASAVI_SYNC_SCALARA_URL": sandbox.scalara_url, "CASAVI_SYNC_CASAVI_URL": sandbox.casavi_url,
           "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path))}
    runner = CliRunner()
    outputs: list[str] = []

    def cli(*args: str, input: str | None = None, expect: tuple[int, ...] = (0,)) -> str:
        result = runner.invoke(main, list(args), input=input, env=env, catch_exceptions=False)
        text = result.output + (result.stderr if result.stderr_bytes is not None else "")
        outputs.append(text)
        assert result.exit_code in expect, text
        return text

    cli("tenant", "add", "--key", key, "--secret-stdin", input=secret + "\n")
    cli("tenant", "activate")
    out = cli("connect", "--token-stdin", input=token + "\n", expect=(0, 1))
    assert "initial import" in out and "token " + "…" + token[-4:] in out
    cli("plan", "--details", expect=(0, 1, 4))
    cli("plan", "--format", "json", expect=(0, 1, 4))
    cli("run", "--format", "json", expect=(0, 1))
    cli("run", "--log-format", "json", expect=(0, 1))
    cli("tenant", "list")
    cli("status")
    cli("status", "--format", "json")
    cli("history", "--format", "json")
    cli("report", "1")
    cli("report", "2", "--format", "json")
    cli("explain", "contacts", sorted(sandbox.scalara.dataset()["contacts"])[0], expect=(0, 1))
    out = cli("connect", "--token-stdin", input="scl_" + "x" * 40 + "\n", expect=(3,))
    assert "Systemeinstellungen -> Externe Anbindungen -> casavi -> Generieren" in out
    cli("disconnect")

    reports = [p.read_text(encoding="utf-8") for p in (tmp_path / "state").rglob("*.json")]
    assert reports, "runs write JSON reports"
    logs = [r.getMessage() for r in caplog.records]
    _secrets_absent(outputs + reports + logs, [token, key, secret])
    state = tmp_path / "state" / "state.db"
    assert state.stat().st_mode & 0o077 == 0  # the token store is private to its owner


def test_canary_demo_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.sandbox import Sandbox

    seen: list[str] = []
    original_token = Sandbox.generate_scalara_token
    original_start = Sandbox.start

    def spy_token(self: Any, *args: Any, **kwargs: Any) -> str:
        value = original_token(self, *args, **kwargs)
        seen.append(value)
        return value

    def spy_start(self: Any) -> Any:
        started = original_start(self)
        seen.extend([self.casavi_key, self.casavi_secret])
        return started

    monkeypatch.setattr(Sandbox, "generate_scalara_token", spy_token)
    monkeypatch.setattr(Sandbox, "start", spy_start)
    result = CliRunner().invoke(main, ["demo", "--properties", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "what arrived in casavi" in result.output and "write calls to casavi: 0" in result.output
    assert len(seen) == 3
    _secrets_absent([result.output], seen)
