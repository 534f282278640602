"""Known failures: what casavi keeps refusing, what SCALARA's data keeps from mapping, and news.

A record casavi refuses for a rule the engine cannot know (400/422: validation) would be refused
again with the same payload, so it is **held**: not sent again until its payload changes, a record
it references is written in the run (the refusal may have been about that record's state: a unit's
address its property did not have yet), or the operator asks (``run --retry-failed``,
``--retry-record``). A refusal that depends on casavi's
state (409 quota or conflict, 404 unknown reference, anything else) is retried on a backoff: at
the next run after the first refusal, then 1 h, 2 h, 4 h ... up to 7 days after the last one (a
daily run retries it daily for a week, then less often).

Every run compares its failures with the known ones and sorts them:

- **new**: not failing before, or failing for a different reason now -- what alerting is for;
- **known**: failing since an earlier run (``sinceRun``, ``occurrences``);
- **acknowledged**: known, and an operator acknowledged it with a note (``casavi-sync ack``).

A record that is skipped because a record it depends on failed shares that record's state. A run
whose only failures are acknowledged ends ``clean`` and lists them. A failure that does not come
back in a complete run is resolved and forgotten (with its acknowledgement): if it returns, it is
news again. The same holds for records that fail to map because of SCALARA data ("map" stage).

Pure rules over plain data plus two store calls (``failures`` and ``save_failures``), so the
CLI, the web console and alerting (webhooks on new failures) share them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from engine.state.failures import FailureRow, Key

if TYPE_CHECKING:
    from engine.state import StateStore
    from engine.sync.apply import ApplyResult
    from engine.sync.runner import Prepared

REJECTED_STATUSES = frozenset({400, 422})
BACKOFF_FIRST_S = 3600.0
BACKOFF_CAP_S = 7 * 24 * 3600.0

NEW, KNOWN, ACKNOWLEDGED = "new", "known", "acknowledged"


def category_of(status: int | None) -> str:
    """"rejected" (the payload breaks a rule: resend only when it changes) or "conflict" (retry later)."""
    return "rejected" if status in REJECTED_STATUSES else "conflict"


def backoff_s(attempts: int) -> float:
    """The next run retries a first refusal; then 1 h, 2 h, 4 h ... up to 7 days after the last one."""
    if attempts <= 1:
        return 0.0
    return float(min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** (attempts - 2)))


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(stamp: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


# -- before the run: what not to send ------------------------------------------------------------

@dataclass(frozen=True)
class Hold:
    """Do not send (kind, ref_id) while its payload hashes to ``payload_hash``."""

    payload_hash: str | None
    reason: str


def holds(known: Mapping[Key, FailureRow], now: dt.datetime, *, retry_all: bool = False,
          retry: Iterable[tuple[str, str]] = ()) -> dict[tuple[str, str], Hold]:
    """The records a run must not send again: refused payloads unchanged since, conflicts in backoff."""
    wanted = set(retry)
    out: dict[tuple[str, str], Hold] = {}
    for row in known.values():
        if row.stage != "write" or row.category not in ("rejected", "conflict") or not row.payload_hash:
            continue
        if retry_all or row.retry_requested or (row.kind, row.ref_id) in wanted:
            continue
        since = f"since run {row.first_run}" if row.first_run is not None else "before"
        if row.category == "rejected":
            out[(row.kind, row.ref_id)] = Hold(row.payload_hash, (
                f"not sent again: casavi refused this payload ({since}, {row.attempts}x): {row.reason}; it is "
                f"sent when it changes, or with run --retry-failed"))
        else:
            due = _parse(row.next_retry_at)
            if due is not None and due > now:
                out[(row.kind, row.ref_id)] = Hold(row.payload_hash, (
                    f"next try after {row.next_retry_at}: casavi refused it ({since}, {row.attempts}x): "
                    f"{row.reason}"))
    return out


# -- after the run: sort and remember ------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    """One record failing in this run."""

    stage: str
    kind: str
    ref_id: str
    source_resource: str | None
    source_id: str | None
    category: str
    reason: str
    status: int | None = None
    field: str | None = None
    payload_hash: str | None = None
    attempted: bool = False
    held: bool = False
    blocked_by: tuple[str, str] | None = None  # (kind, casavi id) of the record it waits for
    caused_by: tuple[str, str] | None = None   # (resource, SCALARA id) of the record whose mapping failed

    @property
    def key(self) -> Key:
        return (self.stage, self.kind, self.ref_id)


def failures_of_run(prepared: Prepared, result: ApplyResult | None) -> list[Seen]:
    """This run's failures: mapping errors, refused writes, skipped dependents, held records."""
    seen: list[Seen] = []
    for e in prepared.plan.errors:
        target = e.get("targetId") or f"scalara:{e.get('resource')}/{e.get('sourceId')}"
        raw = e.get("problem")
        problem: dict[str, Any] = raw if isinstance(raw, dict) else {}
        cause = ((str(problem.get("target")), str(problem.get("targetId")))
                 if problem.get("code") == "depends_on_failed" and problem.get("targetId") else None)
        seen.append(Seen("map", str(e.get("kind") or ""), str(target), e.get("resource"), e.get("sourceId"),
                         "data", str(e.get("reason") or ""), field=e.get("field"), caused_by=cause))
    hashes = {(a.kind, a.ref_id): a.payload_hash for a in prepared.plan.actions}
    for o in result.outcomes if result is not None else []:
        if o.ok:
            continue
        err = o.error or {}
        if o.action == "skipped":
            blocker = err.get("blockedBy")
            seen.append(Seen("write", o.kind, o.ref_id, o.source_resource, o.source_id, "blocked",
                             str(err.get("reason") or ""),
                             blocked_by=(str(blocker[0]), str(blocker[1])) if blocker else None))
            continue
        status = err.get("status") if isinstance(err.get("status"), int) else None
        seen.append(Seen("write", o.kind, o.ref_id, o.source_resource, o.source_id, category_of(status),
                         str(err.get("reason") or ""), status, err.get("field"), hashes.get((o.kind, o.ref_id)),
                         attempted=True))
    for a in prepared.plan.held:
        seen.append(Seen("write", a.kind, a.ref_id, a.source_resource, a.source_id, "", a.reason,
                         payload_hash=a.payload_hash, held=True))
    return seen


@dataclass
class FailureSummary:
    """This run's failures sorted into new, known and acknowledged (entries as the report shows them)."""

    new: list[dict[str, Any]] = field(default_factory=list)
    known: list[dict[str, Any]] = field(default_factory=list)
    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    resolved: int = 0

    @property
    def unacknowledged(self) -> int:
        return len(self.new) + len(self.known)

    @property
    def total(self) -> int:
        return self.unacknowledged + len(self.acknowledged)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": {NEW: len(self.new), KNOWN: len(self.known), ACKNOWLEDGED: len(self.acknowledged),
                           "resolved": self.resolved},
                NEW: self.new, KNOWN: self.known, ACKNOWLEDGED: self.acknowledged}


def entry(row: FailureRow, state: str, *, held: bool = False, blocked_by: tuple[str, str] | None = None) -> dict[str, Any]:
    """A failure as reports, ``status`` and the console show it."""
    doc: dict[str, Any] = {
        "state": state, "stage": row.stage, "kind": row.kind, "id": row.ref_id,
        "source": {"resource": row.source_resource, "id": row.source_id},
        # the flat names of mapErrors rows, so code reading those reads these too (engine.observe)
        "resource": row.source_resource, "sourceId": row.source_id,
        "targetId": None if row.ref_id.startswith("scalara:") else row.ref_id,
        "category": row.category, "status": row.status, "field": row.field, "reason": row.reason,
        "sinceRun": row.first_run, "sinceAt": row.first_seen_at, "lastRun": row.last_run,
        "occurrences": row.occurrences, "attempts": row.attempts, "held": held,
        "nextRetryAt": row.next_retry_at if row.category == "conflict" else None,
        "acknowledged": {"at": row.acknowledged_at, "note": row.ack_note} if row.acknowledged else None,
    }
    if blocked_by is not None:
        doc["blockedBy"] = {"kind": blocked_by[0], "id": blocked_by[1]}
    return doc


def merge(known: Mapping[Key, FailureRow], seen: Iterable[Seen], *, run_id: int, now: dt.datetime,
          complete: bool, keep_map: bool = False) -> tuple[list[FailureRow], list[Key], FailureSummary]:
    """The rows to store, the keys to delete, and the summary. ``complete``: the run considered every
    record (not aborted or stopped), so a known failure it did not see is resolved; ``keep_map``:
    nothing was mapped (the input was unchanged), so mapping failures carry over as they were."""
    stamp = _stamp(now)
    rows: dict[Key, FailureRow] = {}
    fresh: set[Key] = set()
    blocked: dict[Key, tuple[str, str]] = {}
    caused: dict[Key, tuple[str, str]] = {}
    held: set[Key] = set()
    for s in seen:
        old = known.get(s.key)
        if s.held and old is not None:
            rows[s.key] = replace(old, last_run=run_id, last_seen_at=stamp, occurrences=old.occurrences + 1)
            held.add(s.key)
            continue
        # the same failure as before: the same reason; a skipped dependent stays the same while it is
        # skipped (its reason quotes the blocker's, which changes once the blocker is held)
        same = old is not None and (old.reason == s.reason or (s.blocked_by is not None and old.category == "blocked"))
        attempts = (old.attempts if same and old else 0) + (1 if s.attempted else 0)
        category = s.category or (old.category if old else "conflict")
        rows[s.key] = FailureRow(
            stage=s.stage, kind=s.kind, ref_id=s.ref_id, source_resource=s.source_resource,
            source_id=s.source_id, category=category, status=s.status, reason=s.reason, field=s.field,
            payload_hash=s.payload_hash,
            first_run=old.first_run if same and old else run_id,
            first_seen_at=old.first_seen_at if same and old else stamp,
            last_run=run_id, last_seen_at=stamp,
            occurrences=(old.occurrences + 1) if same and old else 1, attempts=attempts,
            next_retry_at=_stamp(now + dt.timedelta(seconds=backoff_s(attempts))) if category == "conflict" else None,
            retry_requested=False,
            acknowledged_at=old.acknowledged_at if same and old else None,
            ack_note=old.ack_note if same and old else None)
        if not same:
            fresh.add(s.key)
        if s.blocked_by is not None:
            blocked[s.key] = s.blocked_by
        if s.caused_by is not None:
            caused[s.key] = s.caused_by
    delete: list[Key] = []
    for key, old in known.items():
        if key in rows:
            continue
        if not complete or (keep_map and old.stage == "map"):
            if keep_map and old.stage == "map":
                rows[key] = replace(old, last_run=run_id, last_seen_at=stamp, occurrences=old.occurrences + 1)
            continue
        delete.append(key)
    summary = FailureSummary(resolved=len(delete))
    by_source = {(r.source_resource, r.source_id): k for k, r in rows.items() if r.stage == "map"}
    for key, cause in caused.items():  # a mapping that failed because another record's mapping did
        other = by_source.get(cause)
        if other is not None and other != key:
            blocked.setdefault(key, (other[1], other[2]))
    for key, row in rows.items():
        state = _state(key, row, rows, fresh, blocked)
        doc = entry(row, state, held=key in held, blocked_by=blocked.get(key))
        {NEW: summary.new, KNOWN: summary.known, ACKNOWLEDGED: summary.acknowledged}[state].append(doc)
    return list(rows.values()), delete, summary


def _state(key: Key, row: FailureRow, rows: Mapping[Key, FailureRow], fresh: set[Key],
           blocked: Mapping[Key, tuple[str, str]], visited: frozenset[Key] = frozenset()) -> str:
    """new / known / acknowledged; a skipped dependent shares the state of the record it waits for."""
    blocker = blocked.get(key)
    if blocker is not None:
        for stage in ("write", "map"):
            other = rows.get((stage, *blocker))
            if other is not None and other.key not in visited | {key}:
                return _state(other.key, other, rows, fresh, blocked, visited | {key})
    if row.acknowledged:
        return ACKNOWLEDGED
    return NEW if key in fresh else KNOWN


def track(store: StateStore, tenant: str, run_id: int, prepared: Prepared, result: ApplyResult | None, *,
          complete: bool, now: dt.datetime | None = None) -> FailureSummary:
    """Sort this run's failures against the known ones and remember them (one transaction)."""
    moment = now or _parse(store.now()) or dt.datetime.now(dt.UTC)
    rows, delete, summary = merge(store.failures(tenant), failures_of_run(prepared, result), run_id=run_id,
                                  now=moment, complete=complete, keep_map=prepared.skipped_mapping)
    store.save_failures(tenant, rows, delete)
    return summary


def final_outcome(outcome: str, prepared: Prepared | None, summary: FailureSummary | None) -> str:
    """A finished run is clean when its only failures are acknowledged (and no guard held archives)."""
    if outcome not in ("clean", "partial") or prepared is None or summary is None:
        return outcome
    return "partial" if prepared.plan.guard_trips or summary.unacknowledged else "clean"
