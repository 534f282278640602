"""The long-running scheduler behind ``casavi-sync serve``: every tenant's daily run, nothing more.

Every tick (30 s) the loop asks the schedule which activated and connected tenants are due and
starts their runs on worker threads, at most ``parallel`` at a time. The same lock that keeps two
manual ``run`` commands apart keeps the scheduler and a manual run apart.

Order of a start, and why:

1. ``lock_holder`` - somebody (a manual ``run``) is syncing the tenant: skip it *without* marking
   the day. It stays due and is retried at the next tick, so it runs once the other run is over.
2. ``set_last_scheduled_day`` - the day counts as done the moment its run starts, so a run that
   crashes is not restarted at every tick or restart (see engine/schedule.py).
3. the run itself, on a worker thread with its own ``StateStore`` (a store is single-threaded).
   It takes the tenant's run lock. Should a manual run have taken the lock in the millisecond
   between 1 and 3, the runner reports ``busy`` and the loop puts the day back, so it is retried.

Stopping (SIGTERM/SIGINT -> ``request_stop``): no new runs start; running ones are told through
``should_stop`` to stop after the writes in flight (they end "stopped", their state saved); the
loop waits for them and returns. Nothing here prints: the caller passes a ``Log`` (the CLI's
Console) and chooses the exit code.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.errors import CasaviSyncError, OperatorError
from engine.schedule import Schedule
from engine.state import StateStore, describe_location
from engine.timefmt import human_time, machine_time

BUSY = "busy"      # another process holds the tenant's run lock: retried at the next tick
FAILED = "failed"  # the run could not start (bad mappings or config, missing credentials)

DEFAULT_TICK_S = 30.0
DEFAULT_PARALLEL = 2


class Log(Protocol):
    def info(self, message: str, **fields: Any) -> None: ...
    def warn(self, message: str, **fields: Any) -> None: ...
    def error(self, message: str, **fields: Any) -> None: ...


@dataclass(frozen=True)
class RunResult:
    """What a runner reports back about one scheduled run."""

    tenant: str
    outcome: str  # clean | partial | aborted | stopped (as recorded) | busy | failed (no run recorded)
    run_id: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    report_path: str | None = None


# runner(tenant, should_stop) -> RunResult; raising CasaviSyncError means "could not start"
Runner = Callable[[str, Callable[[], bool]], RunResult]
Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class ServeOptions:
    schedule: Schedule = field(default_factory=Schedule)
    parallel: int = DEFAULT_PARALLEL
    tick_s: float = DEFAULT_TICK_S

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError("parallel must be at least 1")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LockedLog:
    """Serialises log lines from the worker threads (a Console is not thread-safe)."""

    def __init__(self, log: Log) -> None:
        self._log, self._lock = log, threading.Lock()

    def info(self, message: str, **fields: Any) -> None:
        with self._lock:
            self._log.info(message, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        with self._lock:
            self._log.warn(message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        with self._lock:
            self._log.error(message, **fields)


@dataclass
class _Running:
    future: cf.Future[RunResult]
    day: dt.date


class Server:
    """The scheduler. ``with Server(...) as s: s.serve_forever()``; tests drive ``tick()`` directly.

    Entering takes the state file's serve lock (StateError if another ``serve`` holds it).
    """

    def __init__(self, state_path: Path | str, options: ServeOptions, runner: Runner, log: Log, *,
                 clock: Clock = _utc_now) -> None:
        self.state_path = state_path
        self.options = options
        self.runner = runner
        self.log: Log = LockedLog(log)
        self.clock = clock
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self._store: StateStore | None = None
        self._lock: Any = None
        self._pool: cf.ThreadPoolExecutor | None = None
        self._running: dict[str, _Running] = {}
        self._busy_logged: dict[str, int] = {}
        self.heartbeat: Callable[[], None] | None = None  # called every pass of the loop (liveness)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Server:
        store = StateStore.open(self.state_path)
        try:
            self._lock = store.acquire_serve_lock()
        except BaseException:
            store.close()
            raise
        self._store = store
        self._pool = cf.ThreadPoolExecutor(max_workers=self.options.parallel, thread_name_prefix="casavi-serve")
        return self

    def __exit__(self, *exc: object) -> None:
        self.request_stop()
        self.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._store is not None:
            self._store.close()  # releases the serve lock too
            self._store = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            raise RuntimeError("Server used outside its with block")
        return self._store

    def request_stop(self, reason: str = "") -> None:
        """Safe to call from a signal handler: only sets a flag (logging happens in the loop)."""
        if reason and not self.stop_reason:
            self.stop_reason = reason
        self.stop_event.set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def running(self) -> list[str]:
        return sorted(name for name, r in self._running.items() if not r.future.done())

    # -- the loop -------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Tick until ``request_stop``; then let running runs stop and wait for them."""
        self._log_start()
        while not self.stopping:
            try:
                self.tick()
                if self.heartbeat is not None:
                    self.heartbeat()
            except OperatorError as exc:  # e.g. the state file busy for too long: try again next tick
                self.log.error(f"scheduler tick failed: {exc}; retrying in {self.options.tick_s:g} s",
                               event="serve.error")
            self.stop_event.wait(self.options.tick_s)
        running = self.running()
        why = f" ({self.stop_reason})" if self.stop_reason else ""
        if running:
            self.log.info(f"stopping{why}: waiting for {len(running)} run(s) to stop after their writes in "
                          f"flight: {', '.join(running)}", event="serve.stopping", tenants=running)
        else:
            self.log.info(f"stopping{why}", event="serve.stopping", tenants=[])
        self.wait()
        self.log.info("serve stopped", event="serve.stop")

    def tick(self) -> list[str]:
        """One pass: settle finished runs, start the due ones (earliest slot first). Returns the started."""
        self._reap()
        if self.stopping:
            return []
        store, schedule, now = self.store, self.options.schedule, self.clock()
        due: list[tuple[dt.datetime, str, dt.date]] = []
        for tenant in store.list_tenants():
            name = tenant.name
            if not tenant.activated or name in self._running or store.get_connection(name) is None:
                continue
            last = store.last_scheduled_day(name)
            if last is None:                  # first sight: fix its first day now (engine.schedule)
                last = schedule.first_last_day(name, now)
                store.set_last_scheduled_day(name, last)
            day = schedule.due(name, last, now)
            if day is not None:
                due.append((schedule.slot(name, day), name, day))
        started: list[str] = []
        for _, name, day in sorted(due):
            if len(self._running) >= self.options.parallel or self.stopping:
                break
            holder = store.lock_holder(name)
            if holder is not None:
                if self._busy_logged.get(name) != holder.pid:
                    self._busy_logged[name] = holder.pid
                    self.log.info(f"tenant '{name}' is being synced by pid {holder.pid} on host {holder.hostname} "
                                  f"({holder.purpose}); its scheduled run waits for it", event="run.busy",
                                  tenant=name, holder_pid=holder.pid, holder_purpose=holder.purpose)
                continue
            self._busy_logged.pop(name, None)
            store.set_last_scheduled_day(name, day)
            self.log.info(f"run started for tenant '{name}' (scheduled day {day})", event="run.start",
                          tenant=name, day=day.isoformat())
            assert self._pool is not None
            self._running[name] = _Running(self._pool.submit(self._work, name), day)
            started.append(name)
        return started

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the running runs (all of them, or until ``timeout``), then settle them."""
        futures = [r.future for r in self._running.values()]
        if futures:
            cf.wait(futures, timeout=timeout)
        self._reap()

    # -- workers --------------------------------------------------------------------------------
    def _work(self, name: str) -> RunResult:
        t0 = time.monotonic()
        try:
            result = self.runner(name, self.stop_event.is_set)
        except CasaviSyncError as exc:
            result = RunResult(name, FAILED, error=str(exc))
        except Exception as exc:  # a bug must not take the scheduler (and the other tenants) down
            result = RunResult(name, FAILED, error=f"internal error: {type(exc).__name__}: {exc}")
        if not result.duration_s:
            result = dataclasses.replace(result, duration_s=round(time.monotonic() - t0, 3))
        self._log_end(result)
        return result

    def _reap(self) -> None:
        for name, r in list(self._running.items()):
            if not r.future.done():
                continue
            del self._running[name]
            result = r.future.result()
            if result.outcome == BUSY:
                # the run never started: put the day back so the next tick retries it (any day
                # before ``r.day`` has the same effect, see Schedule.due)
                self.store.set_last_scheduled_day(name, r.day - dt.timedelta(days=1))

    # -- log lines ------------------------------------------------------------------------------
    def _log_start(self) -> None:
        store, schedule, now = self.store, self.options.schedule, self.clock()
        names = [t.name for t in store.list_tenants() if t.activated and store.get_connection(t.name) is not None]
        self.log.info(f"serve started: {schedule.describe()}; up to {self.options.parallel} run(s) in parallel; "
                      f"{len(names)} tenant(s) scheduled", event="serve.start", state=describe_location(self.state_path),
                      tenants=names, parallel=self.options.parallel)
        for name in names:
            when = schedule.next_run(name, store.last_scheduled_day(name), now)
            text = "now" if when <= now else human_time(when, schedule.zone)
            self.log.info(f"tenant '{name}': next run {text}", event="schedule.next", tenant=name,
                          next_run=machine_time(when))

    def _log_end(self, r: RunResult) -> None:
        fields: dict[str, Any] = {"event": "run.end", "tenant": r.tenant, "outcome": r.outcome,
                                  "run_id": r.run_id, "counts": r.counts, "duration_s": r.duration_s}
        if r.outcome == BUSY:
            self.log.info(f"tenant '{r.tenant}' was taken by another run just now; retrying at the next tick",
                          **{**fields, "event": "run.busy"})
            return
        if r.outcome == FAILED:
            self.log.error(f"run for tenant '{r.tenant}' could not start: {r.error}", **fields, error=r.error)
            return
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items()) if v) or "nothing to do"
        text = f"run {r.run_id} for tenant '{r.tenant}': {r.outcome} in {r.duration_s:.1f} s; {counts}"
        if r.error:
            text += f"; {r.error}"
        if r.report_path:
            fields["report"] = r.report_path
        if r.outcome in ("clean", "stopped"):
            self.log.info(text, **fields)
        else:
            self.log.warn(text, **fields, error=r.error)


# -- the real runner ---------------------------------------------------------------------------------

def total_counts(report_counts: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Per-kind report counts summed over kinds, without the ``planned_*`` columns."""
    totals: dict[str, int] = {}
    for row in report_counts.values():
        for key, value in row.items():
            if not key.startswith("planned_") and isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    return totals
