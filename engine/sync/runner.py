"""Orchestration of one sync: extract -> map -> plan -> apply -> record.

``plan_sync`` stops after planning and touches nothing (neither casavi nor the state store);
``run_sync`` goes all the way, under the tenant's run lock, and writes a JSON report.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.compile import MappingSet, ObjectField, RefField
from engine.coverage import compute_coverage
from engine.errors import OperatorError
from engine.functions import HORIZON
from engine.interpret import MapResult, Scope, map_records
from engine.observe.notice import subject_facts
from engine.sync.apply import RESPONSIBILITIES, ApplyResult, Progress, Writer, apply_plan
from engine.sync.archives import KindHold, affected_kinds
from engine.sync.extract import Extraction, IncrementalPolicy, StopRequested
from engine.sync.plan import CREATE, Desired, Known, Plan, build_plan
from engine.sync.screen import screen_ids
from engine.text import bounded

__all__ = ["Prepared", "StopRequested", "SyncOptions", "extract", "prepare", "run_apply", "source_resources"]


class Reader(Protocol):
    """What extract and reconcile need of a client: pages of records of one resource/kind."""

    def iter_pages(self, resource: str, /) -> Iterable[list[dict[str, Any]]]: ...


class ArchiveReader(Protocol):
    def iter_pages(self, kind: str, /, *, include_archived: bool = ...) -> Iterable[list[dict[str, Any]]]: ...


@dataclass
class SyncOptions:
    allow_archive: bool = False
    reconcile: bool = False
    archive_max_share: float = 0.10
    archive_floor: int = 0  # archiving up to this many records of a kind is never held back
    concurrency: int = 8
    run_date: dt.date | None = None
    full: bool = False  # read all of SCALARA even when an incremental read would do
    incremental: IncrementalPolicy = field(default_factory=IncrementalPolicy)
    write_order: str = "property"  # "kind": all properties, then all contacts, ... (for comparison)
    max_ahead: int | None = None  # properties under way at once (default 2 x concurrency)
    retry_failed: bool = False  # send records casavi refused before even if unchanged (engine.sync.failures)
    retry_records: frozenset[tuple[str, str]] = frozenset()  # (kind, ref_id): the same for these only
    # a real run that reads everything maps, plans and applies this many SCALARA records at a time
    # (engine.sync.chunked), when the tenant has more than ``whole_records``; 0: always at once
    chunk_records: int = 2_000
    whole_records: int | None = None  # None: chunk_records (the connector config's default: 20,000)


@dataclass
class Prepared:
    """Everything known after planning: the plan and what led to it."""

    plan: Plan
    mapped: MapResult
    extracted: dict[str, int]
    reconciled: bool
    order: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)  # value-map misses, empty-field shares
    extraction: Extraction | None = None  # how SCALARA was read (None: a plain full read)
    skipped_mapping: bool = False  # nothing changed since a clean run: nothing was mapped
    subjects: dict[str, dict[str, str]] = field(default_factory=dict)  # failed records' names, for the notice


def source_resources(mset: MappingSet) -> list[str]:
    """Every SCALARA resource the mappings read (sources and lookups), in a stable order."""
    names: list[str] = []
    for plan in mset.mappings.values():
        for rule in plan.rules:
            for res in (rule.source, *(lk.resource for lk in rule.lookups)):
                if res not in names:
                    names.append(res)
    return names


def kind_order(mset: MappingSet) -> tuple[str, ...]:
    """Target kinds in dependency order: a kind after every kind it references; among kinds of
    the same depth, the catalog's order (properties, units, contacts, contracts, ...)."""
    from engine.catalog import casavi_kinds

    catalog = list(casavi_kinds())
    depth: dict[str, int] = {}
    for name in mset.order:  # topological: referenced mappings come first
        plan = mset.mappings[name]
        refs = {r for rule in plan.rules for r in _refs(rule.fields)}
        d = 1 + max((depth.get(mset.mappings[r].target, 0) for r in refs if r in mset.mappings), default=-1)
        depth[plan.target] = max(depth.get(plan.target, 0), d)
    return tuple(sorted(depth, key=lambda k: (depth[k], catalog.index(k) if k in catalog else len(catalog), k)))


def _refs(fields: Iterable[Any]) -> Iterator[str]:
    for f in fields:
        if isinstance(f, RefField):
            yield f.mapping
        elif isinstance(f, ObjectField):
            yield from _refs(f.fields)


def extract(reader: Reader, resources: Iterable[str], progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    records: dict[str, list[dict[str, Any]]] = {}
    for res in resources:
        rows: list[dict[str, Any]] = []
        for page in reader.iter_pages(res):
            if should_stop is not None and should_stop():
                raise StopRequested
            rows.extend(page)
            if progress:
                progress("extract", res, len(rows), 0)
        if progress:  # the resource is read: its real total (pages carry none)
            progress("extract", res, len(rows), len(rows))
        records[res] = rows
    return records, {k: len(v) for k, v in records.items()}


def read_casavi(reader: ArchiveReader, kinds: Iterable[str], desired: Iterable[Desired],
                known: Mapping[tuple[str, str], Known],
                progress: Progress | None = None,
                pairs: dict[tuple[str, str], dict[str, Any]] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """casavi's current records keyed like our plan (kind, reference id), archived ones included.

    Responsibilities are read from their properties and keyed by the reference id that our
    mappings (or the state) give to that (property, contact) pair; others are not ours.
    ``pairs`` (a run whose plans come later, engine.sync.chunked) receives every responsibility
    by its (property, contact) pair.
    """
    current: dict[tuple[str, str], dict[str, Any]] = {}
    resp_index: dict[tuple[str, str], str] = {}
    for d in desired:
        if d.kind == RESPONSIBILITIES:
            resp_index[(str(d.payload.get("propertyId")), str(d.payload.get("contactId")))] = d.ref_id
    for (kind, ref_id), k in known.items():
        if kind == RESPONSIBILITIES and k.payload:
            resp_index.setdefault((str(k.payload.get("propertyId")), str(k.payload.get("contactId"))), ref_id)
    kinds = list(kinds)
    for kind in [k for k in kinds if k != RESPONSIBILITIES]:
        n = 0
        for page in reader.iter_pages(kind, include_archived=True):
            for rec in page:
                current[(kind, str(rec.get("id")))] = rec
                if kind == "properties" and RESPONSIBILITIES in kinds:
                    for r in rec.get("responsibilities") or []:
                        pair = (str(rec.get("id")), str(r.get("contactId")))
                        if pairs is not None:
                            pairs[pair] = {"propertyId": pair[0], **r}
                        ref = resp_index.get(pair)
                        if ref is not None:
                            current[(RESPONSIBILITIES, ref)] = {"propertyId": pair[0], **r}
            n += len(page)
            if progress:
                progress("reconcile", kind, n, 0)
        if progress:
            progress("reconcile", kind, n, n)
    return current


def _desired(mapped: MapResult) -> list[Desired]:
    out: list[Desired] = []
    for outputs in mapped.outputs.values():
        for o in outputs.values():
            out.append(Desired(o.kind, o.ref_id, o.payload, o.source_resource, o.source_id, o.depends_on))
    return out


def _map_error_rows(mset: MappingSet, mapped: MapResult) -> list[dict[str, Any]]:
    rows = []
    for e in mapped.errors:
        mapping = e.details.get("mapping") if e.details else None
        kind = mset.mappings[mapping].target if isinstance(mapping, str) and mapping in mset.mappings else None
        problem = bounded({k: v for k, v in (e.details or {}).items() if k not in ("mapping", "rule")})
        rows.append({"stage": "map", "kind": kind, "mapping": mapping, **e.as_dict(), "problem": problem})
    return rows


def prepare(
    mset: MappingSet,
    scalara: Reader,
    casavi: ArchiveReader | None,
    known: Mapping[tuple[str, str], Known],
    options: SyncOptions,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    extraction: Extraction | None = None,
    extraction_s: float = 0.0,
    holds: Mapping[tuple[str, str], Any] | None = None,
    link: Any = None,
) -> Prepared:
    """Extract, map and plan. Reads only; writes nothing anywhere.

    ``extraction`` (engine.sync.extract) is what the session read, fully or incrementally;
    without it everything is read here. An extraction without records means nothing changed since
    a clean run: the plan is then "all unchanged" without mapping anything. An extraction with a
    ``delta`` maps only what the changes touch (engine.sync.daily, through ``link``: the state
    store), or, when that cannot be done safely, the whole snapshot.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if extraction is not None and extraction.delta is not None:
        from engine.sync.daily import Fallback, prepare_targeted

        try:
            return prepare_targeted(mset, link, extraction, options, holds, extraction_s)
        except Fallback as exc:
            extraction.targeted = {"mode": "whole", "reason": str(exc)}
            extraction.records = link.full_records(extraction.delta, source_resources(mset))
            extraction.delta = None
            known = link.known_all()
    if extraction is None:
        records, counts = extract(scalara, source_resources(mset), progress, should_stop)
    elif extraction.records is None:
        return _unchanged(mset, known, extraction, timings)
    else:
        records, counts = extraction.records, extraction.counts
        extraction.records = None  # the mapper's copy is the only one left
    screened = screen_ids(records)
    records = screened.records
    timings["extract_s"] = extraction_s if extraction is not None else time.perf_counter() - t0

    t1 = time.perf_counter()
    horizon = HORIZON.set([dt.date.max])
    scope = Scope() if link is not None and link.saving else None
    try:
        mapped = map_records(mset, records, run_date=options.run_date, scope=scope)
        if scope is not None:  # what every record read: a later day maps only what a change touches
            link.save_whole(records, scope)
            del scope
        if extraction is not None:
            extraction.stable_until = (HORIZON.get() or [dt.date.max])[0].isoformat()
    finally:
        HORIZON.reset(horizon)
    subjects = subject_facts(records, _failed_sources(mapped))
    del records
    coverage = compute_coverage(mset, mapped)
    timings["map_s"] = time.perf_counter() - t1

    order = kind_order(mset)
    desired = _desired(mapped)
    reconcile = options.reconcile or not known
    current = None
    if reconcile and casavi is not None:
        t2 = time.perf_counter()
        current = read_casavi(casavi, order, desired, known, progress)
        timings["reconcile_read_s"] = time.perf_counter() - t2

    empty_kinds = set()
    for plan_ in mset.mappings.values():
        if any(counts.get(rule.source, 0) == 0 for rule in plan_.rules):
            empty_kinds.add(plan_.target)
    errored_sources = {(e.resource, e.source_id) for e in (*screened.errors, *mapped.errors)
                       if e.resource and e.source_id}
    errored: set[tuple[str, str]] = {(str(r), str(s)) for r, s in errored_sources}
    incomplete = {kind: KindHold(f"SCALARA sent {', '.join(f'{n} {r} record(s)' for r, n in screened.incomplete.items())} "
                                 f"without a usable id: the read is incomplete, nothing made from it is archived",
                                 overridable=False)
                  for kind in affected_kinds(mset, screened.incomplete)}
    errors = [{"stage": "extract", "kind": None, "mapping": None, **e.as_dict()} for e in screened.errors]
    plan = build_plan(
        desired, known, kinds=order, map_errors=errors + _map_error_rows(mset, mapped),
        errored_sources=errored,
        current=current, empty_kinds=empty_kinds, kind_holds=incomplete,
        archive_max_share=options.archive_max_share, archive_floor=options.archive_floor,
        allow_archive=options.allow_archive, record_holds=holds,
    )
    timings["plan_s"] = time.perf_counter() - t1 - timings["map_s"] - timings.get("reconcile_read_s", 0.0)
    return Prepared(plan, mapped, counts, reconcile and casavi is not None, order, timings, coverage, extraction,
                    subjects=subjects)


def _unchanged(mset: MappingSet, known: Mapping[tuple[str, str], Known], extraction: Extraction,
               timings: dict[str, float]) -> Prepared:
    """The plan of a run whose input is the one a clean run already applied: nothing to do."""
    order = kind_order(mset)
    unchanged: dict[str, int] = dict.fromkeys(order, 0)
    unchanged.update(extraction.written)
    for (kind, _), state in known.items():
        if state.status == "written":
            unchanged[kind] = unchanged.get(kind, 0) + 1
    plan = Plan(kinds=order, unchanged=unchanged, errors=list(extraction.carried))
    mapped = MapResult(outputs={}, errors=[], stats={})
    return Prepared(plan, mapped, extraction.counts, False, order, timings, {}, extraction, skipped_mapping=True)


def _failed_sources(mapped: MapResult) -> list[tuple[str, str]]:
    """The SCALARA records that failed to map, and the ones they depend on (named in the notice)."""
    out: list[tuple[str, str]] = []
    for e in mapped.errors:
        if e.resource and e.source_id:
            out.append((e.resource, e.source_id))
        target, target_id = (e.details or {}).get("target"), (e.details or {}).get("targetId")
        if isinstance(target, str) and isinstance(target_id, str):
            out.append((target, target_id))
    return out


def blocked_from_errors(prepared: Prepared) -> list[tuple[str, str, str]]:
    """Records that will not be written this run, whose dependents must wait: mapping errors, and
    held records casavi never accepted (a held record that exists in casavi blocks nothing)."""
    outputs = prepared.mapped.outputs

    def won(row: dict[str, Any]) -> bool:
        """The loser of a duplicate reference id fails under the winner's id, which another record
        produces and is written all the same: it blocks nothing (it blocked the winner's
        dependents whenever the winner itself was unchanged)."""
        out = outputs.get(row["kind"], {}).get(row["targetId"])
        return out is not None and (out.source_resource, out.source_id) != (row.get("resource"), row.get("sourceId"))

    blocked = [(row["kind"], row["targetId"], row["reason"]) for row in prepared.plan.errors
               if row.get("kind") and row.get("targetId") and not won(row)]
    blocked += [(a.kind, a.ref_id, a.reason) for a in prepared.plan.held if a.action == CREATE]
    return blocked


def run_apply(prepared: Prepared, writer: Writer, journal: Any, options: SyncOptions,
              progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None) -> ApplyResult:
    for a in prepared.plan.adopt:
        journal.written(a)
    journal.flush()
    outputs = prepared.mapped.outputs

    def lookup(kind: str, ref_id: str) -> tuple[tuple[tuple[str, str], ...], Mapping[str, Any]] | None:
        out = outputs.get(kind, {}).get(ref_id)
        return (out.depends_on, out.payload) if out is not None else None

    return apply_plan(prepared.plan, writer, journal, order=prepared.order, concurrency=options.concurrency,
                      progress=progress, should_stop=should_stop, blocked=blocked_from_errors(prepared),
                      write_order=options.write_order, lookup=lookup, max_ahead=options.max_ahead)


def outcome_of(result: ApplyResult | None, prepared: Prepared | None, aborted: OperatorError | None,
               stopped: bool = False) -> str:
    if stopped:
        return "stopped"
    if aborted is not None or (result is not None and result.aborted is not None):
        return "aborted"
    if result is not None and result.stopped:
        return "stopped"
    if prepared is not None and (prepared.plan.errors or prepared.plan.guard_trips):
        return "partial"
    if result is not None and result.failed:
        return "partial"
    return "clean"


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """Atomically, owner-only (0600 in 0700 folders) whatever the umask: reports hold customer data."""
    from engine.files import tighten, write_private

    write_private(path, json.dumps(report, indent=2, ensure_ascii=False, default=str))
    tighten(path.parent)  # a reports folder made loose by an older release (under umask 000)
