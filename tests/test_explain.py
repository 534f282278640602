"""``casavi-sync explain``: the trace of one record, offline and live, and the planner's decision.

The strongest check is differential: for every record of every golden interpreter case, the
field values the tracer writes down must equal the payload the real run produced.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

import engine.cli.explain_cmd  # noqa: F401  (registers the command until engine/cli/__init__ imports it)
from engine.cli import main
from engine.compile import MappingSet, compile_mappings
from engine.errors import RecordError
from engine.explain import explain_record, render_text
from engine.interpret import map_records
from engine.loader import to_plain
from engine.state.models import RecordState
from engine.sync.plan import payload_hash
from engine.validate import load_mapping_set
from tests.conftest import MAPPINGS_DIR, RUN_DATE, World, make_world

DAY = dt.date(2024, 6, 1)
INTERPRET_CASES = sorted((Path(__file__).parent / "interpret_cases").glob("*.yaml"))

RECORDS: dict[str, list[dict[str, Any]]] = {
    "properties": [{"id": "p1", "number": "100", "name": "Lindenstraße 12", "kind": "WEG", "meaTotal": 1000,
                    "managedFrom": "2020-01-01", "managedUntil": None}],
    "buildings": [{"id": "b1", "propertyId": "p1", "label": None, "street": "Lindenstraße", "houseNumber": "12",
                   "postalCode": "20095", "city": "Hamburg", "country": "DE"}],
    "units": [
        {"id": "u1", "propertyId": "p1", "buildingId": "b1", "number": "WE 01", "label": None, "type": "APARTMENT",
         "mea": 100, "floor": "EG"},
        {"id": "u2", "propertyId": "p1", "buildingId": "b404", "number": "WE 02", "label": None,
         "type": "APARTMENT"},
        {"id": "u3", "propertyId": "p1", "buildingId": "b1", "number": "WE 03", "label": None, "type": "GARDEN"},
        {"id": "u9", "deleted": True, "deletedAt": "2024-05-01T00:00:00Z"},
    ],
    "contacts": [
        {"id": "c1", "kind": "PERSON", "salutation": "HERR", "firstName": "Hans", "lastName": "Meier",
         "email": "hans@example.org"},
        {"id": "c2", "kind": "PERSON", "salutation": "FRAU", "firstName": "Eva", "lastName": "Groß", "email": None},
        {"id": "c7", "kind": "PERSON", "salutation": None, "firstName": "Otto", "lastName": "Linklos", "email": None},
    ],
    "ownerships": [
        {"id": "o1", "unitId": "u1", "ownerContactIds": ["c1", "c2"], "validFrom": "2019-03-15", "validTo": None},
        {"id": "o2", "unitId": "u2", "ownerContactIds": ["c2"], "validFrom": "2019-03-15", "validTo": None},
    ],
    "usages": [{"id": "us1", "propertyId": "p1", "unitIds": ["u1"], "type": "VACANCY", "commercial": False,
                "startDate": "2021-01-01", "endDate": None, "tenantContactIds": [], "contractNumber": None}],
    "property-roles": [{"id": "r1", "propertyId": "p1", "contactId": "c1", "role": "CARETAKER", "serviceType": None,
                        "validFrom": "2015-01-01", "validTo": "2023-12-31"}],
}


@pytest.fixture(scope="module")
def mset() -> MappingSet:
    return compile_mappings(load_mapping_set([MAPPINGS_DIR]))


def _explain(mset: MappingSet, resource: str, sid: str, **kw: Any) -> dict[str, Any]:
    return explain_record(mset, RECORDS, resource, sid, run_date=DAY, **kw)


def _values(fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {t["field"]: _values(t["fields"]) if t["form"] == "object" else t.get("value") for t in fields}


@pytest.mark.parametrize("path", INTERPRET_CASES, ids=lambda p: p.stem)
def test_traced_fields_equal_the_real_payloads(path: Path, mset: MappingSet) -> None:
    case = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    given = to_plain(case["given"])
    day = case.get("date") if isinstance(case.get("date"), dt.date) else None
    result = map_records(mset, given, run_date=day)
    checked = 0
    for resource, records in given.items():
        for record in records:
            if not isinstance(record, dict) or not record.get("id"):
                continue
            doc = explain_record(mset, given, resource, str(record["id"]), run_date=day, result=result)
            payloads = {(o["kind"], o["id"]): o["payload"] for o in doc["outputs"]}
            for rule in doc["rules"]:
                for item in rule.get("items", []):
                    if item["outcome"] == "produced":
                        assert _values(item["fields"]) == payloads[(rule["target"], item["id"]["value"])]
                        checked += 1
                    elif item["outcome"].startswith("merged into"):  # on_duplicate_id: its role is in the join
                        merged = payloads[(rule["target"], item["id"]["value"])]
                        assert _values(item["fields"])["roleName"] in merged["roleName"].split(", ")
                        checked += 1
            if doc["errors"]:
                assert any(r.get("stopped") or r.get("items") for r in doc["rules"])
    assert checked or result.errors


def test_a_unit_shows_lookup_ref_value_map_payload_and_referrers(mset: MappingSet) -> None:
    doc = _explain(mset, "units", "u1")
    rule = doc["rules"][0]
    assert (rule["mapping"], rule["rule"]) == ("units", "unit")
    assert rule["lookups"][0]["matched"] == ["b1"] and rule["lookups"][0]["keyValue"] == "b1"
    fields = {t["field"]: t for t in rule["items"][0]["fields"]}
    assert fields["propertyId"]["resolved"] == "property p1 -> p-p1"
    assert fields["usage"]["hit"] is True and fields["usage"]["used"] == "values[APARTMENT]"
    assert doc["outputs"][0]["payload"]["address"] == "Lindenstraße 12"
    assert len(doc["outputs"][0]["referencedBy"]) == 2  # two co-owners' contracts
    assert "decisions" not in doc
    text = "\n".join(render_text(doc))
    assert "usage = map `type` code \"APARTMENT\" -> hit: values[APARTMENT] -> \"PRIVATE\"" in text
    assert "(no state store consulted: offline explanation)" in text


def test_failures_misses_data_protection_filters_and_tombstones(mset: MappingSet) -> None:
    missing = _explain(mset, "units", "u2")
    assert missing["rules"][0]["stopped"] == "no building with id \"b404\" (lookup 'building' is required)"
    assert "no building with id 'b404'" in missing["errors"][0]["reason"]
    garden = _explain(mset, "units", "u3")
    usage = next(t for t in garden["rules"][0]["items"][0]["fields"] if t["field"] == "usage")
    assert (usage["hit"], usage["used"]) == (False, "on_missing: error")
    assert garden["rules"][0]["items"][0]["outcome"] == "error"
    depends = _explain(mset, "ownerships", "o2")
    unit = next(t for t in depends["rules"][0]["items"][0]["fields"] if t["field"] == "unitId")
    assert unit["resolved"].startswith("unit u2 failed in the units mapping: unit u2: no building")
    linkless = _explain(mset, "contacts", "c7")
    assert linkless["rules"][0]["items"][0]["outcome"].startswith("dropped (data protection)")
    salutation = linkless["rules"][0]["items"][0]["fields"][0]
    assert salutation["used"] == "default (no entry for this code)"
    ended = _explain(mset, "property-roles", "r1")
    assert ended["rules"][0]["filter"]["kept"] is False and ended["rules"][0]["stopped"] == "filtered out"
    vacancy = _explain(mset, "usages", "us1")
    assert vacancy["rules"][0]["filter"]["value"] is False and vacancy["outputs"] == []
    gone = _explain(mset, "units", "u9")
    assert gone["deleted"] is True and gone["rules"] == []
    building = _explain(mset, "buildings", "b1")
    assert {(u["mapping"], u["lookup"]) for u in building["lookedUpBy"]} == {("properties", "buildings"),
                                                                           ("units", "building")}


def test_an_unknown_id_suggests_a_close_one(mset: MappingSet) -> None:
    records = {"units": [{"id": "3f2a9c4e-0000-4000-8000-000000000001"}]}
    with pytest.raises(RecordError) as info:
        explain_record(mset, records, "units", "3f2a9c4e-0000-4000-8000-000000000002")
    assert info.value.reason == ("no units record with id 3f2a9c4e-0000-4000-8000-000000000002 in SCALARA; "
                                 "did you mean 3f2a9c4e-0000-4000-8000-000000000001?")
    with pytest.raises(RecordError, match=r"^no contacts record with id x in SCALARA$"):
        explain_record(mset, records, "contacts", "x")


def _state(kind: str, ref_id: str, payload: dict[str, Any], status: str = "written",
           source: tuple[str, str] | None = None) -> RecordState:
    src = source or (None, None)
    return RecordState(kind, ref_id, payload_hash(payload), payload, status, src[0], src[1])


def test_decisions_come_from_the_planner(mset: MappingSet) -> None:
    current = map_records(mset, RECORDS, run_date=DAY).outputs["units"]["u-u1"].payload
    same = {("units", "u-u1"): _state("units", "u-u1", current)}
    doc = _explain(mset, "units", "u1", state_of=lambda k, r: same.get((k, r)), state_rows=lambda s, i: [])
    assert [(d["action"], d["reason"]) for d in doc["decisions"]] == [
        ("unchanged", "the same payload was written before")]
    assert doc["state"][0]["status"] == "written"
    older = {("units", "u-u1"): _state("units", "u-u1", {**current, "name": "WE 1"})}
    doc = _explain(mset, "units", "u1", state_of=lambda k, r: older.get((k, r)), state_rows=lambda s, i: [])
    assert doc["decisions"][0]["action"] == "update"
    assert doc["decisions"][0]["diff"] == [{"field": "name", "from": "WE 1", "to": "WE 01"}]
    doc = _explain(mset, "units", "u1", state_of=lambda k, r: None, state_rows=lambda s, i: [])
    assert doc["decisions"][0]["action"] == "create"
    archived = _state("responsibilities", "resp-x", {"roleName": "Hausmeister"}, source=("property-roles", "r1"))
    doc = _explain(mset, "property-roles", "r1", state_of=lambda k, r: None, state_rows=lambda s, i: [archived])
    assert [(d["action"], d["reason"]) for d in doc["decisions"]] == [
        ("archive", "no longer produced from SCALARA")]
    failed = _state("units", "u-u2", {"name": "WE 02"}, source=("units", "u2"))
    doc = _explain(mset, "units", "u2", state_of=lambda k, r: None, state_rows=lambda s, i: [failed])
    assert doc["decisions"][0]["action"] == "error"
    lines = render_text(doc)
    assert lines[-1] == "next run: error units/u-u2 (the SCALARA record failed to map; casavi keeps its last copy)"


# -- the command ---------------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["explain", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_offline_text_json_and_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    path.write_text(json.dumps(RECORDS), encoding="utf-8")
    code, out, _ = _cli("units", "u1", "--input", str(path), "--date", "2024-06-01")
    assert code == 0
    assert out.splitlines()[0] == "SCALARA units u1"
    assert "  lookup building: buildings with id = `buildingId` (\"b1\") -> b1" in out
    code, out, _ = _cli("ownerships", "o1", "--input", str(path), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert [o["payload"]["contactId"] for o in doc["outputs"]] == ["c-c1", "c-c2"]
    code, _, err = _cli("units", "u7", "--input", str(path))
    assert code == 1 and err.strip().startswith("error: no units record with id u7 in SCALARA")
    assert _cli("unitz", "u1", "--input", str(path))[0] == 2
    assert _cli("units", "u1", "--input", str(path), "--date", "1.6.2024")[0] == 2


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def test_cli_live_reads_scalara_and_the_state(world: World, tmp_path: Path) -> None:
    assert world.run().outcome in ("clean", "partial")  # the sandbox has a unit whose building is gone
    row = next(r for r in world.store.records(world.tenant, "units").values() if r.status == "written")
    unit = {"id": row.source_id}
    env = {"CASAVI_SYNC_SCALARA_URL": world.sandbox.scalara_url, "CASAVI_SYNC_CASAVI_URL": world.sandbox.casavi_url}
    args = ["--state", str(tmp_path / "state.db"), "--config", str(tmp_path / "connectors.yaml"),
            "--date", RUN_DATE.isoformat(), "--quiet"]
    code, out, _ = _cli("units", unit["id"], *args, env=env)
    assert code == 0, out
    assert f"state units/u-{unit['id']}: written, hash " in out
    assert out.rstrip().endswith(f"next run: unchanged units/u-{unit['id']} (the same payload was written before)")
    assert world.token not in out and world.sandbox.casavi_secret not in out
    code, _, err = _cli("units", unit["id"][:-1] + "0", *args, env=env)
    assert code == 1 and "did you mean" in err


def test_explain_text_never_shortens_a_payload_or_value() -> None:
    from engine.explain import render_text

    long_note = "Sondereigentum " * 40
    doc = {"resource": "units", "id": "1", "deleted": False, "record": {"note": long_note}, "rules": [],
           "lookedUpBy": [], "errors": [], "outputs": [{"kind": "units", "id": "u-1", "payload": {"note": long_note},
                                                        "referencedBy": [], "referencedByCount": 0}],
           "decisions": [{"kind": "units", "id": "u-1", "action": "update", "reason": "changed",
                          "diff": [{"field": "note", "from": None, "to": long_note, "fromAbsent": True}]}]}
    text = "\n".join(render_text(doc))
    assert text.count(long_note) == 3 and "..." not in text
    assert f'note: (absent) -> "{long_note}"' in text
