"""Phase 1 of a mapping run: the identities of every rule's records.

For every rule: the live records of its source, the context (the record plus one name per
lookup), the filter, the ``for_each`` product, then the ``id``, checked against casavi's
reference id syntax and against the ids the same casavi kind already has. This fills the run's
table per mapping ``SCALARA id -> reference id`` that refs read in phase 2.

The loop per rule is generated (engine.rulegen.identify_function); the functions here are the
generic path it hands a record or an item to when something is unusual, and the path a run with
a Scope (engine.mapscope) takes for every record, noting what it reads.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.compile import LookupPlan, MappingPlan, RulePlan
from engine.expr import Expr, describe_error
from engine.fieldeval import Failure
from engine.functions import REFERENCE_ID
from engine.mapresult import singular
from engine.rulegen import identify_function, proven_reference_id
from engine.text import quote

if TYPE_CHECKING:
    from engine.interpret import _Item, _Run

__all__ = ["identify"]


def identify(run: _Run, plan: MappingPlan, seen: dict[str, tuple[str, Any, str]]) -> None:
    """The identities of one mapping's records: a generated loop per rule (engine.rulegen)."""
    stats = run.stats[plan.name]
    ids = run.ids[plan.name]
    for rule in plan.rules:
        items = run.items[plan.name].setdefault(rule.name, [])
        lookups = [(lk, run.index(lk)) for lk in rule.lookups]
        what = singular(rule.source)
        source = run.source(rule.source)
        stats.read += len(source)
        for _ in range(run.malformed.get(rule.source, 0)):
            run.error(plan, rule, None, f"a {what} record without an id (or not an object) was left out",
                      code="no_id")

        def slow_item(ctx: dict[str, Any], sid: str, rule: RulePlan = rule,
                      items: list[_Item] = items) -> None:
            _identify_item(run, plan, rule, ctx, sid, seen, items)

        def slow_record(rec: dict[str, Any], rule: RulePlan = rule, lookups: list[Any] = lookups,
                        what: str = what, slow_item: Callable[[dict[str, Any], str], None] = slow_item) -> None:
            _identify_record(run, plan, rule, rec, lookups, what, slow_item)

        if run.scope is not None:  # the generic path, noting what each record reads
            for rec in source:
                run.enter(rule.source, str(rec["id"]))
                slow_record(rec)
            continue
        check = None if proven_reference_id(rule.id) else REFERENCE_ID.match
        fast = identify_function(rule, lookups, seen=seen, ids=ids, items=items, check_id=check,
                                 slow_record=slow_record, slow_item=slow_item)
        stats.filtered_out += fast(source)


def _identify_record(run: _Run, plan: MappingPlan, rule: RulePlan, rec: dict[str, Any],
                     lookups: list[tuple[LookupPlan, dict[Any, Any]]], what: str,
                     item: Callable[[dict[str, Any], str], None]) -> None:
    """One record the generated loop could not finish, step by step, its problems reported."""
    stats = run.stats[plan.name]
    sid = str(rec["id"])
    try:
        ctx = _context(run, rec, lookups, what) if lookups else rec
        if rule.filter is not None:
            keep = rule.filter.root(ctx)
            if keep is None or keep is False or keep == "" or keep == [] or keep == {}:
                stats.filtered_out += 1
                return
        if rule.for_each:
            contexts = _expand(ctx, [(lp.name, lp.source) for lp in rule.for_each])
            if not contexts:
                stats.filtered_out += 1
                return
        else:
            contexts = [ctx]
    except Failure as exc:
        run.error(plan, rule, sid, exc.reason, code=exc.code, info=exc.info)
        return
    except Exception as exc:
        run.error(plan, rule, sid, f"{what} {sid}: {describe_error(exc)}")
        return
    for item_ctx in contexts:
        item(item_ctx, sid)


def _identify_item(run: _Run, plan: MappingPlan, rule: RulePlan, ctx: dict[str, Any], sid: str,
                   seen: dict[str, tuple[str, Any, str]], items: list[_Item]) -> None:
    """The reference id of one (record, loop item), its problems reported."""
    try:
        rid = rule.id.root(ctx)
    except Exception as exc:
        run.error(plan, rule, sid, f"id: {describe_error(exc)} (in `{rule.id.source}`)",
                  field_name="id", code="bad_reference_id")
        return
    if type(rid) is not str or not REFERENCE_ID.match(rid):
        run.error(plan, rule, sid, f"id: `{rule.id.source}` gave {quote(rid)}, not a casavi "
                  "reference id (1 to 64 of A-Z a-z 0-9 . _ -)", field_name="id",
                  code="bad_reference_id")
        return
    if run.cur is not None:
        run.cur.append(("o", plan.target, rid))
    other = seen.get(rid)
    if other is not None:
        if rule.merge is not None and other[2] == rule.name:
            items.append((ctx, rid, sid))  # merged in the fields phase
            return
        run.error(plan, rule, sid, f"same reference id as {singular(other[0])} {other[1]} "
                  f"('{rid}')", target_id=rid, code="duplicate_reference_id",
                  info={"other": other[1]})
        return
    seen[rid] = (rule.source, sid, rule.name)
    if not rule.for_each:
        run.ids[plan.name].setdefault(sid, rid)
    items.append((ctx, rid, sid))


def _context(run: _Run, rec: dict[str, Any], lookups: list[tuple[LookupPlan, dict[Any, Any]]],
             what: str) -> dict[str, Any]:
    ctx = dict(rec)
    for lk, idx in lookups:
        key = lk.key.root(ctx)
        if run.cur is not None and isinstance(key, str | int | float | bool):
            run.cur.append(("l", lk.resource, lk.match, key))
        try:
            hit = idx.get(key) if key is not None else None
        except TypeError:  # an unhashable key (list, object) matches nothing
            hit = None
        if lk.many:
            ctx[lk.name] = list(hit) if hit else []
            continue
        if hit is None and lk.required:
            if key is None:
                raise Failure(f"{what} {rec['id']}: `{lk.key.source}` is null, so there is no "
                              f"{singular(lk.resource)} (lookup '{lk.name}' is required)",
                              code="lookup_null", lookup=lk.name, target=lk.resource)
            raise Failure(f"{what} {rec['id']}: no {singular(lk.resource)} with {lk.match} "
                          f"{quote(key)} (lookup '{lk.name}' is required)",
                          code="lookup_missing", lookup=lk.name, target=lk.resource)
        ctx[lk.name] = hit
    return ctx


def _expand(ctx: dict[str, Any], loops: list[tuple[str, Expr]]) -> list[dict[str, Any]]:
    lists: list[list[Any]] = []
    for name, src in loops:
        values = src.root(ctx)
        if values is None:
            return []
        if not isinstance(values, list):
            raise Failure(f"for_each '{name}': `{src.source}` gave {type(values).__name__}, "
                          "not a list")
        lists.append(values)
    if len(loops) == 1:
        name = loops[0][0]
        return [{**ctx, name: x} for x in lists[0]]
    names = [name for name, _ in loops]
    return [{**ctx, **dict(zip(names, combo, strict=True))} for combo in itertools.product(*lists)]
