"""One tenant's sync with the state store: lock, run history, journal, report.

``plan_for_tenant`` is the dry run (reads SCALARA, and casavi when reconciling; writes nothing).
``run_for_tenant`` takes the tenant's run lock, plans, applies, journals every write in the state
store as it happens, records the run and writes a JSON report next to the state file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.compile import MappingSet
from engine.errors import OperatorError, RecordError
from engine.observe.hooks import run_finished
from engine.state import StateStore
from engine.state.mapsets import MappingSetRef
from engine.state.sources import SourceCursor
from engine.sync import failures as failure_rules
from engine.sync.apply import ApplyResult, Progress, Writer
from engine.sync.daily import Fallback, Link
from engine.sync.extract import extract, parse_stamp
from engine.sync.plan import Action, Known
from engine.sync.report import build_report
from engine.sync.runner import (
    ArchiveReader,
    Prepared,
    Reader,
    StopRequested,
    SyncOptions,
    outcome_of,
    prepare,
    run_apply,
    source_resources,
    write_report,
)
from engine.sync.screen import has_unusable_ids


class StateJournal:
    """The apply stage's journal, backed by the state store.

    Used inside ``store.batch()``: marks are queued and committed in short transactions; intents
    (``pending``) are committed before the writes they announce are sent.
    """

    def __init__(self, store: StateStore, tenant: str, run_id: int) -> None:
        self.store, self.tenant, self.run_id = store, tenant, run_id

    def pending(self, actions: Sequence[Action]) -> None:
        self.store.mark_pending(self.tenant, [(a.kind, a.ref_id, a.source_resource, a.source_id) for a in actions],
                                run_id=self.run_id)

    def written(self, a: Action) -> None:
        self.store.mark_written(self.tenant, self.run_id, a.kind, a.ref_id, a.payload or {}, a.payload_hash or "",
                                a.source_resource, a.source_id)

    def failed(self, a: Action, error: RecordError) -> None:
        self.store.mark_failed(self.tenant, self.run_id, a.kind, a.ref_id, error.reason, a.source_resource, a.source_id)

    def archived(self, a: Action) -> None:
        self.store.mark_archived(self.tenant, self.run_id, a.kind, a.ref_id)

    def forgotten(self, a: Action) -> None:
        self.store.forget(self.tenant, a.kind, a.ref_id)

    def flush(self) -> None:
        """The store flushes its queue by size and age, and at the end of ``batch()``."""


def known_records(store: StateStore, tenant: str) -> Mapping[tuple[str, str], Known]:
    return store.records(tenant)


@dataclass
class RunOutcome:
    run_id: int
    outcome: str  # clean | partial | aborted | stopped
    report: dict[str, Any]
    report_path: Path | None
    prepared: Prepared | None
    result: ApplyResult | None
    error: OperatorError | None


@dataclass
class Staged:
    """A full read stored in the snapshot, not held: the run maps it in chunks (engine.sync.chunked)."""

    extraction: Any
    statuses: Mapping[tuple[str, str], int]
    link: Link
    extraction_s: float
    holds: Mapping[tuple[str, str], Any]


def plan_for_tenant(store: StateStore, tenant: str, mset: MappingSet, scalara: Reader, casavi: ArchiveReader,
                    options: SyncOptions, progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Prepared:
    """The dry run: read SCALARA (fully or what changed, see engine.sync.extract), map and plan;
    writes nothing."""
    got = read_and_plan(store, tenant, mset, scalara, casavi, options, progress, should_stop)
    assert isinstance(got, Prepared)  # only a staging run maps in chunks
    return got


def read_and_plan(store: StateStore, tenant: str, mset: MappingSet, scalara: Reader, casavi: ArchiveReader,
                  options: SyncOptions, progress: Progress | None = None,
                  should_stop: Callable[[], bool] | None = None, *, stage: bool = False) -> Prepared | Staged:
    """Read SCALARA (fully or what changed, see engine.sync.extract), map and plan.

    Writes nothing, unless ``stage`` (a real run): then what was read is stored in the state
    store's source snapshot right away (engine.state.sources.stage_sources).
    """
    statuses = store.record_status_counts(tenant)  # not every record: an unchanged run needs none
    run_date = _run_date(options)
    unsettled = any(status in ("pending", "failed") for _, status in statuses)

    def may_skip(previous: SourceCursor) -> bool:
        """Nothing changed in SCALARA: may the run skip mapping? Only after a settled run whose
        output cannot have changed by date alone (active()/today() flip no earlier than stable_until)."""
        if not previous.settled or unsettled or options.reconcile or previous.mapped_date is None:
            return False
        return previous.mapped_date == run_date or (
            previous.stable_until is not None and previous.mapped_date <= run_date < previous.stable_until)

    link = Link(store, tenant, mset, saving=stage, statuses=statuses)

    def may_target(previous: SourceCursor) -> str:
        return link.why_not_targeted(previous, run_date)

    t0 = time.perf_counter()
    now = parse_stamp(store.now()) or dt.datetime.now(dt.UTC)
    chunking = stage and options.chunk_records > 0
    extraction = extract(store, tenant, scalara, mset, source_resources(mset), policy=options.incremental,
                         full=options.full, reconcile=options.reconcile, now=now, may_skip=may_skip,
                         progress=progress, should_stop=should_stop, may_target=may_target,
                         stage_to=store if chunking else None)
    whole = options.chunk_records if options.whole_records is None else options.whole_records
    if extraction.staged and sum(extraction.counts.values()) <= whole:
        unstage(store, tenant, extraction)  # one chunk: the whole tenant at once, as a dry run would
    held = failure_rules.holds(store.failures(tenant), now, retry_all=options.retry_failed,
                               retry=options.retry_records)
    if extraction.staged and extraction.records is None:  # mapped in chunks by the caller (engine.sync.chunked)
        return Staged(extraction, statuses, link, time.perf_counter() - t0, held)
    if extraction.skipped:
        extraction.carried = _last_map_errors(store, tenant)
        for (kind, status), n in statuses.items():
            if status == "written":
                extraction.written[kind] = n
        for kind in _not_produced(store, tenant, extraction.carried):
            extraction.written[kind] -= 1
        known: Mapping[tuple[str, str], Known] = {}
    elif extraction.delta is not None:
        known = {}  # a targeted day loads the states of the records it maps only (engine.sync.daily)
    else:
        known = known_records(store, tenant)
    if stage and extraction.commit is not None and extraction.records is not None and has_unusable_ids(
            extraction.records):
        # not a complete picture: a snapshot without those records would hide the ones they stand
        # for from the next incremental read, so the next run reads everything
        store.forget_sources(tenant)
        extraction.commit = None
    if stage and extraction.commit is not None and not extraction.staged and (
            extraction.records is not None or extraction.delta is not None):
        store.stage_sources(tenant, extraction.commit)
        extraction.commit.replace, extraction.commit.upserts, extraction.commit.deletes = {}, {}, {}
    return prepare(mset, scalara, casavi, known, options, progress, should_stop, extraction,
                   time.perf_counter() - t0, holds=held, link=link)


def unstage(store: StateStore, tenant: str, extraction: Any) -> None:
    """A staged full read to be mapped at once: its records, from the snapshot (stored already)."""
    extraction.records = {res: list(store.source_records(tenant, res).values()) for res in extraction.counts}


def run_chunks(store: StateStore, tenant: str, run_id: int, mset: MappingSet, casavi: Any, read: Staged,
               options: SyncOptions, journal: StateJournal, progress: Progress | None,
               should_stop: Callable[[], bool] | None) -> tuple[Prepared, ApplyResult]:
    """Map, plan and apply a staged full read in chunks (engine.sync.chunked)."""
    from engine.mapresult import MapResult
    from engine.sync.chunked import ChunkedRun
    from engine.sync.runner import kind_order, read_casavi

    extraction = read.extraction
    timings: dict[str, float] = {"extract_s": read.extraction_s}
    reconcile = options.reconcile or not read.statuses
    current: dict[tuple[str, str], dict[str, Any]] | None = None
    pairs: dict[tuple[str, str], dict[str, Any]] | None = None
    if reconcile:
        t0 = time.perf_counter()
        pairs = {}
        current = read_casavi(casavi, kind_order(mset), (), {}, progress, pairs=pairs)
        timings["reconcile_read_s"] = time.perf_counter() - t0
    empty_kinds = {p.target for p in mset.mappings.values()
                   if any(extraction.counts.get(rule.source, 0) == 0 for rule in p.rules)}
    run = ChunkedRun(store, tenant, run_id, mset, options, fingerprint=read.link.fingerprint, holds=read.holds,
                     statuses=read.statuses, current=current, pairs=pairs, empty_kinds=empty_kinds,
                     chunk_records=options.chunk_records)
    try:
        run.run(casavi, journal, progress=progress, should_stop=should_stop)
    except Fallback as exc:  # a chunk's closure cannot be computed: the whole tenant at once
        unstage(store, tenant, extraction)
        extraction.targeted = {"mode": "whole", "reason": f"mapping in chunks stopped: {exc}"}
        link = Link(store, tenant, mset, saving=True, statuses=read.statuses)
        # the earlier chunks filled the state, yet a first run still reconciles: else every record
        # casavi holds but no earlier chunk adopted would be sent again (and reported unreconciled)
        prepared = prepare(mset, casavi, casavi, store.records(tenant), dataclasses.replace(options, reconcile=reconcile),
                           progress, should_stop, extraction, read.extraction_s, holds=read.holds, link=link)
        with store.batch():
            result = run_apply(prepared, casavi, journal, options, progress, should_stop)
        prepared.plan, result = run.after_fallback(prepared.plan, result)
        return prepared, result
    timings.update(run.timings)
    first = store.deps_first_until(tenant)
    extraction.stable_until = dt.date.fromordinal(first).isoformat() if first is not None else dt.date.max.isoformat()
    extraction.targeted = {"mode": "chunked", "chunkRecords": options.chunk_records, **run.m.stats}
    prepared = Prepared(run.merged_plan(), MapResult(outputs={}, errors=[], stats={}), dict(extraction.counts),
                        reconcile, run.order, timings, run.m.coverage, extraction, subjects=run.m.subjects)
    return prepared, run.m.result


def _not_produced(store: StateStore, tenant: str, carried: list[dict[str, Any]]) -> list[str]:
    """Kinds of the written records the carried mapping errors keep from being produced (a full
    run counts them neither unchanged nor archived): one entry per record."""
    errors = {(e.get("kind"), e.get("resource"), e.get("sourceId"), e.get("targetId")) for e in carried}
    sources = {(str(r), str(s)) for _, r, s, _ in errors if r and s}
    out = []
    for (kind, ref_id), state in store.records_of_sources(tenant, sources).items():
        if state.status == "written" and any(
                (kind, state.source_resource, state.source_id, target) in errors for target in (ref_id, None)):
            out.append(kind)
    return out


def _last_map_errors(store: StateStore, tenant: str) -> list[dict[str, Any]]:
    """The mapping errors of the last settled run: an unchanged input still has them."""
    last = next((r for r in store.runs(tenant, limit=10) if r.outcome in ("clean", "partial")), None)
    if last is None:
        return []
    return [{"stage": "map", "kind": o.kind or None, "targetId": o.ref_id or None, "resource": o.source_resource,
             "sourceId": o.source_id, "reason": o.error or "", "carried": True}
            for o in store.run_outcomes(last.id) if o.action == "error"]


def _run_date(options: SyncOptions) -> str:
    return (options.run_date or dt.date.today()).isoformat()


def commit_extraction(store: StateStore, tenant: str, prepared: Prepared, options: SyncOptions,
                      outcome: str, result: ApplyResult | None = None) -> None:
    """After the writes: store what was read and move the cursor (never before, never when aborted)."""
    extraction = prepared.extraction
    if extraction is None or extraction.commit is None or outcome not in ("clean", "partial"):
        return
    # settled: rerunning on the same input would change nothing -- only mapping errors, which an
    # unchanged run carries over; not after write failures (retried) or held archives (re-asked)
    plan = prepared.plan
    settled = outcome == "clean" or not (plan.guard_trips or plan.held_archives or (result and result.failed))
    store.commit_cursor(tenant, extraction.commit, mapped_date=_run_date(options), settled=bool(settled),
                        stable_until=extraction.stable_until)
    if not prepared.skipped_mapping:  # the dependency rows this run wrote hold now (engine.state.deps)
        store.deps_ready(tenant, [(a.kind, a.ref_id) for a in plan.held_archives])


def run_for_tenant(
    store: StateStore,
    tenant: str,
    mset: MappingSet,
    scalara: Reader,
    casavi: Any,
    options: SyncOptions,
    *,
    trigger: str = "manual",
    report_dir: Path | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    stats: Callable[[], dict[str, Any]] | None = None,
    mappings: MappingSetRef | None = None,
) -> RunOutcome:
    """Run one sync under the tenant's lock. Operator errors are caught, recorded and returned.

    ``mappings``: which set ``mset`` was loaded from (path, content hash, origin), recorded with
    the run in the history and in the report.
    """
    writer: Writer = casavi
    with store.acquire_lock(tenant, trigger):
        run_id = store.begin_run(tenant, trigger)
        if mappings is not None:
            store.set_run_mappings(run_id, mappings)
        started = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        prepared: Prepared | None = None
        result: ApplyResult | None = None
        error: OperatorError | None = None
        stopped = False
        try:
            read = read_and_plan(store, tenant, mset, scalara, casavi, options, progress, should_stop,
                                 stage=True)
            journal = StateJournal(store, tenant, run_id)
            if isinstance(read, Staged):
                prepared, result = run_chunks(store, tenant, run_id, mset, casavi, read, options, journal,
                                              progress, should_stop)
            else:
                prepared = read
                with store.batch():
                    result = run_apply(prepared, writer, journal, options, progress, should_stop)
            if result.aborted is not None:
                error = result.aborted
        except OperatorError as exc:
            error = exc
        except StopRequested:
            stopped = True
        except BaseException as exc:  # a bug or an interrupt: record the run as aborted, then let it surface
            store.finish_run(run_id, "aborted", {}, None, f"{type(exc).__name__}: {str(exc)[:300]}")
            raise
        outcome = outcome_of(result, prepared, error, stopped)
        failures = None
        if prepared is not None and result is not None:
            complete = error is None and not stopped and not result.stopped
            failures = failure_rules.track(store, tenant, run_id, prepared, result, complete=complete)
            outcome = failure_rules.final_outcome(outcome, prepared, failures)
        report = build_report(
            run_id=run_id, tenant=tenant, trigger=trigger, started=started,
            duration_s=time.perf_counter() - t0, outcome=outcome, prepared=prepared, result=result,
            error=error, calls=stats() if stats else None, failures=failures,
        )
        if mappings is not None:
            report["mappings"] = {"path": mappings.path, "contentHash": mappings.content_hash,
                                  "origin": mappings.origin}
        report_path = None
        if report_dir is not None:
            report_path = report_dir / f"run-{run_id:06d}.json"
            write_report(report_path, report)
        if prepared is not None and result is not None:
            commit_extraction(store, tenant, prepared, options, outcome, result)
        stored_counts = dict(report["counts"])
        if failures is not None:  # new/known/acknowledged of this run, for metrics (engine.observe)
            stored_counts["_failures"] = failures.as_dict()["counts"]
        store.finish_run(run_id, outcome, stored_counts, str(report_path) if report_path else None,
                         report["error"])
        if prepared is not None and result is not None:
            store.record_outcomes(run_id, _outcome_rows(prepared, result))
        run_finished(report)  # metrics and alerts, when this process has them
        return RunOutcome(run_id, outcome, report, report_path, prepared, result, error)


def _outcome_rows(prepared: Prepared, result: ApplyResult) -> list[Any]:
    """The run's rows in the history (a chunked run stored its written records chunk by chunk)."""
    from engine.state import Outcome as StateOutcome

    rows: list[Any] = []
    for o in result.outcomes:
        err = (o.error or {}).get("reason") if o.error else None
        rows.append(StateOutcome(o.kind, o.ref_id, o.source_resource, o.source_id,
                                 o.action if o.ok else ("skipped" if o.action == "skipped" else "error"),
                                 "ok" if o.ok else "failed", err))
    for e in prepared.plan.errors:
        rows.append(StateOutcome(e.get("kind") or "", e.get("targetId") or "", e.get("resource"),
                                 e.get("sourceId"), "error", "failed", e.get("reason")))
    return rows
