"""Chunked runs at the edges (engine.sync.chunked): each test syncs one SCALARA into two sides,
"whole" (``chunk_records=0``: the whole tenant mapped at once) and "chunk" (a tiny
``chunk_records``: many chunks), and asserts they end alike -- casavi, the state store and the run
report -- and that the house rules hold (no active casavi record refers to an archived one).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.sync.report import run_summary
from tests.incremental_rig import Crash, Rig

# parts of a report that differ between any two runs (times, run ids, how SCALARA was read)
VOLATILE = ("runId", "startedAt", "durationS", "timings", "calls", "extraction")


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _untimed(failure: dict[str, Any]) -> dict[str, Any]:
    """A failure without its times (the sandbox clock ticks with every request)."""
    return {k: v for k, v in failure.items() if not k.endswith("At")}


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A run report without what differs between any two runs; lists in a stable order."""
    out = {k: v for k, v in report.items() if k not in VOLATILE}
    for part in ("mapErrors", "writeFailures", "held", "guard"):
        out[part] = sorted(out[part], key=_key)
    states = out.get("failureStates")
    if states:
        out["failureStates"] = {k: sorted(map(_untimed, v), key=_key) if isinstance(v, list) else v
                                for k, v in states.items()}
    props = dict(out.get("properties") or {})
    for timing in ("firstCompleteS", "medianCompleteS", "p90CompleteS"):
        props.pop(timing, None)
    # which properties completed; not when, nor how many records each (a contact shared by two
    # properties is written with the first that needs it, and chunks see the properties in
    # another order than a whole run)
    props["completed"] = sorted(p["id"] for p in props.get("completed") or ())
    out["properties"] = props
    return out


def inconsistent(rig: Rig, side: str) -> list[tuple[str, str, str]]:
    """Active casavi records that refer to an archived one (kind, id, the archived one)."""
    from engine.sync.archives import references

    app = rig.side(side).casavi
    archived = {(kind, r["id"]) for kind in ("properties", "units", "contacts", "contracts")
                for r in app.records(kind) if r.get("archived")}
    return [(kind, r["id"], f"{t[0]} {t[1]}") for kind in ("units", "contracts")
            for r in app.records(kind) if not r.get("archived")
            for t in references(kind, r) if t in archived]


def refusing(rig: Rig, side: str, refused: set[tuple[str, str]]) -> Any:
    """A casavi client for ``side`` whose casavi refuses (422) every write of these records."""
    import httpx

    from engine.connectors.casavi import CasaviClient
    from tests.incremental_rig import app_transport

    def tamper(request: httpx.Request) -> httpx.Response | None:
        parts = [p for p in request.url.path.split("/") if p]
        if request.method == "PUT" and len(parts) == 3 and (parts[1], parts[2]) in refused:
            return httpx.Response(422, json={"message": "not accepted", "code": "invalid",
                                             "errors": [{"field": "name", "code": "invalid"}]})
        return None

    s = rig.side(side)
    return CasaviClient(rig.config, s.key, s.secret, transport=app_transport(s.casavi, tamper))


def unannounced(rows: list[Any]) -> list[Any]:
    """State rows without those of records never written that were skipped because a record they
    depend on failed: apply keeps such a row only when the record's intent was journaled before
    the failure (a matter of timing: a whole run writes property by property, a chunked one
    kind by kind); either way the next run sends the record."""
    return [r for r in rows if not (len(r) == 9 and r[4] == "failed" and r[3] is None
                                    and str(r[8]).startswith("skipped:"))]


def both(rig: Rig, chunk_records: int = 4, refused: set[tuple[str, str]] | None = None, report: bool = True,
         **options: Any) -> tuple[Any, Any]:
    """Run the whole side and the chunked side with ``options``; assert they agree (the reports
    too, unless ``report`` is False: after a crash the two sides' histories differ)."""
    def writer(side: str) -> dict[str, Any]:
        return {"writer": refusing(rig, side, refused)} if refused is not None else {}

    whole = rig.run("whole", chunk_records=0, **options, **writer("whole"))
    chunk = rig.run("chunk", chunk_records=chunk_records, **options, **writer("chunk"))
    assert (chunk.report["extraction"] or {}).get("targeted", {}).get("mode") == "chunked"
    assert chunk.outcome == whole.outcome
    if report:
        assert comparable(chunk.report) == comparable(whole.report)
    assert rig.casavi_state("chunk") == rig.casavi_state("whole")
    a, b = rig.store_state("whole"), rig.store_state("chunk")
    for part in ("records", "sources", "deps", "until"):
        assert unannounced(b[part]) == unannounced(a[part]), part
    cursors = [rig.side(side).store.source_cursor("default") for side in ("whole", "chunk")]
    assert [(c.cursor, c.mapping_hash, c.mapped_date, c.settled, c.stable_until) if c else None
            for c in cursors[1:]] == [(c.cursor, c.mapping_hash, c.mapped_date, c.settled, c.stable_until)
                                      if c else None for c in cursors[:1]]
    assert inconsistent(rig, "chunk") == []
    text = json.dumps(chunk.report, default=str)
    assert not [s for s in (rig.token, rig.side("chunk").key, rig.side("chunk").secret) if s and s in text]
    return whole, chunk


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, properties=3, seed=6)
    yield r
    r.close()


def data(rig: Rig) -> Any:
    return rig.scalara.dataset()


def delete_property(rig: Rig, pid: str) -> None:
    """A property leaves SCALARA with its buildings, units, usages and roles -- not its ownerships,
    which now refer to units that are gone (their contracts fail to map)."""
    for res in ("units", "buildings", "usages", "property-roles"):
        for rid, rec in list(data(rig)[res].items()):
            if rec.get("propertyId") == pid:
                rig.scalara.delete_record(res, rid)
    rig.scalara.delete_record("properties", pid)


def test_the_report_of_a_first_run_in_chunks_is_a_whole_runs(tmp_path: Path) -> None:
    """The notice names a failed unit by its property ("Einheit KE 01 (Lindenstraße 12)"); the
    property was mapped in an earlier chunk, so its name comes from the snapshot. A property's
    records are written over several chunks (its units in one, its contracts in another): the
    report counts the property once, complete after its last write."""
    rig = Rig(tmp_path, properties=2, seed=6)
    whole, chunk = both(rig)
    named = {k: v for k, v in whole.report["subjects"].items() if k.startswith("units/") and "property.name" in v}
    assert named and {k: chunk.report["subjects"].get(k) for k in named} == named
    props = chunk.report["properties"]
    assert props["total"] == props["complete"] == 2 == whole.report["properties"]["total"]
    records = sum(p["records"] for p in props["completed"])
    assert records == sum(p["records"] for p in whole.report["properties"]["completed"])
    assert any(line.startswith("  properties        2 of 2 complete") for line in run_summary(chunk.report))
    rig.close()


@pytest.mark.slow
def test_a_contract_whose_ownership_fails_is_archived_with_its_unit(rig: Rig) -> None:
    """The unit is gone from SCALARA (an orphan, found only by the archive step); its ownership
    still exists but fails to map. The whole run archives the contract with the unit (an active
    contract never refers to an archived unit); the chunked run must too."""
    both(rig)
    delete_property(rig, sorted(data(rig)["properties"])[0])
    whole, _ = both(rig, full=True, allow_archive=True)
    assert whole.report["counts"]["contracts"].get("archive")



@pytest.mark.slow
def test_a_resource_without_records_is_reported_and_holds_its_archives(rig: Rig) -> None:
    """SCALARA returns no property roles: the whole run reports the responsibilities mapping as
    producing nothing (coverage) and holds their archives (an empty read is no removal)."""
    both(rig)
    for rid in list(data(rig)["property-roles"]):
        rig.scalara.delete_record("property-roles", rid)
    whole, chunk = both(rig, full=True)
    assert chunk.report["coverage"]["emptyFields"]["responsibilities"]["produced"] == 0
    assert "responsibilities" in [g["kind"] for g in whole.report["guard"]]
    whole, _ = both(rig, full=True, allow_archive=True)  # the operator confirms: archived
    assert whole.report["counts"]["responsibilities"]["archive"]


@pytest.mark.slow
def test_records_casavi_refuses_are_held_and_retried_as_in_a_whole_run(tmp_path: Path) -> None:
    """casavi refuses a property and two units: their dependents are skipped (with the reason a
    whole run gives), the next run holds them back (not counted as planned), --retry-failed
    sends them again, and once casavi accepts them everything is written."""
    rig = Rig(tmp_path, properties=3, seed=5)
    units, props = sorted(data(rig)["units"]), sorted(data(rig)["properties"])
    refused = {("units", "u-" + units[0]), ("units", "u-" + units[5]), ("properties", "p-" + props[1])}
    whole, _ = both(rig, refused=refused)
    assert any(f["action"] == "skipped" for f in whole.report["writeFailures"])
    whole, _ = both(rig, refused=refused, full=True)
    assert len(whole.report["held"]) == 2, whole.report["held"]
    both(rig, refused=refused, full=True, retry_failed=True)
    whole, _ = both(rig, refused=set(), full=True, retry_failed=True)
    assert not whole.report["writeFailures"]
    both(rig, full=True)
    rig.close()


# -- consultant mapping sets beyond the shipped one ------------------------------------------------


def mapping_set(change: Any) -> Any:
    """The shipped mapping set with ``change(specs)`` applied, compiled."""
    import copy

    from engine.compile import compile_mappings
    from engine.validate import load_mapping_set
    from tests.conftest import MAPPINGS_DIR

    specs = copy.deepcopy(load_mapping_set([MAPPINGS_DIR]))
    change(specs)
    return compile_mappings(specs)


@pytest.mark.slow
def test_a_reference_id_claimed_twice_across_chunks_blocks_only_the_loser(rig: Rig) -> None:
    """Units keyed by their number ("WE 01" in every property): the first claimant by SCALARA id
    is written, the others fail as duplicates. Their contracts fail with them -- but the winner's
    contracts are written, whatever chunk the winner and the losers are in."""
    def by_number(specs: dict[str, Any]) -> None:
        specs["units"]["rules"][0]["id"] = "ref_id('u', number)"

    rig.mset = mapping_set(by_number)
    rig.run("daily")  # reads incrementally from here on: its next run is a targeted day
    whole, _ = both(rig)
    lost = [e for e in whole.report["mapErrors"] if "same reference id" in e["reason"]]
    assert lost and whole.report["counts"]["contracts"]["create"]
    # the winner is unchanged, its contract changes: the update is sent (the loser's error, under
    # the winner's reference id, blocked it in every kind of run)
    winner = lost[0]["problem"]["other"]
    ownership = next(k for k, o in sorted(data(rig)["ownerships"].items()) if o["unitId"] == winner)
    rig.advance(1)
    rig.scalara.update_record("ownerships", ownership, {"validTo": "2030-01-01"})
    whole, chunk = both(rig, full=True)
    daily = rig.run("daily")
    assert (daily.report["extraction"].get("targeted") or {}).get("mode") == "targeted"
    for run in (whole, chunk, daily):
        assert run.report["counts"]["contracts"].get("update") and not run.report["writeFailures"]
    rig.advance(1)
    delete_property(rig, sorted(data(rig)["properties"])[0])
    both(rig, full=True, allow_archive=True)


def lookups_across(specs: dict[str, Any]) -> None:
    """Units look up their property (a lookup into a rule source, across properties) and a
    second rule makes a unit per rental (two rule sources for one mapping)."""
    units = specs["units"]
    units["rules"].insert(0, {
        "name": "rented", "source": "usages", "filter": "type == 'RENTAL'", "id": "ref_id('u', id)",
        "fields": {"propertyId": {"ref": "properties", "from": "propertyId"}, "name": "contractNumber || id",
                   "number": "id", "usage": {"const": "PRIVATE"}}})
    unit = units["rules"][1]
    unit["lookups"]["prop"] = {"resource": "properties", "key": "propertyId", "match": "id"}
    unit["fields"]["name"] = "join_nonempty(' ', [number, label, prop.number])"


@pytest.mark.slow
def test_records_whose_references_come_in_a_later_chunk_are_mapped_again(rig: Rig) -> None:
    """A units mapping whose first rule reads usages (a unit per rental) puts the usages chunk
    before the units chunk; the rental contracts made from usages refer to units of the later
    chunk (they fail at first and are mapped again when their unit comes), and the units look up
    their property (a lookup into a rule source). Casavi, the state and the report -- coverage
    included -- end as in a whole run."""
    from engine.sync.chunked import chunk_resources

    rig.mset = mapping_set(lookups_across)
    assert chunk_resources(rig.mset).index("usages") < chunk_resources(rig.mset).index("units")
    whole, _ = both(rig)
    assert whole.report["counts"]["contracts"]["create"] > 100
    rig.advance(1)
    delete_property(rig, sorted(data(rig)["properties"])[0])
    both(rig, full=True, allow_archive=True)


# -- crashes -----------------------------------------------------------------------------------------


class DiesAfter:
    """A casavi client whose process dies after ``n`` writes (a BaseException nothing catches)."""

    def __init__(self, client: Any, n: int) -> None:
        self.client, self.left = client, n

    def __enter__(self) -> DiesAfter:
        self.client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        got = getattr(self.client, name)
        if name not in ("put", "put_responsibility", "delete_responsibility", "archive", "restore"):
            return got

        def write(*args: Any) -> Any:
            if self.left <= 0:
                raise Crash
            self.left -= 1
            return got(*args)
        return write


@pytest.mark.slow
@pytest.mark.parametrize("writes", [0, 7, 60, 150])
def test_a_crash_in_any_chunk_loses_and_duplicates_nothing(tmp_path: Path, writes: int) -> None:
    """The process dies after some writes of a chunked import (in the first chunk, a few chunks
    in, among the contacts), and again in the archive step of a later run; each time the next
    chunked run ends where an uninterrupted whole run ends."""
    from engine.connectors.casavi import CasaviClient
    from tests.incremental_rig import app_transport

    rig = Rig(tmp_path, properties=2, seed=6)

    def dying(n: int) -> DiesAfter:
        s = rig.side("chunk")
        return DiesAfter(CasaviClient(rig.config, s.key, s.secret, transport=app_transport(s.casavi)), n)

    with pytest.raises(Crash):
        rig.run("chunk", chunk_records=4, writer=dying(writes))
    both(rig, report=False)
    rig.advance(1)
    delete_property(rig, sorted(data(rig)["properties"])[0])
    rig.run("whole", chunk_records=0, full=True, allow_archive=True)
    with pytest.raises(Crash):
        rig.run("chunk", chunk_records=4, writer=dying(writes // 10), full=True, allow_archive=True)
    both(rig, report=False, full=True, allow_archive=True)
    rig.close()


# -- reconciling, guards ---------------------------------------------------------------------------


def fresh_state(rig: Rig, side: str) -> None:
    """The side forgets everything (a new state file) but keeps its casavi: the next run adopts."""
    from engine.state import StateStore

    s = rig.side(side)
    s.store.close()
    s.store = StateStore.open(rig.tmp / f"{side}-again.db", clock=rig.clock.now)
    s.store.add_tenant("default", s.key, s.secret)
    s.store.activate_tenant("default")


@pytest.mark.slow
def test_a_first_run_into_a_populated_casavi_adopts_as_a_whole_run_does(rig: Rig) -> None:
    """casavi holds what an earlier installation wrote (equal records, records SCALARA changed
    since, records no longer produced, responsibilities); a new state reconciles with it. Then
    reconcile=True on the existing state, after a change."""
    both(rig)
    rig.advance(1)
    rig.scalara.update_record("contacts", sorted(data(rig)["contacts"])[0], {"lastName": "Neu"})
    rig.scalara.delete_record("ownerships", sorted(data(rig)["ownerships"])[1])
    rig.scalara.delete_record("property-roles", sorted(data(rig)["property-roles"])[0])
    for side in ("whole", "chunk"):
        fresh_state(rig, side)
        app = rig.side(side).casavi  # someone archived a contract and a unit in casavi meanwhile
        acct = app._account("demo")
        for kind in ("contracts", "units"):
            app._set_archived(acct, kind, sorted(r["id"] for r in app.records(kind))[0], archived=True)
    whole, _ = both(rig, allow_archive=True)
    assert whole.report["reconciled"] and whole.report["counts"]["contacts"].get("unchanged")
    assert whole.report["counts"]["units"].get("restore")
    rig.advance(1)
    rig.scalara.update_record("units", sorted(data(rig)["units"])[2], {"label": "Dachgeschoss"})
    both(rig, full=True, reconcile=True, allow_archive=True)


@pytest.mark.slow
def test_the_mass_archive_guard_counts_the_whole_tenant_not_a_chunk(rig: Rig) -> None:
    """A fifth of the ownerships leave SCALARA, spread over many chunks: their contracts are too
    many to archive unasked (the guard counts the whole tenant, no chunk alone trips it), unless
    the floor allows that many."""
    both(rig)
    gone = sorted(data(rig)["ownerships"])[::5]
    for oid in gone:
        rig.scalara.delete_record("ownerships", oid)
    whole, _ = both(rig, full=True)
    assert "contracts" in [g["kind"] for g in whole.report["guard"]]
    whole, _ = both(rig, full=True, archive_floor=100)
    assert not whole.report["guard"] and whole.report["counts"]["contracts"]["archive"]


@pytest.mark.slow
def test_two_roles_of_one_contact_in_two_chunks_are_one_responsibility(tmp_path: Path) -> None:
    """A contact holds two roles on one property; the roles are in different chunks. casavi
    keeps one responsibility per property and contact: both roles are joined into it
    (``on_duplicate_id``), as in a whole run -- and when one role ends, the other stays."""
    rig = Rig(tmp_path, properties=2, seed=6)
    first, last = "00000000-0000-4000-8000-000000000001", "ffffffff-ffff-4fff-bfff-ffffffffffff"
    role = next(r for _, r in sorted(data(rig)["property-roles"].items()) if r["role"] != "CARETAKER")
    common = {"propertyId": role["propertyId"], "contactId": role["contactId"], "serviceType": None,
              "validFrom": "2020-01-01"}
    rig.scalara.add_record("property-roles", {"id": first, "role": "CARETAKER", "validTo": None, **common})
    rig.scalara.add_record("property-roles", {"id": last, "role": "ADVISORY_BOARD_MEMBER",
                                               "validTo": (rig.clock.today() + dt.timedelta(days=2)).isoformat(),
                                               **common})
    both(rig, chunk_records=2)
    resp = {r["contactId"]: r for p in rig.casavi_state("chunk")["properties"] if p["id"] == "p-" + role["propertyId"]
            for r in p["responsibilities"]}["c-" + role["contactId"]]
    assert "Hausmeister" in resp["roleName"] and "Beirat" in resp["roleName"]
    rig.advance(3)  # the board membership has ended: the responsibility changes with no change in SCALARA
    both(rig, chunk_records=2, full=True)
    rig.close()


# -- bad input --------------------------------------------------------------------------------------


def plant(rig: Rig, resource: str, record: dict[str, Any]) -> None:
    """A record SCALARA serves as given (the sandbox would refuse to store it)."""
    acct = rig.scalara._account("demo")
    key = "00000000-0000-4000-8000-0000000000ff"
    acct.data.records[resource][key] = record
    acct.ids[resource] = sorted({*acct.ids[resource], key})


@pytest.mark.slow
def test_records_without_a_usable_id_or_value_in_a_big_read_are_reported_as_by_a_whole_run(rig: Rig) -> None:
    """A unit without an id and a contact with a value JSON cannot carry, in a read of many
    chunks: the run maps the tenant whole (the read is incomplete), reports both records and holds
    the archives of what is made from units -- the same report as a whole run's."""
    both(rig)
    unit = dict(data(rig)["units"][sorted(data(rig)["units"])[0]])
    plant(rig, "units", {**unit, "id": None})
    contact = sorted(data(rig)["contacts"])[3]
    data(rig)["contacts"][contact]["mobile"] = float("nan")
    rig.scalara.delete_record("units", sorted(data(rig)["units"])[4])
    whole = rig.run("whole", chunk_records=0, full=True, allow_archive=True)
    chunk = rig.run("chunk", chunk_records=4, full=True, allow_archive=True)
    assert comparable(chunk.report) == comparable(whole.report)
    assert rig.casavi_state("chunk") == rig.casavi_state("whole")
    reasons = " ".join(e["reason"] for e in whole.report["mapErrors"])
    assert "has id null" in reasons and contact in reasons
    assert "units" in [g["kind"] for g in whole.report["guard"]]


@pytest.mark.slow
def test_payloads_json_cannot_carry_are_record_errors_as_in_a_whole_run(rig: Rig) -> None:
    """A consultant's mapping makes Infinity for units of one kind: each such unit is a record
    error of the plan (its contracts wait), the rest is written -- in every chunk alike."""
    def infinite(specs: dict[str, Any]) -> None:
        fields = specs["units"]["rules"][0]["fields"]
        fields["customFields"]["object"]["mea"] = "type == 'PARKING' && to_number('1e999') || mea"

    rig.mset = mapping_set(infinite)
    _, chunk = both(rig)
    assert any("JSON cannot carry" in e["reason"] for e in chunk.report["mapErrors"])
    rig.advance(1)
    both(rig, full=True)


@pytest.mark.slow
@pytest.mark.parametrize("asks", [3, 40])
def test_a_stop_between_chunks_leaves_a_run_the_next_one_finishes(tmp_path: Path, asks: int) -> None:
    """The operator stops a chunked import (``should_stop`` turns true after some asks: during the
    read, or between chunks): the run says stopped, nothing is half done, and the next run ends
    where an uninterrupted whole run ends."""
    from engine.connectors.casavi import CasaviClient
    from engine.connectors.scalara import ScalaraClient
    from engine.sync.runner import SyncOptions
    from engine.sync.session import run_for_tenant
    from tests.incremental_rig import app_transport

    rig = Rig(tmp_path, properties=2, seed=6)
    side = rig.side("chunk")
    left = [asks]

    def should_stop() -> bool:
        left[0] -= 1
        return left[0] < 0

    scalara = ScalaraClient(rig.config, rig.token, transport=app_transport(rig.scalara))
    casavi = CasaviClient(rig.config, side.key, side.secret, transport=app_transport(side.casavi))
    with scalara, casavi:
        out = run_for_tenant(side.store, "default", rig.mset, scalara, casavi,
                             SyncOptions(run_date=rig.clock.today(), concurrency=1, chunk_records=4),
                             should_stop=should_stop)
    assert out.outcome == "stopped"
    assert inconsistent(rig, "chunk") == []
    both(rig, report=False)
    rig.close()


@pytest.mark.cluster
def test_a_chunked_run_on_a_postgresql_state_ends_as_a_whole_run_on_sqlite(tmp_path: Path, pg_url: str) -> None:
    """The chunked side keeps its state in PostgreSQL (its snapshot pages, dependency rows and
    orphans are read back there), the whole side in SQLite: an import, then a deleted property."""
    rig = Rig(tmp_path, properties=2, seed=6)
    rig.locations["chunk"] = pg_url
    try:
        both(rig)
        rig.advance(1)
        delete_property(rig, sorted(data(rig)["properties"])[0])
        both(rig, full=True, allow_archive=True)
    finally:
        rig.close()


def fall_back_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """The ``call``-th chunk's closure cannot be computed (engine.sync.targeted.Fallback)."""
    from engine.sync import chunked
    from engine.sync.targeted import Fallback

    real, calls = chunked.remap, [0]

    def remap(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise Fallback("a closure too big (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(chunked, "remap", remap)


@pytest.mark.slow
def test_a_first_run_that_falls_back_to_whole_midway_still_reconciles(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's closure cannot be computed (engine.sync.targeted.Fallback) after some chunks of
    a first run into a populated casavi: the rest is mapped whole -- and still reconciled with
    casavi (adopting what it holds), not sent again record by record as if casavi were known."""
    both(rig)
    rig.advance(1)
    rig.scalara.update_record("contacts", sorted(data(rig)["contacts"])[0], {"lastName": "Neu"})
    for side in ("whole", "chunk"):
        fresh_state(rig, side)
    fall_back_at(monkeypatch, 10)
    whole = rig.run("whole", chunk_records=0)
    chunk = rig.run("chunk", chunk_records=4)
    assert "mapping in chunks stopped" in chunk.report["extraction"]["targeted"]["reason"]
    assert chunk.report["reconciled"]
    assert chunk.report["counts"]["contacts"] == whole.report["counts"]["contacts"]  # one update, no re-sends
    assert rig.casavi_state("chunk") == rig.casavi_state("whole")


@pytest.mark.slow
def test_a_mapping_made_from_two_resources_with_colliding_ids(tmp_path: Path) -> None:
    """Units made from units and from buildings (one identity table), properties that look up
    their units (a lookup into a rule source); a building shares its id with a unit -- both claim
    one reference id in different chunks. Then the building goes."""
    def two_sources(specs: dict[str, Any]) -> None:
        specs["units"]["rules"].append({
            "name": "house", "source": "buildings", "id": "ref_id('u', id)",
            "fields": {"propertyId": {"ref": "properties", "from": "propertyId"},
                       "name": "join_nonempty(' ', [street, houseNumber])", "number": "houseNumber",
                       "usage": {"const": "COMMERCIAL"}}})
        prop = specs["properties"]["rules"][0]
        prop["lookups"]["units"] = {"resource": "units", "match": "propertyId", "key": "id", "many": True}
        prop["fields"]["customFields"]["object"]["einheiten"] = "length(units)"

    rig = Rig(tmp_path, properties=2, seed=3)
    rig.mset = mapping_set(two_sources)
    unit = sorted(data(rig)["units"])[-1]
    building = dict(data(rig)["buildings"][sorted(data(rig)["buildings"])[0]])
    acct = rig.scalara._account("demo")
    acct.data.records["buildings"][unit] = {**building, "id": unit}
    acct.ids["buildings"] = sorted({*acct.ids["buildings"], unit})
    whole, _ = both(rig, chunk_records=3)
    assert any("same reference id" in e["reason"] for e in whole.report["mapErrors"])
    rig.advance(1)
    rig.scalara.delete_record("buildings", unit)
    both(rig, chunk_records=3, full=True, allow_archive=True)
    rig.close()


@pytest.mark.slow
def test_references_written_as_text_are_written_in_the_whole_runs_order(tmp_path: Path) -> None:
    """A consultant writes a contract's unit as text (``fmt('u-{}', unitId)``, not a ``ref``): no
    mapping dependency says units come first, but a whole run writes units before contracts
    (the catalog's order); the chunks take the resources in that order too, or casavi refuses
    every contract (unknown unit)."""
    def text_refs(specs: dict[str, Any]) -> None:
        for rule in specs["contracts"]["rules"]:
            rule["fields"]["unitId"] = "fmt('u-{}', unitId)" if rule["name"] == "owner" else "fmt('u-{}', unit)"

    rig = Rig(tmp_path, properties=2, seed=3)
    rig.mset = mapping_set(text_refs)
    whole, chunk = both(rig, chunk_records=3)
    assert chunk.report["counts"]["contracts"]["create"] == whole.report["counts"]["contracts"]["create"] > 30
    rig.close()


@pytest.mark.slow
def test_a_run_that_falls_back_to_whole_midway_reports_the_writes_of_its_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's closure cannot be computed after some chunks of an import wrote properties and
    units: the whole-tenant plan finds those unchanged, yet this run wrote them -- the report
    counts them as written (and their properties as complete), as a whole run does."""
    rig = Rig(tmp_path, properties=3, seed=6)
    fall_back_at(monkeypatch, 20)
    whole = rig.run("whole", chunk_records=0)
    chunk = rig.run("chunk", chunk_records=4)
    assert "mapping in chunks stopped" in chunk.report["extraction"]["targeted"]["reason"]
    assert chunk.report["counts"] == whole.report["counts"]
    assert comparable(chunk.report)["properties"] == comparable(whole.report)["properties"]
    assert rig.casavi_state("chunk") == rig.casavi_state("whole")
    rig.close()


def keeping_addresses(rig: Rig, side: str) -> Any:
    """A casavi client for ``side`` whose casavi refuses (409) a property PUT that drops an address
    an active unit still has -- as a casavi may: a unit's address must be one of its property's
    (API.md), the sandbox does not check the property side."""
    import httpx

    from engine.connectors.casavi import CasaviClient
    from tests.incremental_rig import app_transport

    app = rig.side(side).casavi

    def tamper(request: httpx.Request) -> httpx.Response | None:
        parts = [p for p in request.url.path.split("/") if p]
        if request.method == "PUT" and len(parts) == 3 and parts[1] == "properties":
            keep = {a.get("street") for a in json.loads(request.content).get("addresses") or []}
            used = {u.get("address") for u in app.records("units")
                    if u.get("propertyId") == parts[2] and not u.get("archived")}
            if used - keep - {None}:
                return httpx.Response(409, json={"message": "an address still has units",
                                                 "errors": [{"field": "addresses", "code": "address_in_use"}]})
        return None

    s = rig.side(side)
    return CasaviClient(rig.config, s.key, s.secret, transport=app_transport(app, tamper))


@pytest.mark.slow
def test_a_corrected_street_moves_units_in_two_steps_across_chunks(rig: Rig) -> None:
    """A building's street is corrected: its property drops the old address and its units move to
    the new one -- in different chunks (properties first). The property keeps the old address
    until its units have moved (casavi refuses dropping an address in use), as in a whole run; a
    unit casavi refuses keeps it one more run."""
    both(rig)
    building = next(b for b in sorted(data(rig)["buildings"])
                    if sum(u["buildingId"] == b for u in data(rig)["units"].values()) >= 2)
    units = sorted(u for u, rec in data(rig)["units"].items() if rec["buildingId"] == building)
    rig.advance(1)
    rig.scalara.update_record("buildings", building, {"street": "Korrigierte Straße"})
    whole = rig.run("whole", chunk_records=0, full=True, writer=keeping_addresses(rig, "whole"))
    chunk = rig.run("chunk", chunk_records=4, full=True, writer=keeping_addresses(rig, "chunk"))
    assert not whole.report["writeFailures"] and whole.report["counts"]["properties"]["update"] == 1
    assert comparable(chunk.report) == comparable(whole.report)
    assert rig.casavi_state("chunk") == rig.casavi_state("whole")
    assert rig.store_state("chunk")["records"] == rig.store_state("whole")["records"]
    rig.advance(1)
    rig.scalara.update_record("buildings", building, {"street": "Nochmal Straße"})
    both(rig, refused={("units", "u-" + units[0])}, full=True)  # step 2 waits for the refused unit
    both(rig, full=True)
