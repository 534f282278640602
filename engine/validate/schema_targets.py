"""Editor completion of casavi field names and values, generated into the mapping schema from the catalog.

``engine/catalog/casavi.yaml`` says which fields each casavi kind has and which values an enumerated
field allows. This module turns that into the part of ``mapping.schema.json`` that editors use for
completion:

* ``$defs/casavi_fields_<kind>``: one property per casavi field of the kind (its type, whether it
  is required or nullable, the catalog's note), so that an editor lists them under ``fields:``;
* for an enumerated field (salutation, unit usage, contract type, ...) the allowed values at every
  place a mapping writes a literal for it: ``{const: ...}``, the entries of ``values:`` and
  ``default:`` of a value map;
* a root ``allOf`` of ``if target == <kind> then rules[].fields is casavi_fields_<kind>``.

Completion only: every generated node accepts what it accepted before (the allowed values sit in
an ``anyOf`` next to an empty schema). Unknown fields and values outside the catalog are reported
by the semantic validator, with a did-you-mean, as before.

Regenerate after changing the catalog (a test fails until the schema is in step with it)::

    python -m engine.validate.schema_targets
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEF_PREFIX = "casavi_fields_"
GENERATED_NOTE = "Generated from engine/catalog/casavi.yaml by `python -m engine.validate.schema_targets`."


def _field_description(kind: str, name: str, spec: dict[str, Any]) -> str:
    ftype = str(spec.get("type", "string"))
    parts = [f"casavi {kind}.{name}: {ftype}"]
    if spec.get("values"):
        parts[0] = f"casavi {kind}.{name}: one of " + ", ".join(str(v) for v in spec["values"])
    if spec.get("references"):
        parts.append(f"the reference id of a casavi {spec['references']} record (use {{ref: ..., from: ...}})")
    if spec.get("required"):
        parts.append("required")
    elif spec.get("nullable"):
        parts.append("may be null")
    if spec.get("description"):
        parts.append(str(spec["description"]))
    return "; ".join(parts) + "."


def _allowed(spec: dict[str, Any]) -> list[Any]:
    values: list[Any] = list(spec.get("values") or [])
    if spec.get("type") == "boolean":
        values = [True, False]
    if values and spec.get("nullable"):
        values.append(None)
    return values


def _choice(kind: str, name: str, values: list[Any], what: str) -> dict[str, Any]:
    """Completion of ``values`` at one place; accepts anything (the semantic validator judges)."""
    return {
        "description": f"{what}: an allowed value of casavi {kind}.{name} ("
                       + ", ".join(json.dumps(v) for v in values) + ").",
        "examples": values,
        "anyOf": [{"enum": values}, {}],
    }


def _field_schema(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {"description": _field_description(kind, name, spec)}
    values = _allowed(spec)
    if spec.get("references"):
        node["examples"] = [{"ref": spec["references"], "from": f"{singular(spec['references'])}Id"}]
    elif values:
        first = values[0]
        node["examples"] = [{"const": first}, {"map": "code", "values": {"CODE": first}, "default": values[-1]}]
        node["properties"] = {
            "const": _choice(kind, name, values, "The constant"),
            "values": {
                "description": f"Source code -> an allowed value of casavi {kind}.{name}.",
                "examples": [{"CODE": first}],
                "additionalProperties": _choice(kind, name, values, "The value for this code"),
            },
            "default": _choice(kind, name, values, "The value for codes not listed"),
        }
    else:
        node["examples"] = [name]
    return node


def singular(kind: str) -> str:
    return {"properties": "property"}.get(kind, kind[:-1] if kind.endswith("s") else kind)


def generated(kinds: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(the root ``allOf``, the ``$defs`` entries) that the catalog's casavi ``kinds`` give."""
    defs: dict[str, dict[str, Any]] = {}
    all_of: list[dict[str, Any]] = []
    for kind, kspec in kinds.items():
        fields = kspec.get("fields") or {}
        required = [n for n, f in fields.items() if f.get("required")]
        one_of = kspec.get("required_one_of") or []
        desc = f"The fields of a casavi {kind} record, for completion under fields: ({kspec.get('description', '')})"
        if required:
            desc += " Required: " + ", ".join(required) + "."
        if one_of:
            desc += " At least one of: " + ", ".join(one_of) + "."
        defs[DEF_PREFIX + kind] = {
            "description": f"{desc} {GENERATED_NOTE}",
            "examples": [{n: n for n in (required or list(fields))[:2]}],
            "x-completion-only": True,
            "properties": {name: _field_schema(kind, name, spec) for name, spec in fields.items()},
        }
        all_of.append({
            "if": {"properties": {"target": {"const": kind}}, "required": ["target"]},
            "then": {"properties": {"rules": {"items": {"properties": {
                "fields": {"$ref": f"#/$defs/{DEF_PREFIX}{kind}"}}}}}},
        })
    return all_of, defs


def apply(schema: dict[str, Any], kinds: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its generated parts replaced by those of ``kinds`` (key order kept)."""
    all_of, defs = generated(kinds)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "allOf":
            continue
        if key == "$defs":
            out["allOf"] = all_of
            kept = {k: v for k, v in value.items() if not k.startswith(DEF_PREFIX)}
            out["$defs"] = {**kept, **defs}
        else:
            out[key] = value
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    from engine.catalog import casavi_kinds
    from engine.paths import MAPPING_SCHEMA

    target = Path(argv[0]) if argv else MAPPING_SCHEMA
    schema = json.loads(target.read_text(encoding="utf-8"))
    text = render(apply(schema, casavi_kinds()))
    if text != target.read_text(encoding="utf-8"):
        target.write_text(text, encoding="utf-8")
        print(f"updated {target}")
    else:
        print(f"{target} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
