"""``casavi-sync map`` through click's CliRunner: JSON out, exit codes, one-line usage errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import main

PROPERTY = {"id": "p1", "number": "1", "name": "Große Straße 1", "kind": "WEG", "meaTotal": 1000,
            "managedFrom": "2020-01-01", "managedUntil": None}
BUILDING = {"id": "b1", "propertyId": "p1", "label": None, "street": "Große Straße", "houseNumber": "1",
            "postalCode": "10115", "city": "Berlin", "country": "DE"}
UNITS = [
    {"id": "u1", "propertyId": "p1", "buildingId": "b1", "number": "WE 1", "label": None, "type": "APARTMENT"},
    {"id": "u2", "propertyId": "p1", "buildingId": "b404", "number": "WE 2", "label": None, "type": "APARTMENT"},
]


def _run(tmp_path: Path, records: Any, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "records.json"
    path.write_text(records if isinstance(records, str) else json.dumps(records), encoding="utf-8")
    result = CliRunner().invoke(main, ["map", *args, "--input", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_payloads_and_errors_as_json(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, {"properties": [PROPERTY], "buildings": [BUILDING], "units": UNITS}, "units")
    assert code == 1
    doc = json.loads(out)
    assert [p["id"] for p in doc["payloads"]] == ["u-u1"]
    first = doc["payloads"][0]
    assert first["payload"]["address"] == "Große Straße 1"
    assert first["payload"]["propertyId"] == "p-p1"
    assert first["source"] == {"resource": "units", "id": "u1"}
    assert "referencesAssumed" not in first
    assert [(e["sourceId"], "no building with id 'b404'" in e["reason"]) for e in doc["errors"]] == [("u2", True)]


def test_exit_zero_without_errors_and_umlauts_unescaped(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, {"properties": [PROPERTY], "buildings": [BUILDING], "units": UNITS[:1]},
                        "units", "--date", "2024-06-01")
    assert code == 0
    assert "Große Straße 1" in out  # not \u00df
    assert json.loads(out)["errors"] == []


def test_assume_references_previews_units_without_properties(tmp_path: Path) -> None:
    records = {"buildings": [BUILDING], "units": UNITS[:1]}
    code, out, _ = _run(tmp_path, records, "units")
    assert code == 1
    assert "properties mapping did not produce" in json.loads(out)["errors"][0]["reason"]
    code, out, _ = _run(tmp_path, records, "units", "--assume-references")
    assert code == 0
    (payload,) = json.loads(out)["payloads"]
    assert payload["payload"]["propertyId"] == "p-p1"
    assert payload["referencesAssumed"] is True


def test_contacts_preview_without_links_notes_that_data_protection_is_off(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, {"contacts": [{"id": "c1", "kind": "COMPANY", "companyName": "Firma"}]},
                          "contacts")
    assert code == 0
    assert [p["id"] for p in json.loads(out)["payloads"]] == ["c-c1"]
    assert "only_if_referenced_by not applied" in err


def test_contacts_with_links_apply_data_protection(tmp_path: Path) -> None:
    records = {"contacts": [{"id": "c1", "lastName": "A"}, {"id": "c2", "lastName": "B"}],
               "property-roles": [{"id": "r1", "propertyId": "p1", "contactId": "c2", "role": "CARETAKER"}],
               "properties": [PROPERTY]}
    code, out, err = _run(tmp_path, records, "contacts")
    assert code == 0
    assert [p["id"] for p in json.loads(out)["payloads"]] == ["c-c2"]
    assert err == ""


def test_custom_mappings_folder(tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "properties.yaml").write_text(
        "mapping: properties\ntarget: properties\nrules:\n  - name: p\n    source: properties\n"
        "    id: \"ref_id('prop', id)\"\n    fields:\n      name: upper(name)\n", encoding="utf-8")
    code, out, _ = _run(tmp_path, {"properties": [PROPERTY]}, "properties", "--mappings", str(folder))
    assert code == 0
    assert json.loads(out)["payloads"][0] == {"id": "prop-p1", "payload": {"name": "GROSSE STRASSE 1"},
                                              "source": {"resource": "properties", "id": "p1"}}


@pytest.mark.parametrize(
    ("records", "args", "message"),
    [
        ({"units": []}, ["unit"], "unknown mapping 'unit' (did you mean 'units'?); known: contacts"),
        ("{\"units\": [", ["units"], "invalid JSON"),
        ("[1, 2]", ["units"], "expected an object"),
        ({"units": {"id": "u1"}}, ["units"], "'units' must be a list of records"),
        ({"units": []}, ["units", "--mappings", "/nonexistent/maps"], "no such file or folder"),
        # issue 9, item 10: these ended with a traceback (exit 1)
        ('{"units": [{"id": "u1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}]}", ["units"],
         "invalid JSON: nested too deeply"),
        ('{"units": [{"id": "u1", "mea": 1' + "0" * 5000 + "}]}", ["units"], "invalid JSON: Exceeds the limit"),
        ('{"units": [{"id": "u1", "mea": NaN}]}', ["units"], "invalid JSON: NaN is not a JSON number"),
        ('{"units": [{"id": "u1", "x": ' + "[" * 200 + "]" * 200 + "}]}", ["units"],
         "units record #1: x.0.0."),
        ('{"units": [{"id": "u1", "mea": 1e400}]}', ["units"], "units record #1: mea is inf"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, records: Any, args: list[str], message: str) -> None:
    code, out, err = _run(tmp_path, records, *args)
    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_missing_input_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["map", "units", "--input", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr
    assert "Traceback" not in result.output


def test_broken_mapping_files_exit_1_with_positions(tmp_path: Path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "properties.yaml").write_text(
        "mapping: properties\ntarget: properties\nrules:\n  - name: p\n    source: properties\n"
        "    id: \"ref_id('p', id\"\n    fields: {}\n", encoding="utf-8")
    code, out, err = _run(tmp_path, {"properties": [PROPERTY]}, "properties", "--mappings", str(folder))
    assert code == 1
    assert out == ""
    assert "properties.yaml" in err
    assert "Traceback" not in err
