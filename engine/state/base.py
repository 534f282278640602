"""The store's plumbing: the connection, the clock, transactions, batching, tenant checks.

Transactions are explicit (``isolation_level=None``): every write runs in ``BEGIN IMMEDIATE`` ...
``COMMIT``. IMMEDIATE takes the write lock up front, so two processes never deadlock on a lock
upgrade; they queue behind ``busy_timeout`` instead.

Batching buffers in memory instead of holding a transaction open. The sync sends HTTP writes
between its ``mark_*`` calls; an open write transaction across those calls would lock every other
process (another tenant's run, ``connect``) out of the file for as long as casavi takes to answer.
So inside ``batch()`` the cheap record calls are queued and applied in short transactions (one
``executemany`` per run of equal statements) every ``FLUSH_EVERY`` calls, when the queue is older
than ``FLUSH_AFTER_S``, before any read, and at the end. A crash loses at most the queued marks -
exactly what an uncommitted transaction would lose - and never corrupts the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, StateError
from engine.secrets import SecretBox
from engine.state import db as sqlite_db
from engine.state import pg
from engine.state.sql import POSTGRESQL, Conn

Clock = Callable[[], dt.datetime]
Params = Sequence[Any]

FLUSH_EVERY = 500
FLUSH_AFTER_S = 2.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """UTC, ISO 8601, milliseconds, ``Z``: sorts as text, matches both APIs' timestamps."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoreBase:
    """Shared state of the mixins that make up ``StateStore``."""

    _db: Conn | None
    path: Path | str

    def __init__(self, db: Conn, path: Path | str, clock: Clock, box: SecretBox | None = None) -> None:
        """``path``: the SQLite file, or the PostgreSQL URL (kept private; ``where`` is safe to show)."""
        self._db = db
        self._box = box if box is not None else SecretBox.for_state(path)
        self.path = path
        self.postgres = db.dialect == POSTGRESQL
        self.where = pg.describe(str(path)) if self.postgres else str(path)
        self._clock = clock
        self._batch_depth = 0
        self._queue: list[tuple[str, Params]] = []
        self._queue_since = 0.0
        self._known_tenants: set[str] = set()
        self._secrets: dict[str, tuple[str, ...]] = {}

    # -- basics -------------------------------------------------------------------------------

    @property
    def db(self) -> Conn:
        if self._db is None:
            raise StateError(f"the state store {self.where} is closed")
        return self._db

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """Database failures as one-line ``StateError``s, in the backend's words."""
        if self.postgres:
            return pg.translate_errors(str(self.path))
        return sqlite_db.translate_errors(Path(self.path))

    @property
    def closed(self) -> bool:
        return self._db is None

    def now(self) -> str:
        return iso(self._clock())

    def today(self) -> dt.date:
        return self._clock().astimezone(dt.UTC).date()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Conn]:
        """Reads see every queued mark: flush first."""
        self._flush()
        with self._errors():
            yield self.db

    @contextlib.contextmanager
    def _write(self) -> Iterator[Conn]:
        """One committed transaction (flushing queued marks first, so order is kept)."""
        self._flush()
        db = self.db
        with self._errors():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- batching -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group many ``mark_*``/``forget`` calls into few short transactions; flush at exit.

        Queued marks are flushed even when the block raises: each one records a write casavi
        already accepted, and forgetting it would only make the next run repeat that write.
        """
        self._batch_depth += 1
        try:
            yield
        except BaseException:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                with contextlib.suppress(StateError):
                    self._flush()  # the original error is the more useful one
            raise
        self._batch_depth -= 1
        if self._batch_depth == 0:
            self._flush()

    def _enqueue(self, sql: str, params: Params) -> None:
        if not self._batch_depth:
            with self._write() as db:
                db.execute(sql, params)
            return
        if not self._queue:
            self._queue_since = time.monotonic()
        self._queue.append((sql, params))
        if len(self._queue) >= FLUSH_EVERY or time.monotonic() - self._queue_since >= FLUSH_AFTER_S:
            self._flush()

    def _flush(self) -> None:
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        db = self.db
        with self._errors():
            db.execute("BEGIN IMMEDIATE")
            try:
                start = 0
                while start < len(queue):
                    sql = queue[start][0]
                    end = start
                    while end < len(queue) and queue[end][0] is sql:
                        end += 1
                    db.executemany(sql, [params for _, params in queue[start:end]])
                    start = end
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- secrets (encrypted before they are stored, decrypted after they are read) ---------------

    def _seal(self, plaintext: str) -> str:
        return self._box.seal(plaintext)

    def _unseal(self, stored: str | None) -> str | None:
        return None if stored is None else self._box.unseal(stored)

    # -- liveness (PostgreSQL: the server knows which sessions hold which lock) ----------------

    def _pg_lock_held(self, name: str) -> bool:
        from engine.state.sql import PgConn

        db = self.db
        assert isinstance(db, PgConn)
        with self._errors():
            return pg.lock_held(db, name)

    def _tenant_locked_fn(self) -> Callable[[str], bool] | None:
        """None on SQLite (pid checks decide); on PostgreSQL: is the tenant's run lock held?"""
        if not self.postgres:
            return None
        seen: dict[str, bool] = {}

        def locked(tenant: str) -> bool:
            if tenant not in seen:
                seen[tenant] = self._pg_lock_held(f"tenant:{tenant}")
            return seen[tenant]

        return locked

    # -- tenants ------------------------------------------------------------------------------

    def _tenant_names(self) -> list[str]:
        with self._read() as db:
            return [row[0] for row in db.execute("SELECT name FROM tenants ORDER BY name")]

    def _unknown_tenant(self, name: str) -> ConfigError:
        known = self._tenant_names()
        guess = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{guess[0]}'? " if guess else "; "
        return ConfigError(f"unknown tenant '{name}'{hint}known: {', '.join(known) or '(none)'}")

    def _require_tenant(self, name: str) -> None:
        """Cheap after the first call per tenant: the sync checks once per record."""
        if name in self._known_tenants:
            return
        with self._read() as db:
            found = db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone()
        if not found:
            raise self._unknown_tenant(name)
        self._known_tenants.add(name)

    def _forget_tenant_caches(self, name: str) -> None:
        self._known_tenants.discard(name)
        self._secrets.pop(name, None)

    def _redact(self, tenant: str, text: str | None) -> str | None:
        """Scrub the tenant's own secrets from error texts before they are stored (defence in depth)."""
        if not text:
            return text
        secrets = self._secrets.get(tenant)
        if secrets is None:
            with self._read() as db:
                row = db.execute(
                    "SELECT t.casavi_key, t.casavi_secret, c.scalara_token FROM tenants t "
                    "LEFT JOIN connections c ON c.tenant = t.name WHERE t.name = ?", (tenant,)).fetchone()
            plain = (self._unseal(s) for s in (row or ()))
            secrets = tuple(s for s in plain if s and len(s) >= 6)
            self._secrets[tenant] = secrets
        for secret in secrets:
            text = text.replace(secret, "***")
        return text
