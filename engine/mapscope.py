"""Mapping part of a tenant: what the rest supplies, and what each mapped record read.

Why: on an incremental day only the records a change touches are mapped again
(engine.sync.targeted). ``map_records(..., scope=Scope(...))`` maps a part of a tenant with
identities, lookup candidates and data-protection references of the other records supplied, and
notes per source record what it read and produced, so that a later day knows which records a
change touches. With a scope the interpreter takes its generic (slow) paths, which note every
read; the generated loops (engine.rulegen) stay free of bookkeeping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compile import FieldPlan, MappingPlan, ObjectField, RefField, RulePlan

Dep = tuple[Any, ...]  # what one source record read or produced; see Scope
Fn = Callable[[Any], Any]


@dataclass
class Scope:
    """In: ``lookups`` resource -> the records lookups may find (instead of the mapped ones);
    ``ids``/``failed`` mapping -> SCALARA id -> reference id / failure reason of records not mapped
    (what their refs see); ``referenced`` mapping -> reference ids and ``attempted`` mapping ->
    SCALARA ids that records not mapped refer to (data protection).

    Out, per mapped source record (resource, id): ``deps``, a set of ``("l", resource, match, key)``
    lookup keys read (hits and misses), ``("r", mapping, sid)`` refs read, ``("o", kind, ref id)``
    reference ids claimed (duplicates too), ``("i", mapping, ref id)`` / ``("f", mapping, reason)``
    its identity, ``("d", mapping, kind, ref id)`` what its outputs refer to (referrers of protected
    mappings only), ``("e",)`` it has a mapping error; and ``until``: the first date on which a date
    function could answer differently for it (engine.functions.HORIZON).
    """

    lookups: Mapping[str, Iterable[dict[str, Any]]] | None = None
    ids: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    failed: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    referenced: Mapping[str, Collection[str]] = field(default_factory=dict)
    attempted: Mapping[str, Collection[str]] = field(default_factory=dict)
    deps: dict[tuple[str, str], list[Dep]] = field(default_factory=dict)  # may repeat a dep
    until: dict[tuple[str, str], dt.date] = field(default_factory=dict)


class Horizon:
    """engine.functions.HORIZON while a Scope maps: ``horizon[0]`` is the current record's date
    (``until``), and every date set also lowers the run's one (the list the caller installed)."""

    def __init__(self, outer: list[dt.date] | None, until: dict[tuple[str, str], dt.date]) -> None:
        self.outer, self.until = outer, until
        self.key: tuple[str, str] = ("", "")

    def __getitem__(self, index: int) -> dt.date:
        return self.until.get(self.key, dt.date.max)

    def __setitem__(self, index: int, day: dt.date) -> None:
        self.until[self.key] = day
        if self.outer is not None and day < self.outer[0]:
            self.outer[0] = day


def lookup_rows(given: Iterable[Any]) -> list[dict[str, Any]]:
    """Supplied lookup candidates as the mapped records are seen: live, with an id, in id order."""
    return sorted((r for r in given if isinstance(r, dict) and r.get("deleted") is not True
                   and isinstance(r.get("id"), str | int) and r["id"] != ""), key=lambda r: str(r["id"]))


def field_evaluators(plan: MappingPlan, rule: RulePlan, fields: tuple[FieldPlan, ...], prefix: str,
                     evaluator: Callable[[MappingPlan, FieldPlan, tuple[str, str, str]], Fn]) -> list[tuple[str, Fn]]:
    """(name, closure) per field, value maps counting misses at their path (as the fast path does)."""
    out: list[tuple[str, Fn]] = []
    for f in fields:
        if isinstance(f, ObjectField):
            inner = field_evaluators(plan, rule, f.fields, f"{prefix}{f.name}.", evaluator)
            out.append((f.name, _object(inner)))
        else:
            out.append((f.name, evaluator(plan, f, (plan.name, rule.name, prefix + f.name))))
    return out


def _object(inner: list[tuple[str, Fn]]) -> Fn:
    return lambda ctx: {n: g(ctx) for n, g in inner}


def ref_paths(fields: tuple[FieldPlan, ...], prefix: tuple[str, ...],
              kinds: Mapping[str, str]) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    for f in fields:
        if isinstance(f, RefField):
            out.append(((*prefix, f.name), kinds[f.mapping]))
        elif isinstance(f, ObjectField):
            out.extend(ref_paths(f.fields, (*prefix, f.name), kinds))
    return out


def payload_deps(payload: dict[str, Any], paths: list[tuple[tuple[str, ...], str]]) -> tuple[tuple[str, str], ...]:
    """((kind, reference id), ...) of a payload's non-null refs, in field order."""
    out = []
    for path, kind in paths:
        value: Any = payload
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            out.append((kind, value))
    return tuple(out)


def note_results(mset: Any, order: list[str], scope: Scope, ids: Mapping[str, Mapping[Any, str]],
                 failed: Mapping[str, Mapping[Any, str]], errors: Mapping[str, list[tuple[Any, Any]]],
                 outputs: Mapping[str, Mapping[str, Any]]) -> None:
    """The deps only known once all is mapped: identities, protected references, errors."""
    deps = scope.deps
    referrers = {other for name in order for other in mset.mappings[name].only_if_referenced_by}
    for name in order:
        plan = mset.mappings[name]
        sources = [rule.source for rule in plan.rules if not rule.for_each]
        for table, tag in ((ids[name], "i"), (failed[name], "f")):
            for sid, value in table.items():
                for res in sources:
                    got = deps.get((res, sid))
                    if got is not None:
                        got.append((tag, name, value))
        for _, err in errors.get(name, []):
            if err.resource and err.source_id is not None:
                deps.setdefault((err.resource, err.source_id), []).append(("e",))
        if name in referrers:
            for out in outputs.get(plan.target, {}).values():
                if out.mapping == name and out.depends_on:
                    got = deps.setdefault((out.source_resource, out.source_id), [])
                    got.extend(("d", name, kind, rid) for kind, rid in out.depends_on)
