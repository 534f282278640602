"""Opening the state file safely, and turning SQLite failures into one-line ``StateError``s.

Why so careful: the file holds API secrets and the only record of what was written to casavi.

- It is created 0600 by ``os.open`` before SQLite touches it (SQLite gives its ``-wal``/``-shm``
  side files the main file's mode; the umask is tightened while opening as a second belt).
- Before SQLite opens it, the 100-byte header is read by hand: a text file, random bytes, a
  truncated database or a file from a newer release is refused *without a single byte changed*.
  (A SQLite connection in WAL mode would otherwise rewrite the header.)
- After opening, ``application_id`` and ``user_version`` are checked again (a crash may have left
  newer pages in the WAL), and only then is WAL mode switched on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from engine.errors import StateError
from engine.state.migrations import APPLICATION_ID, LATEST_VERSION

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 10.0


def damaged(path: Path) -> StateError:
    return StateError(
        f"{path} is not a casavi-sync state file (or it is damaged); restore it from backup or point --state elsewhere"
    )


def newer(path: Path, version: int) -> StateError:
    return StateError(
        f"{path} was written by a newer casavi-sync (state schema v{version}, this release knows up to "
        f"v{LATEST_VERSION}); upgrade casavi-sync to use it"
    )


def state_error(exc: sqlite3.Error, path: Path) -> StateError:
    """Name the cause in words an operator can act on; SQLite messages never contain bound values."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return damaged(path)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StateError(
            f"{path} is busy: another process kept it locked for more than {BUSY_TIMEOUT_S:g} s; try again"
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN", "SQLITE_AUTH")):
        return StateError(f"cannot write {path}: permission denied or read-only file system")
    if name.startswith("SQLITE_FULL"):
        return StateError(f"cannot write {path}: the disk is full")
    if name.startswith("SQLITE_IOERR"):
        return StateError(f"cannot read or write {path}: I/O error ({name})")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StateError(f"state file {path}: {text}")


@contextlib.contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Database failures become ``StateError``; programming errors (closed store, bad SQL) stay loud."""
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError):
        raise
    except sqlite3.Error as exc:
        raise state_error(exc, path) from exc


@contextlib.contextmanager
def tight_umask() -> Iterator[None]:
    # umask is process-wide; it is held only for the few milliseconds of opening.
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _u32(header: bytes, offset: int) -> int:
    return int.from_bytes(header[offset:offset + 4], "big")


def check_header(path: Path, header: bytes, size: int) -> None:
    """Refuse what is plainly not ours, before SQLite may write anything."""
    if size == 0:
        return  # a brand-new (or empty) file: SQLite treats it as an empty database
    if size < 100 or not header.startswith(SQLITE_MAGIC):
        raise damaged(path)
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise damaged(path)
    app_id, version = _u32(header, 68), _u32(header, 60)
    if app_id not in (0, APPLICATION_ID):
        raise damaged(path)
    if app_id == APPLICATION_ID and version > LATEST_VERSION:
        raise newer(path, version)
    pages, change_counter, valid_for = _u32(header, 28), _u32(header, 24), _u32(header, 92)
    if pages and valid_for == change_counter and size < pages * page_size:
        raise damaged(path)  # truncated (a copy cut short, a full disk)


def prepare_file(path: Path) -> None:
    """Create the parent directories (0700) and the file (0600); inspect an existing header."""
    if path.is_dir():
        raise StateError(f"{path} is a directory; point --state at a file")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise StateError(f"cannot create or open {path}: {exc.strerror or exc}") from exc
    try:
        size = os.fstat(fd).st_size
        header = os.pread(fd, 100, 0) if size else b""
    finally:
        os.close(fd)
    check_header(path, header, size)


def check_identity(path: Path, db: sqlite3.Connection) -> None:
    app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    has_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version or has_tables)):
        raise damaged(path)  # somebody else's SQLite database: never adopt it
    if version > LATEST_VERSION:
        raise newer(path, version)


# POSIX advisory locks belong to the process, and closing *any* descriptor of a file drops all the
# locks the process holds on it (sqlite.org/howtocorrupt.html, 2.2). prepare_file's header check
# opens and closes the state file, so it runs only while no connection of this process has that
# file open: otherwise a second store opened by another thread (serve's parallel runs, a face
# opening a store next to a long-lived one) silently dropped the first one's locks, and another
# process could then checkpoint and delete the WAL under it - a damaged state file.
_REGISTRY_LOCK = threading.Lock()
_OPEN: dict[tuple[int, int], int] = {}          # (device, inode) -> open connections of this process
_KEYS: dict[int, tuple[int, int]] = {}          # id(connection) -> (device, inode)


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def close_connection(db: sqlite3.Connection) -> None:
    """Close a connection made by ``connect`` (and let a later open check the header again)."""
    with _REGISTRY_LOCK:
        db.close()
        key = _KEYS.pop(id(db), None)
        if key is not None:
            _OPEN[key] -= 1
            if not _OPEN[key]:
                del _OPEN[key]


def connect(path: Path) -> sqlite3.Connection:
    """Open, verify and configure; the caller runs migrations next (still under ``tight_umask``).
    Close it with ``close_connection``."""
    with _REGISTRY_LOCK:
        known = _inode(path)
        if known is None or not _OPEN.get(known):
            prepare_file(path)
        with translate_errors(path):
            db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        key = _inode(path)
        if key is not None:
            _OPEN[key] = _OPEN.get(key, 0) + 1
            _KEYS[id(db)] = key
    try:
        with translate_errors(path):
            check_identity(path, db)
            db.execute("PRAGMA foreign_keys = ON")
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode != "wal":
                raise StateError(f"{path}: this file system does not support SQLite WAL mode; use a local disk")
            # FULL: a commit is on disk when it returns (0.2 ms here); the write-ahead intent relies on it.
            db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        close_connection(db)
        raise
    return db


def tighten_mode(path: Path) -> None:
    """A state file copied in with a loose mode (0644 from a backup) is made private again."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):
            if candidate.stat().st_mode & 0o077:
                os.chmod(candidate, 0o600)


# --- who is holding a lock -------------------------------------------------------------------

HOSTNAME = socket.gethostname()


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a recycled pid is not mistaken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start: str | None) -> bool:
    """True when ``pid`` on this host is still the process that took the lock."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal test is all we have
    fields = stat[stat.rfind(")") + 2:].split()
    if fields and fields[0] in ("Z", "X"):
        return False  # a zombie holds nothing
    return start is None or len(fields) <= 19 or fields[19] == start
