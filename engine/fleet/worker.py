"""One ``casavi-sync worker`` process: runs fleet jobs until SIGTERM, then drains.

Any number of workers on any number of machines share one PostgreSQL database (the state and
procrastinate's job tables live side by side). Each worker:

- heartbeats every ``heartbeat_s`` seconds (procrastinate's worker table); a worker silent for
  ``stall_timeout_s`` is dead, and the ``retry_stalled`` job hands its jobs to the others. A tenant
  whose worker was SIGKILLed mid-run is therefore running again within about
  ``stall_timeout_s + stall_check_s`` (defaults 120 s + 15 s, under 5 minutes): the engine's
  run lock was released by the server the moment the dead worker's connection closed, and the new
  run takes over the dead one (recorded ``interrupted``) and repeats only the unsure writes;
- runs at most ``concurrency`` tenants at a time (threads; a sync is mostly waiting for HTTP);
- on SIGTERM/SIGINT takes no new job, tells running syncs to stop after their writes in flight
  (outcome ``stopped``, as ``serve`` does), re-queues them for another worker, and exits 0.

Nothing here prints: the caller passes a log (the CLI's console).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from engine.errors import StateError
from engine.fleet.jobs import CONTROL_QUEUE, Runtime, build_app, set_runtime
from engine.ops.jobs import QUEUE
from engine.state.db import HOSTNAME

DEFAULT_STALL_TIMEOUT_S = 120.0
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_TICK_S = 30.0


def worker_name() -> str:
    return f"{HOSTNAME}:{os.getpid()}"


def schema_installed(url: str) -> bool:
    import psycopg

    from engine.state import pg

    try:
        with psycopg.connect(url, connect_timeout=pg.CONNECT_TIMEOUT_S) as conn:
            row = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
    except psycopg.Error as exc:
        raise pg.connect_error(exc, url) from None
    return row is not None and row[0] is not None


def install_schema(url: str) -> bool:
    """Create procrastinate's tables in the state database (once); True when it was created now."""
    import psycopg

    from engine.state import pg
    from engine.state.sql import LOCK_SPACE

    if schema_installed(url):
        return False
    app = build_app(url)
    sql = app.schema_manager.get_schema()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=pg.CONNECT_TIMEOUT_S) as conn, \
                conn.transaction():
            # the same writer lock as the store's migrations: two `state migrate` at once create it once
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
            row = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if row is None or row[0] is None:
                conn.execute(sql)
                return True
    except psycopg.Error as exc:
        raise pg.state_error(exc, url) from None
    return False


class _ToLog(logging.Handler):
    """procrastinate's warnings and errors as one line each in the worker's own log; its INFO
    chatter (every job start and end) is dropped: the worker logs its own lines. Never a traceback
    (a record's exception is named, not printed), and the URL's password is not in its messages."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(level=logging.WARNING)
        self.rt = rt

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())[:300]
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            log = self.rt.log.error if record.levelno >= logging.ERROR else self.rt.log.warn
            log(f"job queue: {text}", event="fleet.procrastinate")
        except Exception:  # logging must never take the worker down
            self.handleError(record)


def run_worker(url: str, rt: Runtime, *, concurrency: int = 2, tick_s: float = DEFAULT_TICK_S,
               heartbeat_s: float = DEFAULT_HEARTBEAT_S, pulse: Callable[[], None] | None = None) -> None:
    """Work until SIGTERM/SIGINT (``rt.stop``), then drain; raises StateError if the fleet is not set up."""
    if not schema_installed(url):
        raise StateError("the job tables are missing in this database; set the fleet up first: "
                         "casavi-sync state migrate")
    # procrastinate's log lines, and asyncio's ("Task exception was never retrieved" when the database
    # drops under a job's status update), become one line each in our log, never a traceback
    for name in ("procrastinate", "asyncio"):
        queue_log = logging.getLogger(name)
        queue_log.handlers[:] = [_ToLog(rt)]
        queue_log.propagate = False
    stall_check_s = max(1.0, min(15.0, rt.stall_timeout_s / 4))
    app = build_app(url, tick_s=tick_s, stall_check_s=stall_check_s)
    set_runtime(rt)
    try:
        asyncio.run(_main(app, rt, concurrency, heartbeat_s, pulse))
    finally:
        set_runtime(None)


def _loop_error(rt: Runtime, context: dict[str, Any]) -> None:
    """An exception nobody awaited (e.g. a job's status update when PostgreSQL restarts): one line."""
    exc = context.get("exception")
    text = " ".join(str(context.get("message") or "event loop error").split())[:200]
    if exc is not None:
        text += f" ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    rt.log.warn(f"job queue: {text}", event="fleet.procrastinate")


async def _pulse(pulse: Callable[[], None], every_s: float) -> None:
    """Liveness: the event loop runs this every ``every_s`` seconds; a stuck loop stops the pulse."""
    while True:
        pulse()
        await asyncio.sleep(every_s)


RECONNECT_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits between attempts after the database went away


async def _main(app: Any, rt: Runtime, concurrency: int, heartbeat_s: float,
                pulse: Callable[[], None] | None = None) -> None:
    """Serve jobs until a signal; when the database goes away (a restart, a failover) procrastinate
    stops its worker: wait and reconnect instead of exiting, so a PostgreSQL restart costs the
    interrupted runs a retry, not the fleet its workers."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: _loop_error(rt, context))
    beating = asyncio.create_task(_pulse(pulse, heartbeat_s)) if pulse is not None else None
    current: list[asyncio.Task[Any]] = []
    wakeup = asyncio.Event()

    def on_signal(signum: int) -> None:
        if not rt.stop.is_set():
            rt.log.info(f"worker {rt.worker_name} stopping ({signal.Signals(signum).name}): no new jobs; "
                        "running syncs stop after their writes in flight and go to another worker",
                        event="worker.stopping", worker=rt.worker_name)
        rt.stop.set()
        wakeup.set()
        for task in current:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    failures = 0
    try:
        while not rt.stop.is_set():
            try:
                await _serve(app, rt, concurrency, heartbeat_s, current, first=failures == 0)
                if rt.stop.is_set():
                    break
                reason = "the job queue stopped"
            except Exception as exc:  # the database is unreachable (still restarting) or went away again
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            wait = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
            failures += 1
            rt.log.error(f"worker {rt.worker_name}: lost the job queue ({reason}); reconnecting in {wait:g} s",
                         event="worker.reconnect", worker=rt.worker_name)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=wait)
    finally:
        if beating is not None:
            beating.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    rt.log.info(f"worker {rt.worker_name} stopped", event="worker.stop", worker=rt.worker_name)


async def _serve(app: Any, rt: Runtime, concurrency: int, heartbeat_s: float, current: list[asyncio.Task[Any]],
                 *, first: bool) -> None:
    async with app.open_async():
        common: dict[str, Any] = {
            "install_signal_handlers": False, "update_heartbeat_interval": heartbeat_s,
            "stalled_worker_timeout": rt.stall_timeout_s, "delete_jobs": "successful",
            "fetch_job_polling_interval": 2.0}
        # Two procrastinate workers in this process: the syncs, and the control jobs (schedule tick,
        # stalled-job recovery) with a slot of their own, so that workers whose every slot is busy
        # with a long sync still schedule and still rescue a dead worker's tenants.
        current[:] = [asyncio.create_task(app.run_worker_async(queues=[QUEUE], name=rt.worker_name,
                                                               concurrency=concurrency, **common)),
                      asyncio.create_task(app.run_worker_async(queues=[CONTROL_QUEUE],
                                                               name=f"{rt.worker_name}/control",
                                                               concurrency=1, **common))]
        if rt.stop.is_set():  # a signal while connecting
            for task in current:
                task.cancel()
        if first:
            rt.log.info(f"worker {rt.worker_name} started: up to {concurrency} run(s) at a time; "
                        f"{rt.schedule.describe()}", event="worker.start", worker=rt.worker_name)
        else:
            rt.log.info(f"worker {rt.worker_name}: job queue reconnected", event="worker.reconnected",
                        worker=rt.worker_name)
        # When one of the two stops (the database went away), stop the other too.
        _done, pending = await asyncio.wait(current, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in current:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        current.clear()
