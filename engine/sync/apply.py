"""Apply: carry out a plan against casavi, in dependency order, with bounded concurrency.

Writes go kind by kind in the order the mappings' references dictate (properties -> units ->
contacts -> contracts -> responsibilities); archives go in reverse order. Within a kind, up to
``concurrency`` calls are in flight (the client's rate limiter paces them).

Crash safety: before a create is sent, its intent is journaled (``pending``) and committed, so a
crash between casavi's answer and the journal entry still leaves a trace; the next run repeats the
PUT, which is idempotent because casavi keys records by our reference id. Nothing is ever created
twice, and nothing written is forgotten.

A record casavi rejects (400/409/422) is journaled as failed with its reason; records that depend on
it are skipped with that reason; the run goes on. An operator-level error (auth, network) stops
new submissions, lets the calls in flight finish, journals them, and is raised.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import OperatorError, RecordError
from engine.sync.plan import ARCHIVE, CREATE, RESTORE, SKIPPED, UPDATE, Action, Plan

# casavi addresses a responsibility by (property, contact) and removes it with DELETE: it has no
# archive. Every other kind is archived/restored by reference id.
RESPONSIBILITIES = "responsibilities"

Progress = Callable[[str, str, int, int], None]  # (phase, kind, done, total)


class Writer(Protocol):
    """The casavi client calls apply needs (engine.connectors.casavi.CasaviClient has them)."""

    def put(self, kind: str, ref_id: str, payload: dict[str, Any]) -> Any: ...
    def put_responsibility(self, property_id: str, contact_id: str, payload: dict[str, Any]) -> Any: ...
    def delete_responsibility(self, property_id: str, contact_id: str) -> Any: ...
    def archive(self, kind: str, ref_id: str) -> Any: ...
    def restore(self, kind: str, ref_id: str) -> Any: ...


class Journal(Protocol):
    """Where apply records what happened (the state store, for one tenant and run)."""

    def pending(self, actions: Sequence[Action]) -> None: ...
    def written(self, action: Action) -> None: ...
    def failed(self, action: Action, error: RecordError) -> None: ...
    def archived(self, action: Action) -> None: ...
    def forgotten(self, action: Action) -> None: ...
    def flush(self) -> None: ...


@dataclass
class Outcome:
    kind: str
    ref_id: str
    action: str
    ok: bool
    source_resource: str | None = None
    source_id: str | None = None
    error: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "id": self.ref_id, "action": self.action, "ok": self.ok,
                             "source": {"resource": self.source_resource, "id": self.source_id}}
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)
    aborted: OperatorError | None = None
    stopped: bool = False

    def counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for o in self.outcomes:
            row = table.setdefault(o.kind, {})
            key = o.action if o.ok else ("skipped" if o.action == SKIPPED else "failed")
            row[key] = row.get(key, 0) + 1
        return table

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def _body(action: Action) -> dict[str, Any]:
    return dict(action.payload or {})


def _perform(writer: Writer, action: Action) -> Any:
    kind, ref = action.kind, action.ref_id
    if kind == RESPONSIBILITIES:
        payload = dict(action.payload or action.before or {})
        prop, contact = str(payload.pop("propertyId", "")), str(payload.pop("contactId", ""))
        if action.action == ARCHIVE:
            return writer.delete_responsibility(prop, contact)
        return writer.put_responsibility(prop, contact, payload)
    if action.action == ARCHIVE:
        return writer.archive(kind, ref)
    if action.action == RESTORE:
        result = writer.restore(kind, ref)
        return writer.put(kind, ref, _body(action)) if action.update_after_restore else result
    return writer.put(kind, ref, _body(action))


def _is_gone(error: RecordError) -> bool:
    return getattr(error, "status", None) == 404


class _Runner:
    def __init__(self, writer: Writer, journal: Journal, concurrency: int,
                 progress: Progress | None, should_stop: Callable[[], bool] | None) -> None:
        self.writer, self.journal = writer, journal
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.result = ApplyResult()
        self.failed_keys: dict[tuple[str, str], str] = {}

    def run_phase(self, phase: str, kind: str, actions: list[Action]) -> None:
        if not actions or self.result.aborted or self.result.stopped:
            return
        ready: list[Action] = []
        for a in actions:
            blocker = next((d for d in a.depends_on if d in self.failed_keys), None)
            if blocker is not None:
                reason = f"skipped: depends on {blocker[0]} {blocker[1]}, which failed ({self.failed_keys[blocker]})"
                self.failed_keys[(a.kind, a.ref_id)] = "a record it depends on failed"
                self.result.outcomes.append(Outcome(a.kind, a.ref_id, SKIPPED, False, a.source_resource,
                                                    a.source_id, {"reason": reason}))
                continue
            ready.append(a)
        creates = [a for a in ready if a.action == CREATE]
        if creates:
            self.journal.pending(creates)
            self.journal.flush()
        total, done = len(ready), 0
        queue = iter(ready)
        with cf.ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="casavi-write") as pool:
            in_flight: dict[cf.Future[Any], Action] = {}

            def fill() -> None:
                while len(in_flight) < self.concurrency * 2 and not self.result.aborted:
                    if self.should_stop():
                        self.result.stopped = True
                        return
                    nxt = next(queue, None)
                    if nxt is None:
                        return
                    in_flight[pool.submit(_perform, self.writer, nxt)] = nxt

            fill()
            while in_flight:
                finished, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    action = in_flight.pop(fut)
                    self._settle(action, fut)
                    done += 1
                if self.progress:
                    self.progress(phase, kind, done, total)
                fill()
        self.journal.flush()

    def _settle(self, action: Action, fut: cf.Future[Any]) -> None:
        exc = fut.exception()
        src = (action.source_resource, action.source_id)
        if exc is None:
            done = action.action
            if action.action == ARCHIVE:
                if action.kind == RESPONSIBILITIES:
                    self.journal.forgotten(action)
                else:
                    self.journal.archived(action)
            else:
                self.journal.written(action)
                if done == CREATE and getattr(fut.result(), "created", None) is False:
                    done = UPDATE  # casavi had it already (a create repeated after a crash)
            self.result.outcomes.append(Outcome(action.kind, action.ref_id, done, True, *src))
        elif isinstance(exc, RecordError):
            if action.action == ARCHIVE and _is_gone(exc):
                self.journal.forgotten(action)
                self.result.outcomes.append(Outcome(action.kind, action.ref_id, action.action, True, *src))
                return
            exc.target_id = exc.target_id or action.ref_id
            exc.source_id = exc.source_id or action.source_id
            exc.resource = exc.resource or action.source_resource
            self.journal.failed(action, exc)
            self.failed_keys[(action.kind, action.ref_id)] = exc.reason
            self.result.outcomes.append(Outcome(action.kind, action.ref_id, action.action, False, *src,
                                                error=exc.as_dict()))
        elif isinstance(exc, OperatorError):
            if self.result.aborted is None:
                self.result.aborted = exc
        else:  # a bug: keep the run's bookkeeping intact, then let it surface
            raise exc


def apply_plan(
    plan: Plan,
    writer: Writer,
    journal: Journal,
    *,
    order: Sequence[str],
    concurrency: int = 8,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    blocked: Iterable[tuple[str, str, str]] = (),
) -> ApplyResult:
    """Carry out ``plan``. ``blocked`` lists (kind, ref_id, reason) that failed before apply
    (mapping errors), so their dependents are skipped too."""
    runner = _Runner(writer, journal, concurrency, progress, should_stop)
    for kind, ref_id, reason in blocked:
        runner.failed_keys[(kind, ref_id)] = reason
    by_kind: dict[str, list[Action]] = {}
    archives: dict[str, list[Action]] = {}
    for a in plan.actions:
        (archives if a.action == ARCHIVE else by_kind).setdefault(a.kind, []).append(a)
    for kind in order:
        writes = [a for a in by_kind.get(kind, []) if a.action in (CREATE, UPDATE, RESTORE)]
        runner.run_phase("write", kind, writes)
    for kind in reversed(order):
        runner.run_phase("archive", kind, archives.get(kind, []))
    journal.flush()
    return runner.result
