"""Run a compiled MappingSet over SCALARA records: records in, casavi payloads and errors out.

Why two phases: a casavi record refers to another by the *reference id* the other mapping gave
it (``propertyId: {ref: properties, from: propertyId}``). So first every rule computes the
identities of its records (lookups, filter, for_each, id: no refs needed), building one table
per mapping ``SCALARA id -> reference id``. Then, in topological order (properties before units
before contracts), every item's fields are evaluated; a ``ref`` is a dictionary lookup in that
table, and because the referenced mapping already ran, a record that failed there makes the
records depending on it fail too ("depends on failed unit ...").

One bad record never stops the others: anything raised while evaluating one (record, loop item)
becomes a ``RecordError`` with the SCALARA resource and id, the field and a reason.

Data protection runs last: a mapping with ``only_if_referenced_by`` keeps a record only if a
successfully produced record of the named mappings refers to it.

The hot path is a dict comprehension over precompiled closures (see engine.expr); nothing here
looks at YAML or expression text per record.
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import itertools
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.catalog import casavi_kinds
from engine.compile import (
    ConstField,
    ExprField,
    FieldPlan,
    LookupPlan,
    MappingPlan,
    MappingSet,
    MergePlan,
    ObjectField,
    RefField,
    RulePlan,
    ValueMapField,
    code_text,
)
from engine.errors import ConfigError, RecordError
from engine.expr import Expr, build_function, describe_error, unique_name
from engine.functions import REFERENCE_ID, RUN_DATE
from engine.text import quote

__all__ = ["MapResult", "MappingStats", "Output", "map_records", "singular"]

Fn = Callable[[Any], Any]
_MISS = object()


@dataclass(frozen=True, slots=True)
class Output:
    """One casavi payload and where it came from."""

    kind: str
    ref_id: str
    payload: dict[str, Any]
    mapping: str
    rule: str
    source_resource: str
    source_id: str
    depends_on: tuple[tuple[str, str], ...]  # (target kind, reference id) of every referenced record
    references_assumed: bool = False  # only with assume_references: a ref was derived, not looked up


@dataclass(slots=True)
class MappingStats:
    read: int = 0          # source records seen (tombstones excluded), per rule
    filtered_out: int = 0  # filter false, empty for_each, value map or ref with on_missing: skip
    produced: int = 0      # payloads in the result
    errors: int = 0        # per-record errors reported
    dropped: int = 0       # left out by only_if_referenced_by (data protection)

    def as_dict(self) -> dict[str, int]:
        return {"read": self.read, "filteredOut": self.filtered_out, "produced": self.produced,
                "errors": self.errors, "dropped": self.dropped}


# (mapping, rule, field path, code as text or None) of a value-map miss; see MapResult.misses
MissKey = tuple[str, str, str, str | None]


@dataclass(frozen=True, slots=True)
class MapResult:
    outputs: dict[str, dict[str, Output]]  # target kind -> reference id -> Output
    errors: list[RecordError]
    stats: dict[str, MappingStats]  # mapping name -> counts
    # Value-map misses: codes with no entry under ``values`` (those that fell back to ``default``
    # included), counted per (mapping, rule, field path, code text). Filled only on the miss
    # path, so the hot path pays nothing; engine.coverage reports them.
    misses: Counter[MissKey] = field(default_factory=Counter)
    # mapping -> SCALARA id -> reference id (rules without for_each; before data protection),
    # and mapping -> SCALARA id -> reason for the records that failed. Explanations read these.
    identities: dict[str, dict[Any, str]] = field(default_factory=dict)
    failed: dict[str, dict[Any, str]] = field(default_factory=dict)


def singular(resource: str) -> str:
    """'properties' -> 'property', 'property-roles' -> 'property role' (for messages)."""
    word = resource.replace("-", " ")
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") else word


# --------------------------------------------------------------------------- signals


class _Skip(Exception):
    """The record is dropped quietly (on_missing: skip)."""


class _Failure(Exception):
    """A reason that is already phrased for the user (the field is added by the caller)."""

    def __init__(self, reason: str, code: str = "record_failed", **info: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # what kind of problem, for the customer's notice (catalog/notice.de.yaml)
        self.info = info


class _RefMissing(Exception):
    def __init__(self, ref: RefField, sid: Any, failed_reason: str | None) -> None:
        super().__init__(ref.mapping)
        self.ref, self.sid, self.failed_reason = ref, sid, failed_reason


# --------------------------------------------------------------------------- the run


# one (record, loop item) that got an identity: (rule, context, reference id, SCALARA id)
_Item = tuple[RulePlan, dict[str, Any], str, str]


@dataclass
class _Run:
    mset: MappingSet
    records: Mapping[str, Iterable[dict[str, Any]]]
    assume_references: bool
    sources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    indexes: dict[tuple[str, str, bool], dict[Any, Any]] = field(default_factory=dict)
    ids: dict[str, dict[Any, str]] = field(default_factory=dict)         # mapping -> sid -> ref id
    failed: dict[str, dict[Any, str]] = field(default_factory=dict)      # mapping -> sid -> reason
    items: dict[str, list[_Item]] = field(default_factory=dict)
    attempted: dict[str, set[Any]] = field(default_factory=dict)         # mapping -> sids referred to
    assumed: set[tuple[str, str]] = field(default_factory=set)
    errors: dict[str, list[tuple[Any, RecordError]]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Output]] = field(default_factory=dict)
    stats: dict[str, MappingStats] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)  # resource -> records without an id
    misses: Counter[MissKey] = field(default_factory=Counter)

    # -- inputs
    def source(self, resource: str) -> list[dict[str, Any]]:
        """Live records of one resource, sorted by id (tombstones and id-less records left out)."""
        got = self.sources.get(resource)
        if got is None:
            raw = self.records.get(resource) or ()
            live = [r for r in raw if isinstance(r, dict) and r.get("deleted") is not True]
            got = sorted((r for r in live if isinstance(r.get("id"), str | int) and r["id"] != ""),
                         key=lambda r: str(r["id"]))
            self.malformed[resource] = len(live) - len(got) + sum(not isinstance(r, dict) for r in raw)
            self.sources[resource] = got
        return got

    def index(self, lookup: LookupPlan) -> dict[Any, Any]:
        """One index per (resource, match field) and run: value -> first record or all records."""
        key = (lookup.resource, lookup.match, lookup.many)
        idx = self.indexes.get(key)
        if idx is None:
            idx = {}
            match = lookup.match
            for rec in self.source(lookup.resource):
                value = rec.get(match)
                if not isinstance(value, str | int | float | bool):
                    continue
                if lookup.many:
                    idx.setdefault(value, []).append(rec)
                elif value not in idx:
                    idx[value] = rec
            self.indexes[key] = idx
        return idx

    def error(self, plan: MappingPlan, rule: RulePlan, sid: str | None, reason: str, *,
              target_id: str | None = None, field_name: str | None = None, code: str = "record_failed",
              info: dict[str, Any] | None = None) -> None:
        err = RecordError(reason=reason, source_id=None if sid is None else str(sid), resource=rule.source,
                          target_id=target_id, field=field_name,
                          details={"mapping": plan.name, "rule": rule.name, "code": code, **(info or {})})
        self.errors.setdefault(plan.name, []).append((sid, err))
        if not rule.for_each and sid is not None:
            self.failed[plan.name].setdefault(sid, reason)
            self.ids[plan.name].pop(sid, None)

    # -- phase 1: identities
    def identify(self, plan: MappingPlan, seen: dict[str, tuple[str, Any, str]]) -> None:
        stats = self.stats[plan.name]
        ids = self.ids[plan.name]
        items = self.items[plan.name]
        for rule in plan.rules:
            lookups = [(lk, self.index(lk)) for lk in rule.lookups]
            flt = rule.filter.root if rule.filter is not None else None
            loops = [(lp.name, lp.source) for lp in rule.for_each]
            idfn = rule.id.root
            what = singular(rule.source)
            source = self.source(rule.source)
            stats.read += len(source)
            for _ in range(self.malformed.get(rule.source, 0)):
                self.error(plan, rule, None, f"a {what} record without an id (or not an object) was left out",
                           code="no_id")
            for rec in source:
                sid = str(rec["id"])
                try:
                    ctx = self._context(rec, lookups, what) if lookups else rec
                    if flt is not None:
                        keep = flt(ctx)
                        if keep is None or keep is False or keep == "" or keep == [] or keep == {}:
                            stats.filtered_out += 1
                            continue
                    if loops:
                        contexts = self._expand(ctx, loops)
                        if not contexts:
                            stats.filtered_out += 1
                            continue
                    else:
                        contexts = [ctx]
                except _Failure as exc:
                    self.error(plan, rule, sid, exc.reason, code=exc.code, info=exc.info)
                    continue
                except Exception as exc:
                    self.error(plan, rule, sid, f"{what} {sid}: {describe_error(exc)}")
                    continue
                for item_ctx in contexts:
                    try:
                        rid = idfn(item_ctx)
                    except Exception as exc:
                        self.error(plan, rule, sid, f"id: {describe_error(exc)} (in `{rule.id.source}`)",
                                   field_name="id", code="bad_reference_id")
                        continue
                    if type(rid) is not str or not REFERENCE_ID.match(rid):
                        self.error(plan, rule, sid, f"id: `{rule.id.source}` gave {quote(rid)}, not a casavi "
                                   "reference id (1 to 64 of A-Z a-z 0-9 . _ -)", field_name="id",
                                   code="bad_reference_id")
                        continue
                    other = seen.get(rid)
                    if other is not None:
                        if rule.merge is not None and other[2] == rule.name:
                            items.append((rule, item_ctx, rid, sid))  # merged in the fields phase
                            continue
                        self.error(plan, rule, sid, f"same reference id as {singular(other[0])} {other[1]} "
                                   f"('{rid}')", target_id=rid, code="duplicate_reference_id",
                                   info={"other": other[1]})
                        continue
                    seen[rid] = (rule.source, sid, rule.name)
                    if not rule.for_each:
                        ids.setdefault(sid, rid)
                    items.append((rule, item_ctx, rid, sid))

    def _context(self, rec: dict[str, Any], lookups: list[tuple[LookupPlan, dict[Any, Any]]],
                 what: str) -> dict[str, Any]:
        ctx = dict(rec)
        for lk, idx in lookups:
            key = lk.key.root(ctx)
            try:
                hit = idx.get(key) if key is not None else None
            except TypeError:  # an unhashable key (list, object) matches nothing
                hit = None
            if lk.many:
                ctx[lk.name] = list(hit) if hit else []
                continue
            if hit is None and lk.required:
                if key is None:
                    raise _Failure(f"{what} {rec['id']}: `{lk.key.source}` is null, so there is no "
                                   f"{singular(lk.resource)} (lookup '{lk.name}' is required)",
                                   code="lookup_null", lookup=lk.name, target=lk.resource)
                raise _Failure(f"{what} {rec['id']}: no {singular(lk.resource)} with {lk.match} "
                               f"{quote(key)} (lookup '{lk.name}' is required)",
                               code="lookup_missing", lookup=lk.name, target=lk.resource)
            ctx[lk.name] = hit
        return ctx

    @staticmethod
    def _expand(ctx: dict[str, Any], loops: list[tuple[str, Expr]]) -> list[dict[str, Any]]:
        lists: list[list[Any]] = []
        for name, src in loops:
            values = src.root(ctx)
            if values is None:
                return []
            if not isinstance(values, list):
                raise _Failure(f"for_each '{name}': `{src.source}` gave {type(values).__name__}, "
                               "not a list")
            lists.append(values)
        if len(loops) == 1:
            name = loops[0][0]
            return [{**ctx, name: x} for x in lists[0]]
        names = [name for name, _ in loops]
        return [{**ctx, **dict(zip(names, combo, strict=True))} for combo in itertools.product(*lists)]

    # -- phase 2: fields
    def evaluators(self, plan: MappingPlan, fields: tuple[FieldPlan, ...]) -> list[tuple[str, Fn]]:
        return [(f.name, self._evaluator(plan, f)) for f in fields]

    def _evaluator(self, plan: MappingPlan, f: FieldPlan, where: tuple[str, str, str] | None = None) -> Fn:
        """The closure of one field; ``where`` (mapping, rule, field path) makes value maps count misses."""
        if isinstance(f, ExprField):
            return f.expr.root
        if isinstance(f, ConstField):
            value = f.value
            if isinstance(value, dict | list):
                return lambda ctx: copy.deepcopy(value)
            return lambda ctx: value
        if isinstance(f, ObjectField):
            inner = self.evaluators(plan, f.fields)
            return lambda ctx: {n: fn(ctx) for n, fn in inner}
        if isinstance(f, RefField):
            return self._ref(f)
        return _value_map(f, self.misses if where is not None else None, where)

    def _ref(self, f: RefField) -> Fn:
        table = self.ids[f.mapping]
        src = f.source.root
        attempted = self.attempted.get(f.mapping)
        missing = self._ref_missing(f)

        if attempted is None:
            def ref(ctx: Any) -> Any:
                sid = src(ctx)
                rid = table.get(sid) if type(sid) is str else None
                return rid if rid is not None else missing(sid)
            return ref

        def ref_noted(ctx: Any) -> Any:
            sid = src(ctx)
            rid = table.get(sid) if type(sid) is str else None
            if type(sid) is str:
                attempted.add(sid)
            return rid if rid is not None else missing(sid)
        return ref_noted

    def _ref_missing(self, f: RefField) -> Fn:
        """What a ref does when the referenced mapping has no record for the id (the slow path)."""
        target = self.mset.mappings[f.mapping]
        failed = self.failed[f.mapping]
        rule = next(r for r in target.rules if not r.for_each)
        assume = self.assume_references and rule.source not in self.records
        table = self.ids[f.mapping]

        def missing(sid: Any) -> Any:
            if sid is not None and type(sid) is not str:
                sid = code_text(sid)
                if sid in table:
                    return table[sid]
            if sid is not None and sid in failed:
                raise _RefMissing(f, sid, failed[sid])
            if assume and sid is not None:
                rid = rule.id.fn({"id": sid})
                if type(rid) is str and REFERENCE_ID.match(rid):
                    self.assumed.add((target.target, rid))
                    return rid
            if f.on_missing == "null":
                return None
            if f.on_missing == "skip":
                raise _Skip
            raise _RefMissing(f, sid, None)
        return missing

    def produce(self, plan: MappingPlan) -> None:
        stats = self.stats[plan.name]
        kind_spec = casavi_kinds().get(plan.target, {})
        required = tuple(n for n, spec in kind_spec.get("fields", {}).items()
                         if isinstance(spec, dict) and spec.get("required"))
        one_of = tuple(kind_spec.get("required_one_of") or ())
        out = self.outputs.setdefault(plan.target, {})
        kinds = {name: m.target for name, m in self.mset.mappings.items()}
        per_rule: dict[str, tuple[Fn, list[tuple[str, Fn]], Fn | None]] = {}
        for rule in plan.rules:
            evs = self.evaluators(plan, rule.fields)
            per_rule[rule.name] = (self._builder(plan, rule), evs,
                                   _deps_function(_ref_paths(rule.fields, (), kinds)))
        check_assumed = self.assume_references
        for rule, ctx, ref_id, sid in self.items[plan.name]:
            build, evs, deps_of = per_rule[rule.name]
            try:
                payload = build(ctx)
            except _Skip:
                stats.filtered_out += 1
                if not rule.for_each:
                    self.ids[plan.name].pop(sid, None)
                continue
            except Exception:
                name, exc = _locate(evs, ctx)
                reason, code, info = self._reason(rule, sid, name, exc)
                self.error(plan, rule, sid, reason, target_id=ref_id, field_name=name, code=code, info=info)
                continue
            if required or one_of:
                problem = _missing_required(payload, required, one_of)
                if problem is not None:
                    self.error(plan, rule, sid, problem[1], target_id=ref_id, field_name=problem[0],
                               code="required_empty")
                    continue
            deps: tuple[tuple[str, str], ...] = deps_of(payload) if deps_of is not None else ()
            assumed = check_assumed and any(d in self.assumed for d in deps)
            first = out.get(ref_id)
            if first is not None and rule.merge is not None and first.rule == rule.name:
                out[ref_id] = _merged(first, payload, deps, rule.merge)
                continue
            out[ref_id] = Output(plan.target, ref_id, payload, plan.name, rule.name, rule.source, sid, deps, assumed)
            stats.produced += 1

    def _builder(self, plan: MappingPlan, rule: RulePlan) -> Fn:
        """One generated function per rule that returns the whole payload as a dict display.

        Plain expressions are inlined (``get('number')``, ``join_nonempty(' ', [get('a'), ...])``),
        nested objects become nested dict displays, and refs and value maps call their closures:
        one Python call per record instead of one per field.
        """
        namespace: dict[str, Any] = {}
        body = self._dict_source(plan, rule, rule.fields, namespace, "")
        return build_function(body, namespace)

    def _dict_source(self, plan: MappingPlan, rule: RulePlan, fields: tuple[FieldPlan, ...],
                     ns: dict[str, Any], prefix: str) -> str:
        parts = []
        for f in fields:
            if isinstance(f, ExprField):
                ns.update(f.expr.namespace)
                src = f.expr.inline
            elif isinstance(f, ObjectField):
                src = self._dict_source(plan, rule, f.fields, ns, f"{prefix}{f.name}.")
            elif isinstance(f, ConstField) and (f.value is None or isinstance(f.value, bool | int | str)):
                src = repr(f.value)
            else:
                name = unique_name("_f")
                ns[name] = self._evaluator(plan, f, (plan.name, rule.name, prefix + f.name))
                src = f"{name}(v)"
            parts.append(f"{f.name!r}: {src}")
        return "{" + ", ".join(parts) + "}"

    def _reason(self, rule: RulePlan, sid: str, name: str, exc: BaseException) -> tuple[str, str, dict[str, Any]]:
        """The reason of a failed field, and its problem code and facts for the customer's notice."""
        what = f"{singular(rule.source)} {sid}"
        if isinstance(exc, _RefMissing):
            target = self.mset.mappings[exc.ref.mapping]
            source = next(r.source for r in target.rules if not r.for_each)
            other = singular(source)
            info: dict[str, Any] = {"target": source, "targetId": exc.sid}
            if exc.sid is None:
                return (f"{name}: `{exc.ref.source.source}` is null, so {what} refers to no {other} "
                        f"(ref {exc.ref.mapping})", "ref_null", info)
            if exc.failed_reason is not None:
                return f"{what} depends on failed {other} {exc.sid} ({exc.failed_reason})", "depends_on_failed", info
            return (f"{what} refers to {other} {exc.sid}, which the {exc.ref.mapping} mapping did not produce",
                    "ref_missing", info)
        if isinstance(exc, _Failure):
            return f"{name}: {exc.reason}", exc.code, exc.info
        return f"{name}: {describe_error(exc)}", "record_failed", {}

    # -- data protection
    def protect(self, plan: MappingPlan) -> None:
        stats = self.stats[plan.name]
        referenced: set[str] = set()
        for other in plan.only_if_referenced_by:
            other_kind = self.mset.mappings[other].target
            for output in self.outputs.get(other_kind, {}).values():
                for kind, rid in output.depends_on:
                    if kind == plan.target:
                        referenced.add(rid)
        out = self.outputs.get(plan.target, {})
        for rid in [rid for rid in out if rid not in referenced]:
            del out[rid]
            stats.produced -= 1
            stats.dropped += 1
        attempted = self.attempted.get(plan.name, set())
        kept = []
        for sid, err in self.errors.get(plan.name, []):
            if sid in attempted:
                kept.append((sid, err))
            else:
                stats.dropped += 1
        self.errors[plan.name] = kept


def _value_map(f: ValueMapField, misses: Counter[MissKey] | None = None,
               where: tuple[str, str, str] | None = None) -> Fn:
    """The closure of a value map. Misses are counted into ``misses`` (the slow path only)."""
    code_fn = f.code.root
    table = f.values
    has_exprs = any(isinstance(v, Expr) for v in table.values()) or isinstance(f.default, Expr)
    mutable = any(isinstance(v, dict | list) for v in (*table.values(), f.default))
    allowed = ", ".join(table)

    def miss(ctx: Any, code: Any) -> Any:
        if misses is not None and where is not None:
            text = code if code is None or type(code) is str else code_text(code)
            misses[(*where, text)] += 1
        if f.has_default:
            return f.default.root(ctx) if isinstance(f.default, Expr) else copy.deepcopy(f.default)
        if f.on_missing == "skip":
            raise _Skip
        raise _Failure(f"unknown code {quote(code)} from `{f.code.source}`; allowed: {allowed}", "unknown_code",
                       value=code if code is None or type(code) is str else code_text(code))

    if not has_exprs and not mutable:
        def simple(ctx: Any) -> Any:
            code = code_fn(ctx)
            value = table.get(code if type(code) is str else code_text(code), _MISS)  # type: ignore[arg-type]
            return miss(ctx, code) if value is _MISS else value
        return simple

    def general(ctx: Any) -> Any:
        code = code_fn(ctx)
        value = table.get(code if type(code) is str else code_text(code), _MISS)  # type: ignore[arg-type]
        if value is _MISS:
            return miss(ctx, code)
        if isinstance(value, Expr):
            return value.root(ctx)
        return copy.deepcopy(value)
    return general


def _ref_paths(fields: tuple[FieldPlan, ...], prefix: tuple[str, ...],
               kinds: Mapping[str, str]) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    for f in fields:
        if isinstance(f, RefField):
            out.append(((*prefix, f.name), kinds[f.mapping]))
        elif isinstance(f, ObjectField):
            out.extend(_ref_paths(f.fields, (*prefix, f.name), kinds))
    return out


def _deps_function(ref_paths: list[tuple[tuple[str, ...], str]]) -> Fn | None:
    """payload -> ((kind, reference id), ...) of its non-null refs, generated once per rule."""
    if not ref_paths:
        return None
    namespace: dict[str, Any] = {"read_path": read_path}
    pairs = []
    for path, kind in ref_paths:
        value = f"get({path[0]!r})" if len(path) == 1 else f"read_path(v, {path!r})"
        pairs.append(f"({kind!r}, {value})")
    body = f"tuple([pair for pair in ({', '.join(pairs)},) if pair[1] is not None])"
    return build_function(body, namespace)


def read_path(payload: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a nested field path of a payload (None where the path is missing)."""
    value: Any = payload
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _locate(evs: list[tuple[str, Fn]], ctx: Any) -> tuple[str, BaseException]:
    """Find the field that failed (only after a failure: re-evaluating is the cheap way to know)."""
    for name, fn in evs:
        try:
            fn(ctx)
        except Exception as exc:
            return name, exc
    return "?", RuntimeError("a field failed, then succeeded when evaluated again")


def _missing_required(payload: dict[str, Any], required: tuple[str, ...],
                      one_of: tuple[str, ...]) -> tuple[str, str] | None:
    for name in required:
        value = payload.get(name)
        if value is None or value == "":
            return name, f"required field '{name}' is empty"
    if one_of and all(payload.get(n) is None or payload.get(n) == "" for n in one_of):
        return one_of[0], f"needs {' or '.join(one_of)}; all are empty"
    return None


def _needed(mset: MappingSet, only: Collection[str] | None) -> set[str]:
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


def map_records(mset: MappingSet, records: Mapping[str, Iterable[dict[str, Any]]], *,
                run_date: dt.date | None = None, only: Collection[str] | None = None,
                assume_references: bool = False, data_protection: bool = True) -> MapResult:
    """Map SCALARA records (resource -> records) to casavi payloads, as the mappings say.

    ``only`` limits the result to those mappings (the ones they need are computed, not returned).
    ``assume_references`` (for previews): a ref into a mapping whose source resource is absent
    from ``records`` derives the id from that rule's id expression on ``{"id": <SCALARA id>}``.
    ``data_protection=False`` keeps records that ``only_if_referenced_by`` would drop (previews).
    """
    unknown = [name for name in (only or ()) if name not in mset.mappings]
    if unknown:
        raise ConfigError(f"unknown mapping(s): {', '.join(unknown)}; known: {', '.join(mset.order)}")
    token = RUN_DATE.set(run_date)
    # Everything a run builds is acyclic (dicts, lists, strings), so reference counting frees it;
    # the cyclic collector would only re-scan the input records again and again (a third of the
    # run time at 100,000 records). It is switched off for the run and restored after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _map(mset, records, _needed(mset, only), only, assume_references, data_protection)
    finally:
        if collecting:
            gc.enable()
        RUN_DATE.reset(token)


def _map(mset: MappingSet, records: Mapping[str, Iterable[dict[str, Any]]], needed: set[str],
         only: Collection[str] | None, assume_references: bool, data_protection: bool) -> MapResult:
    run = _Run(mset, records, assume_references)
    order = [name for name in mset.order if name in needed]
    for name in order:
        run.ids[name], run.failed[name], run.items[name] = {}, {}, []
        run.stats[name] = MappingStats()
    for name in order:
        for other in mset.mappings[name].only_if_referenced_by:
            if data_protection and other in needed:
                run.attempted.setdefault(name, set())
    seen_by_kind: dict[str, dict[str, tuple[str, Any, str]]] = {}
    for name in order:
        plan = mset.mappings[name]
        run.identify(plan, seen_by_kind.setdefault(plan.target, {}))
    for name in order:
        run.produce(mset.mappings[name])
    if data_protection:
        for name in reversed(order):
            if mset.mappings[name].only_if_referenced_by:
                run.protect(mset.mappings[name])
    wanted = set(only) if only is not None else needed
    outputs: dict[str, dict[str, Output]] = {}
    errors: list[RecordError] = []
    for name in order:
        if name not in wanted:
            continue
        kind = mset.mappings[name].target
        outputs[kind] = run.outputs.get(kind, {})
        for _, err in run.errors.get(name, []):
            errors.append(err)
        run.stats[name].errors = len(run.errors.get(name, []))
    return MapResult(outputs=outputs, errors=errors,
                     stats={name: run.stats[name] for name in order if name in wanted},
                     misses=Counter({k: n for k, n in run.misses.items() if k[0] in wanted}),
                     identities=run.ids, failed=run.failed)


def _merged(first: Output, payload: dict[str, Any], deps: tuple[tuple[str, str], ...], merge: MergePlan) -> Output:
    """Two records of one rule with one reference id, as one casavi record (``on_duplicate_id``)."""
    combined = dict(first.payload)
    for name, sep in merge.join.items():
        parts = [p for p in str(combined.get(name) or "").split(sep) if p] if combined.get(name) else []
        new = payload.get(name)
        if new not in (None, "") and str(new) not in parts:
            parts.append(str(new))
        combined[name] = sep.join(parts) if parts else combined.get(name)
    for name in merge.any:
        combined[name] = bool(combined.get(name)) or bool(payload.get(name))
    all_deps = first.depends_on + tuple(d for d in deps if d not in first.depends_on)
    return Output(first.kind, first.ref_id, combined, first.mapping, first.rule, first.source_resource,
                  first.source_id, all_deps, first.references_assumed)
