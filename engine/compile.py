"""Compile validated mapping specs (plain dicts) into frozen plan objects.

The interpreter loops over tens of thousands of records; it must never look at YAML keys,
shorthand forms or expression strings. This stage resolves every shorthand once::

    fields:
      number: number                               -> ExprField("number", Expr("number"))
      type: {const: OWNER}                         -> ConstField("type", "OWNER")
      propertyId: {ref: properties, from: propertyId}
                                                   -> RefField("propertyId", "properties", Expr(...))
      usage: {map: type, values: {...}, default: PRIVATE}
                                                   -> ValueMapField(...), codes as text

and orders the mappings so that a referenced mapping comes before the ones referring to it.

The specs are expected to have passed validation (engine.validate), which reports problems with
file positions. Still, compile never trusts its input: anything structurally wrong becomes a
``SpecError`` whose diagnostics name the mapping and the JSON path, never a Python traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from engine.errors import Diagnostic, SpecError
from engine.expr import Expr, ExpressionError, compile_expr

__all__ = [
    "ConstField", "ExprField", "FieldPlan", "LookupPlan", "LoopPlan", "MappingPlan", "MappingSet",
    "ObjectField", "RefField", "RulePlan", "ValueMapField", "code_text", "compile_mappings", "needed_mappings",
]

ON_MISSING_REF = ("error", "skip", "null")
ON_MISSING_MAP = ("error", "skip")


def code_text(value: Any) -> str | None:
    """A value-map code as text: ``true``/``false`` lower-case, ``3.0`` as ``3``; null stays None."""
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class ExprField:
    name: str
    expr: Expr


@dataclass(frozen=True, slots=True)
class ConstField:
    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class ValueMapField:
    """``values`` maps code text to a literal or an Expr; a miss uses ``default`` or ``on_missing``."""

    name: str
    code: Expr
    values: Mapping[str, Any]
    has_default: bool
    default: Any = None
    on_missing: str | None = None  # "error" | "skip" when there is no default


@dataclass(frozen=True, slots=True)
class RefField:
    name: str
    mapping: str
    source: Expr  # the ``from`` expression: yields the SCALARA id
    on_missing: str = "error"  # "error" | "skip" | "null"


@dataclass(frozen=True, slots=True)
class ObjectField:
    name: str
    fields: tuple[FieldPlan, ...]


FieldPlan: TypeAlias = ExprField | ConstField | ValueMapField | RefField | ObjectField


@dataclass(frozen=True, slots=True)
class LookupPlan:
    name: str
    resource: str
    key: Expr
    match: str = "id"
    many: bool = False
    required: bool = False


@dataclass(frozen=True, slots=True)
class LoopPlan:
    name: str
    source: Expr  # the ``in`` expression


@dataclass(frozen=True, slots=True)
class MergePlan:
    """``on_duplicate_id``: records of one rule that share a reference id become one record."""

    join: Mapping[str, str]     # text field -> separator (distinct values, in SCALARA id order)
    any: tuple[str, ...]        # boolean fields OR-ed


@dataclass(frozen=True, slots=True)
class RulePlan:
    name: str
    source: str  # SCALARA resource
    filter: Expr | None
    lookups: tuple[LookupPlan, ...]
    for_each: tuple[LoopPlan, ...]
    id: Expr
    fields: tuple[FieldPlan, ...]
    merge: MergePlan | None = None


@dataclass(frozen=True, slots=True)
class MappingPlan:
    name: str
    target: str
    only_if_referenced_by: tuple[str, ...]
    rules: tuple[RulePlan, ...]
    description: str | None = None

    def references(self) -> tuple[str, ...]:
        """Names of the mappings this one refers to through ``ref`` fields (sorted, unique)."""
        found: set[str] = set()
        for rule in self.rules:
            _collect_refs(rule.fields, found)
        return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class MappingSet:
    mappings: Mapping[str, MappingPlan]
    order: tuple[str, ...]  # topological: every mapping after the ones it refers to
    by_target: Mapping[str, str] = field(default_factory=dict)  # casavi kind -> mapping name


def _collect_refs(fields: tuple[FieldPlan, ...], found: set[str]) -> None:
    for f in fields:
        if isinstance(f, RefField):
            found.add(f.mapping)
        elif isinstance(f, ObjectField):
            _collect_refs(f.fields, found)


# --------------------------------------------------------------------------- compiling


class _Ctx:
    """Collects diagnostics for one mapping, so the author sees all problems at once."""

    def __init__(self, mapping: str) -> None:
        self.mapping = mapping
        self.diagnostics: list[Diagnostic] = []

    def error(self, path: str, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(file=self.mapping, line=0, col=0, path=path,
                                           message=message, hint=hint, code="compile"))

    def expr(self, value: Any, path: str) -> Expr | None:
        if not isinstance(value, str):
            self.error(path, f"expected an expression (a string), got {_kind(value)}")
            return None
        try:
            return compile_expr(value)
        except ExpressionError as exc:
            self.diagnostics.append(Diagnostic(file=self.mapping, line=0, col=0, path=path,
                                               message=exc.reason, hint=exc.hint, code="expression"))
            return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _mapping_obj(ctx: _Ctx, value: Any, path: str) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        ctx.error(path, f"expected an object, got {_kind(value)}")
        return None
    return value


def compile_mappings(specs: Mapping[str, Mapping[str, Any]]) -> MappingSet:
    """Compile every mapping; raise one SpecError listing all structural problems."""
    diagnostics: list[Diagnostic] = []
    plans: dict[str, MappingPlan] = {}
    for name, spec in specs.items():
        ctx = _Ctx(str(name))
        plan = _compile_mapping(ctx, spec)
        diagnostics.extend(ctx.diagnostics)
        if plan is not None and not ctx.diagnostics:
            plans[str(name)] = plan
    if diagnostics:
        raise SpecError(diagnostics)
    diagnostics.extend(_check_links(plans))
    by_target: dict[str, str] = {}
    for plan in plans.values():
        if plan.target in by_target:
            diagnostics.append(Diagnostic(plan.name, 0, 0, f"mappings '{by_target[plan.target]}' and "
                                          f"'{plan.name}' both target '{plan.target}'", "$.target"))
        by_target[plan.target] = plan.name
    order = _topological(plans, diagnostics)
    if diagnostics:
        raise SpecError(diagnostics)
    return MappingSet(mappings=plans, order=order, by_target=by_target)


def _compile_mapping(ctx: _Ctx, spec: Any) -> MappingPlan | None:
    spec = _mapping_obj(ctx, spec, "$")
    if spec is None:
        return None
    target = spec.get("target")
    if not isinstance(target, str) or not target:
        ctx.error("$.target", "missing 'target' (the casavi kind this mapping writes)")
    only = spec.get("only_if_referenced_by") or []
    if not isinstance(only, list) or not all(isinstance(x, str) for x in only):
        ctx.error("$.only_if_referenced_by", "expected a list of mapping names")
        only = []
    rules_spec = spec.get("rules")
    if not isinstance(rules_spec, list) or not rules_spec:
        ctx.error("$.rules", "expected a non-empty list of rules")
        rules_spec = []
    rules: list[RulePlan] = []
    seen: set[str] = set()
    for i, rule_spec in enumerate(rules_spec):
        rule = _compile_rule(ctx, rule_spec, f"$.rules[{i}]")
        if rule is None:
            continue
        if rule.name in seen:
            ctx.error(f"$.rules[{i}].name", f"rule name '{rule.name}' is used twice")
        seen.add(rule.name)
        rules.append(rule)
    if ctx.diagnostics:
        return None
    description = spec.get("description")
    return MappingPlan(name=ctx.mapping, target=str(target), only_if_referenced_by=tuple(only),
                       rules=tuple(rules), description=description if isinstance(description, str) else None)


def _compile_rule(ctx: _Ctx, spec: Any, path: str) -> RulePlan | None:
    spec = _mapping_obj(ctx, spec, path)
    if spec is None:
        return None
    name, source = spec.get("name"), spec.get("source")
    if not isinstance(name, str) or not name:
        ctx.error(f"{path}.name", "missing rule 'name'")
    if not isinstance(source, str) or not source:
        ctx.error(f"{path}.source", "missing 'source' (the SCALARA resource this rule reads)")
    flt = ctx.expr(spec["filter"], f"{path}.filter") if spec.get("filter") is not None else None
    lookups: list[LookupPlan] = []
    lookups_spec = spec.get("lookups") or {}
    if _mapping_obj(ctx, lookups_spec, f"{path}.lookups") is not None:
        for lname, lspec in lookups_spec.items():
            lookup = _compile_lookup(ctx, str(lname), lspec, f"{path}.lookups.{lname}")
            if lookup is not None:
                lookups.append(lookup)
    loops: list[LoopPlan] = []
    loops_spec = spec.get("for_each") or []
    if not isinstance(loops_spec, list):
        ctx.error(f"{path}.for_each", f"expected a list, got {_kind(loops_spec)}")
        loops_spec = []
    for j, loop in enumerate(loops_spec):
        lpath = f"{path}.for_each[{j}]"
        if _mapping_obj(ctx, loop, lpath) is None:
            continue
        expr = ctx.expr(loop.get("in"), f"{lpath}.in")
        if not isinstance(loop.get("name"), str):
            ctx.error(f"{lpath}.name", "missing loop variable 'name'")
        elif expr is not None:
            loops.append(LoopPlan(loop["name"], expr))
    ident = ctx.expr(spec.get("id"), f"{path}.id")
    fields_spec = _mapping_obj(ctx, spec.get("fields"), f"{path}.fields")
    fields = _compile_fields(ctx, fields_spec or {}, f"{path}.fields")
    if ident is None or not isinstance(name, str) or not isinstance(source, str):
        return None
    merge = _compile_merge(ctx, spec.get("on_duplicate_id"), fields, f"{path}.on_duplicate_id")
    return RulePlan(name=name, source=source, filter=flt, lookups=tuple(lookups), for_each=tuple(loops),
                    id=ident, fields=fields, merge=merge)


def _compile_merge(ctx: _Ctx, spec: Any, fields: tuple[FieldPlan, ...], path: str) -> MergePlan | None:
    if spec is None or _mapping_obj(ctx, spec, path) is None:
        return None
    names = [f.name for f in fields]
    join = {str(k): str(v) for k, v in (spec.get("join") or {}).items()}
    anys = tuple(str(n) for n in (spec.get("any") or []))
    for field_name in (*join, *anys):
        if field_name not in names:
            ctx.error(f"{path}", f"'{field_name}' is not a field of this rule", hint=f"fields: {', '.join(names)}")
    return MergePlan(join, anys)


def _compile_lookup(ctx: _Ctx, name: str, spec: Any, path: str) -> LookupPlan | None:
    spec = _mapping_obj(ctx, spec, path)
    if spec is None:
        return None
    resource = spec.get("resource")
    if not isinstance(resource, str):
        ctx.error(f"{path}.resource", "missing 'resource' (the SCALARA resource to join)")
    match = spec.get("match", "id")
    if not isinstance(match, str):
        ctx.error(f"{path}.match", "expected a field name")
    key = ctx.expr(spec.get("key"), f"{path}.key")
    for flag in ("many", "required"):
        if not isinstance(spec.get(flag, False), bool):
            ctx.error(f"{path}.{flag}", f"expected true or false, got {_kind(spec.get(flag))}")
    if key is None or not isinstance(resource, str) or not isinstance(match, str):
        return None
    return LookupPlan(name=name, resource=resource, key=key, match=match,
                      many=spec.get("many") is True, required=spec.get("required") is True)


def _compile_fields(ctx: _Ctx, spec: Mapping[str, Any], path: str) -> tuple[FieldPlan, ...]:
    out: list[FieldPlan] = []
    for name, value in spec.items():
        plan = _compile_field(ctx, str(name), value, f"{path}.{name}")
        if plan is not None:
            out.append(plan)
    return tuple(out)


_FORMS = "an expression string or an object with one of: const, expr, map, ref, object"


def _compile_field(ctx: _Ctx, name: str, value: Any, path: str) -> FieldPlan | None:
    if isinstance(value, str):
        expr = ctx.expr(value, path)
        return ExprField(name, expr) if expr is not None else None
    if not isinstance(value, dict):
        ctx.error(path, f"expected {_FORMS}, got {_kind(value)}")
        return None
    forms = [k for k in ("const", "expr", "map", "ref", "object") if k in value]
    if len(forms) != 1:
        ctx.error(path, f"expected {_FORMS}" + (f"; found {', '.join(forms)}" if forms else ""))
        return None
    form = forms[0]
    if form == "const":
        return ConstField(name, value["const"])
    if form == "expr":
        expr = ctx.expr(value["expr"], f"{path}.expr")
        return ExprField(name, expr) if expr is not None else None
    if form == "object":
        inner = _mapping_obj(ctx, value["object"], f"{path}.object")
        return ObjectField(name, _compile_fields(ctx, inner or {}, f"{path}.object"))
    if form == "ref":
        return _compile_ref(ctx, name, value, path)
    return _compile_value_map(ctx, name, value, path)


def _compile_ref(ctx: _Ctx, name: str, value: dict[str, Any], path: str) -> RefField | None:
    target = value["ref"]
    if not isinstance(target, str):
        ctx.error(f"{path}.ref", "expected a mapping name")
    src = ctx.expr(value.get("from"), f"{path}.from")
    on_missing = value.get("on_missing", "error")
    if on_missing is None:  # YAML `on_missing: null` means "send null"
        on_missing = "null"
    if on_missing not in ON_MISSING_REF:
        ctx.error(f"{path}.on_missing", f"expected one of {', '.join(ON_MISSING_REF)}, got {on_missing!r}")
        return None
    if src is None or not isinstance(target, str):
        return None
    return RefField(name, target, src, on_missing)


def _compile_value_map(ctx: _Ctx, name: str, value: dict[str, Any], path: str) -> ValueMapField | None:
    code = ctx.expr(value["map"], f"{path}.map")
    raw = _mapping_obj(ctx, value.get("values"), f"{path}.values") or {}
    values: dict[str, Any] = {}
    for k, v in raw.items():
        text = code_text(k)
        if text is None:
            ctx.error(f"{path}.values", "a code may not be null")
            continue
        values[text] = _literal_or_expr(ctx, v, f"{path}.values.{text}")
    has_default = "default" in value
    on_missing = value.get("on_missing")
    if has_default == (on_missing is not None):
        ctx.error(path, "a value map needs exactly one of 'default' and 'on_missing'")
        return None
    if on_missing is not None and on_missing not in ON_MISSING_MAP:
        ctx.error(f"{path}.on_missing", f"expected one of {', '.join(ON_MISSING_MAP)}, got {on_missing!r}")
        return None
    default = _literal_or_expr(ctx, value.get("default"), f"{path}.default") if has_default else None
    if code is None:
        return None
    return ValueMapField(name, code, values, has_default, default, on_missing)


def _literal_or_expr(ctx: _Ctx, value: Any, path: str) -> Any:
    if isinstance(value, dict) and set(value) == {"expr"}:
        return ctx.expr(value["expr"], f"{path}.expr")
    return value


# --------------------------------------------------------------------------- links and order


def _check_links(plans: Mapping[str, MappingPlan]) -> list[Diagnostic]:
    out: list[Diagnostic] = []

    def unknown(mapping: str, path: str, name: str, what: str) -> None:
        close = difflib.get_close_matches(name, list(plans), n=1) if len(name) <= 100 else []
        out.append(Diagnostic(mapping, 0, 0, f"{what} '{name}' is not a mapping; known: "
                              f"{', '.join(sorted(plans))}", path,
                              hint=f"did you mean '{close[0]}'?" if close else None))

    for plan in plans.values():
        for i, other in enumerate(plan.only_if_referenced_by):
            if other not in plans:
                unknown(plan.name, f"$.only_if_referenced_by[{i}]", other, "only_if_referenced_by")
        for r, rule in enumerate(plan.rules):
            for fpath, ref in _refs_with_paths(rule.fields, f"$.rules[{r}].fields"):
                target = plans.get(ref.mapping)
                if target is None:
                    unknown(plan.name, f"{fpath}.ref", ref.mapping, "ref")
                elif not any(not t.for_each for t in target.rules):
                    out.append(Diagnostic(plan.name, 0, 0, f"ref '{ref.mapping}': every rule of that "
                                          "mapping uses for_each, so its ids are not one per SCALARA "
                                          "record", f"{fpath}.ref"))
    return out


def _refs_with_paths(fields: tuple[FieldPlan, ...], path: str) -> list[tuple[str, RefField]]:
    out: list[tuple[str, RefField]] = []
    for f in fields:
        if isinstance(f, RefField):
            out.append((f"{path}.{f.name}", f))
        elif isinstance(f, ObjectField):
            out.extend(_refs_with_paths(f.fields, f"{path}.{f.name}.object"))
    return out


def _topological(plans: Mapping[str, MappingPlan], diagnostics: list[Diagnostic]) -> tuple[str, ...]:
    """Depth-first order by ``ref`` dependencies, ties in spec order; a cycle is a SpecError."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2 or name not in plans:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name):], name]
            diagnostics.append(Diagnostic(name, 0, 0, "references form a cycle: " + " -> ".join(cycle),
                                          "$.rules", code="cycle"))
            return
        state[name] = 1
        for dep in plans[name].references():
            visit(dep, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in plans:
        visit(name, [])
    return tuple(order)


def needed_mappings(mset: MappingSet, only: Collection[str] | None) -> set[str]:
    """The mappings a run must compute for ``only``: their refs and data-protection referrers too."""
    if only is None:
        return set(mset.mappings)
    needed: set[str] = set()
    todo = [name for name in only if name in mset.mappings]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        plan = mset.mappings[name]
        todo.extend(plan.references())
        todo.extend(plan.only_if_referenced_by)
    return needed
