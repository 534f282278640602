"""What each mapped SCALARA record read and produced: the rows a targeted day needs.

Why: on an incremental day only the records a change touches are mapped again
(engine.sync.targeted). To find them without loading the tenant, every mapped source record
leaves rows here: the lookup keys it read, the refs it read, the reference ids it claimed, its
identity (reference id or failure reason) per mapping, what its outputs refer to (referrers of
protected mappings), whether it failed to map; records of lookup resources also their match
values. Queries go by record (``deps_of``) or by dependency (``dep_holders``: who read this key?).

Crash consistency: the rows are written after the mapping, before the writes to casavi, and the
snapshot is then unsettled (engine.state.sources); a targeted day requires a settled snapshot and
rows written for the same mapping set (``deps_hash``), so a crash anywhere in between makes the
next run map the whole tenant again, which rewrites every row.

Plain SQL that SQLite and PostgreSQL both speak.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from engine.state.base import StoreBase

Key = tuple[str, str]          # (resource, SCALARA id)
Row = tuple[str, str | None]   # (dep, detail)
CHUNK = 500

SQL_INSERT = "INSERT INTO source_deps (tenant, resource, id, dep, detail) VALUES (?, ?, ?, ?, ?)"
SQL_UNTIL = "INSERT INTO source_until (tenant, resource, id, until) VALUES (?, ?, ?, ?)"


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


class DepsMixin(StoreBase):
    def deps_hash(self, tenant: str) -> str | None:
        """The mapping set whose rows are complete for the snapshot and ready (the run that wrote
        them applied its writes); None: no rows to trust."""
        self._require_tenant(tenant)
        with self._read() as db:
            row = db.execute("SELECT mapping_hash FROM source_deps_meta WHERE tenant = ? AND ready = 1",
                             (tenant,)).fetchone()
        return row[0] if row else None

    def deps_ready(self, tenant: str, held: Iterable[tuple[str, str]]) -> None:
        """The run that wrote the rows applied its writes; ``held``: the archives it held back."""
        self._require_tenant(tenant)
        with self._write() as db:
            db.execute("UPDATE source_deps_meta SET ready = 1, held = ? WHERE tenant = ?",
                       (json.dumps(sorted(set(held))), tenant))

    def deps_held(self, tenant: str) -> list[tuple[str, str]]:
        """The records the last run held back from archiving (kind, reference id)."""
        self._require_tenant(tenant)
        with self._read() as db:
            row = db.execute("SELECT held FROM source_deps_meta WHERE tenant = ?", (tenant,)).fetchone()
        return [(str(k), str(r)) for k, r in json.loads(row[0])] if row and row[0] else []

    def save_deps(self, tenant: str, rows: Iterable[tuple[str, str, str, str | None]], until: Mapping[Key, int], *,
                  whole: bool, mapping_hash: str, replaced: Iterable[Key] = ()) -> None:
        """Store ``rows`` (resource, id, dep, detail), replacing those of the records ``replaced``,
        in one transaction; ``whole``: they are all there is (every other row goes). ``rows`` is
        consumed as it is written (a whole tenant's need not be held twice)."""
        self._require_tenant(tenant)
        with self._write() as db:
            if whole:
                db.execute("DELETE FROM source_deps WHERE tenant = ?", (tenant,))
                db.execute("DELETE FROM source_until WHERE tenant = ?", (tenant,))
            else:
                keys = sorted(set(replaced))
                for table in ("source_deps", "source_until"):
                    db.executemany(f"DELETE FROM {table} WHERE tenant = ? AND resource = ? AND id = ?",
                                   ((tenant, res, rid) for res, rid in keys))
            flat = ((tenant, *row) for row in rows)
            while chunk := list(itertools.islice(flat, 20_000)):  # bounded memory on both backends
                db.executemany(SQL_INSERT, chunk)
            db.executemany(SQL_UNTIL, ((tenant, res, rid, day) for (res, rid), day in until.items()))
            db.execute("DELETE FROM source_deps_meta WHERE tenant = ?", (tenant,))
            db.execute("INSERT INTO source_deps_meta (tenant, mapping_hash, ready) VALUES (?, ?, 0)",
                       (tenant, mapping_hash))

    def forget_deps(self, tenant: str) -> None:
        self._require_tenant(tenant)
        with self._write() as db:
            for table in ("source_deps", "source_until", "source_deps_meta"):
                db.execute(f"DELETE FROM {table} WHERE tenant = ?", (tenant,))

    def deps_of(self, tenant: str, keys: Iterable[Key]) -> dict[Key, list[Row]]:
        """The rows of some records (records without rows are left out)."""
        self._require_tenant(tenant)
        out: dict[Key, list[Row]] = {}
        by_resource: dict[str, list[str]] = {}
        for res, rid in set(keys):
            by_resource.setdefault(res, []).append(rid)
        with self._read() as db:
            for res, ids in sorted(by_resource.items()):
                for chunk in _chunks(sorted(ids)):
                    marks = ", ".join("?" * len(chunk))
                    for rid, dep, detail in db.execute(
                            f"SELECT id, dep, detail FROM source_deps WHERE tenant = ? AND resource = ? "
                            f"AND id IN ({marks})", (tenant, res, *chunk)):
                        out.setdefault((res, rid), []).append((dep, detail))
        return out

    def dep_holders(self, tenant: str, deps: Iterable[str]) -> dict[str, list[tuple[str, str, str | None]]]:
        """dep -> the records holding it, as (resource, id, detail).

        ``tenant || ''`` keeps SQLite off the primary key's tenant prefix (a scan of the tenant's
        rows per query): it then searches the dependency index."""
        self._require_tenant(tenant)
        out: dict[str, list[tuple[str, str, str | None]]] = {}
        wanted = sorted(set(deps))
        with self._read() as db:
            for chunk in _chunks(wanted):
                marks = ", ".join("?" * len(chunk))
                for res, rid, dep, detail in db.execute(
                        f"SELECT resource, id, dep, detail FROM source_deps WHERE dep IN ({marks}) AND tenant || '' = ?",
                        (*chunk, tenant)):
                    out.setdefault(dep, []).append((res, rid, detail))
        return out

    def deps_due(self, tenant: str, day: int) -> list[Key]:
        """Records a date function could map differently on ``day`` (a day number) or before."""
        self._require_tenant(tenant)
        with self._read() as db:
            return [(r[0], r[1]) for r in db.execute(
                "SELECT resource, id FROM source_until WHERE tenant = ? AND until <= ?", (tenant, day))]

    def deps_first_until(self, tenant: str) -> int | None:
        self._require_tenant(tenant)
        with self._read() as db:
            row = db.execute("SELECT MIN(until) FROM source_until WHERE tenant = ?", (tenant,)).fetchone()
        return row[0] if row and row[0] is not None else None

    def records_of_sources(self, tenant: str, sources: Iterable[Key]) -> dict[tuple[str, str], Any]:
        """The record states made from some SCALARA records, keyed (kind, ref_id)."""
        from engine.state.models import RecordState
        from engine.state.records import _SELECT

        self._require_tenant(tenant)
        by_resource: dict[str, list[str]] = {}
        for res, rid in set(sources):
            by_resource.setdefault(res, []).append(rid)
        out: dict[tuple[str, str], Any] = {}
        with self._read() as db:
            for res, ids in sorted(by_resource.items()):
                for chunk in _chunks(sorted(ids)):
                    marks = ", ".join("?" * len(chunk))
                    for r in db.execute(_SELECT + f" AND source_resource = ? AND source_id IN ({marks})",
                                        (tenant, res, *chunk)):
                        out[(r[0], r[1])] = tuple.__new__(RecordState, r)
        return out

    def records_by_keys(self, tenant: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        from engine.state.models import RecordState
        from engine.state.records import _SELECT

        self._require_tenant(tenant)
        by_kind: dict[str, list[str]] = {}
        for kind, ref in set(keys):
            by_kind.setdefault(kind, []).append(ref)
        out: dict[tuple[str, str], Any] = {}
        with self._read() as db:
            for kind, refs in sorted(by_kind.items()):
                for chunk in _chunks(sorted(refs)):
                    marks = ", ".join("?" * len(chunk))
                    for r in db.execute(_SELECT + f" AND kind = ? AND ref_id IN ({marks})", (tenant, kind, *chunk)):
                        out[(r[0], r[1])] = tuple.__new__(RecordState, r)
        return out

    def unsettled_sources(self, tenant: str) -> list[Key]:
        """SCALARA records whose casavi records are pending or failed, or that have a known failure."""
        self._require_tenant(tenant)
        with self._read() as db:
            rows = itertools.chain(
                db.execute("SELECT source_resource, source_id FROM records WHERE tenant = ? "
                           "AND status IN ('pending', 'failed')", (tenant,)).fetchall(),
                db.execute("SELECT source_resource, source_id FROM failures WHERE tenant = ?", (tenant,)).fetchall())
            return sorted({(r[0], r[1]) for r in rows if r[0] is not None and r[1] is not None})
