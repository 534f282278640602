"""`status`, `history` and `report` through click's CliRunner, on a state prepared with StateStore.

The report command is also checked against one real run on a small in-process sandbox.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import engine.cli.status_cmd  # noqa: F401  (attaches status, history, report to main)
from engine.cli import main
from engine.schedule import Schedule, load_zone
from engine.state import Outcome, StateStore

TOKEN = "scl_" + "A" * 36 + "wxyz"
SECRET = "casavi-secret-do-not-show"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """alpha: activated, connected, two runs; bravo: not activated; charlie: activated, not connected."""
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        store.add_tenant("alpha", "key-alpha-1234", SECRET)
        store.activate_tenant("alpha")
        store.save_connection("alpha", TOKEN, "acct-7")
        store.add_tenant("bravo", "key-bravo", SECRET)
        store.add_tenant("charlie", "key-charlie", SECRET)
        store.activate_tenant("charlie")
        first = store.begin_run("alpha", "initial")
        store.record_outcomes(first, [Outcome("units", f"u{i}", "units", str(i), "create", "ok") for i in range(3)])
        store.finish_run(first, "clean", {}, None)
        second = store.begin_run("alpha", "schedule")
        store.record_outcomes(second, [Outcome("units", "u1", "units", "1", "update", "ok"),
                                       Outcome("units", "u2", "units", "2", "unchanged", "ok"),
                                       Outcome("contacts", "c9", "contacts", "9", "error", "failed",
                                               f"casavi said no to token {TOKEN}")])
        store.finish_run(second, "partial", {}, None)
        store.set_last_scheduled_day("alpha", dt.datetime.now(load_zone("Europe/Berlin")).date())
        third = store.begin_run("charlie", "manual")
        store.finish_run(third, "aborted", {}, None, "SCALARA is unreachable")
    yield path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={"CASAVI_SYNC_TENANT": None, "CASAVI_SYNC_STATE": None,
                                                     **(env or {})})


def no_secrets(text: str) -> None:
    assert TOKEN not in text and SECRET not in text and "key-alpha-1234" not in text


# -- status ---------------------------------------------------------------------------------------------

def test_status_text_covers_every_tenant(state: Path) -> None:
    result = invoke("status", "--state", str(state))
    assert result.exit_code == 0, result.output
    out = result.output
    no_secrets(out)
    assert out.startswith("schedule: daily at 04:00 Europe/Berlin, spread over 30 min\n")
    blocks = {b.splitlines()[0]: b for b in out.split("\n\n")[1:]}
    assert sorted(blocks) == ["tenant alpha", "tenant bravo", "tenant charlie", "tenant default"]
    alpha = blocks["tenant alpha"]
    assert "SCALARA token …wxyz, SCALARA account acct-7" in alpha
    assert "last run      #2 (schedule)" in alpha and "partial; update 1, unchanged 1, error 1" in alpha
    assert "(when `casavi-sync serve` is running)" in alpha     # today's run is marked: next is tomorrow
    assert "next run      not scheduled: not activated (casavi-sync tenant activate bravo)" in blocks["tenant bravo"]
    charlie = blocks["tenant charlie"]
    assert "connected     no" in charlie and "not connected (casavi-sync connect --tenant charlie)" in charlie
    assert "aborted; -" in charlie and "SCALARA is unreachable" in charlie


def test_status_json_for_one_tenant_with_a_run_in_progress(state: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    with StateStore.open(state) as store, store.acquire_lock("alpha", "manual"):
        store.set_last_scheduled_day("alpha", today)
        result = invoke("status", "--state", str(state), "--tenant", "alpha", "--format", "json",
                        "--at", "06:15", "--timezone", "UTC", "--jitter", "0")
    assert result.exit_code == 0, result.output
    no_secrets(result.output)
    doc = json.loads(result.output)
    assert doc["schedule"] == "daily at 06:15 UTC, spread over 0 min"
    [alpha] = doc["tenants"]
    assert alpha["tenant"] == "alpha" and alpha["activated"] is True
    assert alpha["connection"]["tokenFingerprint"] == "…wxyz" and alpha["casaviKey"] == "…1234"
    assert alpha["lastRun"]["runId"] == 2 and alpha["lastRun"]["changes"] == {"update": 1, "unchanged": 1, "error": 1}
    assert alpha["running"]["purpose"] == "manual" and alpha["running"]["pid"] == os.getpid()
    tomorrow = today + dt.timedelta(days=1)
    assert alpha["nextRun"] == f"{tomorrow.isoformat()}T06:15:00.000Z" and alpha["nextRunDue"] is False


def test_status_next_run_agrees_with_the_schedule_and_env(state: Path) -> None:
    with StateStore.open(state) as store:
        store.set_last_scheduled_day("alpha", dt.date(2026, 1, 1))
    env = {"CASAVI_SYNC_SCHEDULE_AT": "00:00", "CASAVI_SYNC_SCHEDULE_ZONE": "Europe/Berlin",
           "CASAVI_SYNC_SCHEDULE_JITTER": "0", "CASAVI_SYNC_TENANT": "alpha"}
    result = invoke("status", "--state", str(state), "--format", "json", env=env)
    [alpha] = json.loads(result.output)["tenants"]
    assert alpha["nextRunDue"] is True                       # missed days: due at once
    text = invoke("status", "--state", str(state), env=env).output
    assert "next run      due now" in text
    assert Schedule.from_strings("00:00", "Europe/Berlin", 0).describe() in text


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--tenant", "alpah"], "did you mean 'alpha'", 3),
    (["--timezone", "Nowhere/Town"], "unknown time zone 'Nowhere/Town'", 2),
])
def test_status_errors_are_one_line(state: Path, args: list[str], message: str, code: int) -> None:
    result = invoke("status", "--state", str(state), *args)
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["report", "1"], ["notice"], ["history"]])
def test_unknown_timezone_is_a_usage_error(state: Path, command: list[str]) -> None:
    """docs/operations.md: a bad option value is exit 2 (usage), before anything is read."""
    result = invoke(*command, "--state", str(state), "--timezone", "Nowhere/Town")
    assert result.exit_code == 2, result.output
    assert "unknown time zone 'Nowhere/Town'" in result.output and "Traceback" not in result.output


# -- history ----------------------------------------------------------------------------------------------

def test_history_table_newest_first(state: Path) -> None:
    result = invoke("history", "--state", str(state))
    assert result.exit_code == 0, result.output
    no_secrets(result.output)
    header, *rows = result.output.splitlines()
    assert header.split()[:6] == ["run", "tenant", "trigger", "started", "took", "outcome"]
    assert [r.split()[0] for r in rows] == ["3", "2", "1"]
    assert rows[0].split()[1:3] == ["charlie", "manual"] and "aborted" in rows[0]
    assert rows[1].endswith("update 1, unchanged 1, error 1") and rows[2].endswith("create 3")


@pytest.mark.parametrize(("args", "ids"), [
    (["--limit", "1"], [3]),
    (["--tenant", "alpha"], [2, 1]),
    (["--tenant", "alpha", "--limit", "1"], [2]),
    (["--tenant", "bravo"], []),
])
def test_history_json_limit_and_tenant(state: Path, args: list[str], ids: list[int]) -> None:
    result = invoke("history", "--state", str(state), "--format", "json", *args)
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert [r["runId"] for r in runs] == ids
    for r in runs:
        assert set(r) >= {"tenant", "trigger", "startedAt", "finishedAt", "durationS", "outcome", "changes"}


def test_read_only_commands_never_create_a_state_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "state.db"
    for command in (["history"], ["status"], ["report", "1"], ["plan"], ["tenant", "list"]):
        result = invoke(*command, "--state", str(missing))
        assert result.exit_code == 3 and "no state file at" in result.output, (command, result.output)
    assert not missing.exists() and not missing.parent.exists()


# -- report -------------------------------------------------------------------------------------------------

@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    from tests.conftest import make_world

    yield from make_world(tmp_path, properties=1)


def test_report_of_a_real_run(world: Any) -> None:
    outcome = world.run()
    state = str(world.tmp / "state.db")
    as_json = invoke("report", str(outcome.run_id), "--state", state, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == json.loads(Path(outcome.report_path).read_text(encoding="utf-8"))
    text = invoke("report", str(outcome.run_id), "--state", state)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].startswith("started ")
    assert lines[1].startswith(f"run {outcome.run_id} (manual) for tenant 'default': {outcome.outcome} in ")
    assert any(line.strip().startswith("units") for line in lines)
    assert lines[-1] == f"report: {outcome.report_path}"
    assert world.token not in as_json.output + text.output


def test_report_unknown_run_is_exit_2(state: Path) -> None:
    result = invoke("report", "42", "--state", str(state))
    assert result.exit_code == 2
    assert result.output == f"error: there is no run 42 in {state}; `casavi-sync history` lists the runs\n"


@pytest.mark.parametrize("command", [["report", "99999999999999999999"], ["notice", "--run", "99999999999999999999"],
                                     ["report", "0"]])
def test_a_run_id_beyond_the_store_is_a_usage_error(state: Path, command: list[str]) -> None:
    result = invoke(*command, "--state", str(state))
    assert result.exit_code == 2 and "internal error" not in result.output, result.output


def test_report_without_a_file_comes_from_the_history(state: Path) -> None:
    text = invoke("report", "2", "--state", str(state))
    assert text.exit_code == 0, text.output
    no_secrets(text.output)
    assert text.output.startswith("run 2 (schedule) for tenant 'alpha': partial; started ")
    assert "changes: update 1, unchanged 1, error 1" in text.output
    assert "(the run left no report file; this is what the run history holds)" in text.output
    doc = json.loads(invoke("report", "3", "--state", str(state), "--format", "json").output)
    assert doc["reportMissing"] is True and doc["outcome"] == "aborted" and doc["error"] == "SCALARA is unreachable"


def test_report_file_unreadable_is_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    bad = tmp_path / "broken.json"
    bad.write_text("{not json", encoding="utf-8")
    with StateStore.open(path) as store:
        run = store.begin_run("default", "manual")
        store.finish_run(run, "clean", {}, str(bad))
        gone = store.begin_run("default", "manual")
        store.finish_run(gone, "clean", {}, str(tmp_path / "deleted.json"))
    result = invoke("report", str(run), "--state", str(path))
    assert result.exit_code == 3 and result.output.startswith(f"error: cannot read the report of run {run} ")
    missing = invoke("report", str(gone), "--state", str(path))
    assert missing.exit_code == 0 and "its report file" in missing.output and "is gone" in missing.output
