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
from tests.test_chunked_edges import both, data, delete_property, mapping_set


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
    whole, chunk = both(rig)
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
    whole, chunk = both(rig)
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
