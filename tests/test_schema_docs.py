"""The schema is the documentation: complete, in step with the code, bound by every shipped file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from engine.catalog import casavi_kinds, scalara_resources
from engine.functions import BUILTIN, CUSTOM, REGISTRY
from engine.paths import MAPPING_SCHEMA, MAPPINGS_DIR, mapping_files
from engine.validate import FIELD_FORMS, SCHEMA_LINE
from engine.validate.schema_targets import DEF_PREFIX, apply, render

SCHEMA: dict[str, Any] = json.loads(MAPPING_SCHEMA.read_text(encoding="utf-8"))
DEFS: dict[str, Any] = SCHEMA["$defs"]
SHIPPED = mapping_files(MAPPINGS_DIR)


def _nodes(node: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every DSL node: the root, each $defs entry, each property and map-value schema below them."""
    yield where, node
    for name, prop in node.get("properties", {}).items():
        yield from _nodes(prop, f"{where}.properties.{name}")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _nodes(extra, f"{where}.additionalProperties")
    items = node.get("items")
    if isinstance(items, dict):
        yield from _nodes(items, f"{where}.items")


def _all_nodes() -> list[tuple[str, dict[str, Any]]]:
    nodes = list(_nodes({k: v for k, v in SCHEMA.items() if k != "$defs"}, "$"))
    for name, sub in DEFS.items():
        nodes.extend(_nodes(sub, f"$defs.{name}"))
    return nodes


def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("where, node", [n for n in _all_nodes() if "$ref" not in n[1] or len(n[1]) > 1],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_node_has_description_and_examples(where: str, node: dict[str, Any]) -> None:
    if set(node) == {"$ref"}:
        return  # a bare reference documents itself at its target
    assert node.get("description"), f"{where} has no description"
    assert node.get("examples"), f"{where} has no examples"


def test_every_object_rejects_unknown_keys() -> None:
    for where, node in _all_nodes():
        if where.startswith("$defs." + DEF_PREFIX):
            continue  # completion only; the semantic validator judges casavi fields against the catalog
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"


def test_examples_of_whole_files_validate() -> None:
    validator = Draft202012Validator(SCHEMA)
    for example in SCHEMA["examples"]:
        assert list(validator.iter_errors(example)) == []


def test_functions_in_schema_and_registry_are_the_same() -> None:
    entries = {e["const"]: e for e in DEFS["functions"]["anyOf"]}
    assert set(entries) == set(REGISTRY)
    for spec in CUSTOM:
        entry = entries[spec.name]
        assert entry["title"] == spec.signature
        assert entry["description"] == spec.description
        assert entry["examples"] == list(spec.examples)
    for spec in (*CUSTOM, *BUILTIN):
        arity = entries[spec.name]["x-arity"]
        assert arity["minArgs"] == spec.min_args
        assert arity.get("maxArgs") == spec.max_args
        assert entries[spec.name]["examples"], spec.name


def test_function_examples_parse_and_call_known_functions() -> None:
    import jmespath

    for entry in DEFS["functions"]["anyOf"]:
        for example in entry["examples"]:
            jmespath.compile(example)  # raises on a syntax error
            assert entry["const"] + "(" in example


def test_enums_come_from_the_catalogs() -> None:
    assert DEFS["target_kind"]["enum"] == list(casavi_kinds())
    assert DEFS["source_resource"]["enum"] == list(scalara_resources())


def test_field_forms_match_the_implemented_forms() -> None:
    """Each form in the schema has an implementation (coordinated by name) and vice versa."""
    forms = [name[len("form_"):] for name in DEFS if name.startswith("form_") and name != "form_expression"]
    assert sorted(forms) == sorted(FIELD_FORMS)
    branches = [b["$ref"].rsplit("/", 1)[1] for b in DEFS["field"]["oneOf"]]
    assert branches == ["form_expression", *(f"form_{f}" for f in ("expr", "const", "map", "ref", "object"))]
    for form in FIELD_FORMS:
        assert DEFS[f"form_{form}"]["required"][0] == form


def test_field_forms_are_documented_in_dsl_md() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "dsl.md").read_text(encoding="utf-8")
    for form in FIELD_FORMS:
        assert f"{{{form}:" in text or f"{form}:" in text, form


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_mapping_binds_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == SCHEMA_LINE
    relative = first.split("$schema=", 1)[1]
    assert (path.parent / relative).resolve() == MAPPING_SCHEMA.resolve()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_mapping_validates_against_the_schema_alone(path: Path) -> None:
    data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    assert list(Draft202012Validator(SCHEMA).iter_errors(data)) == []


def test_schema_is_in_step_with_the_casavi_catalog() -> None:
    """Field completion is generated from engine/catalog/casavi.yaml; regenerate after changing it."""
    assert MAPPING_SCHEMA.read_text(encoding="utf-8") == render(apply(SCHEMA, casavi_kinds())), (
        "mapping.schema.json is out of step with the casavi catalog: run python -m engine.validate.schema_targets")


def _fields_schema_for(target: str) -> dict[str, Any]:
    """What an editor sees under rules[].fields of a file with this target (the if/then that matches)."""
    matched = [c["then"] for c in SCHEMA["allOf"] if c["if"]["properties"]["target"]["const"] == target]
    assert len(matched) == 1
    ref = matched[0]["properties"]["rules"]["items"]["properties"]["fields"]["$ref"]
    node: dict[str, Any] = DEFS[ref.rsplit("/", 1)[1]]
    return node


@pytest.mark.parametrize("target", list(casavi_kinds()))
def test_fields_complete_the_casavi_field_names_of_the_target(target: str) -> None:
    fields = _fields_schema_for(target)
    assert list(fields["properties"]) == list(casavi_kinds()[target]["fields"])
    for name, spec in casavi_kinds()[target]["fields"].items():
        text = fields["properties"][name]["description"]
        assert f"casavi {target}.{name}" in text
        assert ("required" in text) == bool(spec.get("required"))


def test_enumerated_fields_complete_their_allowed_values_in_value_maps() -> None:
    salutation = _fields_schema_for("contacts")["properties"]["salutation"]["properties"]
    usage = _fields_schema_for("units")["properties"]["usage"]["properties"]
    for node, values in ((salutation, ["MR", "MRS", "DIVERSE", None]), (usage, ["PRIVATE", "COMMERCIAL", None])):
        assert node["values"]["additionalProperties"]["anyOf"][0]["enum"] == values
        assert node["default"]["anyOf"][0]["enum"] == values
        assert node["const"]["anyOf"][0]["enum"] == values
    contract_type = _fields_schema_for("contracts")["properties"]["type"]["properties"]
    assert contract_type["const"]["anyOf"][0]["enum"] == ["OWNER", "RENTER"]  # required: null not offered


def test_field_completion_changes_no_verdict() -> None:
    """Completion only: a wrong value is still the semantic validator's finding, not a schema error."""
    validator = Draft202012Validator(SCHEMA)
    doc = {"mapping": "units", "target": "units", "rules": [{
        "name": "unit", "source": "units", "id": "ref_id('u', id)",
        "fields": {"name": "number", "usage": {"map": "type", "values": {"APARTMENT": "PRIVAT"}, "default": None},
                   "nonsense": "number"}}]}
    assert list(validator.iter_errors(doc)) == []
    bad = {**doc, "rules": [{**doc["rules"][0], "fields": {"usage": {"map": "type", "values": {"A": [1]},
                                                                      "default": None}}}]}
    assert len(list(validator.iter_errors(bad))) == 1  # reported once, by the base schema


def test_catalog_change_shows_up_in_the_generated_schema() -> None:
    kinds = {k: dict(v) for k, v in casavi_kinds().items()}
    kinds["units"] = {**kinds["units"], "fields": {**kinds["units"]["fields"],
                                                   "heating": {"type": "enum", "values": ["GAS", "OIL"]}}}
    regenerated = apply(SCHEMA, kinds)
    heating = regenerated["$defs"][DEF_PREFIX + "units"]["properties"]["heating"]
    assert heating["properties"]["values"]["additionalProperties"]["anyOf"][0]["enum"] == ["GAS", "OIL"]
    assert render(regenerated) != MAPPING_SCHEMA.read_text(encoding="utf-8")
