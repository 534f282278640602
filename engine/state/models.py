"""The value objects the state store hands out, and the canonical payload hash.

They are plain, immutable values: the sync reads them and never writes back through them. None
of them carries a secret; the repr of each one is safe to print or log. Secrets leave the store
only through ``StateStore.tenant_credentials`` and ``StateStore.connection_token``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

DEFAULT_TENANT = "default"

RECORD_STATUSES = ("pending", "written", "failed", "archived")
RUN_TRIGGERS = ("initial", "manual", "schedule", "reconcile")
# "stopped": the operator stopped the run (Ctrl-C, serve shutdown) between writes.
RUN_OUTCOMES = ("clean", "partial", "aborted", "stopped")
# Shown for runs whose process ended without finish_run (crash, SIGKILL, power loss).
INTERRUPTED = "interrupted"
RUNNING = "running"
# Documentation, not a gate: the store keeps whatever action the sync reports.
OUTCOME_ACTIONS = ("create", "update", "unchanged", "archive", "restore", "error", "skipped")


def canonical_json(payload: Any) -> str:
    """The one serialisation used for hashing and storing payloads: sorted keys, no spaces."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(payload: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON: equal content gives an equal hash, whatever the key order."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def fingerprint(secret: str | None) -> str | None:
    """Enough of a secret to tell two apart ("…wxyz"), never enough to use it."""
    if not secret:
        return None
    if len(secret) < 12:  # showing 4 characters of a short value would give most of it away
        return "…"
    return "…" + secret[-4:]


@dataclass(frozen=True)
class Tenant:
    """One casavi customer account served by this deployment."""

    name: str
    activated: bool
    activated_at: str | None
    created_at: str
    casavi_key_fingerprint: str | None


class CasaviCredentials(NamedTuple):
    """A tenant's casavi API key pair; unpacks like ``key, secret = ...`` but never prints them."""

    key: str
    secret: str

    def __repr__(self) -> str:
        return f"CasaviCredentials(key={fingerprint(self.key)!r}, secret='***')"

    def __str__(self) -> str:
        return self.__repr__()


@dataclass(frozen=True)
class Connection:
    """A tenant's SCALARA link (the token itself is only available via ``connection_token``)."""

    tenant: str
    connected_since: str
    token_fingerprint: str
    account_id: str | None
    initial_import_at: str | None
    initial_import_run: int | None = None
    token_updated_at: str | None = None


@dataclass(frozen=True)
class ConnectionSaveResult:
    """``first_save`` is True only the very first time a tenant is connected (drives the initial import)."""

    first_save: bool


class RecordState(tuple[Any, ...]):
    """What the store knows about one casavi record, keyed (kind, ref_id) within a tenant.

    A tuple underneath, in the column order of the ``records`` table: loading 200,000 of them must
    stay well under two seconds, and building a tuple costs half as much as running an
    ``__init__``. ``payload`` is decoded from the stored canonical JSON on each access (the planner
    compares hashes first and needs few payloads); keep the result if you need it twice.
    ``previous_status`` is set while a record is ``pending`` or ``failed`` and tells its last
    settled status ("written", "archived", or None for a record casavi never confirmed).
    """

    __slots__ = ()

    def __new__(
        cls,
        kind: str,
        ref_id: str,
        payload_hash: str | None,
        payload: dict[str, Any] | None,
        status: str,
        source_resource: str | None = None,
        source_id: str | None = None,
        error: str | None = None,
        updated_run: int | None = None,
        updated_at: str = "",
        previous_status: str | None = None,
    ) -> RecordState:
        payload_json = None if payload is None else canonical_json(payload)
        return tuple.__new__(cls, (kind, ref_id, payload_hash, payload_json, status, source_resource, source_id,
                                   error, updated_run, updated_at, previous_status))

    kind: str = property(itemgetter(0))  # type: ignore[assignment]
    ref_id: str = property(itemgetter(1))  # type: ignore[assignment]
    payload_hash: str | None = property(itemgetter(2))  # type: ignore[assignment]
    payload_json: str | None = property(itemgetter(3))  # type: ignore[assignment]
    status: str = property(itemgetter(4))  # type: ignore[assignment]
    source_resource: str | None = property(itemgetter(5))  # type: ignore[assignment]
    source_id: str | None = property(itemgetter(6))  # type: ignore[assignment]
    error: str | None = property(itemgetter(7))  # type: ignore[assignment]
    updated_run: int | None = property(itemgetter(8))  # type: ignore[assignment]
    updated_at: str = property(itemgetter(9))  # type: ignore[assignment]
    previous_status: str | None = property(itemgetter(10))  # type: ignore[assignment]

    @property
    def payload(self) -> dict[str, Any] | None:
        text = self[3]
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    @property
    def pending(self) -> bool:
        """A write was announced but never confirmed: the record may or may not exist in casavi."""
        return bool(self[4] == "pending")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_state, (tuple(self),))

    def __repr__(self) -> str:
        short = self.payload_hash[:12] if self.payload_hash else None
        return (f"RecordState({self.kind!r}, {self.ref_id!r}, status={self.status!r}, hash={short!r}, "
                f"source={self.source_resource}/{self.source_id}, run={self.updated_run})")


def record_state_from_row(row: tuple[Any, ...]) -> RecordState:
    """The fast path: ``row`` is already in ``RecordState`` order (kind ... previous_status)."""
    return tuple.__new__(RecordState, row)


_record_state = record_state_from_row


@dataclass(frozen=True)
class Outcome:
    """One record's result in one run; unchanged ones are only counted, not stored."""

    kind: str
    ref_id: str
    source_resource: str | None
    source_id: str | None
    action: str
    status: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class RunInfo:
    """One sync run as the history shows it.

    ``outcome`` is "running" while the run's process lives, and "interrupted" when it ended without
    finishing (found dead on this host, or its stale lock was taken over).
    """

    id: int
    tenant: str
    trigger: str
    started_at: str
    finished_at: str | None
    outcome: str
    counts: dict[str, Any]
    report_path: str | None
    error: str | None
    pid: int | None = None
    hostname: str | None = None
    outcome_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock: shown in "already being synced" errors and by ``status``."""

    name: str
    tenant: str | None
    pid: int
    hostname: str
    started_at: str
    purpose: str
