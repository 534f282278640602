"""Tenant activation and the connection lifecycle through the CLI, including every bad input.

Each bad input gets a one-line explanation of what to do (exit 3), never a traceback, and nothing
stored is lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from tests.conftest import fast_connector_config

MENU = "Systemeinstellungen -> Externe Anbindungen -> casavi -> Generieren"


@pytest.fixture
def sb() -> Iterator[Any]:
    from engine.sandbox import FaultConfig, Sandbox
    from engine.sandbox.generator import generate

    with Sandbox(properties=1, seed=2, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()) as box:
        box.scalara.add_account("other", generate(1, 9, today=dt.date(2026, 11, 27)))
        yield box


class Cli:
    def __init__(self, sb: Any, state: Path) -> None:
        self.env = {"CASAVI_SYNC_STATE": str(state), "CASAVI_SYNC_SCALARA_URL": sb.scalara_url,
                    "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
                    "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(state.parent))}
        self.sb = sb
        self.state = state

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(main, list(args), input=input, env={**self.env, **(env or {})})
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert "Traceback" not in result.output
        return result

    def tenant(self, activate: bool = True) -> None:
        assert self("tenant", "add", "--key-stdin", "--secret-stdin",
                    input=f"{self.sb.casavi_key}\n{self.sb.casavi_secret}\n").exit_code == 0
        if activate:
            assert self("tenant", "activate").exit_code == 0


@pytest.fixture
def cli(sb: Any, tmp_path: Path) -> Cli:
    return Cli(sb, tmp_path / "state.db")


def one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_first_save_runs_the_initial_import_and_a_new_token_does_not(cli: Cli) -> None:
    cli.tenant()
    first = cli("connect", "--token-stdin", input="  " + cli.sb.generate_scalara_token() + "  \n")
    assert first.exit_code in (0, 1)  # 1: the planted bad SCALARA records are reported
    assert "starting the initial import" in first.output and "run 1 (initial)" in first.output
    writes = cli.sb.casavi_server.counters.writes()
    assert writes > 20

    again = cli("connect", "--token-stdin", input=cli.sb.generate_scalara_token() + "\n")
    assert again.exit_code == 0 and "token replaced" in again.output and "run 2" not in again.output
    assert cli.sb.casavi_server.counters.writes() == writes


def test_connect_before_activation_is_refused(cli: Cli) -> None:
    cli.tenant(activate=False)
    one_line_error(cli("connect", "--token-stdin", input="scl_x\n"), "not activated", "casavi team")


def test_unknown_tenant_gets_did_you_mean(cli: Cli) -> None:
    cli.tenant()
    one_line_error(cli("connect", "--tenant", "defualt", "--token-stdin", input="x\n"), "unknown tenant",
                   "default")


@pytest.mark.parametrize("token", ["", "   ", "\t"])
def test_empty_token_is_refused(cli: Cli, token: str) -> None:
    cli.tenant()
    one_line_error(cli("connect", "--token-stdin", input=token + "\n"), "empty", MENU)


def test_no_token_source_without_a_terminal(cli: Cli) -> None:
    cli.tenant()
    one_line_error(cli("connect"), "--token-stdin", "CASAVI_SYNC_SCALARA_TOKEN")


def test_token_from_the_environment(cli: Cli) -> None:
    cli.tenant()
    result = cli("connect", "--no-initial-import", env={"CASAVI_SYNC_SCALARA_TOKEN": cli.sb.generate_scalara_token()})
    assert result.exit_code == 0 and "token saved" in result.output


def test_wrong_or_revoked_token_names_the_menu_path(cli: Cli) -> None:
    cli.tenant()
    old = cli.sb.generate_scalara_token()
    cli.sb.generate_scalara_token()  # revokes the old one
    result = cli("connect", "--token-stdin", input=old + "\n")
    one_line_error(result, "refused", MENU)
    assert old not in result.output


def _account_endpoint_config(cli: Cli) -> dict[str, str]:
    folder = cli.state.parent / "with-me"
    folder.mkdir(exist_ok=True)
    path = fast_connector_config(folder)  # the test's fast rates, plus the account endpoint
    path.write_text(path.read_text(encoding="utf-8").replace("scalara:\n", "scalara:\n  me_path: /me\n", 1),
                    encoding="utf-8")
    return {"CASAVI_SYNC_CONNECTOR_CONFIG": str(path)}


def test_token_of_another_scalara_account_is_refused(cli: Cli) -> None:
    """With an account endpoint configured (not in the contract, so off by default)."""
    cli.tenant()
    env = _account_endpoint_config(cli)
    first = cli("connect", "--no-initial-import", "--token-stdin", input=cli.sb.generate_scalara_token() + "\n",
                env=env)
    assert first.exit_code == 0 and "'demo'" in first.output
    account = first.output.split("SCALARA account ", 1)[1].split(" ", 1)[0]
    assert f"SCALARA account {account}" in cli("status").output  # the same account in connect and status
    other = cli.sb.generate_scalara_token("other")
    one_line_error(cli("connect", "--token-stdin", input=other + "\n", env=env), "account 'other'", "disconnect")


@pytest.mark.parametrize("configured", [pytest.param(False, marks=pytest.mark.slow), True])
def test_connect_needs_only_the_contract(cli: Cli, configured: bool) -> None:
    """A SCALARA without GET /me (the contract has none): connect saves the token and imports,
    whether or not an account endpoint is configured; the token was checked by a contract call."""
    cli.sb.scalara.account_endpoint = False
    cli.tenant()
    env = _account_endpoint_config(cli) if configured else {}
    result = cli("connect", "--token-stdin", input=cli.sb.generate_scalara_token() + "\n", env=env)
    assert result.exit_code in (0, 1), result.output     # 1: the planted bad SCALARA records
    assert "token saved" in result.output and "run 1 (initial)" in result.output
    assert "SCALARA account" not in result.output          # unknown, and not required
    assert cli.sb.casavi_server.counters.writes() > 20
    bad = cli("connect", "--token-stdin", input="scl_" + "x" * 40 + "\n", env=env)
    one_line_error(bad, "refused", MENU)


def test_run_after_disconnect_says_how_to_connect(cli: Cli) -> None:
    cli.tenant()
    cli("connect", "--no-initial-import", "--token-stdin", input=cli.sb.generate_scalara_token() + "\n")
    assert cli("disconnect").exit_code == 0
    one_line_error(cli("run"), "no SCALARA connection", "casavi-sync connect")
    assert cli("disconnect").exit_code == 3  # was not connected any more


@pytest.mark.parametrize("content", [b"this is not a database", b"SQLite format 3\x00" + b"\x00" * 200])
def test_corrupt_state_file_is_refused_and_left_untouched(cli: Cli, content: bytes) -> None:
    cli.state.write_bytes(content)
    one_line_error(cli("tenant", "list"), str(cli.state))
    assert cli.state.read_bytes() == content


def test_state_locked_by_a_running_sync_refuses_a_second_run(cli: Cli) -> None:
    from engine.state import StateStore

    cli.tenant()
    cli("connect", "--no-initial-import", "--token-stdin", input=cli.sb.generate_scalara_token() + "\n")
    with StateStore.open(cli.state) as store, store.acquire_lock("default", "manual"):
        one_line_error(cli("run"), "already being synced")


def test_tenant_commands_act_on_the_named_tenant(cli: Cli) -> None:
    from engine.state import StateStore

    cli.tenant()
    pair = f"{cli.sb.casavi_key}\n{cli.sb.casavi_secret}\n"  # the sandbox's casavi knows one pair
    assert cli("tenant", "add", "--tenant", "acme", "--key-stdin", "--secret-stdin", input=pair).exit_code == 0
    assert cli("tenant", "activate", "acme").exit_code == 0
    assert cli("tenant", "deactivate", env={"CASAVI_SYNC_TENANT": "acme"}).exit_code == 0
    assert cli("tenant", "add", "x", "--tenant", "y", "--key", "k", "--secret-stdin", input="s\n").exit_code == 2
    with StateStore.open(cli.state) as store:
        assert store.tenant_credentials("default")[0] == cli.sb.casavi_key  # untouched
        assert tuple(store.tenant_credentials("acme")) == (cli.sb.casavi_key, cli.sb.casavi_secret)
        assert store.tenant("default").activated and not store.tenant("acme").activated


def _all_json(output: str) -> list[dict[str, Any]]:
    import json

    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, output
    return [json.loads(line) for line in lines]        # a plain-text line fails here


@pytest.mark.slow
def test_json_log_format_holds_for_every_line_including_errors(cli: Cli) -> None:
    """--log-format json: a rejected token, a usage error, a not-connected disconnect and a good
    connect each print only JSON objects (a log collector never sees a stray text line)."""
    cli.tenant()
    bad = "scl_" + "y" * 40
    rejected = cli("connect", "--log-format", "json", "--token-stdin", input=bad + "\n")
    assert rejected.exit_code == 3 and bad not in rejected.output
    (line,) = _all_json(rejected.output)
    assert line["level"] == "error" and MENU in line["msg"]
    unknown = cli("connect", "--log-format", "json", "--tenant", "nope", "--token-stdin", input=bad + "\n")
    assert unknown.exit_code == 3 and "unknown tenant" in _all_json(unknown.output)[0]["msg"]
    twice = cli("tenant", "activate", "x", "--tenant", "y", "--log-format", "json")
    assert twice.exit_code == 2 and "two tenant names" in _all_json(twice.output)[0]["msg"]
    not_connected = cli("disconnect", "--log-format", "json")
    assert not_connected.exit_code == 3 and _all_json(not_connected.output)[0]["level"] == "error"
    good = cli("connect", "--log-format", "json", "--token-stdin", input=cli.sb.generate_scalara_token() + "\n")
    assert good.exit_code in (0, 1)
    assert any(rec.get("event") == "run.end" for rec in _all_json(good.output))


# -- tenant add checks the casavi key pair (issue 9, item 12) ------------------------------------------

def test_tenant_add_refuses_a_pair_casavi_rejects_and_saves_nothing(cli: Cli) -> None:
    result = cli("tenant", "add", "acme", "--key-stdin", "--secret-stdin",
                 input=f"{cli.sb.casavi_key}\nwrong-secret-123456\n")
    one_line_error(result, "casavi rejected this API key/secret pair; nothing was saved",
                   "Administration > API-Zugangsdaten")
    assert "wrong-secret-123456" not in result.output
    if cli.state.exists():
        from engine.state import StateStore

        with StateStore.open(cli.state) as store:
            assert store.get_tenant("acme") is None
    # A rejected new pair leaves the tenant's old, working pair in place.
    cli.tenant(activate=False)
    one_line_error(cli("tenant", "add", "--key-stdin", "--secret-stdin", input="ck_other_key_0000\nnope-nope\n"),
                   "casavi rejected")
    from engine.state import StateStore

    with StateStore.open(cli.state) as store:
        assert tuple(store.tenant_credentials("default")) == (cli.sb.casavi_key, cli.sb.casavi_secret)


def test_tenant_add_with_casavi_unreachable_saves_with_a_warning(cli: Cli) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("tenant", "add", "--key-stdin", "--secret-stdin", input=f"{cli.sb.casavi_key}\n{cli.sb.casavi_secret}\n",
                 env={"CASAVI_SYNC_CASAVI_URL": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 0, result.output
    assert "could not check the key pair with casavi" in result.output and "saved unchecked" in result.output
    assert f"POST http://127.0.0.1:{port}/" in result.output  # the URL it tried
    assert f"reachable at http://127.0.0.1:{port} " in result.output
    from engine.state import StateStore

    with StateStore.open(cli.state) as store:
        assert store.tenant_credentials("default").key == cli.sb.casavi_key


def test_tenant_add_takes_the_key_from_stdin_or_the_environment_and_warns_about_key_on_the_command_line(
        cli: Cli) -> None:
    by_stdin = cli("tenant", "add", "a1", "--key-stdin", "--secret-stdin",
                   input=f"{cli.sb.casavi_key}\n{cli.sb.casavi_secret}\n")
    assert by_stdin.exit_code == 0 and "accepted by casavi" in by_stdin.output, by_stdin.output
    assert "process list" not in by_stdin.output
    by_env = cli("tenant", "add", "a2", env={"CASAVI_SYNC_CASAVI_KEY": cli.sb.casavi_key,
                                              "CASAVI_SYNC_CASAVI_SECRET": cli.sb.casavi_secret})
    assert by_env.exit_code == 0 and "accepted by casavi" in by_env.output, by_env.output
    by_arg = cli("tenant", "add", "a3", "--key", cli.sb.casavi_key, "--secret-stdin", input=cli.sb.casavi_secret)
    assert by_arg.exit_code == 0 and "visible to other users in the process list" in by_arg.output
    missing = cli("tenant", "add", "a4", "--secret-stdin", input="x\n")
    one_line_error(missing, "no casavi API key given", "--key-stdin")
    for text in (by_stdin.output, by_env.output, by_arg.output):
        assert cli.sb.casavi_secret not in text


def test_tenant_add_without_a_secret_names_the_secret_option(cli: Cli) -> None:
    result = cli("tenant", "add", "a5", "--key", cli.sb.casavi_key)  # no secret, no terminal
    one_line_error(result, "no casavi API secret given", "--secret-stdin", "CASAVI_SYNC_CASAVI_SECRET")
    assert "--token-stdin" not in result.output and "--key-stdin" not in result.output.split("error:")[1]


def test_invalid_mappings_hint_names_the_folder_to_validate(cli: Cli, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import MAPPINGS_DIR

    cli.tenant()
    broken = tmp_path / "my mappings"
    shutil.copytree(MAPPINGS_DIR, broken)
    units = broken / "units.yaml"
    units.write_text(units.read_text(encoding="utf-8").replace("    source: units\n", "     source: units\n", 1),
                     encoding="utf-8")
    result = cli("plan", "--mappings", str(broken))
    assert result.exit_code == 3
    assert f"run `casavi-sync validate '{broken}'` for details" in result.output
    from_env = cli("plan", env={"CASAVI_SYNC_MAPPINGS": str(broken)})
    assert f"run `casavi-sync validate '{broken}'` for details" in from_env.output


@pytest.mark.slow
def test_the_initial_import_counts_as_the_days_scheduled_run(cli: Cli) -> None:
    """Connected after the day's slot: status must not say "due now" (serve would sync again at once)."""
    import json

    utc_hour = dt.datetime.now(dt.UTC).hour
    offset = 12 - utc_hour                                    # a zone where it is about noon now
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"      # (Etc/GMT-5 is UTC+5)
    env = {"CASAVI_SYNC_SCHEDULE_AT": "00:00", "CASAVI_SYNC_SCHEDULE_ZONE": zone,
           "CASAVI_SYNC_SCHEDULE_JITTER": "0"}
    cli.tenant()
    first = cli("connect", "--token-stdin", input=cli.sb.generate_scalara_token() + "\n", env=env)
    assert "run 1 (initial)" in first.output, first.output
    [doc] = json.loads(cli("status", "--format", "json", env=env).output)["tenants"]
    from zoneinfo import ZoneInfo

    local = ZoneInfo(zone)
    today = dt.datetime.now(local).date()
    assert doc["lastScheduledDay"] == today.isoformat()
    tomorrow = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0, 0), local)
    assert doc["nextRunDue"] is False
    assert dt.datetime.fromisoformat(doc["nextRun"].replace("Z", "+00:00")) == tomorrow
