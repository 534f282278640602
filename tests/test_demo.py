"""`casavi-sync demo` tells a story: what SCALARA and casavi are, what each step proves, why the
planted broken records are no failure (explained once), a real scheduled run, and only report paths
that exist after it ends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.cli.demo_story import STEPS
from engine.state import StateStore


def _demo(*args: str) -> str:
    result = CliRunner().invoke(main, ["demo", "--properties", "1", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_explains_itself_and_runs_the_scheduler(tmp_path: Path) -> None:
    state = tmp_path / "keep" / "state.db"
    out = _demo("--state", str(state))
    flat = " ".join(out.split())
    assert "SCALARA is the software German property managers keep their master data in" in flat
    assert "casavi is the portal" in flat
    for number, (title, _) in STEPS.items():
        assert f"{number}. {title}" in out
    assert flat.count("Why it matters:") == len(STEPS)
    # the planted broken record: explained once, called an edge case, never "unexpected"
    assert out.count("no building with id") == 1, out
    assert "why: casavi-sync explain" not in out  # the demo explains planted records itself, once
    assert "not a demo failure" in flat and "dangling_building" in out
    assert "unexpected" not in out
    assert flat.count("the same planted broken data as in step 3") == 3  # plan, scheduled run, idle run
    # step 6 is the scheduler's run, not a manual one
    assert "serve: run started for tenant 'default' (scheduled day" in out
    assert re.search(r"run 2 \(schedule\) for tenant 'default'", out)
    with StateStore.open(state) as store:
        assert store.last_scheduled_day("default") is not None
        triggers = [r.trigger for r in store.runs("default")]
    assert sorted(triggers) == ["initial", "manual", "schedule"]
    assert "write calls to casavi: 0" in out
    assert "content " not in out and "engine/data/mappings" not in out  # no mapping-set bookkeeping in the story
    # what a person reads afterwards: one time format, counts with unchanged
    human = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (CET|CEST)"
    history = CliRunner().invoke(main, ["history", "--state", str(state)]).output
    rows = [line for line in history.splitlines()[1:] if line.strip()]
    assert len(rows) == 3 and all(re.search(human, row) for row in rows), history
    assert all("unchanged" in row for row in rows[:2]), history  # the scheduled and the idle run
    status = CliRunner().invoke(main, ["status", "--state", str(state)]).output
    assert re.search(r"last run      #3 \(manual\) " + human + r": partial; .*unchanged \d+", status), status
    assert "T" not in re.sub(r"[A-Za-z]{2,}", "", status.split("tenant default", 1)[1])  # no ISO stamps
    report = CliRunner().invoke(main, ["report", "2", "--state", str(state)]).output
    assert re.match("started " + human, report), report
    # every report path printed exists after the demo ended
    printed = re.findall(r"(/\S+?run-\d+\.json)", out)
    assert len(printed) == 3
    assert all(Path(p).is_file() for p in printed)


@pytest.mark.slow  # a second full demo (~1 s)
def test_demo_prints_no_path_that_is_gone(tmp_path: Path) -> None:
    out = _demo("--quiet")
    assert "run-0" not in out and "/tmp" not in out.split("sandbox:")[0]
    assert ".json" not in out
    assert "keep them with --state PATH" in out


def test_demo_refuses_a_state_file_that_exists(tmp_path: Path) -> None:
    """A second demo on the same --state failed in step 3 (its new sandbox met the old state); now it
    says so before it starts, and never touches the file."""
    state = tmp_path / "state.db"
    state.write_bytes(b"a deployment's state")
    result = CliRunner().invoke(main, ["demo", "--state", str(state)])
    assert result.exit_code == 3 and "already exists" in result.output, result.output
    assert "1. casavi activates" not in result.output
    assert state.read_bytes() == b"a deployment's state"
