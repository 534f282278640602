"""Records casavi keeps refusing (issue 9, item 11): held, retried on a backoff, new vs known, acknowledged.

Before: a record casavi refused with a 422 was sent again every run with the same payload, every
run ended "partial" forever, and reports could not tell yesterday's data problem from news.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.state.failures import FailureRow
from engine.sync.failures import Seen, backoff_s, merge
from tests.conftest import World, make_world


def writes(outcome: Any) -> int:
    return int(outcome.report["calls"].get("casavi", {}).get("writes", 0))


def _stray_unit(world: World) -> tuple[str, str]:
    """Move a unit into a building of no synced property: casavi refuses its address (422)."""
    d = world.sandbox.scalara.dataset()
    used = {u for usage in d["usages"].values() for u in usage["unitIds"]}
    owned = {o["unitId"] for o in d["ownerships"].values()}
    unit = next(u for u in sorted(d["units"]) if d["units"][u]["buildingId"] in d["buildings"]
                and u not in used and u in owned)
    original = d["units"][unit]["buildingId"]
    stray = world.sandbox.scalara.add_record("buildings", {
        "propertyId": "00000000-0000-4000-8000-000000000000", "label": None, "street": "Irrweg",
        "houseNumber": "1", "postalCode": "20095", "city": "Hamburg", "country": "DE"})
    world.sandbox.scalara.update_record("units", unit, {"buildingId": stray["id"]})
    return unit, original


def _by(report: dict[str, Any], state: str, stage: str | None = None) -> list[dict[str, Any]]:
    return [f for f in report["failureStates"][state] if stage is None or f["stage"] == stage]


@pytest.mark.slow  # six syncs (~1.5 s)
def test_a_refused_record_is_held_until_its_payload_changes_or_a_retry_is_asked(world: World) -> None:
    unit, building = _stray_unit(world)
    first = world.run()
    refused = [f for f in _by(first.report, "new", "write") if f["category"] == "rejected"]
    assert [f["source"]["id"] for f in refused] == [unit] and refused[0]["status"] in (400, 422)
    ref = refused[0]["id"]

    second = world.run()
    assert writes(second) == 0  # neither the unit nor its skipped contracts are sent again
    assert second.outcome == "partial"
    held = [f for f in _by(second.report, "known", "write") if f["id"] == ref]
    assert held and held[0]["held"] and held[0]["sinceRun"] == first.run_id and held[0]["occurrences"] == 2
    assert held[0]["attempts"] == 1 and _by(second.report, "new") == []

    world.sandbox.scalara.update_record("units", unit, {"number": "WE 99"})  # the payload changes
    third = world.run()
    assert writes(third) == 1  # sent again, refused again: still the same known failure
    again = [f for f in _by(third.report, "known", "write") if f["id"] == ref]
    assert again and again[0]["attempts"] == 2 and not again[0]["held"]

    asked = _cli(world, "run", "--retry-record", f"units/{ref}", "--format", "json")  # the operator asks
    report = json.loads(asked.output[asked.output.index("\n{") + 1:])  # after the progress lines
    assert asked.exit_code == 1 and report["calls"]["casavi"]["writes"] == 1, asked.output
    assert writes(world.run()) == 0  # held again after that one retry
    bad = _cli(world, "run", "--retry-record", "units")
    assert bad.exit_code == 2 and "KIND/ID" in bad.output

    world.sandbox.scalara.update_record("units", unit, {"buildingId": building})  # fixed in SCALARA
    fixed = world.run()
    assert not [f for k in ("new", "known", "acknowledged") for f in _by(fixed.report, k, "write")]
    assert fixed.report["failureStates"]["counts"]["resolved"] >= 1
    assert world.store.records("default")[("units", ref)].status == "written"


@pytest.fixture
def quota(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path, properties=2, seed=3, unit_quota=10)


def test_a_conflict_is_retried_on_a_backoff(quota: World) -> None:
    first = quota.run()
    conflicts = [f for f in _by(first.report, "new", "write") if f["category"] == "conflict"]
    assert conflicts and {f["status"] for f in conflicts} == {409}
    assert writes(quota.run()) >= len(conflicts)  # the next run retries a first refusal at once
    held = quota.run()
    assert writes(held) == 0  # refused twice: not before an hour has passed
    assert all(f["nextRetryAt"] for f in _by(held.report, "known", "write") if f["category"] == "conflict")
    quota.sandbox.clock.advance(seconds=3660)
    quota.sandbox.casavi.unit_quota = None  # casavi's state changed: the quota was raised
    later = quota.run()
    assert writes(later) > 0 and not [f for f in _by(later.report, "known", "write")]
    assert backoff_s(1) == 0 and backoff_s(2) == 3600 and backoff_s(3) == 7200 and backoff_s(40) == 7 * 86400


def _cli(world: World, *args: str, input: str | None = None) -> Any:
    env = {"CASAVI_SYNC_STATE": str(world.tmp / "state.db"), "CASAVI_SYNC_CONNECTOR_CONFIG":
           str(world.tmp / "connectors.yaml"), "CASAVI_SYNC_SCALARA_URL": world.sandbox.scalara_url,
           "CASAVI_SYNC_CASAVI_URL": world.sandbox.casavi_url}
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


@pytest.mark.slow  # five syncs and the CLI (~1.8 s)
def test_acknowledged_failures_make_a_clean_run_and_news_stands_out(world: World) -> None:
    first = world.run()  # the sandbox plants SCALARA data that cannot be mapped (a unit without a building)
    planted = _by(first.report, "new", "map")
    assert planted and first.outcome == "partial"
    second = world.run()
    assert _by(second.report, "new") == [] and len(_by(second.report, "known")) == len(planted)
    assert all(f["sinceRun"] == first.run_id and f["occurrences"] == 2 for f in _by(second.report, "known"))

    listed = _cli(world, "failures")
    assert listed.exit_code == 0 and f"known (since run {first.run_id}, 2x)" in listed.output
    status = _cli(world, "status", "--format", "json")
    assert json.loads(status.output)["tenants"][0]["failures"]["known"] == len(planted)
    text = _cli(world, "status").output
    assert f"failures      0 new, {len(planted)} known (the oldest since run {first.run_id}, 2x)" in text, text
    unit = next(f for f in planted if f["kind"] == "units")
    acked = _cli(world, "ack", "units", unit["source"]["id"], "--note", "Gebäude fehlt in SCALARA; Kunde informiert")
    assert acked.exit_code == 0 and "1 failure(s) acknowledged" in acked.output, acked.output
    assert _cli(world, "ack", "units", "no-such-id").exit_code == 3
    assert _cli(world, "unack", "units", unit["source"]["id"]).exit_code == 0
    actions = [e.action for e in world.store.audit_log(tenant="default")]
    assert actions[:2] == ["failure.unacknowledged", "failure.acknowledged"]
    assert _cli(world, "ack", "units", unit["source"]["id"], "--note", "Gebäude fehlt in SCALARA; Kunde informiert"
                ).exit_code == 0
    assert _cli(world, "ack", "--all", "--note", "bekannte Datenfehler").exit_code == 0

    third = world.run()
    assert third.outcome == "clean"  # only acknowledged failures left: alerting stays quiet
    acknowledged = _by(third.report, "acknowledged")
    assert len(acknowledged) == len(planted)
    assert {f["acknowledged"]["note"] for f in acknowledged} == {"Gebäude fehlt in SCALARA; Kunde informiert",
                                                                 "bekannte Datenfehler"}
    text = _cli(world, "report", str(third.run_id)).output
    assert "acknowledged (since run" in text and "Kunde informiert" in text

    _stray_unit(world)  # news: casavi refuses a unit it accepted before
    fourth = world.run()
    assert fourth.outcome == "partial"
    news = _by(fourth.report, "new")
    assert news and {f["kind"] for f in news} <= {"units", "contracts"}
    assert len(_by(fourth.report, "acknowledged")) == len(planted)  # still listed, still quiet

    log = _cli(world, "run", "--log-format", "json", "--retry-failed")
    end = [json.loads(line) for line in log.output.splitlines() if '"run.end"' in line]
    assert end and end[0]["failures_acknowledged"] == len(planted) and "failures_new" in end[0]


def _row(reason: str, **kw: Any) -> FailureRow:
    base: dict[str, Any] = dict(stage="write", kind="units", ref_id="u-1", source_resource="units", source_id="1",
                                category="rejected", status=422, reason=reason, field=None, payload_hash="h",
                                first_run=1, first_seen_at="2026-12-01T00:00:00Z", last_run=1,
                                last_seen_at="2026-12-01T00:00:00Z", occurrences=1, attempts=1, next_retry_at=None,
                                retry_requested=False, acknowledged_at="2026-12-01T01:00:00Z", ack_note="ok")
    base.update(kw)
    return FailureRow(**base)


def test_a_failure_for_another_reason_is_news_again_and_an_aborted_run_resolves_nothing() -> None:
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    known = {("write", "units", "u-1"): _row("invalid_value on area: must be > 0")}
    seen = [Seen("write", "units", "u-1", "units", "1", "rejected", "invalid_value on name: too long",
                 status=422, payload_hash="h2", attempted=True)]
    rows, delete, summary = merge(known, seen, run_id=2, now=now, complete=True)
    assert [f["id"] for f in summary.new] == ["u-1"] and rows[0].acknowledged_at is None and not delete
    rows, delete, summary = merge(known, [], run_id=2, now=now, complete=False)
    assert not delete and summary.total == 0  # not seen, but the run did not look at everything
    rows, delete, summary = merge(known, [], run_id=2, now=now, complete=True)
    assert delete == [("write", "units", "u-1")] and summary.resolved == 1


def test_a_record_whose_mapping_failed_because_of_another_shares_that_ones_state() -> None:
    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    unit = _row("no building with id 'b-9'", stage="map", ref_id="scalara:units/7", category="data",
                status=None, payload_hash=None)
    known = {unit.key: unit}
    seen = [Seen("map", "units", "scalara:units/7", "units", "1", "data", "no building with id 'b-9'"),
            Seen("map", "contracts", "own-1", "ownerships", "o-1", "data", "ownership o-1 depends on failed unit 1",
                 caused_by=("units", "1"))]
    _, _, summary = merge(known, seen, run_id=2, now=now, complete=True)
    assert [f["id"] for f in summary.acknowledged] == ["scalara:units/7", "own-1"] and not summary.new


def test_failure_lines_show_the_scalara_record_and_the_explain_command_not_the_placeholder_id() -> None:
    """A unit that failed to map has the state's placeholder id 'scalara:units/<id>': people must see
    the SCALARA record, and how to explain it (explain takes SCALARA resources, not 'own-…' ids)."""
    from engine.sync.report import failure_lines, problem_line

    now = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    seen = [Seen("map", "units", "scalara:units/4f73", "units", "4f73", "data", "no building with id 'b-9'"),
            Seen("write", "contracts", "own-1", "ownerships", "o-1", "rejected", "invalid_value on start",
                 status=422, payload_hash="h", attempted=True)]
    _, _, summary = merge({}, seen, run_id=1, now=now, complete=True)
    unit, contract = sorted(summary.new, key=lambda f: str(f["kind"]), reverse=True)
    assert problem_line(unit) == "units (SCALARA units 4f73): no building with id 'b-9'"
    assert problem_line(contract).startswith("contracts own-1 (SCALARA ownerships o-1): ")
    lines = failure_lines({"counts": {"new": 2}, "new": [unit, contract]})
    assert not any("scalara:" in line for line in lines)
    assert "    why: casavi-sync explain units 4f73" in lines
    assert "    why: casavi-sync explain ownerships o-1" in lines


def test_failures_command_lists_the_explain_command(tmp_path: Path) -> None:
    from engine.state import StateStore

    state = tmp_path / "state.db"
    with StateStore.open(state) as store:
        store.add_tenant("default", "key-1234", "secret-1234")
        store.save_failures("default", [_row("no building with id 'b-9'", stage="map", ref_id="scalara:units/4f73",
                                             source_id="4f73", category="data", status=None, payload_hash=None,
                                             acknowledged_at=None, ack_note=None)])
    result = CliRunner().invoke(main, ["failures", "--state", str(state)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["new: units (SCALARA units 4f73): no building with id 'b-9'",
                                          "  why: casavi-sync explain units 4f73"]
