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
