"""Run locks: one sync per tenant at a time, and one ``serve`` per state file.

Tenant lock - a row in ``locks``, taken inside ``BEGIN IMMEDIATE`` (SQLite's write lock makes the
check-and-insert atomic across processes). The row names the holder (pid, host, start time,
purpose). Liveness is checked, not assumed: a row whose process is gone from *this* host (or whose
pid now belongs to a different process, judged by the kernel's start time) is stale and is taken
over, and the dead holder's unfinished runs are recorded as interrupted. A row from *another*
host cannot be checked and is respected until ``break_lock`` removes it.

PostgreSQL - the row stays (it names the holder for ``status``), but liveness is a session
advisory lock taken on the store's connection (engine/state/pg.py): the server drops it when the
holder's connection ends, on whatever machine it died, so a SIGKILLed worker's tenant is free for
another worker at once and no operator has to break a lock. The serve lock is one too.

Serve lock - ``fcntl.flock`` on the side file ``<state>.serve.lock``. The kernel drops a flock when
its process dies, even by SIGKILL, so a crashed ``serve`` never blocks the next one; the DB row
under the name "serve" is only there to say who holds it. (flock is per host: two machines
sharing a state file over the network are not supported - nor is SQLite WAL there.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.errors import StateError
from engine.state import pg
from engine.state.base import StoreBase
from engine.state.db import HOSTNAME, process_alive, process_start, tight_umask
from engine.state.models import LockInfo
from engine.state.runs import interrupt_dead_runs
from engine.timefmt import human_time

SERVE = "serve"

_LOCK_COLUMNS = "name, tenant, pid, hostname, started_at, purpose, proc_start"


def _info(row: tuple[Any, ...]) -> LockInfo:
    return LockInfo(name=row[0], tenant=row[1], pid=int(row[2]), hostname=row[3], started_at=row[4],
                    purpose=row[5])


def _alive(row: tuple[Any, ...]) -> bool:
    """SQLite: the holder on this host must still be the same process; another host is presumed alive."""
    return row[3] != HOSTNAME or process_alive(int(row[2]), row[6])


class _Lock:
    """Released by ``release()``, by leaving the ``with`` block, or by closing the store."""

    def __init__(self, store: LocksMixin, info: LockInfo, nonce: str) -> None:
        self._store: LocksMixin | None = store
        self.info = info
        self._nonce = nonce

    @property
    def held(self) -> bool:
        return self._store is not None

    def release(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        store._held.discard(self)
        self._release_extra()
        if not store.closed:
            with store._write() as db:
                db.execute("DELETE FROM locks WHERE name = ? AND nonce = ?", (self.info.name, self._nonce))
            store._pg_unlock(self.info.name)

    def _release_extra(self) -> None:
        pass

    def __enter__(self) -> _Lock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        i = self.info
        state = "held" if self.held else "released"
        return f"{type(self).__name__}({i.name!r}, pid={i.pid}, host={i.hostname!r}, since={i.started_at}, {state})"


class RunLock(_Lock):
    """A tenant's run lock. ``taken_over`` names the dead holder it replaced, if any."""

    def __init__(self, store: LocksMixin, info: LockInfo, nonce: str, taken_over: LockInfo | None,
                 interrupted_runs: list[int]) -> None:
        super().__init__(store, info, nonce)
        self.tenant = info.tenant or ""
        self.purpose = info.purpose
        self.taken_over = taken_over
        self.interrupted_runs = interrupted_runs

    def __enter__(self) -> RunLock:
        return self


class ServeLock(_Lock):
    def __init__(self, store: LocksMixin, info: LockInfo, nonce: str, fd: int | None) -> None:
        super().__init__(store, info, nonce)
        self._fd: int | None = fd

    def _release_extra(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> ServeLock:
        return self


class LocksMixin(StoreBase):
    _held: set[_Lock]

    # -- PostgreSQL session locks ---------------------------------------------------------------
    def _pg_try_lock(self, name: str) -> bool:
        if any(lock.info.name == name for lock in self._held):
            return False  # session locks are re-entrant; ours must not be
        from engine.state.sql import PgConn

        db = self.db
        assert isinstance(db, PgConn)
        with self._errors():
            return pg.try_lock(db, name)

    def _pg_unlock(self, name: str) -> None:
        if not self.postgres or self.closed:
            return
        from engine.state.sql import PgConn

        db = self.db
        assert isinstance(db, PgConn)
        with contextlib.suppress(StateError), self._errors():
            pg.unlock(db, name)

    def _row_alive(self, row: tuple[Any, ...]) -> bool:
        if self.postgres:
            return self._pg_lock_held(str(row[0]))
        return _alive(row)

    def _busy(self, tenant: str, name: str) -> StateError:
        holder = self._live_row(name, check=False)
        if holder is None:
            return StateError(f"tenant '{tenant}' is already being synced by another process")
        return StateError(f"tenant '{tenant}' is already being synced by pid {holder.pid} on host "
                          f"{holder.hostname} since {human_time(holder.started_at)} ({holder.purpose})")

    # -- run locks ------------------------------------------------------------------------------
    def acquire_lock(self, tenant: str, purpose: str) -> RunLock:
        """Take the tenant's run lock or raise StateError naming the live holder."""
        self._require_tenant(tenant)
        name, nonce, now, pid = f"tenant:{tenant}", secrets.token_hex(8), self.now(), os.getpid()
        if self.postgres and not self._pg_try_lock(name):
            raise self._busy(tenant, name)
        try:
            with self._write() as db:
                row = db.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE name = ?", (name,)).fetchone()
                stale = None
                if row is not None:
                    holder = _info(row)
                    if not self.postgres and _alive(row):
                        raise StateError(f"tenant '{tenant}' is already being synced by pid {holder.pid} on host "
                                         f"{holder.hostname} since {human_time(holder.started_at)} ({holder.purpose})")
                    stale = holder
                    db.execute("DELETE FROM locks WHERE name = ?", (name,))
                interrupted = interrupt_dead_runs(db, tenant, now, all_dead=self.postgres)
                db.execute(f"INSERT INTO locks ({_LOCK_COLUMNS}, nonce) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (name, tenant, pid, HOSTNAME, now, purpose, process_start(pid), nonce))
        except BaseException:
            self._pg_unlock(name)
            raise
        lock = RunLock(self, LockInfo(name, tenant, pid, HOSTNAME, now, purpose), nonce, stale, interrupted)
        self._held.add(lock)
        return lock

    def lock_holder(self, tenant: str) -> LockInfo | None:
        """Who is syncing the tenant right now (None when free or the holder is dead)."""
        self._require_tenant(tenant)
        return self._live_row(f"tenant:{tenant}")

    def break_lock(self, tenant: str) -> LockInfo | None:
        """Operator override for a lock left by another host; returns what was removed."""
        self._require_tenant(tenant)
        with self._write() as db:
            row = db.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE name = ?", (f"tenant:{tenant}",)).fetchone()
            db.execute("DELETE FROM locks WHERE name = ?", (f"tenant:{tenant}",))
        return _info(row) if row else None

    def acquire_serve_lock(self) -> ServeLock:
        """Refuse a second ``serve`` on the same state file (flock: released by the kernel on any death)."""
        if self.postgres:
            return self._acquire_pg_serve_lock()
        side = Path(f"{self.path}.serve.lock")
        try:
            with tight_umask():
                fd = os.open(side, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot create {side}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            holder = self._live_row(SERVE, check=False)
            who = f" (pid {holder.pid} on host {holder.hostname} since {human_time(holder.started_at)})" if holder else ""
            raise StateError(f"casavi-sync serve is already running on {self.path}{who}") from exc
        return self._record_serve_lock(fd, release=lambda: os.close(fd))

    def _acquire_pg_serve_lock(self) -> ServeLock:
        """PostgreSQL: one ``serve`` per database, a session lock the server drops when serve dies."""
        if not self._pg_try_lock(SERVE):
            holder = self._live_row(SERVE, check=False)
            who = f" (pid {holder.pid} on host {holder.hostname} since {human_time(holder.started_at)})" if holder else ""
            raise StateError(f"casavi-sync serve is already running on {self.where}{who}")
        return self._record_serve_lock(None, release=lambda: self._pg_unlock(SERVE))

    def _record_serve_lock(self, fd: int | None, release: Callable[[], None]) -> ServeLock:
        """Both backends, once the lock itself is held: the row that ``status`` shows; ``release``
        gives the lock back if the row cannot be written."""
        nonce, now, pid = secrets.token_hex(8), self.now(), os.getpid()
        try:
            with self._write() as db:
                db.execute("DELETE FROM locks WHERE name = ?", (SERVE,))
                db.execute(f"INSERT INTO locks ({_LOCK_COLUMNS}, nonce) VALUES (?, NULL, ?, ?, ?, ?, ?, ?)",
                           (SERVE, pid, HOSTNAME, now, "serve", process_start(pid), nonce))
        except BaseException:
            release()
            raise
        lock = ServeLock(self, LockInfo(SERVE, None, pid, HOSTNAME, now, "serve"), nonce, fd)
        self._held.add(lock)
        return lock

    def _live_row(self, name: str, check: bool = True) -> LockInfo | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE name = ?", (name,)).fetchone()
        if row is None or (check and not self._row_alive(row)):
            return None
        return _info(row)

    def _release_all_locks(self) -> None:
        for lock in list(self._held):
            with contextlib.suppress(StateError):
                lock.release()
