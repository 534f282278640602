"""Per-record sync state: what was last written to casavi for each (tenant, kind, ref_id).

The life of a record::

    (none) --mark_pending--> pending --mark_written--> written --mark_archived--> archived
                                \\--mark_failed--> failed         ^--mark_restored--/

``pending`` is a write-ahead intent: it is committed *before* the write goes to casavi, so a crash
between the casavi write and the state update still leaves a trace that the record may exist
there. Neither ``pending`` nor ``failed`` touches ``payload_hash``/``payload``: they keep the last
content known to be in casavi (so the next run sees a difference and retries), and
``previous_status`` keeps the last settled status ("written", "archived", or None for a record
never confirmed). The planner must treat ``pending`` and ``failed`` as "unsure, write again".
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Iterator
from typing import Any

from engine.state.base import StoreBase
from engine.state.models import RecordState, canonical_json, record_state_from_row

# Columns of the existing row are qualified (``records.x``): PostgreSQL finds a bare name ambiguous
# next to ``excluded``; SQLite accepts both.
_UNSETTLED = ("CASE WHEN records.status IN ('pending', 'failed') THEN records.previous_status "
              "ELSE records.status END")
_KEEP_SOURCE = ("source_resource = COALESCE(excluded.source_resource, records.source_resource), "
                "source_id = COALESCE(excluded.source_id, records.source_id)")

SQL_PENDING = (
    "INSERT INTO records (tenant, kind, ref_id, status, source_resource, source_id, updated_run, updated_at) "
    "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT (tenant, kind, ref_id) DO UPDATE SET "
    f"previous_status = {_UNSETTLED}, status = 'pending', {_KEEP_SOURCE}, "
    "updated_run = COALESCE(excluded.updated_run, records.updated_run), updated_at = excluded.updated_at"
)
SQL_WRITTEN = (
    "INSERT INTO records (tenant, kind, ref_id, payload_hash, payload, status, source_resource, source_id, "
    "updated_run, updated_at) VALUES (?, ?, ?, ?, ?, 'written', ?, ?, ?, ?) "
    "ON CONFLICT (tenant, kind, ref_id) DO UPDATE SET payload_hash = excluded.payload_hash, "
    f"payload = excluded.payload, status = 'written', previous_status = NULL, {_KEEP_SOURCE}, "
    "error = NULL, updated_run = excluded.updated_run, updated_at = excluded.updated_at"
)
SQL_FAILED = (
    "INSERT INTO records (tenant, kind, ref_id, status, source_resource, source_id, error, updated_run, "
    "updated_at) VALUES (?, ?, ?, 'failed', ?, ?, ?, ?, ?) ON CONFLICT (tenant, kind, ref_id) DO UPDATE SET "
    f"previous_status = {_UNSETTLED}, status = 'failed', {_KEEP_SOURCE}, error = excluded.error, "
    "updated_run = excluded.updated_run, updated_at = excluded.updated_at"
)
SQL_SETTLED = (
    "INSERT INTO records (tenant, kind, ref_id, status, updated_run, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant, kind, ref_id) DO UPDATE SET status = excluded.status, previous_status = NULL, "
    "error = NULL, updated_run = excluded.updated_run, updated_at = excluded.updated_at"
)
SQL_FORGET = "DELETE FROM records WHERE tenant = ? AND kind = ? AND ref_id = ?"

_SELECT = ("SELECT kind, ref_id, payload_hash, payload, status, source_resource, source_id, error, "
           "updated_run, updated_at, previous_status FROM records WHERE tenant = ?")


def _state(row: tuple[Any, ...]) -> RecordState:
    return record_state_from_row(row)


class RecordsMixin(StoreBase):
    def records(self, tenant: str, kind: str | None = None) -> dict[tuple[str, str], RecordState]:
        """Everything known about the tenant's records (one kind, or all), keyed (kind, ref_id)."""
        self._require_tenant(tenant)
        # The cyclic GC would scan the young tuples over and over while 200,000 are built (a third
        # of the time); they form no cycles, so it is paused for the load.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            with self._read() as db:
                if kind is None:
                    rows = db.execute(_SELECT, (tenant,)).fetchall()
                else:
                    rows = db.execute(_SELECT + " AND kind = ?", (tenant, kind)).fetchall()
            new, cls = tuple.__new__, RecordState  # the fast path of record_state_from_row, inlined
            return {(r[0], r[1]): new(cls, r) for r in rows}
        finally:
            if was_enabled:
                gc.enable()

    def active_payloads(self, tenant: str, page: int = 2000) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(kind, ref_id, last payload written) of every record not archived, a page at a time
        (a whole tenant's payloads are never held at once)."""
        self._require_tenant(tenant)
        after = ("", "")
        while True:
            with self._read() as db:
                rows = db.execute("SELECT kind, ref_id, payload FROM records WHERE tenant = ? AND status <> 'archived' "
                                  "AND payload IS NOT NULL AND (kind > ? OR (kind = ? AND ref_id > ?)) "
                                  "ORDER BY kind, ref_id LIMIT ?", (tenant, after[0], after[0], after[1], page)).fetchall()
            for kind, ref_id, payload in rows:
                yield kind, ref_id, json.loads(payload)
            if len(rows) < page:
                return
            after = (rows[-1][0], rows[-1][1])

    def get_record(self, tenant: str, kind: str, ref_id: str) -> RecordState | None:
        self._require_tenant(tenant)
        with self._read() as db:
            row = db.execute(_SELECT + " AND kind = ? AND ref_id = ?", (tenant, kind, ref_id)).fetchone()
        return _state(row) if row else None

    def record_counts(self, tenant: str) -> dict[str, dict[str, int]]:
        """kind -> status -> count, for ``status`` displays."""
        self._require_tenant(tenant)
        counts: dict[str, dict[str, int]] = {}
        with self._read() as db:
            for kind, status, n in db.execute(
                    "SELECT kind, status, count(*) FROM records WHERE tenant = ? GROUP BY kind, status", (tenant,)):
                counts.setdefault(kind, {})[status] = n
        return counts

    def mark_pending(self, tenant: str, items: Iterable[tuple[str, str, str | None, str | None]],
                     run_id: int | None = None) -> int:
        """Announce writes about to be sent; committed when this returns, even inside ``batch()``.

        ``items`` are (kind, ref_id, source_resource, source_id). Announce a chunk at a time, not
        one record at a time: each call is one durable commit. Returns the number of rows marked.
        """
        self._require_tenant(tenant)
        now = self.now()
        rows = [(tenant, kind, ref_id, src or None, sid or None, run_id, now) for kind, ref_id, src, sid in items]
        if rows:
            with self._write() as db:
                db.executemany(SQL_PENDING, rows)
        return len(rows)

    def mark_written(self, tenant: str, run_id: int | None, kind: str, ref_id: str, payload: dict[str, Any],
                     payload_hash: str, source_resource: str | None, source_id: str | None) -> None:
        """casavi accepted ``payload`` (whose hash is ``payload_hash``) for this record."""
        self._require_tenant(tenant)
        self._enqueue(SQL_WRITTEN, (tenant, kind, ref_id, payload_hash, canonical_json(payload),
                                    source_resource or None, source_id or None, run_id, self.now()))

    def mark_failed(self, tenant: str, run_id: int | None, kind: str, ref_id: str, error: str,
                    source_resource: str | None = None, source_id: str | None = None) -> None:
        """The write failed: keep the last known hash and payload, so the next run retries."""
        self._require_tenant(tenant)
        self._enqueue(SQL_FAILED, (tenant, kind, ref_id, source_resource or None, source_id or None,
                                   self._redact(tenant, error), run_id, self.now()))

    def mark_archived(self, tenant: str, run_id: int | None, kind: str, ref_id: str) -> None:
        """casavi archived the record; hash and payload stay for a later restore."""
        self._require_tenant(tenant)
        self._enqueue(SQL_SETTLED, (tenant, kind, ref_id, "archived", run_id, self.now()))

    def mark_restored(self, tenant: str, run_id: int | None, kind: str, ref_id: str) -> None:
        """casavi restored the record: back to ``written`` with the payload it had."""
        self._require_tenant(tenant)
        self._enqueue(SQL_SETTLED, (tenant, kind, ref_id, "written", run_id, self.now()))

    def forget(self, tenant: str, kind: str, ref_id: str) -> None:
        """Drop the record's state (it was deleted in casavi, or an operator asked to re-create it)."""
        self._require_tenant(tenant)
        self._enqueue(SQL_FORGET, (tenant, kind, ref_id))
