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
