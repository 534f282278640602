"""Plan: compare what the mappings produce with what casavi last got, and decide per record.

Inputs are plain data (mapped outputs, the state store's record states, optionally casavi's current
records when reconciling); the output is a ``Plan``: one ``Action`` per casavi record that needs a
call, plus counts of unchanged records, the mapping errors and any mass-archive guard trips. Planning
never performs I/O, so ``casavi-sync plan`` is a pure dry run.

Decisions per desired record (kind, reference id)::

    no state row, not in casavi           -> create
    state archived (or casavi archived)   -> restore (+ update if the payload differs)
    state failed/pending                  -> update (retry; PUT by reference id is idempotent)
    payload hash differs from last write  -> update
    reconciling and casavi's copy differs -> update (manual edit in casavi, earlier import)
    otherwise                             -> unchanged

A state row whose record is no longer produced is archived (responsibilities: deleted), unless
its SCALARA record failed to map this time (then it is left alone) or it is held: by the guard, or
because it is tied to a held record (``engine.sync.archives``: no active record may refer to an
archived one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.sync.archives import KindHold, plan_archives, references
from engine.text import DETAIL_LIMIT, clip

CREATE, UPDATE, RESTORE, ARCHIVE, UNCHANGED, ERROR, SKIPPED = (
    "create", "update", "restore", "archive", "unchanged", "error", "skipped",
)
WRITE_ACTIONS = (CREATE, UPDATE, RESTORE)


def payload_hash(payload: Mapping[str, Any]) -> str:
    """sha256 of canonical JSON: the same payload always hashes the same, whatever key order."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Desired:
    """One record the mappings want in casavi (a thin view of the interpreter's Output)."""

    kind: str
    ref_id: str
    payload: dict[str, Any]
    source_resource: str
    source_id: str
    depends_on: tuple[tuple[str, str], ...] = ()


class Known(Protocol):
    """What the state store remembers of one casavi record (engine.state.RecordState has it).

    ``payload`` may be decoded lazily: the planner reads it only for records it acts on.
    ``previous_status`` is the last settled status while a record is pending or failed.
    """

    @property
    def status(self) -> str: ...  # pending | written | failed | archived
    @property
    def payload_hash(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any] | None: ...
    @property
    def source_resource(self) -> str | None: ...
    @property
    def source_id(self) -> str | None: ...
    @property
    def previous_status(self) -> str | None: ...


@dataclass
class Action:
    kind: str
    ref_id: str
    action: str
    payload: dict[str, Any] | None
    payload_hash: str | None
    source_resource: str | None
    source_id: str | None
    depends_on: tuple[tuple[str, str], ...] = ()
    before: dict[str, Any] | None = None
    update_after_restore: bool = False
    reason: str = ""

    def diff(self) -> list[dict[str, Any]]:
        """Field-level changes from ``before`` to ``payload`` (dotted paths)."""
        return field_diff(self.before or {}, self.payload or {})


@dataclass
class GuardTrip:
    kind: str
    would_archive: int
    existing: int
    reason: str
    overridable: bool = True          # False: --allow-archive does not lift it (an incomplete read)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "wouldArchive": self.would_archive, "existing": self.existing,
                "reason": self.reason, "overridable": self.overridable}

    def advice(self) -> str:
        return ("use --allow-archive to archive anyway" if self.overridable
                else "fix the data in SCALARA; --allow-archive does not lift this")


@dataclass
class Plan:
    kinds: tuple[str, ...]
    actions: list[Action] = field(default_factory=list)
    unchanged: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    guard_trips: list[GuardTrip] = field(default_factory=list)
    held_archives: list[Action] = field(default_factory=list)
    adopt: list[Action] = field(default_factory=list)  # equal in casavi, unknown to the state
    held: list[Action] = field(default_factory=list)  # known failures not sent again (engine.sync.failures)

    def counts(self) -> dict[str, dict[str, int]]:
        table = {k: {CREATE: 0, UPDATE: 0, RESTORE: 0, ARCHIVE: 0, UNCHANGED: 0, ERROR: 0}
                 for k in self.kinds}
        def row(kind: str) -> dict[str, int]:
            return table.setdefault(kind, {CREATE: 0, UPDATE: 0, RESTORE: 0, ARCHIVE: 0, UNCHANGED: 0, ERROR: 0})

        for a in self.actions:
            row(a.kind)[a.action] += 1
        for kind, n in self.unchanged.items():
            row(kind)[UNCHANGED] += n
        for e in self.errors:
            row(e.get("kind") or "?")[ERROR] += 1
        return table

    @property
    def pending_changes(self) -> bool:
        return bool(self.actions or self.held_archives)


def field_diff(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """Changed fields as ``{"field", "from", "to"}``; a field missing on one side (not the same as
    null: casavi stores the difference) also carries ``"fromAbsent": true`` or ``"toAbsent": true``."""
    changes: list[dict[str, Any]] = []
    for key in sorted(set(before) | set(after)):
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes.extend(field_diff(old, new, path + "."))
        elif old != new or (key in before) != (key in after):
            change: dict[str, Any] = {"field": path, "from": old, "to": new}
            if key not in before:
                change["fromAbsent"] = True
            if key not in after:
                change["toAbsent"] = True
            changes.append(change)
    return changes


def change_text(change: Mapping[str, Any]) -> str:
    """``field: "old" -> "new"``, with ``(absent)`` for a field missing on one side."""
    def side(value: Any, absent: bool) -> str:
        # whole (explain and plan --details show what changes), but a 10 MB field is not printed
        return "(absent)" if absent else clip(json.dumps(value, ensure_ascii=False, default=str), DETAIL_LIMIT)

    return (f"{change['field']}: {side(change['from'], bool(change.get('fromAbsent')))} -> "
            f"{side(change['to'], bool(change.get('toAbsent')))}")


def update_lines(action: Action) -> list[str]:
    """One line per changed field of an update, or one line saying why it is rewritten anyway."""
    changes = action.diff()
    if changes:
        return [change_text(c) for c in changes]
    if action.before is None:
        return [f"(the last payload written is not stored; rewritten because: {action.reason})"]
    return [f"(no field differs from the last payload written; rewritten because: {action.reason})"]


def project_like(current: Any, desired: Any) -> Any:
    """casavi's read of a record restricted to the shape of our payload (reads carry extra fields)."""
    if isinstance(desired, dict) and isinstance(current, dict):
        return {k: project_like(current.get(k), v) for k, v in desired.items()}
    if isinstance(desired, list) and isinstance(current, list):
        if desired and all(isinstance(d, dict) for d in desired):
            template = desired[0]
            return [project_like(c, template) for c in current]
        return current
    return current


def build_plan(
    desired: Iterable[Desired],
    known: Mapping[tuple[str, str], Known],
    *,
    kinds: Sequence[str],
    map_errors: Iterable[dict[str, Any]] = (),
    errored_sources: Iterable[tuple[str, str]] = (),
    current: Mapping[tuple[str, str], dict[str, Any]] | None = None,
    empty_kinds: Iterable[str] = (),
    kind_holds: Mapping[str, KindHold] | None = None,
    archive_max_share: float = 0.10,
    archive_floor: int = 0,
    allow_archive: bool = False,
    record_holds: Mapping[tuple[str, str], Any] | None = None,
    existing: Mapping[str, int] | None = None,
) -> Plan:
    """Decide every record's action. ``current`` is casavi's state when reconciling (else None).

    ``empty_kinds``: kinds made from a SCALARA resource that returned no records; ``kind_holds``:
    other kinds whose archives are held as a whole, with the reason (an incomplete read).
    ``record_holds`` (engine.sync.failures.holds) names records casavi refused before: one whose payload
    still hashes to the refused one is put in ``plan.held`` with the hold's reason, not sent.
    ``existing``: records per kind not archived, when ``known`` holds only some (a targeted day,
    engine.sync.targeted): what the mass-archive guard compares with.
    """
    plan = Plan(kinds=tuple(kinds))
    plan.errors = list(map_errors)
    unchanged: dict[str, int] = dict.fromkeys(kinds, 0)
    seen: set[tuple[str, str]] = set()
    referenced: dict[tuple[str, str], tuple[str, str]] = {}

    for d in desired:
        key = (d.kind, d.ref_id)
        seen.add(key)
        for target in references(d.kind, d.payload):
            referenced.setdefault(target, key)
        try:
            h = payload_hash(d.payload)
        except (ValueError, TypeError, RecursionError) as exc:   # NaN/Infinity, a non-JSON value
            plan.errors.append({"stage": "plan", "kind": d.kind, "mapping": None, "resource": d.source_resource,
                                "sourceId": d.source_id, "targetId": d.ref_id, "field": None,
                                "reason": f"the payload holds a value JSON cannot carry "
                                          f"({clip(str(exc), 120)}); it is not sent"})
            continue
        state = known.get(key)
        live = current.get(key) if current is not None else None
        decided = _decide(d, h, state, live, reconciling=current is not None)
        if decided is None:
            unchanged[d.kind] = unchanged.get(d.kind, 0) + 1
        elif decided.action == UNCHANGED:  # equal in casavi already: no call, the state learns it
            plan.adopt.append(decided)
            unchanged[d.kind] = unchanged.get(d.kind, 0) + 1
        elif (record_holds and key in record_holds and record_holds[key].payload_hash == h
              and not (current is not None and decided.action == RESTORE)):
            # a reconcile run that finds the record archived in casavi restores it: not the call
            # casavi refused, so the refusal's backoff does not hold it
            decided.reason = record_holds[key].reason
            plan.held.append(decided)
        else:
            plan.actions.append(decided)
    _release_holds(plan)

    holds = {kind: KindHold("SCALARA returned no records for this kind; nothing is archived")
             for kind in empty_kinds}
    holds.update(kind_holds or {})
    plan_archives(plan, known, seen, set(errored_sources), current, referenced=referenced, kind_holds=holds,
                  max_share=archive_max_share, floor=archive_floor, allow_archive=allow_archive, existing=existing)
    plan.unchanged = unchanged
    return plan


def _release_holds(plan: Plan) -> None:
    """A held record is sent after all when something it references is written in this run: casavi
    may have refused it because of that record's state (a unit's address that its property did not
    have yet), so the refusal says nothing about the next try. Transitively: a contract waits for its
    released unit. The write order sends the referenced record first."""
    writing = {(a.kind, a.ref_id) for a in plan.actions}
    changed = True
    while changed and plan.held:
        changed = False
        still: list[Action] = []
        for a in plan.held:
            if any(dep in writing for dep in a.depends_on):
                a.reason = f"sent again: a record it references is written in this run (before: {a.reason})"
                plan.actions.append(a)
                writing.add((a.kind, a.ref_id))
                changed = True
            else:
                still.append(a)
        plan.held = still


def _decide(d: Desired, h: str, state: Known | None, live: dict[str, Any] | None, *,
            reconciling: bool) -> Action | None:
    """The action for one desired record; None when it is unchanged and known to be so."""

    def act(action: str, reason: str, before: dict[str, Any] | None = None, and_update: bool = False) -> Action:
        return Action(d.kind, d.ref_id, action, d.payload, h, d.source_resource, d.source_id, d.depends_on,
                      before, and_update, reason)

    if reconciling:
        if live is None:
            return act(CREATE, "not in casavi")
        seen_as = project_like(live, d.payload)
        differs = seen_as != d.payload
        if live.get("archived"):
            return act(RESTORE, "archived in casavi", seen_as, differs)
        if differs:
            return act(UPDATE, "casavi's copy differs", seen_as)
        if state is None or state.payload_hash != h or state.status != "written":
            return act(UNCHANGED, "already equal in casavi")
        return None
    if state is None:
        return act(CREATE, "new")
    if state.status == "archived" or (state.status in ("failed", "pending") and state.previous_status == "archived"):
        return act(RESTORE, "back in SCALARA", state.payload, state.payload_hash != h)
    if state.status in ("failed", "pending"):
        return act(UPDATE if state.payload_hash else CREATE, f"retry ({state.status} before)", state.payload)
    if state.payload_hash != h:
        return act(UPDATE, "changed", state.payload)
    return None
