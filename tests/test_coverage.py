"""Mapping coverage: unknown value-map codes with counts and outcomes, empty-field shares."""

from __future__ import annotations

from typing import Any

import pytest

from engine.compile import MappingSet, compile_mappings
from engine.coverage import compute_coverage, is_empty, render_coverage, unmapped_codes
from engine.interpret import map_records
from engine.validate import load_mapping_set
from tests.conftest import MAPPINGS_DIR

BUILDING = {"id": "b1", "propertyId": "p1", "label": None, "street": "Rosenhof", "houseNumber": "2",
            "postalCode": "80331", "city": "München", "country": "DE"}


def _unit(uid: str, kind: str, mea: Any = None) -> dict[str, Any]:
    return {"id": uid, "propertyId": "p1", "buildingId": "b1", "number": uid.upper(), "label": None, "type": kind,
            "mea": mea}


@pytest.fixture(scope="module")
def mset() -> MappingSet:
    return compile_mappings(load_mapping_set([MAPPINGS_DIR]))


def test_is_empty() -> None:
    assert [is_empty(v) for v in (None, "", [], {}, 0, False, " ", [None])] == [True] * 4 + [False] * 4


def test_unknown_codes_with_counts_and_outcomes(mset: MappingSet) -> None:
    records = {
        "buildings": [BUILDING],
        "units": [_unit("u1", "APARTMENT"), _unit("u2", "GARDEN"), _unit("u3", "GARDEN"), _unit("u4", "ROOF")],
        "contacts": [{"id": "c1", "lastName": "A", "salutation": "DR"}, {"id": "c2", "lastName": "B"},
                     {"id": "c3", "companyName": "C GmbH", "salutation": None}],
        "property-roles": [{"id": "r1", "propertyId": "p1", "contactId": "c1", "role": "CARETAKER",
                            "validFrom": None, "validTo": None},
                           {"id": "r2", "propertyId": "p1", "contactId": "c2", "role": "CONCIERGE",
                            "validFrom": None, "validTo": None}],
    }
    result = map_records(mset, records, only=["units", "contacts", "responsibilities"], assume_references=True)
    cov = compute_coverage(mset, result)
    rows = [(c["mapping"], c["field"], c["code"], c["count"], c["outcome"]) for c in cov["unmappedCodes"]]
    assert rows == [
        ("contacts", "salutation", "DR", 1, "default"),
        ("contacts", "salutation", None, 2, "default"),
        ("responsibilities", "roleName", "CONCIERGE", 1, "error"),
        ("units", "usage", "GARDEN", 2, "error"),
        ("units", "usage", "ROOF", 1, "error"),
    ]
    # r2 failed at roleName, so its showInPortal was never evaluated: only codes really looked up count
    assert [c["code"] for c in unmapped_codes(cov)] == ["DR", "CONCIERGE", "GARDEN", "ROOF"]


def test_a_failed_record_is_not_counted_twice(mset: MappingSet) -> None:
    # a value-map miss that fails the record makes the interpreter re-evaluate the fields to find
    # the failing one; that second evaluation must not count the code again
    result = map_records(mset, {"buildings": [BUILDING], "units": [_unit("u1", "GARDEN")]}, only=["units"],
                         assume_references=True)
    assert sum(result.misses.values()) == 1 and len(result.errors) == 1


def test_empty_field_shares(mset: MappingSet) -> None:
    records = {"buildings": [BUILDING],
               "units": [_unit("u1", "APARTMENT", 100), _unit("u2", "APARTMENT"), _unit("u3", "PARKING"),
                         _unit("u4", "CELLAR", 0)]}
    result = map_records(mset, records, only=["units"], assume_references=True)
    cov = compute_coverage(mset, result)
    units = cov["emptyFields"]["units"]
    assert units["produced"] == 4
    assert units["fields"]["customFields.mea"] == {"empty": 2, "share": 0.5}
    assert units["fields"]["name"] == {"empty": 0, "share": 0.0}
    assert units["fields"]["customFields.etage"]["share"] == 1.0
    assert set(cov["emptyFields"]) == {"units"}
    contracts = compute_coverage(mset, map_records(mset, {"ownerships": [
        {"id": "o1", "unitId": "u1", "ownerContactIds": ["c1"], "validFrom": "2020-01-01", "validTo": None}]},
        only=["contracts"], assume_references=True))["emptyFields"]["contracts"]["fields"]
    assert contracts["contractNumber"] == {"empty": 1, "share": 1.0, "constant": True}


def test_render_lists_codes_then_fields_and_leaves_out_constants(mset: MappingSet) -> None:
    records = {"properties": [{"id": "p1", "name": "Rosenhof 2", "kind": "WEG"}], "buildings": [BUILDING],
               "units": [_unit("u1", "APARTMENT", 100), _unit("u2", "GARDEN")],
               "contacts": [{"id": "c1", "lastName": "A", "salutation": None}],
               "ownerships": [{"id": "o1", "unitId": "u1", "ownerContactIds": ["c1"], "validFrom": "2020-01-01",
                               "validTo": None}]}
    lines = render_coverage(compute_coverage(mset, map_records(mset, records)))
    assert lines[:4] == [
        "value maps: codes without an entry",
        "  contacts.contact salutation: null (empty in SCALARA) x1 (default sent)",
        "  units.unit usage: 'GARDEN' x1 (records failed)",
        "empty fields (share of produced records)",
    ]
    assert "  units: customFields.etage empty in 100% (1 of 1)" in lines
    assert not any("contractNumber" in line for line in lines)
    clean = render_coverage({"unmappedCodes": [], "emptyFields": {}})
    assert clean == ["value maps: every code seen has an entry"]
    limited = render_coverage(compute_coverage(mset, map_records(mset, records)), min_share=0.99, limit=2)
    assert limited[-1].startswith("  ... and ") and len([x for x in limited if "empty in 1" in x]) == 2


def test_coverage_of_a_large_run_is_cheap(mset: MappingSet) -> None:
    import time

    units = [_unit(f"u{i}", ("APARTMENT", "PARKING", "GARDEN")[i % 3], i if i % 2 else None) for i in range(20000)]
    result = map_records(mset, {"buildings": [BUILDING], "units": units}, only=["units"], assume_references=True)
    start = time.process_time()
    cov = compute_coverage(mset, result)
    assert time.process_time() - start < 1.0
    assert cov["unmappedCodes"][0]["count"] == 6666
    assert cov["emptyFields"]["units"]["fields"]["customFields.mea"]["empty"] == 6667
