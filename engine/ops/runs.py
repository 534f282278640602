"""Runs of one tenant: start one (manual, initial, schedule, reconcile), plan one, who holds the lock.

Every face starts a sync through ``start_run``, so the initial import, a manual run, a scheduled
run and the console's "run now" share one path: the tenant's run lock, the run history, the JSON
report next to the state file. Progress goes to the ``progress`` callback (phase, kind, done,
total); nothing is printed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import StateError
from engine.ops.context import Context

if TYPE_CHECKING:
    from engine.serve import Runner
    from engine.sync.apply import Progress
    from engine.sync.runner import SyncOptions
    from engine.sync.session import RunOutcome

TRIGGERS = ("manual", "initial", "schedule", "reconcile")


def sync_options(ctx: Context, *, allow_archive: bool = False, reconcile: bool = False,
                 run_date: dt.date | None = None, full: bool = False,
                 write_order: str = "property") -> SyncOptions:
    """``full``: read all of SCALARA even when an incremental read would do (engine.sync.extract).
    ``write_order``: "property" (each property complete before the next) or "kind" (the older order)."""
    from engine.sync.chunked import CHUNK_RECORDS, WHOLE_RECORDS
    from engine.sync.extract import IncrementalPolicy
    from engine.sync.runner import SyncOptions

    config = ctx.connector_config()
    return SyncOptions(allow_archive=allow_archive, reconcile=reconcile, archive_max_share=ctx.max_archive_share,
                       archive_floor=ctx.archive_floor, concurrency=config.casavi.write_concurrency,
                       run_date=run_date, full=full,
                       incremental=IncrementalPolicy.from_config(config.scalara.incremental),
                       write_order=write_order,
                       chunk_records=int(config.scalara.incremental.get("chunk_records", CHUNK_RECORDS)),
                       whole_records=int(config.scalara.incremental.get("whole_records", WHOLE_RECORDS)))


def start_run(ctx: Context, *, trigger: str = "manual", allow_archive: bool = False, reconcile: bool = False,
              run_date: dt.date | None = None, progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None, full: bool = False,
              write_order: str = "property") -> RunOutcome:
    """One sync of ``ctx.tenant`` under its run lock; returns the outcome (report included).

    Writes go property by property (``write_order="kind"``: the older kind-by-kind order); the
    progress callback's ``detail`` says how many properties are complete and which is current,
    and the report's ``properties`` when each became complete.

    Raises StateError (naming the holder) when another run holds the tenant's lock, and the
    operator errors of loading mappings, config and the connection; errors during the run are
    recorded in the outcome (``outcome == "aborted"``). An initial import that was not aborted
    marks the connection's initial import as done.
    """
    from engine.sync.session import run_for_tenant

    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    options = sync_options(ctx, allow_archive=allow_archive, reconcile=reconcile, run_date=run_date, full=full,
                           write_order=write_order)
    from engine.ops.mappings import load, resolve

    with ctx.store() as store:
        where = resolve(ctx, store)
        mset = load(where, ctx.tenant)
        scalara, casavi = ctx.clients(store)
        holder = store.lock_holder(ctx.tenant)
        if holder is None:  # a run refused for a held lock is not audited as started
            ctx.audit(store, "run.started", ctx.tenant, trigger=trigger, allowArchive=allow_archive,
                      reconcile=reconcile)
        with scalara, casavi:
            def stats() -> dict[str, Any]:
                return {"scalara": scalara.stats.snapshot(), "casavi": casavi.stats.snapshot()}

            outcome = run_for_tenant(store, ctx.tenant, mset, scalara, casavi, options, trigger=trigger,
                                     report_dir=ctx.report_dir, progress=progress, should_stop=should_stop,
                                     stats=stats, mappings=where.ref())
            if trigger == "initial" and outcome.outcome != "aborted":
                store.mark_initial_import(ctx.tenant, outcome.run_id)
                _count_as_scheduled(ctx, store)
    return outcome


def _count_as_scheduled(ctx: Context, store: Any) -> None:
    """The initial import is the day's scheduled run when that day's slot has passed (schedule from
    the environment serve reads, CASAVI_SYNC_SCHEDULE_*): `status` then says tomorrow, not "due now",
    and `serve` does not sync the tenant again right after it (engine.schedule)."""
    from engine.schedule import schedule_from_env
    from engine.timefmt import parse_stamp

    now = parse_stamp(store.now())
    if now is None:
        return
    schedule = schedule_from_env(ctx.env if ctx.env is not None else os.environ)
    day = schedule.after_initial_import(ctx.tenant, store.last_scheduled_day(ctx.tenant), now)
    if day is not None:
        store.set_last_scheduled_day(ctx.tenant, day)


def plan(ctx: Context, *, reconcile: bool = False, run_date: dt.date | None = None,
         progress: Progress | None = None, mset: Any = None, full: bool = False) -> Any:
    """What a run would do now (``engine.sync.runner.Prepared``); writes nothing anywhere."""
    from engine.sync.session import plan_for_tenant

    options = sync_options(ctx, reconcile=reconcile, run_date=run_date, full=full)
    with ctx.store() as store:
        mset = mset or ctx.mapping_set(store)
        scalara, casavi = ctx.clients(store)
        with scalara, casavi:
            return plan_for_tenant(store, ctx.tenant, mset, scalara, casavi, options, progress)


def lock_holder(ctx: Context) -> Any:
    """Who syncs ctx.tenant right now (``LockInfo``), or None."""
    with ctx.store() as store:
        return store.lock_holder(ctx.tenant)


def scheduled_runner(ctx: Context) -> Runner:
    """The production runner of ``serve``: one scheduled ``start_run`` per call.

    Each call works on a copy of ``ctx`` for the tenant (so reports land in that tenant's folder)
    and opens its own store, because it runs on a worker thread. No progress: parallel runs would
    interleave it; the loop logs start and end. A lock held by someone else comes back as BUSY.
    """
    from engine.serve import BUSY, RunResult, total_counts

    def run(tenant: str, should_stop: Callable[[], bool]) -> RunResult:
        tctx = dataclasses.replace(ctx.for_tenant(tenant), actor="serve")
        try:
            outcome = start_run(tctx, trigger="schedule", should_stop=should_stop)
        except StateError as exc:
            with tctx.store() as store:
                holder = store.lock_holder(tenant)
            if holder is None:
                raise
            return RunResult(tenant, BUSY, error=str(exc))
        return RunResult(tenant, outcome.outcome, outcome.run_id, total_counts(outcome.report["counts"]),
                         str(outcome.error) if outcome.error else None, float(outcome.report.get("durationS", 0)),
                         str(outcome.report_path) if outcome.report_path else None)

    return run
