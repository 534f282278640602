"""Checks the schema cannot express: what the names in a mapping refer to.

The schema knows that ``usage`` is a value map; only the catalogs know that ``PRIVAT`` is not a
value casavi accepts for ``units.usage``, that ``stret`` is not a field of SCALARA buildings, and
only the whole *set* of mappings knows that ``ref: propertys`` names nothing, or that
``properties -> units -> properties`` is a cycle the writer could never order.

Per file: expressions (syntax with the exact column, functions and arity, field names against the
context), lookups and loops (unknown resources and fields, names hiding record fields), target
fields (unknown, required ones missing), value maps and constants (allowed casavi values, source
codes), references (target kind, for_each). Across files: duplicate names and targets, id prefixes
shared by rules of one target, reference cycles, ``only_if_referenced_by``.

Every check reads the plain tree defensively and skips subtrees the schema check already rejected,
so a malformed file yields its schema errors and never a crash.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.catalog import casavi_kinds, scalara_resources
from engine.errors import Diagnostic
from engine.loader import Document, JsonPath, format_path
from engine.validate import expressions as ex
from engine.validate import literals as lit
from engine.validate.expressions import ANY, Shape, did_you_mean


@dataclass
class MappingFile:
    """One loaded, schema-checked mapping file."""

    doc: Document
    bad_paths: set[JsonPath]

    @property
    def spec(self) -> dict[str, Any]:
        plain = self.doc.plain
        return plain if isinstance(plain, dict) else {}

    @property
    def name(self) -> str | None:
        name = self.spec.get("mapping")
        return name if isinstance(name, str) else None


@dataclass
class _RuleInfo:
    file: MappingFile
    path: JsonPath
    name: str
    target: str | None
    prefix: str | None
    has_for_each: bool


@dataclass
class _Ref:
    file: MappingFile
    path: JsonPath  # of the {ref: ...} form
    target_mapping: str
    expected_kind: str | None  # what the casavi field references, None if free-form


@dataclass
class SetChecker:
    """Runs every semantic check over a set of mapping files."""

    files: list[MappingFile]
    # Names of mappings that may live in files that could not be read (YAML syntax errors): those
    # files are reported; references into them are not blamed on the files that make them.
    unreadable: set[str] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    rules: list[_RuleInfo] = field(default_factory=list)
    refs: list[_Ref] = field(default_factory=list)

    def run(self) -> list[Diagnostic]:
        self.resources = scalara_resources()
        self.kinds = casavi_kinds()
        for mf in self.files:
            self._check_file(mf)
        self._check_names()
        self._check_refs()
        self._check_prefixes()
        self._check_cycles()
        self._check_only_if()
        return self.diagnostics

    # -- reporting ---------------------------------------------------------------------------

    def add(self, mf: MappingFile, path: JsonPath, message: str, code: str, hint: str | None = None,
            severity: str = "error", at: str = "auto", pos: tuple[int, int] | None = None) -> None:
        line, col = pos or mf.doc.locate(path, at=at)
        self.diagnostics.append(Diagnostic(
            file=mf.doc.file, line=line, col=col, message=message, path=format_path(path), hint=hint,
            code=code, severity=severity, source_line=mf.doc.source_line(line)))

    def _ok(self, mf: MappingFile, path: JsonPath) -> bool:
        """False if the schema rejected something at or below ``path``."""
        n = len(path)
        return not any(bad[:n] == path for bad in mf.bad_paths)

    def expression(self, mf: MappingFile, path: JsonPath, scope: Shape) -> tuple[ex.Parsed | None, Shape]:
        text = mf.doc.node(path)
        if not isinstance(text, str) or not self._ok(mf, path):
            return None, ANY
        parsed, message, offset = ex.parse(str(text))
        if parsed is None:
            self.add(mf, path, message or "invalid expression", "jmespath-syntax",
                     "JMESPath: text in single quotes ('A'), other literals in backticks (`1`)",
                     pos=mf.doc.expression_position(path, offset))
            return None, ANY

        def report(message: str, hint: str | None, code: str, off: int | None) -> None:
            pos = mf.doc.expression_position(path, off) if off is not None else None
            self.add(mf, path, message, code, hint, pos=pos)

        return parsed, ex.Checker(parsed, report).run(scope)

    # -- one file ----------------------------------------------------------------------------

    def _check_file(self, mf: MappingFile) -> None:
        spec = mf.spec
        raw = spec.get("target")
        target = raw if isinstance(raw, str) and raw in self.kinds else None
        rules = spec.get("rules")
        if not isinstance(rules, list):
            return
        seen: dict[str, int] = {}
        for index, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            path: JsonPath = ("rules", index)
            name = rule.get("name")
            if isinstance(name, str):
                if name in seen:
                    first_line, _ = mf.doc.locate(("rules", seen[name], "name"))
                    self.add(mf, (*path, "name"), f"duplicate rule name '{name}' (first at line {first_line})",
                             "duplicate-rule", "rule names must be unique within a file")
                else:
                    seen[name] = index
            self._check_rule(mf, path, rule, target)

    def _check_rule(self, mf: MappingFile, path: JsonPath, rule: dict[str, Any], target: str | None) -> None:
        source = rule.get("source")
        record_fields: dict[str, Any] = (
            self.resources[source]["fields"] if isinstance(source, str) and source in self.resources else {})
        known_source = bool(record_fields)
        members = dict(ex.resource_shape(record_fields, str(source)).fields) if known_source else {}
        lookup_shapes = self._lookups(mf, path, rule, record_fields, members, known_source)
        members.update(lookup_shapes)
        base_scope = Shape("object", str(source), fields=dict(members)) if known_source else ANY
        loops = self._loops(mf, path, rule, record_fields, members, known_source)
        for name in loops:
            members[name] = ANY
        broken = not (self._ok(mf, (*path, "lookups")) and self._ok(mf, (*path, "for_each")))
        scope = Shape("object", str(source), fields=members) if known_source and not broken else ANY
        if "filter" in rule:
            self.expression(mf, (*path, "filter"), base_scope)
        prefix = None
        if "id" in rule:
            parsed, _ = self.expression(mf, (*path, "id"), scope)
            if parsed is not None:
                prefix = _ref_id_prefix(parsed.ast)
                bad = lit.prefix_problem(prefix) if prefix is not None else None
                if bad is not None:
                    self.add(mf, (*path, "id"), bad, "bad-id-prefix",
                             "a prefix of letters, digits, '.', '_' or '-', e.g. ref_id('u', id)")
                missing = [v for v in loops if v not in ex.field_names(parsed.ast)]
                if missing:
                    self.add(mf, (*path, "id"), "the id does not use the loop variable(s) "
                             + ", ".join(f"'{m}'" for m in missing) + "; outputs of one record would share an id",
                             "for-each-id", "e.g. id: \"ref_id('x', id, " + ", ".join(loops) + ")\"",
                             severity="warning")
        self.rules.append(_RuleInfo(mf, path, str(rule.get("name", "?")), target, prefix, bool(loops)))
        fields = rule.get("fields")
        if isinstance(fields, dict):
            self._check_fields(mf, (*path, "fields"), fields, scope, target)

    def _lookups(self, mf: MappingFile, path: JsonPath, rule: dict[str, Any], record_fields: dict[str, Any],
                 members: dict[str, Shape], known_source: bool) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {}
        lookups = rule.get("lookups")
        if not isinstance(lookups, dict):
            return shapes
        for name, lookup in lookups.items():
            lpath: JsonPath = (*path, "lookups", name)
            if not isinstance(lookup, dict) or not self._ok(mf, lpath):
                shapes[name] = ANY
                continue
            if name in record_fields:
                self.add(mf, lpath, f"the lookup name '{name}' hides the field '{name}' of {rule.get('source')}",
                         "shadows-field", "choose another name, e.g. the resource in singular", at="key")
            key_scope = Shape("object", str(rule.get("source")), fields={**members, **shapes}) if known_source else ANY
            self.expression(mf, (*lpath, "key"), key_scope)
            resource = lookup.get("resource")
            if not isinstance(resource, str) or resource not in self.resources:
                shapes[name] = ANY
                continue
            rfields = self.resources[resource]["fields"]
            match = lookup.get("match", "id")
            if isinstance(match, str) and match not in rfields:
                self.add(mf, (*lpath, "match"), f"unknown field '{match}' of {resource}"
                         f"{did_you_mean(match, list(rfields))}", "unknown-field",
                         "available: " + ", ".join(rfields))
            one = ex.resource_shape(rfields, f"{resource} (lookup '{name}')", f"{name}.")
            shapes[name] = Shape("list", name, elem=one) if lookup.get("many") is True else one
        return shapes

    def _loops(self, mf: MappingFile, path: JsonPath, rule: dict[str, Any], record_fields: dict[str, Any],
               members: dict[str, Shape], known_source: bool) -> list[str]:
        names: list[str] = []
        loops = rule.get("for_each")
        if not isinstance(loops, list):
            return names
        for index, loop in enumerate(loops):
            lpath: JsonPath = (*path, "for_each", index)
            if not isinstance(loop, dict):
                continue
            name = loop.get("name")
            scope = Shape("object", str(rule.get("source")),
                          fields={**members, **{n: ANY for n in names}}) if known_source else ANY
            self.expression(mf, (*lpath, "in"), scope)
            if not isinstance(name, str):
                continue
            if name in record_fields:
                self.add(mf, (*lpath, "name"), f"the loop variable '{name}' hides the field '{name}' of "
                         f"{rule.get('source')}", "shadows-field", "choose another name", )
            elif name in members or name in names:
                self.add(mf, (*lpath, "name"), f"the loop variable '{name}' is already a lookup or loop name",
                         "duplicate-name")
            names.append(name)
        return names

    def _check_fields(self, mf: MappingFile, path: JsonPath, fields: dict[str, Any], scope: Shape,
                      target: str | None) -> None:
        kind = self.kinds.get(target) if target else None
        specs: dict[str, Any] = kind["fields"] if kind else {}
        for name, value in fields.items():
            fpath: JsonPath = (*path, name)
            spec = specs.get(name)
            if kind is not None and spec is None:
                self.add(mf, fpath, f"casavi {target} have no field '{name}'{did_you_mean(name, list(specs))}",
                         "unknown-target-field", "fields of casavi " + f"{target}: " + ", ".join(specs), at="key")
                continue
            if self._ok(mf, fpath):
                self._check_form(mf, fpath, value, scope, spec, name, free=spec is None or name == "customFields")
        if kind is None or not self._ok(mf, path):
            return
        for name, spec in specs.items():
            if spec.get("required") and name not in fields:
                self.add(mf, path, f"required casavi field '{name}' is missing", "missing-required-field",
                         f"casavi {target} need: " + ", ".join(n for n, s in specs.items() if s.get("required")),
                         at="key")
        one_of = kind.get("required_one_of") or []
        if one_of and not any(n in fields for n in one_of):
            self.add(mf, path, "casavi " + f"{target} need at least one of: " + ", ".join(one_of),
                     "missing-required-field", at="key")

    def _check_form(self, mf: MappingFile, path: JsonPath, value: Any, scope: Shape,
                    spec: dict[str, Any] | None, name: str, *, free: bool) -> None:
        cspec = None if free else spec
        if isinstance(value, str):
            self.expression(mf, path, scope)
        elif not isinstance(value, dict):
            return
        elif "expr" in value:
            self.expression(mf, (*path, "expr"), scope)
        elif "const" in value:
            self._literal(mf, (*path, "const"), value["const"], cspec, name)
        elif "map" in value:
            self._value_map(mf, path, value, scope, cspec, name)
        elif "ref" in value:
            self.expression(mf, (*path, "from"), scope)
            if isinstance(value["ref"], str):
                expected = cspec.get("references") if cspec else None
                self.refs.append(_Ref(mf, path, value["ref"], expected))
                if cspec is not None and not expected:
                    self.add(mf, (*path, "ref"), f"casavi field '{name}' is not a reference, but gets a reference id",
                             "ref-target", "use an expression unless you really want the id", severity="warning")
            return
        elif "object" in value and isinstance(value["object"], dict):
            for key, sub in value["object"].items():
                if self._ok(mf, (*path, "object", key)):
                    self._check_form(mf, (*path, "object", key), sub, scope, None, key, free=True)
        if cspec is not None and cspec.get("references"):
            ref = cspec["references"]
            self.add(mf, path, f"casavi field '{name}' takes the reference id of a {ref} record",
                     "ref-expected", f"write {{ref: {ref}, from: <SCALARA id>}} so the order and the id are right",
                     severity="warning")

    def _value_map(self, mf: MappingFile, path: JsonPath, value: dict[str, Any], scope: Shape,
                   cspec: dict[str, Any] | None, name: str) -> None:
        _, shape = self.expression(mf, (*path, "map"), scope)
        values = value.get("values")
        if isinstance(values, dict):
            codes = list(shape.values) if shape.kind == "scalar" else []
            for code, target in values.items():
                vpath: JsonPath = (*path, "values", code)
                if codes and code not in codes:
                    self.add(mf, vpath, f"'{code}' is not a SCALARA code of '{shape.label}'{did_you_mean(code, codes)}",
                             "unknown-code", "codes: " + ", ".join(codes), severity="warning", at="key")
                self._map_value(mf, vpath, target, scope, cspec, name)
        if "default" in value:
            self._map_value(mf, (*path, "default"), value["default"], scope, cspec, name)

    def _map_value(self, mf: MappingFile, path: JsonPath, value: Any, scope: Shape,
                   cspec: dict[str, Any] | None, name: str) -> None:
        if isinstance(value, dict):
            self.expression(mf, (*path, "expr"), scope)
        else:
            self._literal(mf, path, value, cspec, name)

    def _literal(self, mf: MappingFile, path: JsonPath, value: Any, cspec: dict[str, Any] | None,
                 name: str) -> None:
        if not self._ok(mf, path):
            return
        where = lit.nonfinite(value)
        if where is not None:
            self.add(mf, path, f"{'.' + where + ' of ' if where else ''}casavi field '{name}' would be NaN or "
                     "Infinity, which JSON cannot carry", "value-not-allowed", "write a number, or null")
            return
        if cspec is None:
            return
        nullable = bool(cspec.get("nullable"))
        if value is None:
            if cspec.get("required") and not nullable:
                self.add(mf, path, f"casavi field '{name}' cannot be null", "value-not-allowed")
            return
        allowed = [str(v) for v in cspec.get("values") or ()]
        if allowed:
            if not isinstance(value, str) or value not in allowed:
                shown = f"'{value}'" if isinstance(value, str) else json.dumps(value)
                suggestion = did_you_mean(value, allowed) if isinstance(value, str) else ""
                self.add(mf, path, f"{shown} is not an allowed value of casavi field '{name}'{suggestion}",
                         "value-not-allowed", "allowed: " + ", ".join(allowed) + (", null" if nullable else ""))
        else:
            problem = lit.type_problem(value, cspec, name)
            if problem is not None:
                self.add(mf, path, problem[0], "value-not-allowed", problem[1])

    # -- across files ------------------------------------------------------------------------

    def _by_name(self) -> dict[str, MappingFile]:
        names: dict[str, MappingFile] = {}
        for mf in self.files:
            if mf.name is not None and mf.name not in names:
                names[mf.name] = mf
        return names

    def _check_names(self) -> None:
        by_name: dict[str, MappingFile] = {}
        by_target: dict[str, MappingFile] = {}
        for mf in self.files:
            if mf.name is not None:
                other = by_name.setdefault(mf.name, mf)
                if other is not mf:
                    self.add(mf, ("mapping",), f"the mapping name '{mf.name}' is also used in {_short(other)}",
                             "duplicate-mapping", "mapping names must be unique")
            target = mf.spec.get("target")
            if isinstance(target, str) and target in self.kinds:
                other = by_target.setdefault(target, mf)
                if other is not mf:
                    for a, b in ((mf, other), (other, mf)):
                        self.add(a, ("target",), f"mapping '{b.name}' in {_short(b)} also targets {target}",
                                 "duplicate-target",
                                 "one mapping per casavi kind; put both rules into one file")

    def _check_refs(self) -> None:
        names = self._by_name()
        for ref in self.refs:
            target = names.get(ref.target_mapping)
            rpath: JsonPath = (*ref.path, "ref")
            if target is None:
                if ref.target_mapping in self.unreadable:
                    continue
                self.add(ref.file, rpath, f"unknown mapping '{ref.target_mapping}'"
                         f"{did_you_mean(ref.target_mapping, list(names))}", "unknown-mapping",
                         "mappings: " + ", ".join(sorted(names)))
                continue
            rules = target.spec.get("rules")
            if isinstance(rules, list) and any(isinstance(r, dict) and "for_each" in r for r in rules):
                self.add(ref.file, rpath, f"mapping '{ref.target_mapping}' has for_each rules; their ids are "
                         "not one per SCALARA record, so they cannot be referenced", "ref-for-each")
            kind = target.spec.get("target")
            if ref.expected_kind and kind != ref.expected_kind:
                self.add(ref.file, rpath, f"this field refers to casavi {ref.expected_kind}, but mapping "
                         f"'{ref.target_mapping}' targets {kind}", "ref-target",
                         f"refer to the mapping that targets {ref.expected_kind}")

    def _check_prefixes(self) -> None:
        groups: dict[tuple[str, str], list[_RuleInfo]] = {}
        for rule in self.rules:
            if rule.target and rule.prefix:
                groups.setdefault((rule.target, rule.prefix), []).append(rule)
        for (target, prefix), rules in groups.items():
            if len(rules) < 2:
                continue
            for rule in rules:
                others = ", ".join(f"'{o.name}' ({_short(o.file)})" for o in rules if o is not rule)
                self.add(rule.file, (*rule.path, "id"), f"rule '{rule.name}' and rule {others} of target {target} "
                         f"both use the id prefix '{prefix}'; their reference ids could collide",
                         "duplicate-id-prefix", "give each rule its own prefix in ref_id('<prefix>', ...)")

    def _check_cycles(self) -> None:
        edges: dict[str, dict[str, _Ref]] = {}
        for ref in self.refs:
            if ref.file.name is not None:
                edges.setdefault(ref.file.name, {}).setdefault(ref.target_mapping, ref)
        for start in sorted(edges):
            cycle = _shortest_cycle(start, edges)
            if cycle:
                ref = edges[start][cycle[1]]
                self.add(ref.file, (*ref.path, "ref"), "reference cycle: " + " -> ".join(cycle), "cycle",
                         "references decide the write order; one of them must go")

    def _check_only_if(self) -> None:
        names = self._by_name()
        for mf in self.files:
            listed = mf.spec.get("only_if_referenced_by")
            if not isinstance(listed, list) or not self._ok(mf, ("only_if_referenced_by",)):
                continue
            for index, other in enumerate(listed):
                if not isinstance(other, str):
                    continue
                path: JsonPath = ("only_if_referenced_by", index)
                if other not in names:
                    if other in self.unreadable:
                        continue
                    self.add(mf, path, f"unknown mapping '{other}'{did_you_mean(other, list(names))}",
                             "unknown-mapping", "mappings: " + ", ".join(sorted(names)))
                elif not any(r.file is names[other] and r.target_mapping == mf.name for r in self.refs):
                    self.add(mf, path, f"mapping '{other}' has no ref to '{mf.name}', so it never lets a record "
                             "through", "only-if-referenced", f"add {{ref: {mf.name}, from: ...}} to '{other}' "
                             "or remove it here")


def _short(mf: MappingFile) -> str:
    """Another file named in a message: its name is enough (mappings live in one folder)."""
    return Path(mf.doc.file).name


def _ref_id_prefix(ast: dict[str, Any]) -> str | None:
    if ast.get("type") == "function_expression" and ast.get("value") == "ref_id":
        kids = ast.get("children") or []
        if kids and isinstance(kids[0], dict) and kids[0].get("type") == "literal":
            value = kids[0].get("value")
            return value if isinstance(value, str) else None
    return None


def _shortest_cycle(start: str, edges: dict[str, dict[str, _Ref]]) -> list[str] | None:
    """``[start, ..., start]`` by breadth-first search, or None."""
    queue: deque[list[str]] = deque([[start]])
    seen: set[str] = set()
    while queue:
        path = queue.popleft()
        for nxt in sorted(edges.get(path[-1], {})):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                queue.append([*path, nxt])
    return None
