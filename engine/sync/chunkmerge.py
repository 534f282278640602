"""The merged result of a chunked run (engine.sync.chunked): one plan and one apply result for
the report, the history and failure tracking, counted without holding every record's action.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.compile import MappingSet
from engine.mapresult import MapResult
from engine.sync.apply import ApplyResult
from engine.sync.order import PropertyDone
from engine.sync.plan import ARCHIVE, CREATE, Action, Plan

Key = tuple[str, str]


@dataclass
class ChunkedPlan(Plan):
    """The plans of all chunks: actions are kept only where the report needs their payload (refused
    writes) and for the archive step; the others are counted in ``tally``."""

    tally: dict[str, dict[str, int]] = field(default_factory=dict)
    wrote: bool = False

    def counts(self) -> dict[str, dict[str, int]]:
        table = super().counts()
        for kind, row in self.tally.items():
            into = table.setdefault(kind, dict.fromkeys(row, 0))
            for action, n in row.items():
                into[action] = into.get(action, 0) + n
        return table

    @property
    def pending_changes(self) -> bool:
        return self.wrote or bool(self.actions or self.held_archives)


@dataclass
class ChunkedResult(ApplyResult):
    """The results of all chunks: ``outcomes`` keeps the failed ones, ``tally`` counts the rest."""

    tally: dict[str, dict[str, int]] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        table = super().counts()
        for kind, row in self.tally.items():
            into = table.setdefault(kind, {})
            for action, n in row.items():
                into[action] = into.get(action, 0) + n
        return table


def tally_add(table: dict[str, dict[str, int]], kind: str, action: str, n: int = 1) -> None:
    row = table.setdefault(kind, {})
    row[action] = row.get(action, 0) + n


@dataclass
class Merged:
    order: tuple[str, ...]
    run_id: int
    plan_tally: dict[str, dict[str, int]] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    errors: dict[Key, list[dict[str, Any]]] = field(default_factory=dict)   # (resource, SCALARA id) -> rows
    loose_errors: list[dict[str, Any]] = field(default_factory=list)      # rows without a source
    held: dict[Key, Action] = field(default_factory=dict)
    failed_actions: list[Action] = field(default_factory=list)
    failed_keys: dict[Key, str] = field(default_factory=dict)
    result: ChunkedResult = field(default_factory=ChunkedResult)
    candidates: set[Key] = field(default_factory=set)     # archive candidates not produced since
    counted: set[int] = field(default_factory=set)        # hashes of the records counted
    covered: set[int] = field(default_factory=set)        # hashes of the records in the coverage
    planned: set[int] = field(default_factory=set)        # hashes of the records planned to be written
    won: set[int] = field(default_factory=set)            # hashes of error targets produced all the same
    coverage: dict[str, Any] = field(default_factory=dict)
    subjects: dict[str, dict[str, str]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=lambda: {"chunks": 0, "mapped": 0, "rounds": 0})
    wrote: bool = False
    properties: dict[str, PropertyDone] = field(default_factory=dict)  # by property, as completed
    open_properties: int = 0

    def error_rows(self) -> list[dict[str, Any]]:
        return [row for rows in self.errors.values() for row in rows] + self.loose_errors

    def blocked(self) -> list[tuple[str, str, str]]:
        out = [(row["kind"], row["targetId"], row["reason"]) for row in self.error_rows()
               if row.get("kind") and row.get("targetId") and hash((row["kind"], row["targetId"])) not in self.won]
        out += [(a.kind, a.ref_id, a.reason) for a in self.held.values() if a.action == CREATE]
        out += [(k, r, why) for (k, r), why in self.failed_keys.items()]
        return out


def as_now(a: Action, now: Action | None) -> Action:
    """``a`` with the payload ``now`` has (a record planned again by a later chunk)."""
    return a if now is None else replace(a, payload=now.payload, payload_hash=now.payload_hash)


class Overlay(dict[Key, dict[str, Any]]):
    """``base`` with some extra entries, without copying ``base`` (casavi's whole read)."""

    def __init__(self, base: Mapping[Key, dict[str, Any]]) -> None:
        super().__init__()
        self.base = base
        self.extra: dict[Key, dict[str, Any]] = {}

    def get(self, key: Key, default: Any = None) -> Any:
        got = self.extra.get(key)
        return got if got is not None else self.base.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.extra or key in self.base

    def __getitem__(self, key: Key) -> dict[str, Any]:
        got = self.extra.get(key)
        return got if got is not None else self.base[key]


def own_part(mset: MappingSet, mapped: MapResult, res: str, own: set[str], healed: set[tuple[Any, Any]],
              counted: set[int]) -> MapResult:
    """What a chunk made from its own records (others it mapped are counted in their own chunk),
    and what ``healed`` records of earlier chunks produce for the first time (not ``counted``)."""
    outputs = {kind: {ref: o for ref, o in got.items() if (o.source_resource == res and o.source_id in own) or (
                   (o.source_resource, o.source_id) in healed and hash((kind, ref)) not in counted)}
               for kind, got in mapped.outputs.items()}
    mine = {name for name, plan in mset.mappings.items() if any(rule.source == res for rule in plan.rules)}
    misses = Counter({key: n for key, n in mapped.misses.items() if key[0] in mine})
    mine |= {o.mapping for got in outputs.values() for o in got.values()}  # their empty fields, not their codes
    stats = {name: st for name, st in mapped.stats.items() if name in mine}
    return MapResult(outputs=outputs, errors=[], stats=stats, misses=misses)


def release_held(m: Merged, plan: Plan) -> None:
    """A held record (casavi refused this payload before) is sent after all when a record it
    references is written in this run (engine.sync.plan._release_holds does it within the
    chunk): also when an earlier chunk wrote that record -- a unit with its updated property."""
    writing = {hash((a.kind, a.ref_id)) for a in plan.actions if a.action != ARCHIVE} | m.planned
    changed = True
    while changed and plan.held:
        changed = False
        still: list[Action] = []
        for a in plan.held:
            if any(hash(d) in writing for d in a.depends_on):
                a.reason = f"sent again: a record it references is written in this run (before: {a.reason})"
                plan.actions.append(a)
                writing.add(hash((a.kind, a.ref_id)))
                changed = True
            else:
                still.append(a)
        plan.held = still

def count_plan(m: Merged, plan: Plan, desired: list[Any], again: set[Key]) -> None:
    """Each record counted once: by its write, or as unchanged the first time it is seen."""
    for a in plan.actions:  # a held record is not planned (a whole plan counts it nowhere)
        if (a.kind, a.ref_id) not in again:
            tally_add(m.plan_tally, a.kind, a.action)
        m.planned.add(hash((a.kind, a.ref_id)))
    for a in (*plan.actions, *plan.held):
        m.counted.add(hash((a.kind, a.ref_id)))
        m.held.pop((a.kind, a.ref_id), None)
    for a in plan.held:
        m.held[(a.kind, a.ref_id)] = a
    acted = {(a.kind, a.ref_id) for a in (*plan.actions, *plan.held)}
    # a payload JSON cannot carry is a record error of the plan, counted there (not unchanged)
    unfit = {(str(r.get("kind")), str(r.get("targetId"))) for r in plan.errors if r.get("stage") == "plan"}
    acted |= unfit
    m.counted.update(hash(key) for key in unfit)
    for d in desired:
        key = (d.kind, d.ref_id)
        m.candidates.discard(key)
        h = hash(key)
        if key not in acted and h not in m.counted:
            m.counted.add(h)
            m.unchanged[d.kind] = m.unchanged.get(d.kind, 0) + 1
    if plan.actions:
        m.wrote = True
