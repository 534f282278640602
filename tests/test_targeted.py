"""Targeted days: an incremental run maps only the records a change touches (engine.sync.targeted),
and ends exactly where mapping everything ends (casavi, record states, dependency rows).

Each test syncs two sides from one SCALARA: "inc" reads incrementally (targeted), "full" reads
and maps everything; after the change both must agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.sync import targeted
from tests.incremental_rig import Crash, DyingWriter, Rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, properties=2, seed=5)
    r.run("inc")
    r.run("full")
    r.run("inc")  # settled now (the first run may hold planted bad records)
    yield r
    r.close()


def data(rig: Rig) -> Any:
    return rig.scalara.dataset()


def day(rig: Rig) -> Any:
    """Run both sides; assert they agree; the incremental side's outcome."""
    inc = rig.run("inc")
    full = rig.run("full", full=True)
    assert inc.outcome == full.outcome
    assert inc.report["counts"] == full.report["counts"]  # records outside the closure count as unchanged
    assert rig.casavi_state("inc") == rig.casavi_state("full")
    a, b = rig.store_state("inc"), rig.store_state("full")
    for part in ("records", "sources", "deps", "until"):
        assert a[part] == b[part], part
    return inc


def how(out: Any) -> dict[str, Any]:
    return dict(out.report["extraction"].get("targeted") or {})


def mapped_ids(out: Any, kind: str) -> set[str]:
    return {o.source_id for o in out.prepared.mapped.outputs.get(kind, {}).values()}


def test_a_changed_contact_maps_the_contact_and_no_unrelated_record(rig: Rig) -> None:
    contact = next(c for c, rec in sorted(data(rig)["contacts"].items())
                   if any(c in (o.get("ownerContactIds") or []) for o in data(rig)["ownerships"].values()))
    rig.advance(1)
    rig.scalara.update_record("contacts", contact, {"lastName": "Gezielt"})
    out = day(rig)
    assert how(out)["mode"] == "targeted"
    total = sum(len(v) for v in data(rig).values())
    assert how(out)["closure"] < total / 4
    assert mapped_ids(out, "contacts") == {contact}
    assert not out.prepared.mapped.outputs.get("units")  # units do not read contacts
    assert [a.kind for a in out.prepared.plan.actions] == ["contacts"]
    assert rig.last_stats["casavi"]["writes"] == 1
    from engine.sync.report import run_summary

    assert f"  mapped only the {how(out)['closure']} SCALARA record(s) the changes touch" in run_summary(out.report)


def test_a_changed_building_re_maps_the_units_and_the_property_that_look_it_up(rig: Rig) -> None:
    building = sorted(data(rig)["buildings"])[0]
    rec = data(rig)["buildings"][building]
    rig.advance(1)
    rig.scalara.update_record("buildings", building, {"street": "Zielweg", "houseNumber": "9"})
    out = day(rig)
    assert how(out)["mode"] == "targeted"
    units = {u for u, r in data(rig)["units"].items() if r["buildingId"] == building}
    assert units and mapped_ids(out, "units") >= units
    assert rec["propertyId"] in mapped_ids(out, "properties")  # properties look buildings up by propertyId


def test_a_new_building_fixes_the_unit_that_missed_it(rig: Rig) -> None:
    unit = sorted(data(rig)["units"])[0]
    rig.advance(1)
    new_building = "0b0b0b0b-0000-4000-8000-00000000b404"
    rig.scalara.update_record("units", unit, {"buildingId": new_building})
    first = day(rig)
    assert any("no building" in e["reason"] for e in first.report["mapErrors"])
    rig.advance(1)
    prop = data(rig)["units"][unit]["propertyId"]
    rig.scalara.add_record("buildings", {"id": new_building, "propertyId": prop, "street": "Neubau", "houseNumber": "1",
                                         "postalCode": "20095", "city": "Hamburg", "country": "DE"})
    out = day(rig)
    assert how(out)["mode"] == "targeted"
    assert unit in mapped_ids(out, "units")
    assert not any(e.get("sourceId") == unit for e in out.report["mapErrors"])


def test_data_protection_follows_new_and_ended_ownerships(rig: Rig) -> None:
    rig.advance(1)
    contact = str(rig.scalara.add_record("contacts", {"kind": "PERSON", "salutation": "HERR", "firstName": "Neu",
                                                      "lastName": "Eigentümer"})["id"])
    out = day(rig)
    assert how(out)["mode"] == "targeted" and not out.prepared.plan.actions  # referenced by nothing: kept out
    rig.advance(1)
    unit = sorted(data(rig)["units"])[1]
    rig.scalara.change_owner(unit, [contact], rig.clock.today().isoformat())
    out = day(rig)
    assert how(out)["mode"] == "targeted"
    assert ("contacts", contact) in {(a.kind, a.source_id) for a in out.prepared.plan.actions}


def test_a_role_that_ends_is_re_mapped_on_the_day_it_ends_without_a_change(rig: Rig) -> None:
    role = sorted(data(rig)["property-roles"])[0]
    rig.advance(1)
    rig.scalara.update_record("property-roles", role, {"validFrom": None,
                                                       "validTo": rig.clock.today().isoformat()})
    day(rig)
    rig.advance(1)  # nothing changes in SCALARA; the role is over
    out = day(rig)
    assert how(out)["mode"] == "targeted"
    assert any(a.kind == "responsibilities" for a in out.prepared.plan.actions + out.prepared.plan.held_archives)


def test_a_deleted_unit_takes_its_contracts_along(rig: Rig) -> None:
    unit = next(u for u in sorted(data(rig)["units"])
                if any(o.get("unitId") == u for o in data(rig)["ownerships"].values()))
    rig.advance(1)
    rig.scalara.delete_record("units", unit)
    out = day(rig)
    assert how(out)["mode"] == "targeted"
    assert any("unit" in e["reason"] for e in out.report["mapErrors"])  # its contracts now fail


def test_when_the_closure_cannot_be_computed_the_whole_tenant_is_mapped(rig: Rig,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targeted, "MAX_ROUNDS", 0)
    rig.advance(1)
    rig.scalara.update_record("contacts", sorted(data(rig)["contacts"])[0], {"city": "Kiel"})
    out = day(rig)
    assert how(out)["mode"] == "whole" and "rounds" in how(out)["reason"]


def test_a_crash_after_the_rows_were_stored_makes_the_next_day_map_the_whole_tenant(rig: Rig) -> None:
    rig.advance(1)
    rig.scalara.update_record("contacts", sorted(data(rig)["contacts"])[0], {"lastName": "Absturz"})
    with pytest.raises(Crash):
        rig.run("inc", writer=DyingWriter())
    out = day(rig)
    assert how(out)["mode"] == "whole" and "did not finish" in how(out)["reason"]
    rig.advance(1)
    rig.scalara.update_record("contacts", sorted(data(rig)["contacts"])[1], {"lastName": "Wieder"})
    assert how(day(rig))["mode"] == "targeted"


def test_lookup_values_compare_as_python_dictionaries_do() -> None:
    assert targeted.canon(1) == targeted.canon(1.0) == targeted.canon(True)
    assert targeted.canon("1") != targeted.canon(1)
    assert targeted.canon(1.5) != targeted.canon(1)
    long_l = targeted.encode(("l", "buildings", "name", "x" * 500))[0]
    long_k = targeted.match_rows("buildings", {"name": "x" * 500}, ["name"])[0][0]
    assert len(long_l) < 250 and long_l[1:] == long_k[1:]


def test_mapping_with_a_scope_gives_what_the_generated_loops_give() -> None:
    """The scope takes the interpreter's generic paths (they note what each record reads): the
    outputs, errors, misses and stats must be those of the generated loops, planted bad records
    included."""
    import datetime as dt

    from engine.compile import compile_mappings
    from engine.interpret import map_records
    from engine.mapscope import Scope
    from engine.sandbox.generator import generate
    from engine.validate import load_mapping_set
    from tests.conftest import MAPPINGS_DIR

    mset = compile_mappings(load_mapping_set([MAPPINGS_DIR]))
    data = generate(3, 8, today=dt.date(2026, 12, 2))
    records = {res: list(rows.values()) for res, rows in data.records.items()}
    plain = map_records(mset, records, run_date=dt.date(2026, 12, 2))
    scope = Scope()
    scoped = map_records(mset, records, run_date=dt.date(2026, 12, 2), scope=scope)
    assert plain.outputs == scoped.outputs
    assert [e.as_dict() for e in plain.errors] == [e.as_dict() for e in scoped.errors]
    assert plain.misses == scoped.misses
    assert {k: v.as_dict() for k, v in plain.stats.items()} == {k: v.as_dict() for k, v in scoped.stats.items()}
    assert plain.errors  # the generator plants bad records: the slow paths' reasons are compared too
    unit = next(u for u in records["units"] if isinstance(u, dict) and u.get("buildingId"))
    assert ("l", "buildings", "id", unit["buildingId"]) in scope.deps[("units", str(unit["id"]))]
