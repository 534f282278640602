"""Crash safety: "Killing the process at any moment (SIGKILL, or the sandbox's outage-after-N-writes
knob) and running again ends with casavi complete and without duplicates."

A real ``casavi-sync run`` process is SIGKILLed while it writes into a live loopback sandbox (after
the first write, a third, two thirds; during extraction; in the middle of archiving on day two);
then a run to completion must leave casavi exactly as a clean run into a fresh sandbox does: the
same reference ids per kind with the same payloads (internalId and modifiedAt aside), no
duplicated contacts, a state file SQLite calls sound, and a following run with nothing to write.
The outage knob is tested in-process: the run aborts with a NetworkError after its (few, fast)
retries, and runs after the outage is cleared complete the import.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.errors import NetworkError
from engine.sandbox import FaultConfig
from tests.conftest import make_world
from tests.crash_helpers import (
    CrashRig,
    day_two_deletions,
    duplicate_contacts,
    integrity,
    snapshot,
)

# casavi answers after 5 ms and the client paces itself to 100 writes/s, so the 94 writes of the
# 2-property tenant take about a second: long enough to kill at a chosen write, short enough to
# keep the file fast. SCALARA answers after 30 ms so extraction is long enough to be hit too.
PROPERTIES = 2
CASAVI = FaultConfig(latency_ms=5)
SCALARA = FaultConfig(latency_ms=30)
RATE = 100


@dataclass(frozen=True)
class Reference:
    """What clean, uninterrupted runs into a fresh sandbox leave in casavi."""

    initial: dict[str, dict[str, Any]]
    initial_writes: int
    day_two: dict[str, dict[str, Any]]
    day_two_archives: int


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    rig = CrashRig.create(tmp_path_factory.mktemp("reference"), properties=PROPERTIES)
    try:
        first = rig.rerun()
        assert first.outcome == "partial" and first.report["writeFailures"] == []
        initial, writes = snapshot(rig.sandbox), rig.writes()
        day_two_deletions(rig.sandbox)
        archives_before = rig.archive_calls()
        second = rig.rerun(allow_archive=True)
        assert second.report["writeFailures"] == []
        return Reference(initial, writes, snapshot(rig.sandbox), rig.archive_calls() - archives_before)
    finally:
        rig.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CrashRig]:
    r = CrashRig.create(tmp_path, properties=PROPERTIES, casavi_faults=CASAVI, scalara_faults=SCALARA,
                        casavi_rate=RATE, casavi_burst=1)
    try:
        yield r
    finally:
        r.stop()


def assert_complete(rig: CrashRig, expected: dict[str, dict[str, Any]]) -> None:
    """casavi equals the reference, holds no duplicate contact, the state file is sound, and one
    more run has nothing left to write."""
    got = snapshot(rig.sandbox)
    for kind in expected:
        assert sorted(got[kind]) == sorted(expected[kind]), f"{kind}: other reference ids than a clean run"
        differing = [ref for ref in expected[kind] if got[kind][ref] != expected[kind][ref]]
        assert differing == [], f"{kind}: payloads differ from a clean run: {differing[:3]}"
    assert duplicate_contacts(rig.sandbox) == []
    assert integrity(rig.state) == "ok"
    before = rig.writes()
    again = rig.rerun()
    assert again.outcome == "partial"          # the planted bad SCALARA records, nothing else
    assert again.report["writeFailures"] == []
    assert rig.writes() == before, "the run after recovery still wrote"
    statuses = rig.record_statuses()
    assert not [k for k, s in statuses.items() if s in ("pending", "failed")]


KILL_POINTS = {"first-write": 0.0, "a-third": 1 / 3, "two-thirds": 2 / 3}


@pytest.mark.parametrize(("point", "rerun_with"), [
    ("first-write", "in-process"), ("a-third", "in-process"), ("a-third", "cli"), ("two-thirds", "in-process"),
])
@pytest.mark.slow
def test_sigkill_during_initial_import_then_rerun_completes(rig: CrashRig, reference: Reference,
                                                             point: str, rerun_with: str) -> None:
    n = max(1, round(KILL_POINTS[point] * reference.initial_writes))
    proc = rig.launch()
    rig.kill_when(proc, lambda: rig.writes() >= n)
    killed_at = rig.writes()
    assert n <= killed_at < reference.initial_writes, "the kill must land mid-import"
    assert integrity(rig.state) == "ok"
    statuses = rig.record_statuses()
    journaled = sum(s == "written" for s in statuses.values())
    # every write is announced (pending) before it is sent, so nothing casavi holds is unknown
    held = {(kind, ref) for kind, recs in snapshot(rig.sandbox).items() for ref in recs}
    assert held and held <= set(statuses)

    if rerun_with == "cli":
        code = rig.finish(rig.launch(name="rerun"))
        assert code == 1, rig.last_stderr()      # 1: the planted bad records are reported
    else:
        outcome = rig.rerun()
        assert outcome.outcome == "partial" and outcome.report["writeFailures"] == []
    # what was journaled as written is not sent again; everything else is (PUT by reference id)
    assert rig.writes() - killed_at == reference.initial_writes - journaled
    assert_complete(rig, reference.initial)


@pytest.mark.slow
def test_sigkill_twice_then_rerun_completes(rig: CrashRig, reference: Reference) -> None:
    first = rig.launch()
    rig.kill_when(first, lambda: rig.writes() >= reference.initial_writes // 4)
    seen = rig.writes()
    second = rig.launch(name="again")
    rig.kill_when(second, lambda: rig.writes() >= seen + reference.initial_writes // 3)
    assert rig.rerun().outcome == "partial"
    assert_complete(rig, reference.initial)


@pytest.mark.slow
def test_sigkill_during_extract_writes_nothing_and_rerun_completes(rig: CrashRig, reference: Reference) -> None:
    proc = rig.launch()
    rig.kill_when(proc, lambda: rig.scalara_requests() >= 3)
    assert rig.casavi_requests() == 0 and rig.writes() == 0
    assert integrity(rig.state) == "ok"
    outcome = rig.rerun()
    assert outcome.report["reconciled"] is True    # nothing known yet: the first full run reads casavi
    assert outcome.report["calls"]["casavi"]["writes"] == reference.initial_writes
    assert_complete(rig, reference.initial)


@pytest.mark.slow
def test_sigkill_during_day_two_archiving_then_rerun_archives_the_rest(rig: CrashRig,
                                                                       reference: Reference) -> None:
    assert rig.rerun().outcome == "partial"
    assert snapshot(rig.sandbox) == reference.initial
    day_two_deletions(rig.sandbox)
    base = rig.archive_calls()
    half = base + max(1, reference.day_two_archives // 2)
    # pace the day-two process to 20 calls/s so the kill lands between archives
    slow = rig.tmp / "slow.yaml"
    slow.write_text(rig.config.read_text(encoding="utf-8").replace(f"rate_per_s: {RATE}", "rate_per_s: 20"),
                    encoding="utf-8")
    proc = rig.launch("--allow-archive", config=slow, name="day-two")
    rig.kill_when(proc, lambda: rig.archive_calls() >= half)
    done = rig.archive_calls() - base
    assert 0 < done < reference.day_two_archives, "the kill must land mid-archiving"
    assert integrity(rig.state) == "ok"

    outcome = rig.rerun(allow_archive=True)
    assert outcome.report["writeFailures"] == []
    again = rig.archive_calls() - base - done
    # what was archived and journaled is not archived again; only unjournaled ones are repeated
    assert reference.day_two_archives - done <= again <= reference.day_two_archives
    assert_complete(rig, reference.day_two)
    assert rig.sandbox.casavi.counts()["archived"] == sum(
        bool(r.get("archived")) for recs in reference.day_two.values() for r in recs.values())
    archived = {k: {ref for ref, r in recs.items() if r.get("archived")} for k, recs in reference.day_two.items()}
    assert sum(map(len, archived.values())) > 0
    statuses = rig.record_statuses()
    for kind, refs in archived.items():
        assert all(statuses[(kind, ref)] == "archived" for ref in refs), kind


@pytest.fixture
def outage_world(tmp_path: Path, reference: Reference) -> Iterator[Any]:
    n = reference.initial_writes * 3 // 5
    yield from make_world(tmp_path, properties=PROPERTIES, casavi_faults=FaultConfig(outage_after_writes=n))


@pytest.mark.slow  # an outage scenario: three runs against the sandbox
def test_outage_after_n_writes_aborts_and_runs_after_clearing_complete(outage_world: Any,
                                                                       reference: Reference) -> None:
    world, server = outage_world, outage_world.sandbox.casavi_server
    n = reference.initial_writes * 3 // 5
    first = world.run()
    assert first.outcome == "aborted"
    assert isinstance(first.error, NetworkError) and "503" in str(first.error)
    # calls already past the fault layer when the outage began still succeed (4 writer threads)
    assert n <= server.counters.successful_writes() <= n + 4
    assert server.faults.in_outage

    # the write count restarts with every clear: the second run has n writes, enough for the rest
    outcomes = []
    for _ in range(5):
        server.clear_outage()
        outcomes.append(world.run().outcome)
        if outcomes[-1] != "aborted":
            break
    assert outcomes == ["partial"]
    got = snapshot(world.sandbox)
    assert got == reference.initial
    assert duplicate_contacts(world.sandbox) == []
    before = server.counters.successful_writes()
    server.clear_outage()
    assert world.run().report["writeFailures"] == []
    assert server.counters.successful_writes() == before
    assert integrity(world.tmp / "state.db") == "ok"
