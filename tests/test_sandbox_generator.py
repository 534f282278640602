"""The sandbox's SCALARA data generator: deterministic, realistic, every edge case at every scale."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable

import pytest

from engine.sandbox.generator import EDGE_CASES, FIELDS, RESOURCES, Dataset, Record, generate
from engine.sandbox.scalara import validate_fields

TODAY = dt.date(2026, 11, 27)
UMLAUTS = re.compile("[äöüÄÖÜß]")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UNIT_NUMBER = re.compile(r"^(WE|GE|TG|KE|SE) \d{2}$")
FLOORS = {None, "UG", "KG", "EG", "DG", *(f"{n}. OG" for n in range(1, 8))}

# Which fields reference which resource (the engine's catalog says the same).
REFERENCES: dict[str, dict[str, str]] = {
    "properties": {"relatedWegPropertyId": "properties"},
    "buildings": {"propertyId": "properties"},
    "units": {"propertyId": "properties", "buildingId": "buildings"},
    "ownerships": {"unitId": "units", "ownerContactIds": "contacts"},
    "usages": {"propertyId": "properties", "unitIds": "units", "tenantContactIds": "contacts"},
    "property-roles": {"propertyId": "properties", "contactId": "contacts"},
}


@pytest.fixture(scope="module", params=[1, 7], ids=["scale1", "scale7"])
def data(request: pytest.FixtureRequest) -> Dataset:
    return generate(request.param, seed=11, today=TODAY)


@pytest.fixture(scope="module")
def big() -> tuple[Dataset, float]:
    started = time.process_time()         # CPU time: a busy shared machine cannot make it flaky
    dataset = generate(1000, seed=5, today=TODAY)
    return dataset, time.process_time() - started


def refs(value: object) -> list[str]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [str(value)]


def links(data: Dataset) -> dict[str, set[tuple[str, str]]]:
    """contact id -> {(link kind, property id)}."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    units = data["units"]
    for own in data["ownerships"].values():
        for contact in own["ownerContactIds"]:
            found[contact].add(("owner", units[own["unitId"]]["propertyId"]))
    for usage in data["usages"].values():
        for contact in usage["tenantContactIds"]:
            found[contact].add(("tenant", usage["propertyId"]))
    for role in data["property-roles"].values():
        found[role["contactId"]].add((role["role"], role["propertyId"]))
    return found


# -- determinism and shape ---------------------------------------------------------------------


def test_same_seed_same_data_different_seed_different_data() -> None:
    def dump(d: Dataset) -> str:
        return json.dumps([d.records, d.tombstones, d.edge_cases], sort_keys=True)

    assert dump(generate(7, seed=3, today=TODAY)) == dump(generate(7, seed=3, today=TODAY))
    assert dump(generate(7, seed=3, today=TODAY)) != dump(generate(7, seed=4, today=TODAY))


def test_one_property_still_yields_the_weg_and_its_sev_twin() -> None:
    data = generate(1, seed=1, today=TODAY)
    assert sorted(p["kind"] for p in data["properties"].values()) == ["SEV", "WEG"]
    assert len(generate(7, seed=1, today=TODAY)["properties"]) == 7


def test_zero_properties_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate(0, seed=1, today=TODAY)


def test_every_record_has_exactly_the_fields_of_api_md_with_valid_types(data: Dataset) -> None:
    assert list(data) == list(RESOURCES)
    for resource, records in data.items():
        for record_id, record in records.items():
            assert record["id"] == record_id
            assert set(record) == set(FIELDS[resource])
            assert UUID4.match(record_id)
            assert STAMP.match(record["updatedAt"])
            assert record["updatedAt"] < TODAY.isoformat()
            validate_fields(resource, {k: v for k, v in record.items() if k not in ("id", "updatedAt")})


def test_units_look_german(data: Dataset) -> None:
    for unit in data["units"].values():
        assert UNIT_NUMBER.match(unit["number"]), unit["number"]
        assert unit["floor"] in FLOORS
        if unit["type"] == "APARTMENT":
            assert unit["areaSqm"] is not None and 20 < unit["areaSqm"] < 200
    kinds = {p["kind"] for p in data["properties"].values()}
    assert {"WEG", "SEV"} <= kinds
    if len(data["properties"]) >= 4:
        assert kinds == {"WEG", "MV", "SEV"}
    assert all(re.match(r"^\d{5}$", b["postalCode"]) for b in data["buildings"].values())


def test_weg_mea_sums_to_mea_total_and_other_kinds_have_none(data: Dataset) -> None:
    by_property: dict[str, list[Record]] = defaultdict(list)
    for unit in data["units"].values():
        by_property[unit["propertyId"]].append(unit)
    for prop in data["properties"].values():
        units = by_property[prop["id"]]
        if prop["kind"] == "WEG":
            assert sum(u["mea"] for u in units) == prop["meaTotal"]
            assert all(u["ownershipKind"] in ("WOHNEIGENTUM", "TEILEIGENTUM") for u in units)
        else:
            assert prop["meaTotal"] is None
            assert all(u["mea"] is None and u["ownershipKind"] is None for u in units)
        assert (prop["relatedWegPropertyId"] is None) or prop["kind"] == "SEV"


# -- integrity -----------------------------------------------------------------------------------


def dangling(data: Dataset) -> list[tuple[str, str, str]]:
    missing = []
    for resource, fields in REFERENCES.items():
        for record in data[resource].values():
            for name, target in fields.items():
                missing += [(resource, record["id"], ref) for ref in refs(record[name])
                            if ref not in data[target]]
    return missing


def test_references_resolve_except_the_unit_of_the_deleted_building(data: Dataset) -> None:
    assert dangling(data) == [("units", data.edge_cases["dangling_building"][0],
                               data.edge_cases["deleted_building"][0])]


def test_ownerships_of_one_unit_never_overlap(data: Dataset) -> None:
    by_unit: dict[str, list[Record]] = defaultdict(list)
    for own in data["ownerships"].values():
        assert own["ownerContactIds"], own
        assert own["validTo"] is None or own["validTo"] >= own["validFrom"]
        by_unit[own["unitId"]].append(own)
    for owns in by_unit.values():
        owns.sort(key=lambda o: o["validFrom"])
        for before, after in itertools.pairwise(owns):
            assert before["validTo"] is not None and before["validTo"] < after["validFrom"]
    assert set(by_unit) == set(data["units"]), "every unit has an owner"


def test_usages_are_consistent(data: Dataset) -> None:
    for usage in data["usages"].values():
        assert usage["unitIds"]
        assert bool(usage["tenantContactIds"]) == (usage["type"] == "RENTAL")
        assert usage["endDate"] is None or usage["endDate"] >= usage["startDate"]
        units = [data["units"][u] for u in usage["unitIds"]]
        assert all(u["propertyId"] == usage["propertyId"] for u in units)
        assert usage["commercial"] == any(u["type"] == "COMMERCIAL" for u in units)


# -- the planted edge cases, one checker each ----------------------------------------------------


def _future_change(d: Dataset, ids: list[str]) -> bool:
    unit, old, new = ids[0], d["ownerships"][ids[1]], d["ownerships"][ids[2]]
    assert old["unitId"] == new["unitId"] == unit
    assert old["validTo"] >= TODAY.isoformat() and new["validFrom"] > TODAY.isoformat()
    assert new["validTo"] is None and len(old["ownerContactIds"]) == 3
    return True


def _lease(d: Dataset, ids: list[str]) -> bool:
    usage = d["usages"][ids[0]]
    assert usage["type"] == "RENTAL" and len(usage["tenantContactIds"]) == 2
    assert sorted(d["units"][u]["type"] for u in usage["unitIds"]) == ["APARTMENT", "PARKING"]
    return True


def _multi_role(d: Dataset, ids: list[str]) -> bool:
    kinds = links(d)[ids[0]]
    owner = {p for k, p in kinds if k == "owner"}
    tenant = {p for k, p in kinds if k == "tenant"}
    board = {p for k, p in kinds if k.startswith("ADVISORY_BOARD")}
    assert owner and tenant and board
    if len(d["properties"]) >= 3:      # three different properties when there are three
        assert any(len({o, t, b}) == 3 for o in owner for t in tenant for b in board)
    return True


def _twin(d: Dataset, ids: list[str]) -> bool:
    weg_unit, sev_unit = (d["units"][i] for i in ids)
    weg, sev = d["properties"][weg_unit["propertyId"]], d["properties"][sev_unit["propertyId"]]
    assert weg["kind"] == "WEG" and sev["kind"] == "SEV" and sev["relatedWegPropertyId"] == weg["id"]
    place = ("street", "houseNumber", "postalCode", "city")
    a, b = d["buildings"][weg_unit["buildingId"]], d["buildings"][sev_unit["buildingId"]]
    assert [a[k] for k in place] == [b[k] for k in place] and weg_unit["number"] == sev_unit["number"]
    return True


def _dangling(d: Dataset, ids: list[str]) -> bool:
    building = d["units"][ids[0]]["buildingId"]
    assert building not in d["buildings"] and building in d.tombstones["buildings"]
    return True


def _roles(d: Dataset, ids: list[str]) -> bool:
    roles = [d["property-roles"][i] for i in ids]
    assert {r["role"] for r in roles} == {"ADVISORY_BOARD_CHAIR", "ADVISORY_BOARD_MEMBER", "CARETAKER",
                                          "SERVICE_PROVIDER"}
    assert all(r["validTo"] is None for r in roles)
    return True


CHECKS: dict[str, Callable[[Dataset, list[str]], bool]] = {
    "co_owners": lambda d, ids: all(len(d["ownerships"][i]["ownerContactIds"]) >= 2 for i in ids),
    "future_owner_change": _future_change,
    "ended_tenancy": lambda d, ids: d["usages"][ids[0]]["endDate"] < TODAY.isoformat(),
    "lease_flat_and_parking": _lease,
    "vacancy": lambda d, ids: d["usages"][ids[0]]["type"] == "VACANCY",
    "self_use": lambda d, ids: d["usages"][ids[0]]["type"] == "SELF_USE",
    "multi_role_contact": _multi_role,
    "no_email": lambda d, ids: d["contacts"][ids[0]]["email"] is None,
    "company": lambda d, ids: all(d["contacts"][i]["kind"] == "COMPANY" and d["contacts"][i]["companyName"]
                                  for i in ids),
    "umlauts": lambda d, ids: all(UMLAUTS.search(d["contacts"][i]["lastName"] + d["contacts"][i]["firstName"])
                                  for i in ids),
    "mehrhausanlage": lambda d, ids: sum(b["propertyId"] == ids[0] for b in d["buildings"].values()) >= 2,
    "weg_sev_twin": _twin,
    "unlinked_contact": lambda d, ids: ids[0] in d["contacts"] and ids[0] not in links(d),
    "dangling_building": _dangling,
    "deleted_building": lambda d, ids: ids[0] in d.tombstones["buildings"],
    "roles_all_kinds": _roles,
    "service_provider": lambda d, ids: d["property-roles"][ids[0]]["serviceType"] == "Aufzugswartung",
    "ended_role": lambda d, ids: d["property-roles"][ids[0]]["validTo"] < TODAY.isoformat(),
}


def test_every_edge_case_has_a_checker() -> None:
    assert set(CHECKS) == set(EDGE_CASES)


@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_case_is_present(data: Dataset, case: str) -> None:
    ids = data.edge_cases[case]
    assert ids, f"{case} missing"
    assert CHECKS[case](data, ids)


def test_messy_data_is_also_spread_over_random_properties() -> None:
    data = generate(50, seed=2, today=TODAY)
    contacts = data["contacts"].values()
    assert sum(c["email"] is None for c in contacts) > 0.15 * len(contacts)
    assert sum(c["kind"] == "COMPANY" for c in contacts) > 20
    assert any("ß" in (c["lastName"] or "") for c in contacts)
    assert sum(len(o["ownerContactIds"]) >= 2 for o in data["ownerships"].values()) > 100
    assert sum(p["relatedWegPropertyId"] is not None for p in data["properties"].values()) >= 2
    assert any(c["title"] == "Dr." for c in contacts)


# -- size ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_averages_per_property_within_20_percent(seed: int) -> None:
    counts = generate(50, seed=seed, today=TODAY).counts()
    per = {name: n / counts["properties"] for name, n in counts.items()}
    assert 20 <= per["units"] <= 30
    assert 32 <= per["contacts"] <= 48
    assert 28 <= (per["ownerships"] + per["usages"]) <= 42


def test_unit_counts_range_from_small_wegs_to_big_ones() -> None:
    data = generate(50, seed=9, today=TODAY)
    sizes: dict[str, int] = defaultdict(int)
    for unit in data["units"].values():
        sizes[unit["propertyId"]] += 1
    normal = [sizes[p["id"]] for p in data["properties"].values() if p["kind"] != "SEV"]
    assert min(normal) <= 6 and max(normal) >= 70


@pytest.mark.slow
def test_a_thousand_properties_generate_fast_and_stay_consistent(big: tuple[Dataset, float]) -> None:
    data, cpu_seconds = big
    assert cpu_seconds < 15              # ~1.5 s here; 2,000 properties take ~3.5 s
    assert len(data["properties"]) == 1000
    assert 20_000 <= len(data["units"]) <= 30_000
    assert len(dangling(data)) == 1
    for case in EDGE_CASES:
        assert CHECKS[case](data, data.edge_cases[case]), case
