"""Runs the console started, on background threads, with their live progress.

A page asks ``JobBoard.current(tenant)`` and renders a snapshot: phase, records done of total per
(phase, kind), the rate in the current step and an ETA. The run itself is an ops call (a first
token save's initial import, "run now", "allow archive and run again"); it takes the tenant's run
lock like any other run, so the console, ``run`` and ``serve`` never sync one tenant twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import CasaviSyncError, StateError

log = logging.getLogger("casavi_sync.web")


@dataclass
class Step:
    phase: str
    kind: str
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    updated: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        took = self.updated - self.started
        return self.done / took if took > 0.001 and self.done else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        if not self.total or not rate or self.done >= self.total:
            return None
        return (self.total - self.done) / rate


@dataclass
class Job:
    tenant: str
    trigger: str
    actor: str
    started_wall: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    finished: bool = False
    ended: float | None = None  # monotonic, once finished: the elapsed time stops there
    last_progress: float | None = None  # monotonic, the engine's latest progress call
    outcome: str | None = None
    run_id: int | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # while writing: properties complete, the current one
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def progress(self, phase: str, kind: str, done: int, total: int,
                 detail: Mapping[str, Any] | None = None, /) -> None:
        """The engine's progress callback (phase, kind, done, total[, detail])."""
        now = time.monotonic()
        with self._lock:
            if detail is not None:
                self.detail = dict(detail)
            step = self.steps[-1] if self.steps else None
            if step is None or (step.phase, step.kind) != (phase, kind):
                step = next((s for s in self.steps if (s.phase, s.kind) == (phase, kind)), None)
                if step is None:
                    # a step begins where the one before it ended: an extract reports its first count
                    # only after fetching the page(s), so starting its clock at that report made its
                    # rate 0/s
                    begun = self.last_progress if self.last_progress is not None else self.started
                    step = Step(phase, kind, started=begun)
                    self.steps.append(step)
            step.done, step.total, step.updated = done, total, now
            self.last_progress = now

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            steps = [{"phase": s.phase, "kind": s.kind, "done": s.done, "total": s.total,
                      "rate": round(s.rate(), 1), "eta": s.eta_s()} for s in self.steps]
        current = steps[-1] if steps else None
        return {"tenant": self.tenant, "trigger": self.trigger, "finished": self.finished,
                "outcome": self.outcome, "runId": self.run_id, "error": self.error, "steps": steps,
                "current": current, "properties": self.detail.get("properties"), "elapsed": round(self.elapsed_s(), 1)}

    def elapsed_s(self) -> float:
        """Seconds since the job started, frozen once it has finished."""
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


class JobBoard:
    """At most one console-started job per tenant; the last one stays visible after it ends."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def current(self, tenant: str) -> Job | None:
        with self._lock:
            return self._jobs.get(tenant)

    def start(self, tenant: str, trigger: str, actor: str, work: Callable[[Job], Any]) -> Job:
        """Start ``work(job)`` on a thread; it returns a RunOutcome or None (no run was needed).

        StateError when a job of this console still runs for the tenant.
        """
        with self._lock:
            old = self._jobs.get(tenant)
            if old is not None and not old.finished:
                raise StateError(f"a {old.trigger} run started here is still going for tenant '{tenant}'")
            job = Job(tenant, trigger, actor)
            self._jobs[tenant] = job
        thread = threading.Thread(target=self._run, args=(job, work), name=f"console-run-{tenant}", daemon=True)
        thread.start()
        return job

    def _run(self, job: Job, work: Callable[[Job], Any]) -> None:
        try:
            outcome = work(job)
        except CasaviSyncError as exc:
            job.outcome, job.error = "failed", str(exc)
            outcome = None
        except Exception as exc:  # a bug: keep the console alive, say so on the page and in the log
            log.exception("console run for tenant %s failed", job.tenant)
            job.outcome, job.error = "failed", f"internal error ({type(exc).__name__})"
            outcome = None
        if outcome is None and job.error is None:  # nothing ran (e.g. a replaced token): forget the job
            with self._lock:
                if self._jobs.get(job.tenant) is job:
                    del self._jobs[job.tenant]
        elif outcome is not None:
            job.outcome, job.run_id = outcome.outcome, outcome.run_id
            job.error = str(outcome.error) if outcome.error else None
        job.ended = time.monotonic()
        job.finished = True

    def stop_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
