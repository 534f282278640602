"""``StateStore``: the one object the sync and the CLI hold to reach the state file.

The verbs live in small mixins (tenants, records, runs, locks); this module opens, migrates and
closes. A store is used by one thread at a time: the SQLite connection is not shared safely
between threads, so a thread that runs syncs concurrently opens its own store on the same file.
Several processes may open the same file at once (WAL mode); the run lock keeps their syncs apart.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from types import TracebackType

from engine.errors import StateError
from engine.secrets import SecretBox
from engine.state import pg
from engine.state.base import Clock, utc_now
from engine.state.console import ConsoleMixin
from engine.state.db import connect, tight_umask, tighten_mode, translate_errors
from engine.state.deps import DepsMixin
from engine.state.failures import FailuresMixin
from engine.state.locks import LocksMixin, _Lock
from engine.state.mapsets import MappingSetsMixin
from engine.state.migrations import LATEST_VERSION, migrate, user_version
from engine.state.records import RecordsMixin
from engine.state.runs import RunsMixin
from engine.state.sealed import SecretsMixin
from engine.state.sources import SourcesMixin
from engine.state.sql import Conn, PgConn, SqliteConn
from engine.state.tenants import TenantsMixin


class StateStore(TenantsMixin, RecordsMixin, RunsMixin, LocksMixin, SecretsMixin, SourcesMixin, ConsoleMixin,
                 MappingSetsMixin, FailuresMixin, DepsMixin):
    """Tenants, connections, per-record sync state, run history and locks in one SQLite file."""

    def __init__(self, db: Conn, path: Path | str, clock: Clock, box: SecretBox | None = None) -> None:
        super().__init__(db, path, clock, box)
        self._held: set[_Lock] = set()

    @classmethod
    def open(cls, path: str | Path, *, clock: Clock | None = None, secrets: SecretBox | None = None,
             check_secrets: bool = True, migrate: bool | None = None) -> StateStore:
        """Open the state: a SQLite file (a path) or a PostgreSQL database (a ``postgresql://`` URL).

        SQLite: the file is created 0600 (parent directories 0700) and migrated on open
        (``migrate`` defaults to True there: the embedded default needs no extra step).
        PostgreSQL: ``migrate`` defaults to False - schema changes are an explicit step
        (``casavi-sync state migrate``), because a fleet must not migrate under running workers; an
        older schema is refused with that instruction.

        ``clock`` returns an aware ``datetime`` (tests pass e.g. ``sandbox_clock.now``).
        ``secrets`` encrypts and decrypts the stored secrets (default: the key configured for
        ``path``, see engine/secrets.py). Raises StateError for a damaged, foreign or newer store;
        such stores are left untouched. Raises ``SecretKeyError`` when the key does not decrypt the
        stored secrets (``check_secrets=False`` is for ``rotate-key --forget-unreadable`` only).
        """
        if pg.is_url(path):
            return cls._open_postgres(str(path).strip(), clock, bool(migrate), secrets, check_secrets)
        where = Path(path).expanduser()
        with tight_umask():
            raw = connect(where)
            db = SqliteConn(raw)
            try:
                with translate_errors(where):
                    if migrate is False:
                        check_version(db, str(where))
                    else:
                        _migrate(db)
                store = cls(db, where, clock or utc_now, secrets)
                store.ensure_default_tenant()
                if check_secrets:
                    store.verify_secrets()
                    store.seal_plaintext_secrets()
            except BaseException:
                db.close()
                raise
        tighten_mode(where)
        return store

    @classmethod
    def _open_postgres(cls, url: str, clock: Clock | None, migrate_now: bool, secrets: SecretBox | None,
                       check_secrets: bool) -> StateStore:
        db = pg.borrow(url)
        try:
            with pg.translate_errors(url):
                version = user_version(db)
                if version > LATEST_VERSION:
                    raise StateError(f"{pg.describe(url)} was written by a newer casavi-sync (state schema "
                                     f"v{version}, this release knows up to v{LATEST_VERSION}); upgrade "
                                     "casavi-sync to use it")
                if migrate_now:
                    _migrate(db)
                else:
                    check_version(db, pg.describe(url))
            store = cls(db, url, clock or utc_now, secrets)
            store.ensure_default_tenant()
            if check_secrets:
                store.verify_secrets()
                store.seal_plaintext_secrets()
        except BaseException:
            pg.give_back(url, db)
            raise
        return store

    @property
    def schema_version(self) -> int:
        with self._read() as db:
            return user_version(db)

    def backup(self, destination: str | Path) -> Path:
        """Write a consistent snapshot (SQLite's online backup) to ``destination``, mode 0600.

        Safe while syncs run in other processes; refuses to overwrite an existing file.
        """
        if self.postgres:
            raise StateError(f"{self.where} is a PostgreSQL database: back it up with pg_dump, or copy it to a "
                             "SQLite file with casavi-sync state copy")
        target = Path(destination).expanduser()
        if target.exists():
            raise StateError(f"{target} already exists; choose a new backup file name")
        self._flush()
        with tight_umask():
            try:
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise StateError(f"cannot create {target}: {exc.strerror or exc}") from exc
            copy = sqlite3.connect(str(target))
            try:
                with translate_errors(target):
                    db = self.db
                    assert isinstance(db, SqliteConn)
                    db.raw.backup(copy)
                    copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                copy.close()
        return target

    def close(self) -> None:
        """Flush queued marks, release this store's locks, close the file. Idempotent."""
        if self._db is None:
            return
        try:
            with contextlib.suppress(StateError):
                self._flush()
            self._release_all_locks()
        finally:
            db, self._db = self._db, None
            if isinstance(db, PgConn):
                pg.give_back(str(self.path), db)
            else:
                db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({self.where!r}{', closed' if self._db is None else ''})"


_migrate = migrate


def check_version(db: Conn, where: str) -> None:
    """Refuse a store whose schema this release does not run on (older: migrate it first)."""
    version = user_version(db)
    if version > LATEST_VERSION:
        raise StateError(f"{where} was written by a newer casavi-sync (state schema v{version}, this release "
                         f"knows up to v{LATEST_VERSION}); upgrade casavi-sync to use it")
    if version < LATEST_VERSION:
        what = "has no casavi-sync schema yet" if version == 0 else f"is at state schema v{version}"
        raise StateError(f"{where} {what} (this release needs v{LATEST_VERSION}); apply the migrations "
                         "first: casavi-sync state migrate")
