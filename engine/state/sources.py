"""The source snapshot: the SCALARA records the last committed run mapped, and the read cursor.

Why: an incremental run asks SCALARA only for what changed since the cursor, merges that into
this snapshot and maps the merged records -- the same input a full read would have given, so the
result is the same too. The records are stored right after the read (``stage_sources``: the run
need not hold them until its writes are done) and mark the snapshot unsettled; the cursor moves
only after the run's writes were applied (``commit_cursor``). A crash in between leaves the
cursor where it was: the next run reads the same changes again and, the snapshot being
unsettled, maps everything rather than trusting "nothing changed" -- never past records not yet
applied.

Plain SQL (``INSERT ... ON CONFLICT``, ``DELETE``) that SQLite and PostgreSQL both speak.
"""

from __future__ import annotations

import gc
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.state.base import StoreBase

Record = dict[str, Any]

SQL_UPSERT = (
    "INSERT INTO source_records (tenant, resource, id, stamp, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant, resource, id) DO UPDATE SET stamp = excluded.stamp, body = excluded.body"
)
SQL_DELETE = "DELETE FROM source_records WHERE tenant = ? AND resource = ? AND id = ?"
SQL_CURSOR = (
    "INSERT INTO source_cursors (tenant, cursor, full_read_at, mapping_hash, resources, mapped_date, settled, "
    "updated_at, stable_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant) DO UPDATE SET "
    "cursor = excluded.cursor, full_read_at = excluded.full_read_at, mapping_hash = excluded.mapping_hash, "
    "resources = excluded.resources, mapped_date = excluded.mapped_date, settled = excluded.settled, "
    "updated_at = excluded.updated_at, stable_until = excluded.stable_until"
)


@dataclass(frozen=True)
class SourceCursor:
    """Where the next incremental read starts, and what decides whether a full read is due."""

    cursor: str | None          # newest updatedAt/deletedAt seen (SCALARA's clock), None: unknown
    full_read_at: str           # when the last full read was committed (our clock)
    mapping_hash: str           # fingerprint of the mapping set that mapped the snapshot
    resources: tuple[str, ...]  # resources the snapshot holds
    mapped_date: str | None     # run date (YYYY-MM-DD) of the last committed run
    settled: bool               # that run was clean: an unchanged day needs no mapping at all
    stable_until: str | None = None  # first date on which a date function could map differently


@dataclass
class SourceCommit:
    """What a run read, to be stored once its writes are applied (``commit_sources``)."""

    resources: tuple[str, ...]
    cursor: str | None
    mapping_hash: str
    full: bool                                                       # full read: replace the snapshot
    replace: dict[str, list[Record]] = field(default_factory=dict)   # resource -> all its records
    upserts: dict[str, list[Record]] = field(default_factory=dict)   # resource -> changed records
    deletes: dict[str, list[str]] = field(default_factory=dict)      # resource -> deleted ids


def _stamp(record: Mapping[str, Any]) -> str | None:
    value = record.get("updatedAt")
    return value if isinstance(value, str) else None


def _dump(record: Record) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class SourcesMixin(StoreBase):
    def source_cursor(self, tenant: str) -> SourceCursor | None:
        self._require_tenant(tenant)
        with self._read() as db:
            row = db.execute("SELECT cursor, full_read_at, mapping_hash, resources, mapped_date, settled, stable_until "
                             "FROM source_cursors WHERE tenant = ?", (tenant,)).fetchone()
        if row is None:
            return None
        return SourceCursor(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], bool(row[5]), row[6])

    def source_records(self, tenant: str, resource: str) -> dict[str, Record]:
        """The snapshot of one resource: id -> record as SCALARA sent it, in id order."""
        self._require_tenant(tenant)
        collecting = gc.isenabled()
        gc.disable()  # acyclic dicts: the cyclic collector would rescan them again and again
        out: dict[str, Record] = {}
        try:
            with self._read() as db:
                cur = iter(db.execute("SELECT id, body FROM source_records WHERE tenant = ? AND resource = ? "
                                      "ORDER BY id", (tenant, resource)))
                while True:
                    rows = list(itertools.islice(cur, 500))
                    if not rows:
                        break
                    # one JSON array per chunk, as SCALARA's pages are: the decoder then shares the
                    # key strings among the chunk's records (row by row, every record had its own)
                    decoded = json.loads("[" + ",".join(row[1] for row in rows) + "]")
                    out.update(zip((row[0] for row in rows), decoded, strict=True))
            return out
        finally:
            if collecting:
                gc.enable()

    def source_records_by_id(self, tenant: str, resource: str, ids: Iterable[str]) -> dict[str, Record]:
        """Some records of the snapshot (those an incremental read returned), id -> record."""
        self._require_tenant(tenant)
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Record] = {}
        with self._read() as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                for rid, body in db.execute(
                        f"SELECT id, body FROM source_records WHERE tenant = ? AND resource = ? AND id IN ({marks})",
                        (tenant, resource, *chunk)):
                    found[rid] = json.loads(body)
        return found

    def source_page(self, tenant: str, resource: str, after: str | None, limit: int) -> list[tuple[str, Record]]:
        """Up to ``limit`` records of one resource with ids after ``after``, in id order (a chunk of
        a whole-tenant run, engine.sync.chunked)."""
        self._require_tenant(tenant)
        with self._read() as db:
            rows = db.execute("SELECT id, body FROM source_records WHERE tenant = ? AND resource = ? AND id > ? "
                              "ORDER BY id LIMIT ?", (tenant, resource, after or "", limit)).fetchall()
        if not rows:
            return []
        decoded = json.loads("[" + ",".join(row[1] for row in rows) + "]")
        return list(zip((row[0] for row in rows), decoded, strict=True))

    def stage_full_begin(self, tenant: str) -> None:
        """A full read is about to be stored page by page (``stage_page``): the snapshot is emptied
        and marked unsettled, the dependency rows not ready (as ``stage_sources`` does)."""
        self._require_tenant(tenant)
        with self._write() as db:
            db.execute("DELETE FROM source_records WHERE tenant = ?", (tenant,))
            db.execute("UPDATE source_cursors SET settled = 0 WHERE tenant = ?", (tenant,))
            db.execute("UPDATE source_deps_meta SET ready = 0 WHERE tenant = ?", (tenant,))

    def stage_page(self, tenant: str, resource: str, records: Iterable[Record]) -> None:
        """One page of a full read into the snapshot (records with a usable id only)."""
        self._require_tenant(tenant)
        with self._write() as db:
            db.executemany(SQL_UPSERT, ((tenant, resource, str(r["id"]), _stamp(r), _dump(r)) for r in records))

    def orphan_records(self, tenant: str, resources: Iterable[str]) -> list[tuple[str, str]]:
        """(kind, ref_id) of the records not archived that no SCALARA record of ``resources`` in the
        snapshot makes any more: their source is gone, or not a source of the mapping set now."""
        self._require_tenant(tenant)
        wanted = sorted(set(resources))
        marks = ", ".join("?" * len(wanted)) or "NULL"
        with self._read() as db:
            return [(r[0], r[1]) for r in db.execute(
                "SELECT r.kind, r.ref_id FROM records r WHERE r.tenant = ? AND r.status <> 'archived' AND ("
                f"r.source_resource IS NULL OR r.source_id IS NULL OR r.source_resource NOT IN ({marks}) OR NOT EXISTS ("
                "SELECT 1 FROM source_records s WHERE s.tenant = r.tenant AND s.resource = r.source_resource "
                "AND s.id = r.source_id)) ORDER BY r.kind, r.ref_id", (tenant, *wanted))]

    def record_status_counts(self, tenant: str) -> dict[tuple[str, str], int]:
        """(kind, status) -> number of records: what an unchanged run needs to know of the state,
        without loading every record."""
        self._require_tenant(tenant)
        with self._read() as db:
            return {(kind, status): n for kind, status, n in db.execute(
                "SELECT kind, status, COUNT(*) FROM records WHERE tenant = ? GROUP BY kind, status", (tenant,))}

    def existing_counts(self, tenant: str) -> dict[str, int]:
        """Records per kind that casavi holds or may hold (not archived, not a record casavi never
        accepted): what the mass-archive guard compares with (engine.sync.archives)."""
        self._require_tenant(tenant)
        with self._read() as db:
            return {kind: n for kind, n in db.execute(
                "SELECT kind, COUNT(*) FROM records WHERE tenant = ? AND status <> 'archived' AND NOT "
                "(status = 'failed' AND previous_status IS NULL AND payload_hash IS NULL) GROUP BY kind", (tenant,))}

    def source_counts(self, tenant: str) -> dict[str, int]:
        self._require_tenant(tenant)
        with self._read() as db:
            return {res: n for res, n in db.execute(
                "SELECT resource, COUNT(*) FROM source_records WHERE tenant = ? GROUP BY resource ORDER BY resource",
                (tenant,))}

    def stage_sources(self, tenant: str, commit: SourceCommit) -> None:
        """Store what a run read, before it maps and writes, and mark the snapshot unsettled.

        Called right after the read, so the records need not stay in memory until the writes are
        done. The cursor does not move: a crash from here on leaves it where it was, and the next
        run (seeing the snapshot unsettled) maps everything again instead of trusting "no change".
        """
        self._require_tenant(tenant)
        with self._write() as db:
            if commit.full:
                db.execute("DELETE FROM source_records WHERE tenant = ?", (tenant,))
            for resource, records in commit.replace.items():
                if not commit.full:
                    db.execute("DELETE FROM source_records WHERE tenant = ? AND resource = ?", (tenant, resource))
                db.executemany(SQL_UPSERT, ((tenant, resource, str(r["id"]), _stamp(r), _dump(r)) for r in records))
            for resource, records in commit.upserts.items():
                db.executemany(SQL_UPSERT, ((tenant, resource, str(r["id"]), _stamp(r), _dump(r)) for r in records))
            for resource, ids in commit.deletes.items():
                db.executemany(SQL_DELETE, ((tenant, resource, rid) for rid in ids))
            db.execute("UPDATE source_cursors SET settled = 0 WHERE tenant = ?", (tenant,))
            # the dependency rows describe the snapshot before this read until the run's mapping
            # rewrites them and its writes are applied (engine.state.deps)
            db.execute("UPDATE source_deps_meta SET ready = 0 WHERE tenant = ?", (tenant,))

    def commit_cursor(self, tenant: str, commit: SourceCommit, *, mapped_date: str | None, settled: bool,
                      stable_until: str | None = None) -> None:
        """After the run's writes: move the cursor (and the rest of its row) past what was read.

        ``stable_until`` None keeps the stored one (a run that mapped nothing learnt nothing new).
        """
        self._require_tenant(tenant)
        now = self.now()
        with self._write() as db:
            previous = db.execute("SELECT full_read_at, stable_until FROM source_cursors WHERE tenant = ?",
                                  (tenant,)).fetchone()
            full_read_at = now if commit.full or previous is None else previous[0]
            if stable_until is None and previous is not None:
                stable_until = previous[1]
            db.execute(SQL_CURSOR, (tenant, commit.cursor, full_read_at, commit.mapping_hash,
                                    json.dumps(list(commit.resources)), mapped_date, int(settled), now, stable_until))

    def commit_sources(self, tenant: str, commit: SourceCommit, *, mapped_date: str | None, settled: bool,
                       stable_until: str | None = None) -> None:
        """``stage_sources`` and ``commit_cursor`` at once (a caller with nothing to apply in between)."""
        self.stage_sources(tenant, commit)
        self.commit_cursor(tenant, commit, mapped_date=mapped_date, settled=settled, stable_until=stable_until)

    def forget_sources(self, tenant: str) -> None:
        """Drop the snapshot and the cursor: the next run reads everything."""
        self._require_tenant(tenant)
        with self._write() as db:
            db.execute("DELETE FROM source_records WHERE tenant = ?", (tenant,))
            db.execute("DELETE FROM source_cursors WHERE tenant = ?", (tenant,))
            db.execute("DELETE FROM source_deps_meta WHERE tenant = ?", (tenant,))
