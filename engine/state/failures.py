"""Known failures: records casavi refused, or that SCALARA's data keeps from being mapped.

One row per failing record (``stage`` "write" or "map", casavi kind, reference id or, when none
could be formed, ``scalara:<resource>/<id>``). It remembers since which run and how often the
record failed, the payload casavi refused (so an unchanged payload is not sent again), when a
conflict may be retried, whether the operator asked for a retry, and the operator's
acknowledgement. The rules live in engine/sync/failures.py; this is storage only.

Plain SQL (``INSERT ... ON CONFLICT``, ``DELETE``) that SQLite and PostgreSQL both speak.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from engine.state.base import StoreBase

Key = tuple[str, str, str]  # (stage, kind, ref_id)


@dataclass(frozen=True)
class FailureRow:
    stage: str                    # "write" | "map"
    kind: str
    ref_id: str
    source_resource: str | None
    source_id: str | None
    category: str                 # "rejected" (400/422) | "conflict" (409, ...) | "blocked" | "data"
    status: int | None            # casavi's HTTP status, for write failures
    reason: str
    field: str | None
    payload_hash: str | None      # the payload casavi refused
    first_run: int | None
    first_seen_at: str
    last_run: int | None
    last_seen_at: str
    occurrences: int              # runs in which it was failing (sent and refused, or held)
    attempts: int                 # times casavi actually refused it
    next_retry_at: str | None     # conflicts: not sent again before this moment
    retry_requested: bool         # the operator asked to send it again at the next run
    acknowledged_at: str | None
    ack_note: str | None

    @property
    def key(self) -> Key:
        return (self.stage, self.kind, self.ref_id)

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None


COLUMNS = tuple(f.name for f in fields(FailureRow))
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM failures WHERE tenant = ?"
SQL_UPSERT = (
    f"INSERT INTO failures (tenant, {', '.join(COLUMNS)}) VALUES ({', '.join('?' * (len(COLUMNS) + 1))}) "
    "ON CONFLICT (tenant, stage, kind, ref_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("stage", "kind", "ref_id"))
)
SQL_DELETE = "DELETE FROM failures WHERE tenant = ? AND stage = ? AND kind = ? AND ref_id = ?"


def _row(values: tuple[Any, ...]) -> FailureRow:
    data = dict(zip(COLUMNS, values, strict=True))
    data["retry_requested"] = bool(data["retry_requested"])
    return FailureRow(**data)


class FailuresMixin(StoreBase):
    def failures(self, tenant: str) -> dict[Key, FailureRow]:
        """The tenant's known failures, keyed (stage, kind, ref_id)."""
        self._require_tenant(tenant)
        with self._read() as db:
            rows = db.execute(_SELECT + " ORDER BY first_run, kind, ref_id", (tenant,)).fetchall()
        return {r.key: r for r in map(_row, rows)}

    def save_failures(self, tenant: str, upsert: Iterable[FailureRow], delete: Iterable[Key] = ()) -> None:
        """Store this run's failures and drop the resolved ones, in one transaction."""
        self._require_tenant(tenant)
        rows = []
        for r in upsert:
            values = {c: getattr(r, c) for c in COLUMNS}
            values["reason"] = self._redact(tenant, r.reason) or ""
            values["retry_requested"] = int(r.retry_requested)
            rows.append((tenant, *values.values()))
        gone = [(tenant, *k) for k in delete]
        with self._write() as db:
            if gone:
                db.executemany(SQL_DELETE, gone)
            if rows:
                db.executemany(SQL_UPSERT, rows)

    def acknowledge_failures(self, tenant: str, keys: Iterable[Key], note: str | None) -> int:
        """Mark failures as acknowledged (``note`` says why); returns how many."""
        self._require_tenant(tenant)
        now = self.now()
        with self._write() as db:
            return sum(db.execute("UPDATE failures SET acknowledged_at = ?, ack_note = ? WHERE tenant = ? AND "
                                  "stage = ? AND kind = ? AND ref_id = ?", (now, note, tenant, *k)).rowcount
                       for k in keys)

    def unacknowledge_failures(self, tenant: str, keys: Iterable[Key]) -> int:
        self._require_tenant(tenant)
        with self._write() as db:
            return sum(db.execute("UPDATE failures SET acknowledged_at = NULL, ack_note = NULL WHERE tenant = ? "
                                  "AND stage = ? AND kind = ? AND ref_id = ?", (tenant, *k)).rowcount for k in keys)

    def request_retry(self, tenant: str, keys: Iterable[Key]) -> int:
        """Send these records again at the next run, whatever the failure rules say."""
        self._require_tenant(tenant)
        with self._write() as db:
            return sum(db.execute("UPDATE failures SET retry_requested = 1 WHERE tenant = ? AND stage = ? AND "
                                  "kind = ? AND ref_id = ?", (tenant, *k)).rowcount for k in keys)
