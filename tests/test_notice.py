"""The customer's data-quality notice: golden files (text and HTML), a real run, and the CLI.

Regenerate the golden files after an intended change of the catalog with
``CASAVI_SYNC_UPDATE_GOLDEN=1 pytest tests/test_notice.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.observe.notice import build_notice, render_html, render_text
from tests.conftest import World

CASES = Path(__file__).parent / "notice_cases"
BERLIN = ZoneInfo("Europe/Berlin")


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CASES / name).read_text(encoding="utf-8"))
    return doc


def golden(name: str, text: str) -> None:
    path = CASES / name
    if os.environ.get("CASAVI_SYNC_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; see the module docstring to regenerate"


def test_notice_golden_text_and_html() -> None:
    notice = build_notice(load("report.json"), load("previous.json"))
    golden("notice.txt", render_text(notice, zone=BERLIN))
    golden("notice.html", render_html(notice, zone=BERLIN))


def test_notice_content() -> None:
    notice = build_notice(load("report.json"), load("previous.json"))
    by_key = {i.key: i for i in notice.items}
    unit = by_key["units/u-1"]
    assert unit.subject == "Einheit WE 03 (Lindenstraße 12)"
    assert "Objekt > Einheiten" in unit.fix and unit.dependents == {"contracts": 2}
    assert not unit.new  # the run before had it
    assert by_key["units/u-2"].new and by_key["units/u-2"].text == "kein Gebäude zugeordnet"
    assert by_key["contacts/c-2"].subject == "Kontakt Anna Müller-Lüdenscheidt"
    assert "E-Mail-Adresse" in by_key["contacts/c-2"].text
    assert "mehrfach" in by_key["contacts/c-3"].text
    assert "Eigentümer" in by_key["ownerships/o-2"].text
    # an unmapped code (the consultant's) and a casavi quota (the operator's) are only counted
    assert "units/u-3" not in by_key and "units/u-4" not in by_key and notice.technical == 2
    # new items first
    assert [i.new for i in notice.items] == sorted((i.new for i in notice.items), reverse=True)


def test_html_escapes_scalara_data() -> None:
    page = render_html(build_notice(load("report.json")))
    assert "<script>alert(1)</script>" not in page
    assert "WE &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Große Bleichen &quot;22&quot; &amp; 24" in page


def test_empty_notice() -> None:
    text = render_text(build_notice({"runId": 3, "tenant": "t", "startedAt": "2026-11-27T03:00:00Z"}), zone=BERLIN)
    assert "Es gibt derzeit nichts zu korrigieren." in text and "27.11.2026 04:00 MEZ" in text


@pytest.mark.slow
def test_notice_of_a_real_run_and_the_cli(world: World) -> None:
    report = world.run().report
    broken = [r for r in report["mapErrors"] if (r.get("problem") or {}).get("code") == "lookup_missing"]
    assert broken, "the generated tenant has a unit whose building is gone"
    notice = build_notice(report)
    item = next(i for i in notice.items if i.key == f"units/{broken[0]['sourceId']}")
    facts = report["subjects"][item.key]
    assert item.subject.startswith(f"Einheit {facts['number']} ({facts['property.name']}")
    dependents = [r for r in report["mapErrors"] if (r.get("problem") or {}).get("targetId") == broken[0]["sourceId"]]
    assert sum(item.dependents.values()) == len(dependents)

    state = str(world.tmp / "state.db")
    result = CliRunner().invoke(main, ["notice", "--state", state])
    assert result.exit_code == 0, result.output
    assert item.subject in result.output and "[NEU]" in result.output
    out = world.tmp / "hinweise.html"
    old = os.umask(0)
    try:
        result = CliRunner().invoke(main, ["notice", "--state", state, "--format", "html", "-o", str(out)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "<html" in out.read_text(encoding="utf-8")
    # the second run has the same problems: no longer new
    world.run()
    result = CliRunner().invoke(main, ["notice", "--state", state, "--format", "json"])
    doc = json.loads(result.output)
    assert doc["items"] and doc["new"] == 0


def test_notice_cli_errors(world: World) -> None:
    world.run()
    state = str(world.tmp / "state.db")
    # a run that does not exist is a usage error, said as `report` says it
    result = CliRunner().invoke(main, ["notice", "--state", state, "--run", "999"])
    assert result.exit_code == 2 and "no run 999" in result.output and "Traceback" not in result.output
    # a file that cannot be written: one line, not an internal error
    result = CliRunner().invoke(main, ["notice", "--state", state, "-o", str(world.tmp / "missing" / "n.txt")])
    assert result.exit_code == 3 and "cannot write the notice" in result.output
    assert "internal error" not in result.output


def test_notice_of_a_run_is_that_run(world: World) -> None:
    """--run N of a run that left no report says so; it never shows an earlier run's notice instead."""
    from engine.state import StateStore

    world.run()
    state = world.tmp / "state.db"
    with StateStore.open(state) as store:
        interrupted = store.begin_run("default", "manual")
        store.finish_run(interrupted, "aborted", {}, None, "killed")
    result = CliRunner().invoke(main, ["notice", "--state", str(state), "--run", str(interrupted)])
    assert result.exit_code == 3 and f"run {interrupted}" in result.output and "left no report" in result.output
    assert "Hinweise" not in result.output
    result = CliRunner().invoke(main, ["notice", "--state", str(state), "--run", "1", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.output)["runId"] == 1


def test_notice_before_any_run(tmp_path: Path) -> None:
    from engine.state import StateStore

    with StateStore.open(tmp_path / "state.db") as store:
        store.add_tenant("default", "key-1234567890", "secret-1234567890")
    result = CliRunner().invoke(main, ["notice", "--state", str(tmp_path / "state.db")])
    assert result.exit_code == 3 and "no finished run" in result.output
