"""Pass 2 of chunked runs (engine.sync.groups): the records go out property group by property
group. Each test syncs one SCALARA into "whole" (``chunk_records=0``) and "chunk" (tiny chunks and
groups) and asserts they end alike (tests.test_chunked_edges.both: casavi, the store, the report),
on what only the groups can get wrong: records reached from two properties, records no property
reaches, mapping sets without one root, the write order, address moves and the guard.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.incremental_rig import Rig
from tests.test_chunked_edges import both, data, delete_property, lookups_across, mapping_set


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, properties=3, seed=6)
    yield r
    r.close()


def by_size(rig: Rig) -> list[str]:
    """Property ids, fewest units first (the order the groups take them)."""
    units = data(rig)["units"].values()
    return sorted(data(rig)["properties"], key=lambda p: (sum(u["propertyId"] == p for u in units), p))


def units_of(rig: Rig, pid: str) -> list[str]:
    return sorted(u for u, rec in data(rig)["units"].items() if rec["propertyId"] == pid)


def rental_of(rig: Rig, pid: str) -> str:
    return sorted(k for k, u in data(rig)["usages"].items() if u["propertyId"] == pid and u["type"] == "RENTAL"
                  and u["tenantContactIds"])[0]


# -- records reached from two properties -----------------------------------------------------------


@pytest.mark.slow
def test_a_rental_over_units_of_two_properties_is_written_after_both_units(rig: Rig) -> None:
    """A usage of the smallest property that also rents a unit of the biggest: its contract for
    that unit goes out with the first group, before the unit's own group."""
    small, big = by_size(rig)[0], by_size(rig)[-1]
    usage = rental_of(rig, small)
    rig.scalara.update_record("usages", usage, {"unitIds": [*data(rig)["usages"][usage]["unitIds"],
                                                            units_of(rig, big)[-1]]})
    whole, _ = both(rig)
    assert not whole.report["writeFailures"]
    rig.advance(1)
    rig.scalara.update_record("usages", usage, {"endDate": "2031-01-31"})
    both(rig, full=True)


@pytest.mark.slow
def test_a_contact_of_several_properties_and_their_responsibilities(rig: Rig) -> None:
    """One contact rents in the smallest property, owns in the biggest and holds a role in every
    property: written once, before the first record referring to it."""
    props = by_size(rig)
    contact = data(rig)["usages"][rental_of(rig, props[-1])]["tenantContactIds"][0]
    usage = rental_of(rig, props[0])
    rig.scalara.update_record("usages", usage, {"tenantContactIds": [contact]})
    owner = sorted(k for k, o in data(rig)["ownerships"].items()
                   if data(rig)["units"][o["unitId"]]["propertyId"] == props[1])[0]
    rig.scalara.update_record("ownerships", owner, {"ownerContactIds": [contact]})
    role = next(iter(data(rig)["property-roles"].values()))
    for pid in props:
        rig.scalara.add_record("property-roles", {**{k: v for k, v in role.items() if k not in ("id", "updatedAt")},
                                                  "propertyId": pid, "contactId": contact})
    whole, _ = both(rig)
    assert not whole.report["writeFailures"]
    rig.advance(1)
    rig.scalara.update_record("contacts", contact, {"lastName": "Neumann"})
    both(rig, full=True)


# -- records no property reaches --------------------------------------------------------------------


@pytest.mark.slow
def test_a_unit_whose_property_is_missing_and_its_contracts_are_leftovers(rig: Rig) -> None:
    """A unit refers to a property SCALARA does not have (it fails to map), another to a property
    that fails to map; their ownerships and rentals fail with them, in both runs alike."""
    props = by_size(rig)
    unit = units_of(rig, props[1])[0]
    rig.scalara.update_record("units", unit, {"propertyId": str(uuid.UUID(int=7))})
    whole, _ = both(rig)
    assert whole.report["mapErrors"]
    rig.advance(1)
    rig.scalara.update_record("units", unit, {"propertyId": props[1]})
    both(rig, full=True)


@pytest.mark.slow
def test_a_property_that_fails_to_map_leaves_its_records_to_the_leftovers(rig: Rig) -> None:
    """The property's building is gone (its required lookup fails): its units and contracts fail
    with it, reached from no written property."""
    pid = by_size(rig)[1]
    for bid, b in list(data(rig)["buildings"].items()):
        if b["propertyId"] == pid:
            rig.scalara.delete_record("buildings", bid)
    whole, _ = both(rig)
    assert whole.report["mapErrors"]


def text_refs(specs: dict[str, Any]) -> None:
    """Units name their property, contracts their unit, as text: no ``ref``, no ``r`` rows."""
    specs["units"]["rules"][0]["fields"]["propertyId"] = "ref_id('p', propertyId)"
    for rule in specs["contracts"]["rules"]:
        rule["fields"]["unitId"] = f"ref_id('u', {rule['fields']['unitId']['from']})"


def unprotected_contacts(specs: dict[str, Any]) -> None:
    """Every contact is sent (no ``only_if_referenced_by``): contacts are reached from no property
    (leftovers); responsibilities name their property as text (reached from none either)."""
    del specs["contacts"]["only_if_referenced_by"]
    specs["responsibilities"]["rules"][0]["fields"]["propertyId"] = "ref_id('p', propertyId)"


@pytest.mark.slow
@pytest.mark.parametrize("change", [text_refs, unprotected_contacts, lookups_across])
def test_consultant_mapping_sets(rig: Rig, change: Any) -> None:
    from engine.sync.groups import root_mapping
    from engine.sync.runner import kind_order

    """A rental over units of two properties in consultant sets: refs written as text (no
    ``r`` rows: every record but the properties is a leftover), lookups across properties and
    two rule sources for units. (Two mappings targeting properties do not compile.)"""
    rig.mset = mapping_set(change)
    assert root_mapping(rig.mset, kind_order(rig.mset)[0]) == "properties"
    small, big = by_size(rig)[0], by_size(rig)[-1]
    usage = rental_of(rig, small)
    rig.scalara.update_record("usages", usage, {"unitIds": [*data(rig)["usages"][usage]["unitIds"],
                                                            units_of(rig, big)[-1]]})
    whole, _ = both(rig)
    assert whole.report["counts"]["properties"]["create"] == 3
    rig.advance(1)
    delete_property(rig, small)
    both(rig, full=True, allow_archive=True)


# -- the write order ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_properties_complete_one_by_one_smallest_first(tmp_path: Path) -> None:
    """The groups write property after property, smallest first, as a whole run does: the same
    properties complete in the same order with the same records, each at its own time. (Their
    first completion comes later in the run than in a whole run: every chunk is mapped before
    the first write -- about half the run with tiny chunks.)"""
    rig = Rig(tmp_path, properties=6, seed=3)
    whole, chunk = both(rig, chunk_records=8)
    done = [chunk.report["properties"]["completed"], whole.report["properties"]["completed"]]
    assert [[(p["id"], p["records"]) for p in got] for got in done] == [[(p["id"], p["records"]) for p in done[1]]] * 2
    assert len(done[0]) == 6 and all(a["afterS"] < b["afterS"] for a, b in zip(done[0], done[0][1:], strict=False))
    assert [p["records"] for p in done[0]] == sorted(p["records"] for p in done[0])
    rig.close()


# -- crashes, address moves, the guard ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("writes", [20, 45])
def test_a_crash_among_the_groups_then_a_rerun(rig: Rig, writes: int) -> None:
    from engine.connectors.casavi import CasaviClient
    from tests.incremental_rig import Crash, app_transport
    from tests.test_chunked_edges import DiesAfter

    small, big = by_size(rig)[0], by_size(rig)[-1]
    usage = rental_of(rig, small)
    rig.scalara.update_record("usages", usage, {"unitIds": [*data(rig)["usages"][usage]["unitIds"],
                                                            units_of(rig, big)[-1]]})
    s = rig.side("chunk")
    with pytest.raises(Crash):
        rig.run("chunk", chunk_records=4,
                writer=DiesAfter(CasaviClient(rig.config, s.key, s.secret, transport=app_transport(s.casavi)), writes))
    both(rig, report=False)


@pytest.mark.slow
def test_a_street_corrected_in_a_chunked_full_read(rig: Rig) -> None:
    both(rig)
    pid = by_size(rig)[-1]
    bid = sorted(b for b, rec in data(rig)["buildings"].items() if rec["propertyId"] == pid)[0]
    rig.advance(1)
    rig.scalara.update_record("buildings", bid, {"street": "Korrigierte Straße"})
    whole, _ = both(rig, full=True)
    assert whole.report["counts"]["units"]["update"] and not whole.report["writeFailures"]


@pytest.mark.slow
def test_whole_properties_deleted_trip_the_guard_alike(rig: Rig) -> None:
    both(rig)
    rig.advance(1)
    for pid in by_size(rig)[1:]:
        delete_property(rig, pid)
    whole, _ = both(rig, full=True)
    assert whole.report["guard"]
    both(rig, full=True, allow_archive=True)


@pytest.mark.slow
def test_a_stop_between_groups_while_a_rental_waits_for_its_later_unit(rig: Rig) -> None:
    """Stopped after the first group (the rental of two properties waits): the rerun writes it."""
    import sys

    from engine.sync.chunked import ChunkedRun

    small, big = by_size(rig)[0], by_size(rig)[-1]
    usage = rental_of(rig, small)
    unit = units_of(rig, big)[-1]
    rig.scalara.update_record("usages", usage, {"unitIds": [*data(rig)["usages"][usage]["unitIds"], unit]})
    # a rental over the unit of a property SCALARA does not have and a unit of a real one
    orphan = units_of(rig, by_size(rig)[1])[0]
    rig.scalara.update_record("units", orphan, {"propertyId": str(uuid.UUID(int=9))})
    other = rental_of(rig, by_size(rig)[1])
    rig.scalara.update_record("usages", other, {"unitIds": [*data(rig)["usages"][other]["unitIds"], orphan]})
    chunks = rig.run("probe", chunk_records=4).report["extraction"]["targeted"]["chunks"]
    asked = [0]

    def stop() -> bool:
        if sys._getframe(1).f_code is not ChunkedRun.run.__code__:
            return False
        asked[0] += 1
        return asked[0] > chunks + 1

    from tests.test_chunked import run
    stopped = run(rig, "chunk", chunk_records=4, should_stop=stop)
    assert stopped.outcome == "stopped"
    assert [c for c in rig.casavi_state("chunk")["contracts"] if c["unitId"] == f"u-{unit}"] == []
    whole, _ = both(rig, report=False)
    assert whole.report["mapErrors"] and not whole.report["writeFailures"]
    assert [c for c in rig.casavi_state("chunk")["contracts"] if c["unitId"] == f"u-{unit}"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="open: the rental waits for the later property's group, so the smallest "
                   "property completes after it; pulling the unit in instead broke duplicate reference ids")
def test_a_rental_over_two_properties_keeps_the_smallest_property_first(rig: Rig) -> None:
    """A whole run writes the later property's unit ahead, within the smallest property's group."""
    small, big = by_size(rig)[0], by_size(rig)[-1]
    usage = rental_of(rig, small)
    rig.scalara.update_record("usages", usage, {"unitIds": [*data(rig)["usages"][usage]["unitIds"],
                                                            units_of(rig, big)[-1]]})
    whole, chunk = both(rig)
    assert [p["id"] for p in chunk.report["properties"]["completed"]] == [
        p["id"] for p in whole.report["properties"]["completed"]]
