"""The fleet's jobs on procrastinate: a tenant's run, the schedule tick, stalled-job recovery.

Why procrastinate (docs/fleet.md has the comparison): it needs nothing but the PostgreSQL that
already holds the state, speaks psycopg 3, and has the two per-key guarantees this needs - ``lock``
(at most one *running* job per key) and ``queueing_lock`` (at most one *waiting* job per key).

- ``casavi_sync.run_tenant(tenant, trigger, day)``: one sync, under ``lock="tenant:<name>"`` so two
  jobs of a tenant never run at once; the engine's own run lock (a server-side session lock,
  engine/state/pg.py) stays the last line of defence against manual ``run``s. A scheduled job
  carries its local ``day``: it does nothing when that day is already done, and marks the day done
  only when its run has ended, so a job taken over after a crash still runs, and a duplicate job
  for the same day is a no-op. A run stopped by SIGTERM (drain) defers itself again, so another
  worker finishes it; a tenant busy with a manual ``run`` is retried a little later.
- ``casavi_sync.tick``: procrastinate's cron is UTC-only (procrastinate #1472), so the documented
  dynamic-scheduling pattern is used: a periodic tick (deferred once per tick cluster-wide, by
  procrastinate's unique periodic defer) asks the project's DST-exact ``Schedule`` which tenants are
  due and defers their runs with ``queueing_lock="schedule:<name>"``: two workers seeing the same
  slot at the same second defer one job.
- ``casavi_sync.retry_stalled``: procrastinate does not recover the jobs of a dead worker by itself
  (procrastinate #740). This periodic task puts jobs whose worker stopped sending heartbeats back
  to ``todo``. It has no ``lock`` (a lock would let a stalled instance of it block itself forever,
  procrastinate #1408); worker ids are the database's own serial numbers (procrastinate #1518).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import CasaviSyncError, StateError
from engine.ops.jobs import QUEUE, TASK_RUN, defer_run

CONTROL_QUEUE = "casavi_sync_control"  # tick and stalled-job recovery: never starved by long syncs
TASK_TICK = "casavi_sync.tick"
TASK_STALLED = "casavi_sync.retry_stalled"
BUSY_RETRY_S = 30


class Log:
    """What the jobs log through (the CLI passes its Console, wrapped to be thread-safe)."""

    def info(self, message: str, **fields: Any) -> None: ...
    def warn(self, message: str, **fields: Any) -> None: ...
    def error(self, message: str, **fields: Any) -> None: ...


@dataclass
class Runtime:
    """This worker process's settings, read by the jobs (they run on the worker's threads)."""

    ctx: Any                      # engine.ops.context.Context of the deployment
    schedule: Any                 # engine.schedule.Schedule (the same on every worker)
    log: Any
    worker_name: str
    stall_timeout_s: float = 120.0
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    stop: threading.Event = field(default_factory=threading.Event)


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the fleet's runtime is not set: jobs run only inside casavi-sync worker")
    return _runtime


def tick_cron(seconds: float) -> str:
    """A cron line firing every ``seconds`` (a divisor of 60 below a minute, whole minutes above)."""
    s = max(1, int(seconds))
    if s < 60:
        while 60 % s:
            s -= 1
        return f"* * * * * */{s}"
    minutes = max(1, s // 60)
    return f"*/{minutes} * * * *" if minutes < 60 else "0 * * * *"


def build_app(url: str, *, tick_s: float = 30.0, stall_check_s: float = 15.0) -> Any:
    """The procrastinate app on the state's PostgreSQL database, with the three tasks."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=4),
                            import_paths=[])

    @app.task(name=TASK_RUN, queue=QUEUE, pass_context=True)
    def run_tenant(context: Any, tenant: str, trigger: str, day: str | None = None) -> str:
        return _run_tenant(app, context, tenant, trigger, day)

    @app.periodic(cron=tick_cron(tick_s), periodic_id="schedule", queueing_lock="casavi_sync.tick")
    @app.task(name=TASK_TICK, queue=CONTROL_QUEUE)
    def tick(timestamp: int) -> int:
        return len(schedule_tick(app))

    @app.periodic(cron=tick_cron(stall_check_s), periodic_id="stalled")
    @app.task(name=TASK_STALLED, queue=CONTROL_QUEUE)
    async def retry_stalled(timestamp: int) -> int:
        return await retry_stalled_jobs(app, runtime().stall_timeout_s)

    del run_tenant, tick, retry_stalled
    return app


def schedule_tick(app: Any) -> list[str]:
    """Defer the runs of every activated, connected tenant whose slot has passed; returns them."""
    rt = runtime()
    now = rt.clock()
    deferred: list[str] = []
    with rt.ctx.store() as store:
        candidates = store.scheduled_tenants()
    due = []
    for name, last in candidates:
        if last is None:                      # first sight: fix its first day now (engine.schedule)
            last = rt.schedule.first_last_day(name, now)
            with rt.ctx.store() as store:
                store.set_last_scheduled_day(name, last)
        day = rt.schedule.due(name, last, now)
        if day is not None:
            due.append((rt.schedule.slot(name, day), name, day))
    for _, name, day in sorted(due):
        if defer_run(app, name, "schedule", day) is not None:
            deferred.append(name)
            rt.log.info(f"tenant '{name}': scheduled run for {day} queued", event="fleet.queued", tenant=name,
                        day=day.isoformat())
    return deferred


async def retry_stalled_jobs(app: Any, stall_timeout_s: float) -> int:
    """Jobs of workers silent for ``stall_timeout_s``: back to ``todo`` (or dropped if a twin waits)."""
    from procrastinate import exceptions

    manager = app.job_manager
    retried = 0
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stall_timeout_s):
        try:
            await manager.retry_job(job)
            retried += 1
        except exceptions.UniqueViolation:
            # A twin with the same queueing lock is already waiting and will do the work (the
            # dead job's tenant lock is released with it): end the stalled one (procrastinate #1543).
            await manager.finish_job_by_id_async(job.id, status=_failed(), delete_job=False)
    await manager.prune_stalled_workers(stall_timeout_s)
    return retried


def _failed() -> Any:
    from procrastinate.jobs import Status

    return Status.FAILED


def _run_tenant(app: Any, context: Any, tenant: str, trigger: str, day_text: str | None) -> str:
    from engine.ops.runs import start_run

    rt = runtime()
    tctx = rt.ctx.for_tenant(tenant)
    day = dt.date.fromisoformat(day_text) if day_text else None
    job = getattr(getattr(context, "job", None), "id", None)
    if day is not None:
        with tctx.store() as store:
            last = store.last_scheduled_day(tenant)
        if last is not None and last >= day:
            return "already done"
    if rt.stop.is_set():
        defer_run(app, tenant, trigger, day)
        return "handed over"
    rt.log.info(f"run started for tenant '{tenant}' ({trigger}{f', day {day}' if day else ''}) by worker "
                f"{rt.worker_name}", event="run.start", tenant=tenant, trigger=trigger, job=job,
                worker=rt.worker_name)
    try:
        outcome = start_run(tctx, trigger=trigger, should_stop=rt.stop.is_set)
    except StateError as exc:
        try:
            with tctx.store() as store:
                holder = store.lock_holder(tenant)
        except StateError:
            holder = None
        if holder is None:  # the state itself failed (PostgreSQL restarting): the next tick retries
            rt.log.error(f"run for tenant '{tenant}' failed: {exc}; it is retried at the next schedule check",
                         event="run.end", tenant=tenant, outcome="failed", error=str(exc))
            return "failed, retried"
        rt.log.info(f"tenant '{tenant}' is being synced by pid {holder.pid} on host {holder.hostname}; "
                    f"retrying in {BUSY_RETRY_S} s", event="run.busy", tenant=tenant)
        defer_run(app, tenant, trigger, day, schedule_in_s=BUSY_RETRY_S)
        return "busy"
    except CasaviSyncError as exc:  # bad mappings, config, missing credentials: the day is not repeated
        rt.log.error(f"run for tenant '{tenant}' could not start: {exc}", event="run.end", tenant=tenant,
                     outcome="failed", error=str(exc))
        _mark_day(tctx, tenant, day)
        return "failed"
    except Exception as exc:  # a bug must not loop the tenant or print a traceback: one line, day done
        rt.log.error(f"run for tenant '{tenant}' failed: internal error ({type(exc).__name__}: {str(exc)[:200]}); "
                     "this is a bug in casavi-sync", event="run.end", tenant=tenant, outcome="failed")
        _mark_day(tctx, tenant, day)
        return "failed"
    rt.log.info(f"run {outcome.run_id} for tenant '{tenant}': {outcome.outcome}", event="run.end", tenant=tenant,
                run_id=outcome.run_id, outcome=outcome.outcome, worker=rt.worker_name)
    if outcome.outcome == "stopped":  # drained by SIGTERM: another worker carries on
        defer_run(app, tenant, trigger, day)
        return "handed over"
    _mark_day(tctx, tenant, day)
    return str(outcome.outcome)


def _mark_day(tctx: Any, tenant: str, day: dt.date | None) -> None:
    if day is None:
        return
    with tctx.store() as store:
        last = store.last_scheduled_day(tenant)
        if last is None or last < day:
            store.set_last_scheduled_day(tenant, day)
