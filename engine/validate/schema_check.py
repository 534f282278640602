"""JSON Schema check of one mapping file, with errors a consultant can act on.

``schemas/mapping.schema.json`` is the single source of truth of the DSL's shape. jsonschema's
``iter_errors`` finds every violation; this module turns each into a
:class:`~engine.errors.Diagnostic` at the offending key or value, and rewrites the texts that
jsonschema writes for programmers:

* ``Additional properties are not allowed ('fileds' was unexpected)`` ->
  ``unknown key 'fileds'; did you mean 'fields'?`` with the allowed keys as the hint;
* a field that matches none of the forms of a ``oneOf`` -> the errors of the branch it clearly
  tries (it has a ``map`` key -> the value-map branch), or "matches none of the allowed forms:
  (a) ..., (b) ..." when it tries none.

The validator is built once per process (import and schema construction are most of the cost).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from engine.errors import Diagnostic
from engine.loader import Document, JsonPath, format_path, key_text
from engine.paths import MAPPING_SCHEMA
from engine.validate.expressions import did_you_mean

FORMS_TEXT = (
    "(a) an expression string, (b) {expr: ...}, (c) {const: ...}, "
    "(d) {map: ..., values: {...}, default: ... | on_missing: ...}, (e) {ref: <mapping>, from: ...}, "
    "(f) {object: {...fields}}"
)
_TYPE_NAMES = {"string": "text", "object": "a mapping (key: value)", "array": "a list",
               "boolean": "true or false", "integer": "a whole number", "number": "a number",
               "null": "null"}


@cache
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MAPPING_SCHEMA.read_text(encoding="utf-8"))
    return data


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _resolve(sub: Any) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/x``) to the subschema."""
    if isinstance(sub, dict) and isinstance(sub.get("$ref"), str) and sub["$ref"].startswith("#/$defs/"):
        target = schema()["$defs"].get(sub["$ref"][len("#/$defs/"):], {})
        return _resolve(target) if "$ref" in target and "type" not in target else dict(target)
    return dict(sub) if isinstance(sub, dict) else {}


class SchemaChecker:
    """Checks one document; ``bad_paths`` lists where the schema failed (semantics skip them)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.diagnostics: list[Diagnostic] = []
        self.bad_paths: set[JsonPath] = set()

    def run(self) -> list[Diagnostic]:
        for error in _validator().iter_errors(self.doc.plain):
            self._translate(error)
        return self.diagnostics

    def _add(self, path: JsonPath, message: str, code: str, hint: str | None = None, at: str = "auto") -> None:
        line, col = self.doc.locate(path, at=at)
        if not path:
            first = self._first_key_position()
            line, col = first or (line, col)
        self.bad_paths.add(path)
        self.diagnostics.append(Diagnostic(
            file=self.doc.file, line=line, col=col, message=message, path=format_path(path), hint=hint,
            code=code, severity="error", source_line=self.doc.source_line(line)))

    def _first_key_position(self) -> tuple[int, int] | None:
        root = self.doc.root
        if isinstance(root, dict) and root:
            return self.doc.locate((key_text(next(iter(root))),), at="key")
        return None

    def _translate(self, error: Any) -> None:
        path: JsonPath = tuple(error.absolute_path)
        validator = error.validator
        instance = error.instance
        if validator == "additionalProperties" and isinstance(instance, dict):
            allowed = list(error.schema.get("properties", {}))
            for key in instance:
                if key not in allowed:
                    self._add((*path, key), f"unknown key '{key}'{did_you_mean(key, allowed)}", "unknown-key",
                              "allowed keys here: " + ", ".join(allowed), at="key")
        elif validator == "required":
            missing = [k for k in error.validator_value if isinstance(instance, dict) and k not in instance]
            for key in missing:
                where = f" in {format_path(path)}" if path else ""
                self._add(path, f"missing key '{key}'{where}", "missing-key", _required_hint(key), at="key")
        elif validator == "oneOf":
            self._one_of(error, path)
        elif validator == "enum":
            self._enum(error, path)
        elif validator == "type":
            expected = error.validator_value
            names = [expected] if isinstance(expected, str) else list(expected)
            wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
            self._add(path, f"expected {wanted}, found {_type_of(instance)}", "wrong-type")
        elif validator == "pattern":
            self._add(path, f"'{instance}' is not a valid name here (letters, digits and _; "
                            f"mapping names in lower case)", "invalid-name")
        elif validator in ("minItems", "minLength"):
            self._add(path, "must not be empty", "empty-value")
        elif validator == "uniqueItems":
            self._add(path, "lists the same name twice", "duplicate-name")
        else:
            self._add(path, error.message, "schema")

    def _enum(self, error: Any, path: JsonPath) -> None:
        allowed = [str(v) if v is not None else "null" for v in error.validator_value]
        value = error.instance
        last = path[-1] if path else ""
        shown = value if isinstance(value, str) else json.dumps(value)
        suggestion = did_you_mean(str(value), allowed) if isinstance(value, str) else ""
        if last == "target":
            self._add(path, f"unknown casavi kind '{shown}'{suggestion}", "unknown-target",
                      "casavi kinds: " + ", ".join(allowed))
        elif last in ("source", "resource"):
            self._add(path, f"unknown SCALARA resource '{shown}'{suggestion}", "unknown-resource",
                      "SCALARA resources: " + ", ".join(allowed))
        else:
            self._add(path, f"'{shown}' is not allowed here{suggestion}", "invalid-value",
                      "allowed: " + ", ".join(allowed))

    def _one_of(self, error: Any, path: JsonPath) -> None:
        instance = error.instance
        branches = [_resolve(b) for b in error.validator_value]
        if isinstance(instance, dict) and "map" in instance and all(set(b) == {"required"} for b in branches):
            both = "default" in instance and "on_missing" in instance
            self._add(path, "a value map needs exactly one of 'default' and 'on_missing'"
                      + (" (it has both)" if both else ""), "map-default",
                      "add 'default: <value>' for codes not listed, or 'on_missing: skip|error'", at="key")
            return
        keyed = {b["required"][0]: i for i, b in enumerate(branches) if b.get("required")}
        tried = [k for k in keyed if isinstance(instance, dict) and k in instance]
        if len(tried) == 1:
            index = keyed[tried[0]]
            sub_errors = [e for e in error.context if e.schema_path and e.schema_path[0] == index]
            if sub_errors:
                for sub in sub_errors:
                    self._translate(sub)
                return
        is_map_value = any(b.get("type") == ["string", "number", "boolean", "null"] for b in branches)
        if len(tried) > 1:
            self._add(path, "mixes the forms " + " and ".join(f"'{k}'" for k in tried) + "; use one",
                      "invalid-form", "allowed forms: " + FORMS_TEXT, at="key")
        elif is_map_value:
            self._add(path, f"a value-map value must be text, a number, true/false, null or {{expr: ...}}, "
                            f"not {_type_of(instance)}", "invalid-form")
        else:
            hint: str | None = "a field is an expression string or a mapping with one of the keys " + ", ".join(keyed)
            if instance is None or isinstance(instance, bool | int | float):
                hint = f"for a constant write {{const: {json.dumps(instance)}}}"
            elif isinstance(instance, dict):
                for key in instance:
                    close = did_you_mean(str(key), list(keyed))
                    if close:
                        hint = f"'{key}' is not a form key{close}"
                        break
            self._add(path, "matches none of the allowed forms: " + FORMS_TEXT, "invalid-form", hint)


def _required_hint(key: str) -> str | None:
    return {
        "mapping": "the mapping's name, e.g. 'mapping: units'",
        "target": "the casavi kind, e.g. 'target: units'",
        "rules": "a list of rules, each with name, source, id and fields",
        "id": "the casavi reference id, e.g. id: \"ref_id('u', id)\"",
        "fields": "the casavi payload, one entry per casavi field",
        "values": "the code table, e.g. values: {APARTMENT: PRIVATE}",
        "from": "the expression giving the SCALARA id, e.g. from: propertyId",
    }.get(key)
