"""One connection interface over both state backends: SQLite (the embedded default) and PostgreSQL.

Why a wrapper and not an ORM: the store's SQL is small, hand-tuned and almost portable. The
mixins write SQLite-flavoured SQL (``?`` placeholders, ``INSERT OR IGNORE``, ``BEGIN IMMEDIATE``)
and this layer carries it to PostgreSQL with a few mechanical rewrites, cached per statement:

- ``?`` becomes ``%s`` (and a literal ``%`` becomes ``%%``);
- ``INSERT OR IGNORE INTO ...`` becomes ``INSERT INTO ... ON CONFLICT DO NOTHING``;
- ``BEGIN IMMEDIATE`` becomes ``BEGIN`` plus a transaction-scoped advisory lock, so write
  transactions are serialised exactly as SQLite's single writer serialises them (every
  check-then-write in the store stays atomic on both backends without per-site code);
- ``PRAGMA`` statements (SQLite housekeeping) are skipped.

Both connections run in autocommit mode with explicit transactions, as the SQLite connection
always did (``isolation_level=None``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# The advisory-lock namespace of casavi-sync ("CSYN"); key 0 in it is the writer lock.
LOCK_SPACE = 0x4353594E
WRITER_KEY = 0


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What the store needs from a database connection."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    @property
    def in_transaction(self) -> bool: ...
    def close(self) -> None: ...


class SqliteConn:
    """A thin pass-through: the SQL is already SQLite's."""

    dialect = SQLITE

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def close(self) -> None:
        from engine.state.db import close_connection  # db imports the migrations, which import this

        close_connection(self.raw)


def as_conn(db: Conn | sqlite3.Connection) -> Conn:
    """Accept a raw ``sqlite3.Connection`` where a ``Conn`` is expected (tests, old callers)."""
    return SqliteConn(db) if isinstance(db, sqlite3.Connection) else db


_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_cache: dict[str, str | None] = {}


def to_postgresql(sql: str) -> str | None:
    """The PostgreSQL text of a store statement; None for a statement to skip (PRAGMA)."""
    try:
        return _cache[sql]
    except KeyError:
        pass
    text: str | None
    stripped = sql.strip()
    if stripped.upper().startswith("PRAGMA"):
        text = None
    else:
        text = stripped.replace("%", "%%").replace("?", "%s")
        if _OR_IGNORE.match(text):
            text = _OR_IGNORE.sub("INSERT INTO", text) + " ON CONFLICT DO NOTHING"
    if len(_cache) < 4096:
        _cache[sql] = text
    return text


class _NoRows:
    rowcount = 0

    def fetchone(self) -> Any:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


class PgConn:
    """A psycopg 3 connection (autocommit) speaking the store's SQLite-flavoured SQL."""

    dialect = POSTGRESQL

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        head = sql.strip().upper()
        if head == "BEGIN IMMEDIATE":
            cur = self.raw.execute("BEGIN")
            self.raw.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, WRITER_KEY))
            return cur  # type: ignore[no-any-return]
        text = to_postgresql(sql)
        if text is None:
            return _NoRows()
        return self.raw.execute(text, tuple(params))  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        text = to_postgresql(sql)
        if text is None:
            return
        with self.raw.cursor() as cur:
            cur.executemany(text, [tuple(r) for r in rows])

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE  # type: ignore[no-any-return]

    def close(self) -> None:
        self.raw.close()
