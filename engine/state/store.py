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
from engine.state.base import Clock, utc_now
from engine.state.db import connect, tight_umask, tighten_mode, translate_errors
from engine.state.locks import LocksMixin, _Lock
from engine.state.migrations import migrate, user_version
from engine.state.records import RecordsMixin
from engine.state.runs import RunsMixin
from engine.state.sealed import SecretsMixin
from engine.state.sources import SourcesMixin
from engine.state.tenants import TenantsMixin


class StateStore(TenantsMixin, RecordsMixin, RunsMixin, LocksMixin, SecretsMixin, SourcesMixin):
    """Tenants, connections, per-record sync state, run history and locks in one SQLite file."""

    def __init__(self, db: sqlite3.Connection, path: Path, clock: Clock, box: SecretBox | None = None) -> None:
        super().__init__(db, path, clock, box)
        self._held: set[_Lock] = set()

    @classmethod
    def open(cls, path: str | Path, *, clock: Clock | None = None, secrets: SecretBox | None = None,
             check_secrets: bool = True) -> StateStore:
        """Open (creating it 0600, with parent directories 0700) and migrate the state file.

        ``clock`` returns an aware ``datetime`` (tests pass e.g. ``sandbox_clock.now``).
        ``secrets`` encrypts and decrypts the stored secrets (default: the key configured for
        ``path``, see engine/secrets.py). Raises StateError for a damaged, foreign or newer file;
        such files are left untouched. Raises ``SecretKeyError`` when the key does not decrypt the
        stored secrets (``check_secrets=False`` is for ``rotate-key --forget-unreadable`` only).
        """
        where = Path(path).expanduser()
        with tight_umask():
            db = connect(where)
            try:
                with translate_errors(where):
                    migrate(db)
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

    @property
    def schema_version(self) -> int:
        with self._read() as db:
            return user_version(db)

    def backup(self, destination: str | Path) -> Path:
        """Write a consistent snapshot (SQLite's online backup) to ``destination``, mode 0600.

        Safe while syncs run in other processes; refuses to overwrite an existing file.
        """
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
                    self.db.backup(copy)
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
            db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r}{', closed' if self._db is None else ''})"
