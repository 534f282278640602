"""Files holding customer data are owner-only whatever the umask (issue 9, item 14).

The whole operator flow runs under ``umask 000`` (a container default): the state folder, the
state file, the key file, the run reports and their folders must still be private.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.sync.runner import write_report
from tests.conftest import fast_connector_config


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_operator_flow_under_umask_000_leaves_nothing_readable_by_others(
        tmp_path: Path, umask_000: None, monkeypatch: pytest.MonkeyPatch,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from engine.sandbox import FaultConfig, Sandbox

    for var in ("CASAVI_SYNC_SECRET_KEY", "CASAVI_SYNC_SECRET_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    state = tmp_path / "srv" / "casavi-sync" / "state.db"
    with Sandbox(properties=1, seed=5, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()) as sb:
        env = {"CASAVI_SYNC_STATE": str(state), "CASAVI_SYNC_SCALARA_URL": sb.scalara_url,
               "CASAVI_SYNC_CASAVI_URL": sb.casavi_url, "CASAVI_SYNC_CASAVI_KEY": sb.casavi_key,
               # the test's fast rates, kept outside tmp_path (every file there is checked)
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path_factory.mktemp("cfg")))}
        runner = CliRunner()

        def cli(*args: str, input: str | None = None) -> Any:
            result = runner.invoke(main, list(args), input=input, env=env, catch_exceptions=False)
            assert result.exit_code in (0, 1), result.output
            return result

        cli("tenant", "add", "--secret-stdin", input=sb.casavi_secret + "\n")
        cli("tenant", "activate")
        cli("connect", "--token-stdin", input=sb.generate_scalara_token() + "\n")
        cli("run")
    created = [p for p in tmp_path.rglob("*")]
    assert any(p.suffix == ".json" for p in created), "runs wrote reports"
    assert (state.parent / "secret.key").exists()
    for path in [state.parent, *created]:
        if path.is_dir():
            assert _mode(path) == 0o700, f"{path} is {oct(_mode(path))}"
        else:
            assert _mode(path) == 0o600, f"{path} is {oct(_mode(path))}"


def test_a_report_in_a_loose_old_folder_is_private_and_the_folder_tightened(tmp_path: Path, umask_000: None) -> None:
    folder = tmp_path / "reports" / "acme"
    folder.mkdir(parents=True, mode=0o777)
    os.chmod(folder, 0o777)
    write_report(folder / "run-000001.json", {"runId": 1, "name": "Erika Mustermann"})
    assert _mode(folder / "run-000001.json") == 0o600
    assert _mode(folder) == 0o700
    assert [p.name for p in folder.iterdir()] == ["run-000001.json"]  # no temp file left behind
