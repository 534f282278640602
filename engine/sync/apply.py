"""Apply: carry out a plan against casavi, in dependency order, with bounded concurrency.

Writes go property by property (``write_order="property"``, engine.sync.order groups them): a
property, then what belongs to it (its units, the contacts its records need that are not written
yet, its responsibilities, its contracts), then the next property. A record is sent only once every
record it references has been written; up to ``2 x concurrency`` calls are queued (the client's
rate limiter paces them) and, to keep them queued, the next properties start while the current one
waits for its last answers -- never more than ``max_ahead`` properties beyond the first
incomplete one. ``write_order="kind"`` is the older order (all properties, then all contacts, ...),
kept for comparison. Archives go kind by kind in reverse order, after all writes.

Crash safety: before a create is sent, its intent is journaled (``pending``) and committed (for a
property's group of records at once, when the group starts), so a crash between casavi's answer
and the journal entry still leaves a trace; the next run repeats the PUT, which is idempotent
because casavi keys records by our reference id. Nothing is ever created twice, and nothing
written is forgotten.

A record casavi rejects (400/409/422) is journaled as failed with its reason; records that depend on
it are skipped with that reason; the run goes on. An operator-level error (auth, network) stops
new submissions, lets the calls in flight finish, journals them, and is raised.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import OperatorError, RecordError
from engine.sync.addresses import FinalAddresses, split_address_moves
from engine.sync.order import Completion, Group, Lookup, PropertyDone, group_actions
from engine.sync.plan import ARCHIVE, CREATE, RESTORE, SKIPPED, UPDATE, Action, Plan

# casavi addresses a responsibility by (property, contact) and removes it with DELETE: it has no
# archive. Every other kind is archived/restored by reference id.
RESPONSIBILITIES = "responsibilities"

WRITE_ORDERS = ("property", "kind")


class Progress(Protocol):
    """(phase, kind, done, total[, detail]); total 0 = unknown. While writing, ``detail`` says how
    many properties are complete and which is current (``Completion.detail``); property by
    property, ``kind`` is "records" (all kinds together)."""

    def __call__(self, phase: str, kind: str, done: int, total: int,
                 detail: Mapping[str, Any] | None = None, /) -> None: ...


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
    write_order: str = "property"
    properties_total: int = 0
    properties_done: list[PropertyDone] = field(default_factory=list)  # in the order they completed

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
        try:
            result = writer.restore(kind, ref)
        except RecordError as exc:
            if not _is_gone(exc):
                raise
            # deleted in casavi since it was archived (DELETE of an archived record is in the
            # contract): create it again; the PUT is keyed by our reference id, so never twice
            return writer.put(kind, ref, _body(action))
        return writer.put(kind, ref, _body(action)) if action.update_after_restore else result
    try:
        result = writer.put(kind, ref, _body(action))
    except RecordError as exc:
        if action.action != CREATE or getattr(exc, "status", None) != 409:
            raise
        # casavi may hold it archived under our reference id and refuse writes to archived records:
        # restore it and write again; if there is nothing to restore, the refusal stands
        try:
            writer.restore(kind, ref)
        except RecordError:
            raise exc from None
        return writer.put(kind, ref, _body(action))
    if action.action == CREATE and getattr(result, "created", None) is False:
        # casavi had it under our reference id (an earlier import, a crash after the create): it
        # may be archived, and the plan wants it active because dependents are about to point at
        # it. The contract names no field that says so: a body that says archived=false spares
        # the call; otherwise restore, and a refusal (e.g. "not archived") is no failure
        archived = (getattr(result, "body", None) or {}).get("archived")
        if archived is not False:
            with contextlib.suppress(RecordError):
                writer.restore(kind, ref)
    return result


def _is_gone(error: RecordError) -> bool:
    return getattr(error, "status", None) == 404


Key = tuple[str, str]


class _Runner:
    def __init__(self, writer: Writer, journal: Journal, concurrency: int,
                 progress: Progress | None, should_stop: Callable[[], bool] | None,
                 completion: Completion) -> None:
        self.writer, self.journal = writer, journal
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.result = ApplyResult()
        self.failed_keys: dict[Key, str] = {}
        self.completion = completion
        self.moving: set[Key] = set()  # properties written in two steps (engine.sync.addresses)

    # -- bookkeeping shared by both orders --------------------------------------------------------
    def _emit(self, phase: str, kind: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(phase, kind, done, total, self.completion.detail())

    def _blocker(self, a: Action) -> Key | None:
        return next((d for d in a.depends_on if d in self.failed_keys), None)

    def _skip(self, a: Action, blocker: Key, announced: bool = False) -> None:
        reason = f"skipped: depends on {blocker[0]} {blocker[1]}, which failed ({self.failed_keys[blocker]})"
        self.failed_keys[(a.kind, a.ref_id)] = "a record it depends on failed"
        if announced:  # its intent was journaled: settle it, so the next run sees "failed, retry"
            self.journal.failed(a, RecordError(reason, source_id=a.source_id, resource=a.source_resource, target_id=a.ref_id))
        self.result.outcomes.append(Outcome(a.kind, a.ref_id, SKIPPED, False, a.source_resource,
                                            a.source_id, {"reason": reason, "blockedBy": list(blocker)}))
        self.completion.settled(a, False)

    # -- kind by kind (and every archive phase) ---------------------------------------------------
    def run_phase(self, phase: str, kind: str, actions: list[Action]) -> None:
        if not actions or self.result.aborted or self.result.stopped:
            return
        ready: list[Action] = []
        for a in actions:
            blocker = self._blocker(a)
            if blocker is not None:
                self._skip(a, blocker)
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
                self._emit(phase, kind, done, total)
                fill()
        self.journal.flush()

    # -- property by property ---------------------------------------------------------------------
    def run_groups(self, groups: Sequence[Group], order: Sequence[str], max_ahead: int) -> None:
        """Write the groups in order; a record goes out once all it references is written, and
        group ``first incomplete + max_ahead`` does not start before the first incomplete one ends."""
        if not groups or self.result.aborted or self.result.stopped:
            return
        done = self.completion
        rank = {k: i for i, k in enumerate(order)}
        waits: dict[Key, int] = {}
        dependents: dict[Key, list[Action]] = {}
        for g in groups:
            for a in g.actions:
                key = (a.kind, a.ref_id)
                n = 0
                for d in a.depends_on:
                    if d in done.group_of and d != key:
                        dependents.setdefault(d, []).append(a)
                        n += 1
                waits[key] = n
        ready: list[tuple[int, int, int, Action]] = []
        seq = itertools.count()
        announced: set[Key] = set()
        started: set[Key] = set()  # made ready (or skipped)
        admitted = 0
        cap = self.concurrency * 2

        def make_ready(a: Action) -> None:
            if (a.kind, a.ref_id) in started:  # forced out of a circle before its references settled
                return
            started.add((a.kind, a.ref_id))
            blocker = self._blocker(a)
            if blocker is None:
                key = (a.kind, a.ref_id)
                heapq.heappush(ready, (done.group_of[key], rank.get(a.kind, len(rank)), next(seq), a))
                return
            self._skip(a, blocker, announced=(a.kind, a.ref_id) in announced)
            release((a.kind, a.ref_id))

        def release(key: Key) -> None:
            for dep in dependents.pop(key, ()):
                dkey = (dep.kind, dep.ref_id)
                waits[dkey] -= 1
                if not waits[dkey] and done.group_of[dkey] < admitted:
                    make_ready(dep)

        def admit(pos: int) -> None:
            actions = groups[pos].actions
            creates = [a for a in actions if a.action == CREATE and self._blocker(a) is None]
            if creates:
                self.journal.pending(creates)
                self.journal.flush()
                announced.update((a.kind, a.ref_id) for a in creates)
            for a in actions:
                if not waits[(a.kind, a.ref_id)]:
                    make_ready(a)

        total = done.records_total
        with cf.ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="casavi-write") as pool:
            in_flight: dict[cf.Future[Any], Action] = {}

            def fill() -> None:
                nonlocal admitted
                while not self.result.aborted:
                    while (admitted < len(groups) and admitted - done.first_open < max_ahead
                           and len(ready) + len(in_flight) < cap):
                        admitted += 1  # first, so that make_ready sees the group as started
                        admit(admitted - 1)
                    if not ready and not in_flight:
                        # Nothing can release what still waits: references in a circle (SCALARA data
                        # the mappings do not forbid). Send those anyway, as kind by kind would.
                        for g in groups[done.first_open:admitted]:
                            for a in g.actions:
                                if (a.kind, a.ref_id) not in started:
                                    make_ready(a)
                    if len(in_flight) >= cap or not ready:
                        return
                    if self.should_stop():
                        self.result.stopped = True
                        return
                    action = heapq.heappop(ready)[3]
                    in_flight[pool.submit(_perform, self.writer, action)] = action

            fill()
            while in_flight:
                finished, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    action = in_flight.pop(fut)
                    self._settle(action, fut)
                    if not isinstance(fut.exception(), OperatorError):  # written, or failed: settled
                        release((action.kind, action.ref_id))
                self._emit("write", "records", done.records_done, total)
                if not self.result.stopped:
                    fill()
        self.journal.flush()

    def run_finals(self, finals: Sequence[FinalAddresses]) -> None:
        """Step 2 of address moves (engine.sync.addresses): a property's final addresses, once it
        and the units that moved are written. Counted as the property's one update, not a second."""
        ready = [f.action for f in finals
                 if (f.action.kind, f.action.ref_id) not in self.failed_keys
                 and not any(unit in self.failed_keys for unit in f.units)]
        if not ready:
            return
        self.moving.difference_update((a.kind, a.ref_id) for a in ready)  # step 2 is written as usual
        counted, self.completion = self.completion, Completion([])
        before = len(self.result.outcomes)
        try:
            self.run_phase("write", "properties", ready)
        finally:
            self.completion = counted
            self.result.outcomes[before:] = [o for o in self.result.outcomes[before:] if not o.ok]

    def _settle(self, action: Action, fut: cf.Future[Any]) -> None:
        exc = fut.exception()
        src = (action.source_resource, action.source_id)
        if exc is None:
            self.failed_keys.pop((action.kind, action.ref_id), None)   # e.g. a mapping error, now archived
            done = action.action
            if action.action == ARCHIVE:
                if action.kind == RESPONSIBILITIES:
                    self.journal.forgotten(action)
                else:
                    self.journal.archived(action)
            else:
                self.journal.written(action)
                if (action.kind, action.ref_id) in self.moving:
                    # step 1 of an address move: pending until step 2 is written, so that a crash
                    # or a failed unit in between makes the next run finish the move
                    self.journal.flush()
                    self.journal.pending([action])
                if done == CREATE and getattr(fut.result(), "created", None) is False:
                    done = UPDATE  # casavi had it already (a create repeated after a crash)
            self.result.outcomes.append(Outcome(action.kind, action.ref_id, done, True, *src))
            self.completion.settled(action, True)
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
            self.completion.settled(action, False)
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
    write_order: str = "property",
    lookup: Lookup | None = None,
    max_ahead: int | None = None,
) -> ApplyResult:
    """Carry out ``plan``. ``blocked`` lists (kind, ref_id, reason) that failed before apply
    (mapping errors), so their dependents are skipped too. ``lookup`` finds what records the run
    does not write reference (to place, say, a contract of an unchanged unit with its property).
    ``max_ahead``: how many properties may be under way at once (default 2 x concurrency)."""
    if write_order not in WRITE_ORDERS:
        raise ValueError(f"write_order must be one of {WRITE_ORDERS}, not {write_order!r}")
    writes, finals = split_address_moves([a for a in plan.actions if a.action in (CREATE, UPDATE, RESTORE)])
    groups = group_actions(writes, order, lookup)
    completion = Completion(groups)
    runner = _Runner(writer, journal, concurrency, progress, should_stop, completion)
    runner.result.write_order = write_order
    runner.result.properties_total = completion.properties_total
    runner.result.properties_done = completion.done
    runner.moving = {(f.action.kind, f.action.ref_id) for f in finals}
    for kind, ref_id, reason in blocked:
        runner.failed_keys[(kind, ref_id)] = reason
    if write_order == "property":
        runner.run_groups(groups, order, max_ahead or 2 * runner.concurrency)
    else:
        for kind in order:
            runner.run_phase("write", kind, [a for a in writes if a.kind == kind])
    runner.run_finals(finals)
    archives: dict[str, list[Action]] = {}
    for a in plan.actions:
        if a.action == ARCHIVE:
            archives.setdefault(a.kind, []).append(a)
    for kind in reversed(order):
        runner.run_phase("archive", kind, archives.get(kind, []))
    journal.flush()
    return runner.result
