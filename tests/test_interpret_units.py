"""Compile and interpreter behaviour that the shipped mappings do not exercise.

Small inline specs: ref on_missing skip/null, value-map skip, lookups (many, single by sorted id),
for_each over non-lists, ``only``, ``assume_references``, structural compile errors with paths.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from engine.compile import (
    ConstField,
    ExprField,
    ObjectField,
    RefField,
    ValueMapField,
    code_text,
    compile_mappings,
)
from engine.errors import ConfigError, SpecError
from engine.interpret import map_records, singular


def _spec(name: str, target: str, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"mapping": name, "target": target, "rules": rules, **extra}


PROPS = _spec("properties", "properties", [
    {"name": "p", "source": "properties", "id": "ref_id('p', id)", "fields": {"name": "name"}},
])


def _units(ref: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return _spec("units", "units", [{
        "name": "u", "source": "units", "id": "ref_id('u', id)",
        "fields": {"propertyId": {"ref": "properties", "from": "propertyId", **ref}, "name": "number", **fields},
    }])


RECORDS: dict[str, list[dict[str, Any]]] = {
    "properties": [{"id": "p1", "name": "Eins"}],
    "units": [{"id": "u1", "propertyId": "p1", "number": "1"},
              {"id": "u2", "propertyId": "p9", "number": "2"}],
}


def test_plans_are_frozen_and_resolved() -> None:
    mset = compile_mappings({"properties": PROPS, "units": _units({}, usage={
        "map": "type", "values": {"A": "PRIVATE", True: "X", 3.0: {"expr": "number"}}, "default": None},
        customFields={"object": {"n": "number", "k": {"const": 1}}})})
    assert mset.order == ("properties", "units")
    assert mset.by_target == {"properties": "properties", "units": "units"}
    fields = {f.name: f for f in mset.mappings["units"].rules[0].fields}
    assert isinstance(fields["propertyId"], RefField) and fields["propertyId"].on_missing == "error"
    assert isinstance(fields["name"], ExprField)
    usage = fields["usage"]
    assert isinstance(usage, ValueMapField)
    assert sorted(usage.values) == ["3", "A", "true"]
    custom = fields["customFields"]
    assert isinstance(custom, ObjectField) and isinstance(custom.fields[1], ConstField)
    with pytest.raises(AttributeError):
        mset.mappings["units"].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(("value", "text"), [(True, "true"), (False, "false"), (3.0, "3"), (2.5, "2.5"),
                                              (7, "7"), ("A", "A"), (None, None)])
def test_code_text(value: Any, text: str | None) -> None:
    assert code_text(value) == text


def test_ref_on_missing_skip_and_null() -> None:
    skip = map_records(compile_mappings({"properties": PROPS, "units": _units({"on_missing": "skip"})}), RECORDS)
    assert list(skip.outputs["units"]) == ["u-u1"]
    assert skip.errors == []
    assert skip.stats["units"].filtered_out == 1
    null = map_records(compile_mappings({"properties": PROPS, "units": _units({"on_missing": None})}), RECORDS)
    # propertyId is required by casavi: null makes it a per-record error naming the field
    assert [(e.source_id, e.field) for e in null.errors] == [("u2", "propertyId")]
    assert "required field 'propertyId' is empty" in null.errors[0].reason


def test_outputs_know_their_source_and_dependencies() -> None:
    result = map_records(compile_mappings({"properties": PROPS, "units": _units({})}), RECORDS)
    out = result.outputs["units"]["u-u1"]
    assert (out.kind, out.mapping, out.rule, out.source_resource, out.source_id) == ("units", "units", "u", "units", "u1")
    assert out.depends_on == (("properties", "p-p1"),)
    assert out.payload == {"propertyId": "p-p1", "name": "1"}
    (err,) = result.errors
    # the problem code and its facts feed the customer's data-quality notice
    assert err.details == {"mapping": "units", "rule": "u", "code": "ref_missing", "target": "properties",
                           "targetId": "p9"}
    assert err.target_id == "u-u2"
    assert err.as_dict()["reason"] == "unit u2 refers to property p9, which the properties mapping did not produce"


def test_value_map_skip_drops_the_record_and_refs_to_it_fail() -> None:
    units = _units({}, usage={"map": "number", "values": {"1": "PRIVATE"}, "on_missing": "skip"})
    contracts = _spec("contracts", "contracts", [{
        "name": "c", "source": "ownerships", "id": "ref_id('own', id)",
        "fields": {"type": {"const": "OWNER"}, "contactId": {"const": "c-1"},
                   "unitId": {"ref": "units", "from": "unitId"}, "startDate": {"const": "2020-01-01"}}}])
    records = {**RECORDS, "units": [*RECORDS["units"], {"id": "u3", "propertyId": "p1", "number": "3"}],
               "ownerships": [{"id": "o1", "unitId": "u1"}, {"id": "o3", "unitId": "u3"}]}
    result = map_records(compile_mappings({"properties": PROPS, "units": units, "contracts": contracts}), records)
    assert list(result.outputs["units"]) == ["u-u1"]
    assert list(result.outputs["contracts"]) == ["own-o1"]
    reasons = {e.source_id: e.reason for e in result.errors}
    assert "units mapping did not produce" in reasons["o3"]
    assert "u2" in reasons  # the unit with the missing property


def test_lookups_single_first_by_id_and_many_sorted() -> None:
    spec = _spec("properties", "properties", [{
        "name": "p", "source": "properties", "id": "ref_id('p', id)",
        "lookups": {
            "first": {"resource": "buildings", "key": "id", "match": "propertyId"},
            "all": {"resource": "buildings", "key": "id", "match": "propertyId", "many": True},
            "none": {"resource": "buildings", "key": "'zz'", "many": True},
        },
        "fields": {"name": "first.street", "addresses": "all[].street", "empty": "none"}}])
    records = {"properties": [{"id": "p1"}],
               "buildings": [{"id": "b3", "propertyId": "p1", "street": "C"},
                             {"id": "b1", "propertyId": "p1", "street": "A"},
                             {"id": "b2", "propertyId": "p2", "street": "B"}]}
    payload = map_records(compile_mappings({"properties": spec}), records).outputs["properties"]["p-p1"].payload
    assert payload == {"name": "A", "addresses": ["A", "C"], "empty": []}


def test_for_each_that_is_not_a_list_is_a_record_error() -> None:
    spec = _spec("contracts", "contracts", [{
        "name": "c", "source": "ownerships", "for_each": [{"name": "owner", "in": "owners"}],
        "id": "ref_id('own', id, owner)",
        "fields": {"type": {"const": "OWNER"}, "contactId": "owner", "unitId": {"const": "u"},
                   "startDate": {"const": "2020-01-01"}}}])
    records = {"ownerships": [{"id": "o1", "owners": "c1"}, {"id": "o2", "owners": ["a", "b"]},
                              {"id": "o3", "owners": None}]}
    result = map_records(compile_mappings({"contracts": spec}), records)
    assert sorted(o.payload["contactId"] for o in result.outputs["contracts"].values()) == ["a", "b"]
    assert [(e.source_id, "not a list" in e.reason) for e in result.errors] == [("o1", True)]
    assert result.stats["contracts"].filtered_out == 1  # o3: null list -> nothing


def test_a_failing_function_names_field_and_expression() -> None:
    spec = _spec("properties", "properties", [{
        "name": "p", "source": "properties", "id": "ref_id('p', id)",
        "fields": {"name": "name", "customFields": {"object": {"seit": "format_date(since, '%d.%m.%Y')"}}}}])
    records = {"properties": [{"id": "p1", "name": "A", "since": "bald"}, {"id": "p2", "name": "B", "since": "2020-02-01"}]}
    result = map_records(compile_mappings({"properties": spec}), records)
    assert result.outputs["properties"]["p-p2"].payload["customFields"] == {"seit": "01.02.2020"}
    (err,) = result.errors
    assert err.field == "customFields"
    assert "'bald' is not a date" in err.reason


def test_invalid_reference_id_is_a_record_error() -> None:
    spec = _spec("properties", "properties", [{"name": "p", "source": "properties", "id": "name",
                                               "fields": {"name": "name"}}])
    result = map_records(compile_mappings({"properties": spec}),
                         {"properties": [{"id": "p1", "name": "Straße 1"}, {"id": "p2", "name": "ok-1"}]})
    assert list(result.outputs["properties"]) == ["ok-1"]
    assert "not a casavi reference id" in result.errors[0].reason


def test_only_returns_just_those_mappings_but_computes_what_they_need() -> None:
    mset = compile_mappings({"properties": PROPS, "units": _units({})})
    result = map_records(mset, RECORDS, only=["units"])
    assert set(result.outputs) == {"units"}
    assert set(result.stats) == {"units"}
    assert result.outputs["units"]["u-u1"].payload["propertyId"] == "p-p1"
    with pytest.raises(ConfigError, match="unknown mapping"):
        map_records(mset, RECORDS, only=["unit"])


def test_assume_references_derives_ids_when_the_source_is_absent() -> None:
    mset = compile_mappings({"properties": PROPS, "units": _units({})})
    units_only = {"units": RECORDS["units"]}
    strict = map_records(mset, units_only)
    assert len(strict.errors) == 2
    assumed = map_records(mset, units_only, assume_references=True)
    assert assumed.errors == []
    out = assumed.outputs["units"]
    assert out["u-u2"].payload["propertyId"] == "p-p9"
    assert out["u-u2"].references_assumed


def test_run_date_drives_today_and_is_reset() -> None:
    spec = _spec("properties", "properties", [{"name": "p", "source": "properties", "id": "ref_id('p', id)",
                                               "filter": "active(from, `null`)", "fields": {"name": "today()"}}])
    mset = compile_mappings({"properties": spec})
    records = {"properties": [{"id": "p1", "from": "2024-01-01"}, {"id": "p2", "from": "2030-01-01"}]}
    result = map_records(mset, records, run_date=dt.date(2024, 6, 1))
    assert {k: o.payload["name"] for k, o in result.outputs["properties"].items()} == {"p-p1": "2024-06-01"}
    later = map_records(mset, records, run_date=dt.date(2031, 1, 1))
    assert sorted(later.outputs["properties"]) == ["p-p1", "p-p2"]


def test_output_order_is_deterministic_by_source_id() -> None:
    mset = compile_mappings({"properties": PROPS})
    records = {"properties": [{"id": "p3", "name": "c"}, {"id": "p1", "name": "a"}, {"id": "p2", "name": "b"}]}
    assert list(map_records(mset, records).outputs["properties"]) == ["p-p1", "p-p2", "p-p3"]


@pytest.mark.parametrize(
    ("specs", "path", "message"),
    [
        ({"units": _units({})}, "$.rules[0].fields.propertyId.ref", "'properties' is not a mapping"),
        ({"p": _spec("p", "properties", [{"name": "a", "source": "properties", "id": "ref_id(",
                                          "fields": {}}])}, "$.rules[0].id", "invalid expression"),
        ({"p": _spec("p", "properties", [{"name": "a", "source": "properties", "id": "id",
                                          "fields": {"x": 5}}])}, "$.rules[0].fields.x", "got a number"),
        ({"p": _spec("p", "properties", [{"name": "a", "source": "properties", "id": "id",
                                          "fields": {"x": {"map": "a", "values": {}}}}])},
         "$.rules[0].fields.x", "exactly one of 'default' and 'on_missing'"),
        ({"p": _spec("p", "properties", [{"name": "a", "source": "properties", "id": "id",
                                          "fields": {"x": {"const": 1, "expr": "a"}}}])},
         "$.rules[0].fields.x", "found const, expr"),
        ({"p": _spec("p", "properties", [{"name": "a", "source": "properties", "id": "id",
                                          "fields": {"x": {"ref": "p", "from": "a", "on_missing": "ignore"}}}])},
         "$.rules[0].fields.x.on_missing", "expected one of error, skip, null"),
        ({"p": _spec("p", "properties", [])}, "$.rules", "non-empty list"),
        ({"p": "not a mapping"}, "$", "expected an object"),
        ({"p": _spec("p", "properties", [{"name": "a", "source": "properties", "id": "uper(id)",
                                          "fields": {}}])}, "$.rules[0].id", "did you mean 'upper'"),
    ],
)
def test_structural_problems_raise_spec_errors_with_paths(specs: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        compile_mappings(specs)
    hits = [d for d in info.value.diagnostics if d.path == path and message in d.message]
    assert hits, [(d.path, d.message) for d in info.value.diagnostics]


def test_reference_cycle_and_double_target_are_spec_errors() -> None:
    a = _spec("a", "units", [{"name": "r", "source": "units", "id": "id", "fields": {"x": {"ref": "b", "from": "id"}}}])
    b = _spec("b", "properties", [{"name": "r", "source": "units", "id": "id", "fields": {"x": {"ref": "a", "from": "id"}}}])
    with pytest.raises(SpecError) as info:
        compile_mappings({"a": a, "b": b})
    assert any("cycle: a -> b -> a" in d.message for d in info.value.diagnostics)
    c = _spec("c", "units", [{"name": "r", "source": "units", "id": "id", "fields": {}}])
    with pytest.raises(SpecError, match="both target 'units'"):
        compile_mappings({"c": c, "d": {**c, "mapping": "d"}})


def test_ref_to_a_for_each_only_mapping_is_rejected() -> None:
    loop = _spec("l", "contracts", [{"name": "r", "source": "x", "for_each": [{"name": "v", "in": "vs"}],
                                     "id": "ref_id('l', id, v)", "fields": {}}])
    user = _spec("u", "units", [{"name": "r", "source": "y", "id": "id", "fields": {"x": {"ref": "l", "from": "id"}}}])
    with pytest.raises(SpecError, match="for_each"):
        compile_mappings({"l": loop, "u": user})


@pytest.mark.parametrize(("word", "one"), [("properties", "property"), ("units", "unit"),
                                           ("property-roles", "property role"), ("usages", "usage")])
def test_singular(word: str, one: str) -> None:
    assert singular(word) == one


def test_records_without_id_are_reported_not_fatal() -> None:
    mset = compile_mappings({"properties": PROPS})
    result = map_records(mset, {"properties": [{"name": "ohne"}, {"id": "", "name": "leer"}, "kaputt",
                                               {"id": "p1", "name": "Eins"}]})
    assert list(result.outputs["properties"]) == ["p-p1"]
    assert [(e.source_id, "without an id" in e.reason) for e in result.errors] == [(None, True)] * 3


def test_duplicate_reference_ids_are_an_error_unless_the_rule_merges_them() -> None:
    rule = {"name": "p", "source": "properties", "id": "ref_id('p', number)",
            "fields": {"name": "name", "number": "number", "note": "kind"}}
    records = {"properties": [{"id": "a", "number": "7", "name": "Eins", "kind": "WEG"},
                              {"id": "b", "number": "7", "name": "Zwei", "kind": "MV"}]}
    plain = map_records(compile_mappings({"properties": _spec("properties", "properties", [rule])}), records)
    assert list(plain.outputs["properties"]) == ["p-7"] and plain.outputs["properties"]["p-7"].payload["name"] == "Eins"
    assert [e.source_id for e in plain.errors] == ["b"] and "same reference id as property a" in plain.errors[0].reason

    merging = {**rule, "on_duplicate_id": {"join": {"name": " / "}}}
    merged = map_records(compile_mappings({"properties": _spec("properties", "properties", [merging])}), records)
    out = merged.outputs["properties"]["p-7"]
    assert merged.errors == [] and out.payload == {"name": "Eins / Zwei", "number": "7", "note": "WEG"}
    assert out.source_id == "a"


def test_merge_names_must_be_fields_of_the_rule() -> None:
    rule = {"name": "p", "source": "properties", "id": "ref_id('p', id)", "fields": {"name": "name"},
            "on_duplicate_id": {"join": {"nmae": ", "}}}
    with pytest.raises(SpecError) as info:
        compile_mappings({"properties": _spec("properties", "properties", [rule])})
    assert "'nmae' is not a field of this rule" in str(info.value.diagnostics[0].message)
