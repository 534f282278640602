"""Moving a deployment between backends: ``casavi-sync state copy SRC DST`` (SQLite <-> PostgreSQL).

Why generic: other parts of casavi-sync add tables through migrations (secrets, source cursors,
users, audit log...). The copy does not list them; it reads the tables of the source (both
stores at the same schema version, so the same tables and columns), orders them so that every
table comes after the tables it references, and copies every row, column by column, in one
transaction on the destination. Identity counters (run ids) continue after the copied rows.

Secrets stay encrypted; those made with a key the destination lacks are re-encrypted with the
destination's key on the way. Not copied: ``locks`` (who runs what *now* belongs to the old deployment) and the schema-version
bookkeeping (each backend keeps its own). The destination must be empty (a fresh ``state migrate``),
so a copy never merges two deployments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import StateError
from engine.state.migrations import PG_VERSION_TABLE
from engine.state.models import DEFAULT_TENANT
from engine.state.sql import Conn
from engine.state.store import StateStore

SKIP = {"locks", PG_VERSION_TABLE, "sqlite_sequence"}
CHUNK = 2000


@dataclass(frozen=True)
class CopyResult:
    tables: dict[str, int]  # table -> rows copied

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def tables(store: StateStore) -> list[str]:
    """The store's tables (without ``SKIP``), each after the tables it references."""
    db = store.db
    deps: dict[str, set[str]] = {}
    with store._errors():
        if store.postgres:
            names = [r[0] for r in db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_type = 'BASE TABLE' AND table_name NOT LIKE 'procrastinate%' ORDER BY table_name")]
            for child, parent in db.execute(
                    "SELECT c.relname, p.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                    "JOIN pg_class p ON p.oid = k.confrelid WHERE k.contype = 'f' "
                    "AND c.relnamespace = current_schema()::regnamespace"):
                deps.setdefault(child, set()).add(parent)
        else:
            names = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            for name in names:
                for row in db.execute(f'PRAGMA foreign_key_list("{name}")'):
                    deps.setdefault(name, set()).add(row[2])
    ordered: list[str] = []
    pending = [n for n in names if n not in SKIP]
    while pending:
        ready = [n for n in pending if not (deps.get(n, set()) - {n}) - set(ordered) - SKIP]
        if not ready:  # a reference cycle: copy the rest in name order and let the database judge
            ready = pending[:1]
        for name in ready:
            ordered.append(name)
            pending.remove(name)
    return ordered


def columns(store: StateStore, table: str) -> list[str]:
    db = store.db
    with store._errors():
        if store.postgres:
            return [r[0] for r in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ? ORDER BY ordinal_position", (table,))]
        return [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]


def rows(store: StateStore, table: str, cols: list[str]) -> Iterator[tuple[Any, ...]]:
    """Every row in a stable order (by all columns), for copying and for comparing two stores."""
    quoted = ", ".join(f'"{c}"' for c in cols)
    with store._errors():
        cur = store.db.execute(f'SELECT {quoted} FROM "{table}" ORDER BY {quoted}')
        yield from (tuple(r) for r in cur.fetchall())


def dump(store: StateStore) -> dict[str, list[tuple[Any, ...]]]:
    """All copied content of a store, table by table (tests compare two stores with it)."""
    store._flush()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in tables(store):
        cols = columns(store, table)
        # sorted here: the backends order NULLs differently
        out[table] = sorted((tuple(_plain(v) for v in row) for row in rows(store, table, cols)), key=repr)
    return out


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def _require_empty(dst: StateStore) -> None:
    with dst._errors():
        db = dst.db
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        records = db.execute("SELECT count(*) FROM records").fetchone()[0]
        others = db.execute("SELECT count(*) FROM tenants WHERE name <> ? OR casavi_key IS NOT NULL",
                            (DEFAULT_TENANT,)).fetchone()[0]
    if runs or records or others:
        raise StateError(f"{dst.where} already holds a deployment (tenants, records or runs); copy only into "
                         "a new, empty state (a fresh file, or a new database after casavi-sync state migrate)")


def _reset_identities(db: Conn, table: str, cols: list[str]) -> None:
    for col in cols:
        seq = db.execute("SELECT pg_get_serial_sequence(?, ?)", (table, col)).fetchone()[0]
        if seq:
            db.execute(f'SELECT setval(?, COALESCE((SELECT max("{col}") FROM "{table}"), 0) + 1, false)', (seq,))


def _resealer(src: StateStore, dst: StateStore, table: str, cols: list[str]) -> Any:
    """Secrets travel encrypted; one made with a key the destination does not hold (each location
    has its own default key file) is re-encrypted with the destination's key on the way, so the
    copy opens where it lands (engine/secrets.py)."""
    from engine.secrets import key_id_of
    from engine.state.sealed import SECRET_CELLS

    where = [cols.index(column) for t, _, column, _ in SECRET_CELLS if t == table and column in cols]
    if not where:
        return lambda row: row
    have = set(dst._box.key_ids())

    def reseal(row: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(row)
        for i in where:
            value = out[i]
            if isinstance(value, str) and value and key_id_of(value) not in have:
                out[i] = dst._box.seal(src._box.unseal(value))
        return tuple(out)

    return reseal


def copy_state(src: StateStore, dst: StateStore) -> CopyResult:
    """Copy every row of ``src`` into the empty ``dst`` (same schema version), in one transaction."""
    if src.schema_version != dst.schema_version:
        raise StateError(f"{src.where} is at state schema v{src.schema_version} and {dst.where} at "
                         f"v{dst.schema_version}; run casavi-sync state migrate on both first")
    _require_empty(dst)
    src._flush()
    order = tables(src)
    missing = set(order) - set(tables(dst))
    if missing:
        raise StateError(f"{dst.where} lacks the tables {', '.join(sorted(missing))}; migrate it first")
    counts: dict[str, int] = {}
    with dst._write() as db:
        for table in reversed(order):
            db.execute(f'DELETE FROM "{table}"')  # the fresh store's empty 'default' tenant
        for table in order:
            cols = columns(src, table)
            quoted = ", ".join(f'"{c}"' for c in cols)
            sql = f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join("?" for _ in cols)})'
            batch: list[tuple[Any, ...]] = []
            n = 0
            reseal = _resealer(src, dst, table, cols)
            for row in rows(src, table, cols):
                batch.append(reseal(tuple(_plain(v) for v in row)))
                if len(batch) >= CHUNK:
                    db.executemany(sql, batch)
                    n, batch = n + len(batch), []
            if batch:
                db.executemany(sql, batch)
                n += len(batch)
            counts[table] = n
            if dst.postgres:
                _reset_identities(db, table, cols)
    dst._forget_tenant_caches(DEFAULT_TENANT)
    dst.ensure_default_tenant()
    return CopyResult(counts)
