"""`casavi-sync plan` writes nothing anywhere and says by its exit code whether changes are pending."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from tests.conftest import fast_connector_config


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    from engine.sandbox import FaultConfig, Sandbox

    with Sandbox(properties=1, seed=4, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()) as sb:
        env = {"CASAVI_SYNC_STATE": str(tmp_path / "state.db"), "CASAVI_SYNC_SCALARA_URL": sb.scalara_url,
               "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path))}
        invoke(env, "tenant", "add", "--key", sb.casavi_key, "--secret-stdin", input=sb.casavi_secret)
        invoke(env, "tenant", "activate")
        invoke(env, "connect", "--no-initial-import", "--token-stdin", input=sb.generate_scalara_token())
        yield sb, env


def invoke(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), input=input, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_plan_before_the_first_run_writes_nothing_and_reports_pending(env: tuple[Any, dict[str, str]]) -> None:
    from engine.state import StateStore

    sb, e = env
    result = invoke(e, "plan", "--format", "json")
    assert result.exit_code == 4, result.output
    doc = json.loads(result.stdout)
    assert doc["pendingChanges"] is True and doc["reconciled"] is True
    assert doc["counts"]["units"]["create"] >= 10
    assert sb.casavi_server.counters.writes() == 0
    with StateStore.open(Path(e["CASAVI_SYNC_STATE"])) as store:
        assert store.records("default") == {}
        assert store.runs("default") == []


def test_plan_after_a_run_is_up_to_date_and_strict_flags_unmappable_records(env: tuple[Any, dict[str, str]]) -> None:
    _, e = env
    assert invoke(e, "run", "--quiet").exit_code == 1  # the planted bad SCALARA records
    assert invoke(e, "plan").exit_code == 0
    strict = invoke(e, "plan", "--strict")
    assert strict.exit_code == 1 and "no building" in strict.output


def test_plan_details_show_the_field_level_diff(env: tuple[Any, dict[str, str]]) -> None:
    sb, e = env
    invoke(e, "run", "--quiet")
    data = sb.scalara.dataset()
    contact = next(c for c in sorted(data["contacts"]) if data["contacts"][c]["city"])
    old_city = data["contacts"][contact]["city"]
    sb.scalara.update_record("contacts", contact, {"city": "Lüneburg"})
    writes = sb.casavi_server.counters.writes()

    text = invoke(e, "plan", "--details")
    assert text.exit_code == 4
    assert f"update contacts c-{contact}" in text.output and '-> "Lüneburg"' in text.output
    doc = json.loads(invoke(e, "plan", "--details", "--format", "json").stdout)
    change = next(c for c in doc["changes"] if c["id"] == f"c-{contact}")
    assert change["action"] == "update"
    assert change["diff"] == [{"field": "city", "from": old_city, "to": "Lüneburg"}]
    assert sb.casavi_server.counters.writes() == writes


@pytest.mark.slow
def test_run_with_json_logs_prints_only_json_lines(env: tuple[Any, dict[str, str]]) -> None:
    _, e = env
    result = invoke(e, "run", "--log-format", "json")
    lines = [line for line in result.output.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"ts", "level", "msg"} <= set(events[0])
    end = next(ev for ev in events if ev.get("event") == "run.end")
    assert end["outcome"] == "partial" and end["level"] == "warning" and end["counts"]["create"] >= 10
    assert end["run_id"] == 1 and end["failures"] >= 1


@pytest.mark.slow
def test_quiet_json_logs_still_show_the_result(env: tuple[Any, dict[str, str]]) -> None:
    _, e = env
    result = invoke(e, "run", "--quiet", "--log-format", "json")
    events = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert [ev["event"] for ev in events] == ["run.end"]  # progress and info are quiet, the result is not


def test_an_empty_mappings_folder_aborts_instead_of_syncing_nothing(env: tuple[Any, dict[str, str]],
                                                                    tmp_path: Path) -> None:
    sb, e = env
    empty = tmp_path / "no-mappings"
    empty.mkdir()
    for command in ("plan", "run"):
        result = invoke(e, command, "--mappings", str(empty))
        assert result.exit_code == 3 and "no mapping files" in result.output
    assert sb.casavi_server.counters.writes() == 0


def test_plan_details_show_a_reason_line_for_every_update(env: tuple[Any, dict[str, str]], tmp_path: Path) -> None:
    """A field that was never sent and is now sent as null is a change, and plan --details says so."""
    import shutil

    from tests.conftest import MAPPINGS_DIR

    _, e = env
    older = tmp_path / "older"
    shutil.copytree(MAPPINGS_DIR, older, ignore=shutil.ignore_patterns("*.test.yaml"))
    contacts = older / "contacts.yaml"
    contacts.write_text(contacts.read_text(encoding="utf-8").replace("      title: title\n", ""), encoding="utf-8")
    invoke(e, "run", "--quiet", "--mappings", str(older))

    text = invoke(e, "plan", "--details", "--mappings", str(MAPPINGS_DIR)).output.splitlines()
    updates = [i for i, line in enumerate(text) if line.startswith("update ")]
    assert len(updates) > 5
    for i in updates:  # every update is followed by at least one diff line
        assert text[i + 1].startswith("    "), text[i:i + 2]
    assert any(line.strip() == "title: (absent) -> null" for line in text)
    doc = json.loads(invoke(e, "plan", "--details", "--format", "json", "--mappings", str(MAPPINGS_DIR)).stdout)
    diffs = [c["diff"] for c in doc["changes"] if c["action"] == "update"]
    assert diffs and all(diffs)
    assert {"field": "title", "from": None, "to": None, "fromAbsent": True} in [d for ds in diffs for d in ds]


def test_plan_and_run_say_how_they_read_scalara_and_full_forces_a_full_read(env: tuple[Any, dict[str, str]]) -> None:
    sb, e = env
    first = invoke(e, "run")
    assert "read all of SCALARA: first run" in first.output
    contact = sorted(sb.scalara.dataset()["contacts"])[0]
    sb.scalara.update_record("contacts", contact, {"city": "Lüneburg"})
    plan = invoke(e, "plan")
    assert "read what changed in SCALARA since" in plan.output and "1 changed, 0 deleted" in plan.output
    full = invoke(e, "plan", "--full")
    assert "read all of SCALARA: requested (--full)" in full.output
    run = invoke(e, "run", "--full", "--format", "json")
    assert json.loads(run.stdout)["extraction"]["mode"] == "full"
