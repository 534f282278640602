"""The planner as a pure function: decisions, archive rules and the mass-archive guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.sync.plan import Desired, build_plan, payload_hash

KINDS = ("properties", "units", "contacts", "contracts")


@dataclass
class Row:
    status: str
    payload: dict[str, Any] | None
    source_resource: str | None
    source_id: str | None
    previous_status: str | None = None

    @property
    def payload_hash(self) -> str | None:
        return payload_hash(self.payload) if self.payload is not None else None


def unit(n: int) -> dict[str, Any]:
    return {"propertyId": "p-1", "name": f"WE {n:02d}"}


def known_units(count: int) -> dict[tuple[str, str], Row]:
    return {("units", f"u-{n}"): Row("written", unit(n), "units", f"{n}") for n in range(count)}


def desired_units(numbers: range | list[int]) -> list[Desired]:
    return [Desired("units", f"u-{n}", unit(n), "units", f"{n}") for n in numbers]


def actions(plan: Any) -> list[tuple[str, str, str]]:
    return sorted((a.action, a.kind, a.ref_id) for a in plan.actions)


def test_decisions_per_record() -> None:
    known = known_units(4)
    known[("units", "u-2")] = Row("archived", unit(2), "units", "2")
    known[("units", "u-3")] = Row("failed", unit(3), "units", "3", previous_status="written")
    desired = [*desired_units([0, 2, 3, 9]), Desired("units", "u-1", {"propertyId": "p-1", "name": "neu"}, "units", "1")]
    plan = build_plan(desired, known, kinds=KINDS, allow_archive=True)
    assert actions(plan) == [("create", "units", "u-9"), ("restore", "units", "u-2"), ("update", "units", "u-1"),
                             ("update", "units", "u-3")]
    assert plan.unchanged["units"] == 1
    update = next(a for a in plan.actions if a.ref_id == "u-1")
    assert update.diff() == [{"field": "name", "from": "WE 01", "to": "neu"}]


def test_guard_holds_more_than_the_share_and_everything_when_scalara_is_empty() -> None:
    known = known_units(20)
    small = build_plan(desired_units(range(18)), known, kinds=KINDS)  # 2 of 20 = 10%: allowed
    assert [a.action for a in small.actions] == ["archive", "archive"] and not small.guard_trips
    big = build_plan(desired_units(range(17)), known, kinds=KINDS)  # 3 of 20 = 15%
    assert big.actions == [] and [g.kind for g in big.guard_trips] == ["units"] and len(big.held_archives) == 3
    assert big.pending_changes
    empty = build_plan([], known_units(1) | known, kinds=KINDS, empty_kinds=["units"], archive_max_share=1.0)
    assert empty.actions == [] and "no records" in empty.guard_trips[0].reason
    forced = build_plan(desired_units(range(17)), known, kinds=KINDS, allow_archive=True)
    assert len(forced.actions) == 3


def test_a_record_whose_source_failed_to_map_is_left_alone() -> None:
    known = known_units(30)
    plan = build_plan(desired_units(range(29)), known, kinds=KINDS, errored_sources=[("units", "29")])
    assert plan.actions == [] and not plan.guard_trips


def test_dependents_of_an_archived_record_are_archived_even_if_their_source_failed() -> None:
    # unit u-0 was deleted in SCALARA; its ownership still points at it, so the ownership fails to
    # map -- the OWNER contract must not stay active on an archived unit
    known: dict[tuple[str, str], Row] = dict(known_units(30))
    known[("contracts", "own-1")] = Row("written", {"type": "OWNER", "unitId": "u-0", "contactId": "c-1",
                                                     "startDate": "2020-01-01"}, "ownerships", "o-1")
    known[("contracts", "own-2")] = Row("written", {"type": "OWNER", "unitId": "u-5", "contactId": "c-1",
                                                     "startDate": "2020-01-01"}, "ownerships", "o-2")
    plan = build_plan(desired_units(range(1, 30)), known, kinds=KINDS, allow_archive=True,
                      errored_sources=[("ownerships", "o-1"), ("ownerships", "o-2")])
    assert actions(plan) == [("archive", "contracts", "own-1"), ("archive", "units", "u-0")]
    contract = next(a for a in plan.actions if a.ref_id == "own-1")
    assert "refers to units u-0" in contract.reason


def test_the_archive_floor_lets_small_removals_through() -> None:
    known = known_units(9)  # a small tenant: one removal is already 11%
    held = build_plan(desired_units(range(8)), known, kinds=KINDS)
    assert held.actions == [] and held.guard_trips[0].would_archive == 1
    floor = build_plan(desired_units(range(8)), known, kinds=KINDS, archive_floor=1)
    assert actions(floor) == [("archive", "units", "u-8")] and not floor.guard_trips
    more = build_plan(desired_units(range(7)), known, kinds=KINDS, archive_floor=1)  # 2 > floor and 22%
    assert more.actions == [] and more.guard_trips


def test_absent_and_null_are_different_and_every_update_has_a_line() -> None:
    from engine.sync.plan import Action, change_text, field_diff, update_lines

    changes = field_diff({"a": 1, "c": None}, {"a": 1, "b": None})
    assert changes == [{"field": "b", "from": None, "to": None, "fromAbsent": True},
                       {"field": "c", "from": None, "to": None, "toAbsent": True}]
    assert [change_text(c) for c in changes] == ["b: (absent) -> null", "c: null -> (absent)"]
    same = Action("units", "u-1", "update", {"a": 1}, "h2", "units", "1", before={"a": 1}, reason="casavi's copy differs")
    assert update_lines(same) == ["(no field differs from the last payload written; rewritten because: "
                                  "casavi's copy differs)"]
    unknown = Action("units", "u-1", "update", {"a": 1}, "h2", "units", "1", reason="changed")
    assert update_lines(unknown) == ["a: (absent) -> 1"]


def _estate(props: int = 10) -> dict[tuple[str, str], Row]:
    """``props`` properties with two units each, one owner contact per unit and its contract."""
    known: dict[tuple[str, str], Row] = {}
    for p in range(props):
        known[("properties", f"p-{p}")] = Row("written", {"name": f"P {p}"}, "properties", f"p{p}")
        for u in range(2):
            uid, cid = f"u-{p}-{u}", f"c-{p}-{u}"
            known[("units", uid)] = Row("written", {"propertyId": f"p-{p}", "name": uid}, "units", uid)
            known[("contacts", cid)] = Row("written", {"lastName": cid}, "contacts", cid)
            known[("contracts", f"own-{uid}")] = Row("written", {"type": "OWNER", "unitId": uid, "contactId": cid,
                                                                  "startDate": "2020-01-01"}, "ownerships", uid)
    return known


def _desired_except(known: dict[tuple[str, str], Row], gone: set[tuple[str, str]]) -> list[Desired]:
    return [Desired(k, r, dict(row.payload or {}), row.source_resource or "", row.source_id or "")
            for (k, r), row in known.items() if (k, r) not in gone]


def test_a_held_property_holds_its_units_and_their_contracts_and_contacts() -> None:
    """Issue 9, item 2: 2 of 10 properties (20%) trip the guard for properties; the units of p-0
    (2 of 20), their contacts and contracts would pass on their own, but they are tied to it."""
    known = _estate()
    gone = {key for key in known if key[1].startswith(("p-0", "p-1", "u-0-", "c-0-", "own-u-0-"))}
    plan = build_plan(_desired_except(known, gone), known, kinds=KINDS, archive_max_share=0.15)
    assert [a for a in plan.actions if a.action == "archive"] == []
    assert {(a.kind, a.ref_id) for a in plan.held_archives} == gone
    trips = {g.kind: g.reason for g in plan.guard_trips}
    assert "properties" in trips and "more than the allowed" in trips["properties"]
    assert "tied to held records" in trips["units"] and "properties p-" in trips["units"]
    assert "tied to held records" in trips["contracts"]
    unit = next(a for a in plan.held_archives if a.ref_id == "u-0-0")
    assert unit.reason.startswith("held: tied to properties p-0")


def test_held_contracts_keep_their_unit_and_contact() -> None:
    """The guard holds contracts (3 of 20 = 15%); their units and contacts must stay active too."""
    known = _estate()
    gone = {("contracts", "own-u-0-0"), ("contracts", "own-u-0-1"), ("contracts", "own-u-1-0"),
            ("units", "u-0-0"), ("contacts", "c-0-0")}
    plan = build_plan(_desired_except(known, gone), known, kinds=KINDS)
    assert [a for a in plan.actions if a.action == "archive"] == []
    assert {(a.kind, a.ref_id) for a in plan.held_archives} == gone


def test_a_record_still_referred_to_is_never_archived() -> None:
    known = _estate(1)
    desired = _desired_except(known, {("properties", "p-0")})
    plan = build_plan(desired, known, kinds=KINDS, allow_archive=True)
    assert plan.actions == [] and [a.ref_id for a in plan.held_archives] == ["p-0"]
    assert "still referred to by" in plan.guard_trips[0].reason


def test_an_archive_waits_for_the_records_that_referred_to_it() -> None:
    """A unit's archive depends on its contract's archive and on the update that re-points another
    contract elsewhere: if either fails at apply time, the unit stays active this run."""
    from engine.errors import RecordError
    from engine.sync.apply import apply_plan

    known = _estate(2)
    gone = {("units", "u-0-0"), ("contracts", "own-u-0-0")}
    desired = _desired_except(known, gone)
    moved = next(d for d in desired if d.ref_id == "own-u-0-1")
    desired[desired.index(moved)] = Desired("contracts", "own-u-0-1", {**moved.payload, "unitId": "u-1-0"},
                                            moved.source_resource, moved.source_id)
    known[("contracts", "own-u-0-1")] = Row("written", {**moved.payload, "unitId": "u-0-0"}, "ownerships", "u-0-1")
    plan = build_plan(desired, known, kinds=KINDS, allow_archive=True)
    unit_archive = next(a for a in plan.actions if a.ref_id == "u-0-0")
    assert set(unit_archive.depends_on) == {("contracts", "own-u-0-0"), ("contracts", "own-u-0-1")}

    class Writer:
        def __init__(self, failing: str) -> None:
            self.failing, self.calls = failing, []

        def _call(self, name: str, ref: str) -> None:
            self.calls.append((name, ref))
            if ref == self.failing:
                raise RecordError(reason="casavi refused it")

        def put(self, kind: str, ref: str, payload: Any) -> None:
            self._call("put", ref)

        def archive(self, kind: str, ref: str) -> None:
            self._call("archive", ref)

        put_responsibility = delete_responsibility = restore = None  # type: ignore[assignment]

    class Journal:
        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    for failing in ("own-u-0-0", "own-u-0-1", "nothing"):
        writer = Writer(failing)
        result = apply_plan(plan, writer, Journal(), order=KINDS, concurrency=1)
        unit_done = ("archive", "u-0-0") in writer.calls
        assert unit_done == (failing == "nothing"), (failing, result.outcomes)


def test_a_failure_explained_above_is_not_repeated_by_the_records_that_depend_on_it() -> None:
    from engine.sync.report import run_summary

    unit_reason = "unit U1: no building with id 'B9' (lookup 'building' is required)"
    errors = [
        {"kind": "units", "resource": "units", "sourceId": "U1", "reason": unit_reason},
        {"kind": "contracts", "resource": "ownerships", "sourceId": "O1",
         "reason": f"ownership O1 depends on failed unit U1 ({unit_reason})"},
    ]
    report = {"runId": 1, "trigger": "manual", "tenant": "t", "outcome": "partial", "durationS": 0.1,
              "counts": {}, "guard": [], "mapErrors": errors, "writeFailures": []}
    text = "\n".join(run_summary(report))
    assert text.count("no building with id 'B9'") == 1
    assert "contracts (SCALARA ownerships O1): ownership O1 depends on failed unit U1 (above)" in text


def test_a_payload_json_cannot_carry_is_a_per_record_error() -> None:
    """NaN/Infinity from a mapping used to end the run as "internal error (ValueError ...)"."""
    known = known_units(3)
    bad = Desired("units", "u-1", {"propertyId": "p-1", "name": "WE 01", "customFields": {"area": float("nan")}},
                  "units", "1")
    plan = build_plan([*desired_units([0, 2]), bad], known, kinds=KINDS)
    assert plan.actions == [] and len(plan.errors) == 1
    assert plan.errors[0]["targetId"] == "u-1" and "JSON cannot carry" in plan.errors[0]["reason"]


def test_a_refused_record_is_sent_again_when_something_it_references_is_written_in_the_run() -> None:
    """casavi may have refused a unit because of its property (an address it did not have yet): the
    hold lifts when the property is written, and transitively for the unit's contract."""
    from engine.sync.failures import Hold

    prop = {"name": "Lindenstraße 12", "addresses": [{"street": "Lindenstraße 12a"}]}
    u1 = {"propertyId": "p-1", "name": "WE 01", "address": "Lindenstraße 12a"}
    u2 = {"propertyId": "p-2", "name": "WE 02", "address": "Am Markt 1"}
    contract = {"type": "OWNER", "unitId": "u-1", "contactId": "c-1", "startDate": "2020-01-01"}
    known = {("properties", "p-1"): Row("written", {**prop, "addresses": [{"street": "Lindenstraße 12"}]},
                                        "properties", "1"),
             ("units", "u-1"): Row("failed", u1, "units", "1", previous_status="written"),
             ("units", "u-2"): Row("failed", u2, "units", "2", previous_status="written"),
             ("contracts", "k-1"): Row("failed", contract, "ownerships", "1", previous_status="written")}
    desired = [Desired("properties", "p-1", prop, "properties", "1"),
               Desired("units", "u-1", u1, "units", "1", (("properties", "p-1"),)),
               Desired("units", "u-2", u2, "units", "2", (("properties", "p-2"),)),
               Desired("contracts", "k-1", contract, "ownerships", "1", (("units", "u-1"), ("contacts", "c-1")))]
    holds = {key: Hold(payload_hash(payload), "casavi refused it")
             for key, payload in ((("units", "u-1"), u1), (("units", "u-2"), u2), (("contracts", "k-1"), contract))}
    plan = build_plan(desired, known, kinds=KINDS, record_holds=holds)
    assert actions(plan) == [("update", "contracts", "k-1"), ("update", "properties", "p-1"),
                             ("update", "units", "u-1")]
    assert [(a.kind, a.ref_id) for a in plan.held] == [("units", "u-2")]  # its property is not written
    released = next(a for a in plan.actions if a.ref_id == "k-1")
    assert released.reason.startswith("sent again: a record it references is written in this run")
