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

The hot path is generated Python, one identify and one produce loop per rule (engine.rulegen),
compiled once per run; what they cannot finish comes back to the generic code here, which
reports it. Nothing here looks at YAML or expression text per record.
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import operator
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import identities
from engine.catalog import casavi_kinds
from engine.compile import (
    ConstField,
    ExprField,
    FieldPlan,
    LookupPlan,
    MappingPlan,
    MappingSet,
    ObjectField,
    RefField,
    RulePlan,
    ValueMapField,
    code_text,
    needed_mappings,
)
from engine.errors import ConfigError, RecordError
from engine.expr import Expr
from engine.fieldeval import (
    RefMissing,
    Skip,
    failure_reason,
    locate,
    merged,
    missing_required,
    read_path,
    value_map,
    value_map_miss,
)
from engine.functions import HORIZON, REFERENCE_ID, RUN_DATE
from engine.mapresult import MappingStats, MapResult, MissKey, Output, new_output, singular
from engine.mapscope import (
    Dep,
    Horizon,
    Scope,
    field_evaluators,
    lookup_rows,
    note_results,
    payload_deps,
    ref_paths,
)
from engine.rulegen import PayloadSource, produce_function

__all__ = ["MapResult", "MappingStats", "Output", "Scope", "map_records", "read_path", "singular"]

Fn = Callable[[Any], Any]
_ID = operator.itemgetter("id")


def _id_text(record: dict[str, Any]) -> str:
    return str(record["id"])


# --------------------------------------------------------------------------- the run


# one (record, loop item) that got an identity: (context, reference id, SCALARA id)
_Item = tuple[dict[str, Any], str, str]


@dataclass
class _Run:
    mset: MappingSet
    records: Mapping[str, Iterable[dict[str, Any]]]
    assume_references: bool
    sources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    indexes: dict[tuple[str, str, bool], dict[Any, Any]] = field(default_factory=dict)
    ids: dict[str, dict[Any, str]] = field(default_factory=dict)         # mapping -> sid -> ref id
    failed: dict[str, dict[Any, str]] = field(default_factory=dict)      # mapping -> sid -> reason
    items: dict[str, dict[str, list[_Item]]] = field(default_factory=dict)  # mapping -> rule -> items
    attempted: dict[str, set[Any]] = field(default_factory=dict)         # mapping -> sids referred to
    assumed: set[tuple[str, str]] = field(default_factory=set)
    errors: dict[str, list[tuple[Any, RecordError]]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Output]] = field(default_factory=dict)
    stats: dict[str, MappingStats] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)  # resource -> records without an id
    misses: Counter[MissKey] = field(default_factory=Counter)
    scope: Scope | None = None      # mapping part of a tenant (engine.mapscope): the slow paths note reads
    cur: list[Dep] | None = None    # with a scope: the deps of the record being mapped
    horizon: Horizon | None = None

    def enter(self, resource: str, sid: str) -> None:
        """With a scope: what follows is read for this source record."""
        assert self.scope is not None
        key = (resource, sid)
        self.cur = self.scope.deps.setdefault(key, [])
        if self.horizon is not None:
            self.horizon.key = key

    # -- inputs
    def source(self, resource: str) -> list[dict[str, Any]]:
        """Live records of one resource, sorted by id (tombstones and id-less records left out)."""
        got = self.sources.get(resource)
        if got is None:
            raw = list(self.records.get(resource) or ())
            dicts = [r for r in raw if isinstance(r, dict)]
            live = [r for r in dicts if r.get("deleted") is not True]
            got = [r for r in live if isinstance(i := r.get("id"), str | int) and i != ""]
            # by id as text; when every id is text (as SCALARA's are) that is the id itself
            got.sort(key=_ID if all(type(r["id"]) is str for r in got) else _id_text)
            self.malformed[resource] = len(live) - len(got) + len(raw) - len(dicts)
            self.sources[resource] = got
        return got

    def index(self, lookup: LookupPlan) -> dict[Any, Any]:
        """One index per (resource, match field) and run: value -> first record or all records."""
        key = (lookup.resource, lookup.match, lookup.many)
        idx = self.indexes.get(key)
        if idx is None:
            idx = {}
            match = lookup.match
            given = self.scope.lookups if self.scope is not None else None
            rows = lookup_rows(given.get(lookup.resource) or ()) if given is not None else self.source(lookup.resource)
            for rec in rows:
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

    # -- phase 1: identities (engine.identities)
    def identify(self, plan: MappingPlan, seen: dict[str, tuple[str, Any, str]]) -> None:
        identities.identify(self, plan, seen)

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
        return value_map(f, self.misses if where is not None else None, where)

    def _ref(self, f: RefField) -> Fn:
        table = self.ids[f.mapping]
        src = f.source.root
        attempted = self.attempted.get(f.mapping)
        missing = self._ref_missing(f)

        if self.scope is not None:
            run, name = self, f.mapping

            def ref_tracked(ctx: Any) -> Any:
                sid = src(ctx)
                key = sid if type(sid) is str else None if sid is None else code_text(sid)
                if key is not None and run.cur is not None:
                    run.cur.append(("r", name, key))
                if attempted is not None and type(sid) is str:
                    attempted.add(sid)
                rid = table.get(sid) if type(sid) is str else None
                return rid if rid is not None else missing(sid)
            return ref_tracked

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
                raise RefMissing(f, sid, failed[sid])
            if assume and sid is not None:
                rid = rule.id.fn({"id": sid})
                if type(rid) is str and REFERENCE_ID.match(rid):
                    self.assumed.add((target.target, rid))
                    return rid
            if f.on_missing == "null":
                return None
            if f.on_missing == "skip":
                raise Skip
            raise RefMissing(f, sid, None)
        return missing

    def produce(self, plan: MappingPlan) -> None:
        """The payloads of one mapping's items: a generated loop per rule (engine.rulegen)."""
        stats = self.stats[plan.name]
        kind_spec = casavi_kinds().get(plan.target, {})
        required = tuple(n for n, spec in kind_spec.get("fields", {}).items()
                         if isinstance(spec, dict) and spec.get("required"))
        one_of = tuple(kind_spec.get("required_one_of") or ())
        out = self.outputs.setdefault(plan.target, {})
        kinds = {name: m.target for name, m in self.mset.mappings.items()}
        any_assumed = self._any_assumed if self.assume_references else None
        for rule in plan.rules:
            items = self.items[plan.name].get(rule.name)
            if not items:
                continue
            evs = self.evaluators(plan, rule.fields)

            def fail(ctx: Any, rid: str, sid: str, exc: BaseException, rule: RulePlan = rule,
                     evs: list[tuple[str, Fn]] = evs) -> None:
                if isinstance(exc, Skip):
                    stats.filtered_out += 1
                    if not rule.for_each:
                        self.ids[plan.name].pop(sid, None)
                    return
                name, exc = locate(evs, ctx)
                reason, code, info = failure_reason(self.mset, rule, sid, name, exc)
                self.error(plan, rule, sid, reason, target_id=rid, field_name=name, code=code, info=info)

            def fail_required(payload: dict[str, Any], rid: str, sid: str, rule: RulePlan = rule) -> None:
                problem = missing_required(payload, required, one_of)
                if problem is not None:
                    self.error(plan, rule, sid, problem[1], target_id=rid, field_name=problem[0],
                               code="required_empty")

            if self.scope is not None:
                stats.produced += self._produce_scoped(plan, rule, items, out, fail, fail_required,
                                                       (required, one_of), kinds)
                continue
            source = PayloadSource(self._ref_parts, self._value_map_parts, self._evaluator_at, kinds,
                                   (plan.name, rule.name), frozenset((*required, *one_of)))
            fast = produce_function(plan, rule, source, required=required, one_of=one_of, out=out,
                                    make=new_output, fail=fail, fail_required=fail_required,
                                    merged=merged if rule.merge is not None else None,
                                    any_assumed=any_assumed)
            stats.produced += fast(items)

    def _produce_scoped(self, plan: MappingPlan, rule: RulePlan, items: list[_Item], out: dict[str, Output],
                        fail: Callable[..., None], fail_required: Callable[..., None],
                        checks: tuple[tuple[str, ...], tuple[str, ...]], kinds: Mapping[str, str]) -> int:
        """The generic produce loop (what the generated one does), noting what each item reads."""
        evs = field_evaluators(plan, rule, rule.fields, "", self._evaluator)
        paths = ref_paths(rule.fields, (), kinds)
        n = 0
        for ctx, rid, sid in items:
            self.enter(rule.source, sid)
            try:
                payload = {name: fn(ctx) for name, fn in evs}
            except Exception as exc:
                fail(ctx, rid, sid, exc)
                continue
            if (checks[0] or checks[1]) and missing_required(payload, *checks) is not None:
                fail_required(payload, rid, sid)
                continue
            deps = payload_deps(payload, paths)
            first = out.get(rid)
            if rule.merge is not None and first is not None and first.rule == rule.name:
                out[rid] = merged(first, payload, deps, rule.merge)
                continue
            assumed = self.assume_references and self._any_assumed(deps)
            out[rid] = new_output(plan.target, rid, payload, plan.name, rule.name, rule.source, sid, deps, assumed)
            n += 1
        return n

    def _any_assumed(self, deps: tuple[tuple[str, str], ...]) -> bool:
        assumed = self.assumed
        return any(d in assumed for d in deps)

    def _evaluator_at(self, f: FieldPlan, where: tuple[str, str, str]) -> Fn:
        return self._evaluator(self._plan_of(where[0]), f, where)

    def _plan_of(self, name: str) -> MappingPlan:
        return self.mset.mappings[name]

    def _ref_parts(self, f: RefField) -> tuple[Mapping[str, str], set[Any] | None, Fn]:
        """What a generated ref needs: the id table, the set noting attempts, the missing path."""
        return self.ids[f.mapping], self.attempted.get(f.mapping), self._ref_missing(f)

    def _value_map_parts(self, f: ValueMapField, where: tuple[str, str, str]
                         ) -> tuple[Mapping[str, Any], Callable[[Any, Any], Any]] | None:
        """Table and miss path of a value map that can be inlined (literal, immutable values)."""
        table = f.values
        if any(isinstance(v, Expr | dict | list) for v in table.values()):
            return None
        return table, value_map_miss(f, self.misses, where)

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
        if self.scope is not None:  # records not mapped this time refer to these
            referenced.update(self.scope.referenced.get(plan.name, ()))
            if plan.name in self.attempted:
                self.attempted[plan.name].update(self.scope.attempted.get(plan.name, ()))
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


def map_records(mset: MappingSet, records: Mapping[str, Iterable[dict[str, Any]]], *,
                run_date: dt.date | None = None, only: Collection[str] | None = None,
                assume_references: bool = False, data_protection: bool = True,
                scope: Scope | None = None) -> MapResult:
    """Map SCALARA records (resource -> records) to casavi payloads, as the mappings say.

    ``only`` limits the result to those mappings (the ones they need are computed, not returned).
    ``assume_references`` (for previews): a ref into a mapping whose source resource is absent
    from ``records`` derives the id from that rule's id expression on ``{"id": <SCALARA id>}``.
    ``data_protection=False`` keeps records that ``only_if_referenced_by`` would drop (previews).
    ``scope`` (engine.mapscope): ``records`` are part of a tenant, the rest is supplied; what each
    mapped record read is noted in it.
    """
    unknown = [name for name in (only or ()) if name not in mset.mappings]
    if unknown:
        raise ConfigError(f"unknown mapping(s): {', '.join(unknown)}; known: {', '.join(mset.order)}")
    token = RUN_DATE.set(run_date)
    horizon = horizon_token = None
    if scope is not None:
        horizon = Horizon(HORIZON.get(), scope.until)
        horizon_token = HORIZON.set(horizon)  # type: ignore[arg-type]  # list-like: [0] get and set
    # Everything a run builds is acyclic (dicts, lists, strings), so reference counting frees it;
    # the cyclic collector would only re-scan the input records again and again (a third of the
    # run time at 100,000 records). It is switched off for the run and restored after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _map(mset, records, needed_mappings(mset, only), only, assume_references, data_protection, scope,
                    horizon)
    finally:
        if collecting:
            _resume_collector()
        RUN_DATE.reset(token)
        if horizon_token is not None:
            HORIZON.reset(horizon_token)


def _resume_collector() -> None:
    """Switch the cyclic collector back on without scanning what the run built.

    Re-enabled plainly, the collector would at once scan every object made since it stopped
    (the whole result: a seventh of the run time at 100,000 records) to find cycles that cannot
    be there. ``freeze`` + ``unfreeze`` moves those objects to the oldest generation without a
    scan (and resets the allocation count); a later full collection still sees them. Skipped
    when the program has frozen objects of its own (``unfreeze`` would release them too).
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()
    gc.enable()


def _map(mset: MappingSet, records: Mapping[str, Iterable[dict[str, Any]]], needed: set[str],
         only: Collection[str] | None, assume_references: bool, data_protection: bool,
         scope: Scope | None = None, horizon: Horizon | None = None) -> MapResult:
    run = _Run(mset, records, assume_references, scope=scope, horizon=horizon)
    order = [name for name in mset.order if name in needed]
    for name in order:
        run.ids[name], run.failed[name], run.items[name] = {}, {}, {}
        if scope is not None:
            run.ids[name].update(scope.ids.get(name, {}))
            run.failed[name].update(scope.failed.get(name, {}))
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
    if scope is not None:
        note_results(mset, order, scope, run.ids, run.failed, run.errors, run.outputs)
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


