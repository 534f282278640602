"""PostgreSQL as the state backend: URLs, the connection pool, one-line errors, advisory locks.

Why PostgreSQL at all: SQLite is one file on one machine. A fleet of workers on several machines
(engine/fleet) shares one PostgreSQL database instead; everything else (the SQL, the behaviour,
the reports) stays the same. See docs/state.md and docs/fleet.md.

- **Pool.** One ``psycopg_pool.ConnectionPool`` per URL and process. A ``StateStore`` borrows a
  connection for its lifetime (as it holds its SQLite connection) and gives it back at close; the
  pool's reset drops any session lock the store might have left.
- **Errors.** Whatever goes wrong is one line naming the host and the database, never the
  password (``describe`` strips it from every text shown).
- **Locks.** A tenant's run lock is a *session* advisory lock on the store's connection. The
  server releases it the moment that connection ends, which happens when the holding process dies
  on any machine (SIGKILL included: the kernel closes the socket). So liveness is the server's
  knowledge, not a pid check that only works on one host.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.errors import StateError
from engine.state.sql import LOCK_SPACE, PgConn

SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_S = 10
POOL_MAX = 40  # opened on demand; a worker with --concurrency 32 holds one per running sync

# The pool's background threads log reconnect attempts; the store reports failures itself, in one
# line, so those log records must not reach stderr through logging's last-resort handler.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
logging.getLogger("psycopg.pool").propagate = False

_pools: dict[str, Any] = {}
_pools_lock = threading.Lock()


def is_url(location: object) -> bool:
    return isinstance(location, str) and location.strip().lower().startswith(SCHEMES)


def describe(url: str) -> str:
    """The URL without its password (``postgresql://user@host:5432/db``): safe to show and log."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{hostport}" if user else hostport
        query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "postgresql://(unreadable URL)"


def _host_and_db(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost (socket)"
        port = f":{parts.port}" if parts.port else ""
        db = parts.path.lstrip("/") or "(default)"
    except ValueError:
        return "an unreadable PostgreSQL URL"
    return f"database '{db}' on host {host}{port}"


def _scrub(text: str, url: str) -> str:
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text


def _first_line(exc: BaseException, url: str) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # libpq puts the cause last ("... failed: FATAL:  password authentication failed for user x")
    text = lines[-1] if lines else type(exc).__name__
    for cut in ("FATAL:", "ERROR:"):
        if cut in text:
            text = text.split(cut, 1)[1].strip()
    return _scrub(" ".join(text.split()), url)


def connect_error(exc: BaseException, url: str) -> StateError:
    return StateError(f"cannot connect to PostgreSQL {_host_and_db(url)}: {_first_line(exc, url)}")


def state_error(exc: BaseException, url: str) -> StateError:
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return StateError(f"lost the connection to PostgreSQL {_host_and_db(url)}: {_first_line(exc, url)}")
    return StateError(f"PostgreSQL {_host_and_db(url)}: {_first_line(exc, url)}")


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Server and connection failures become ``StateError``; programming errors stay loud."""
    import psycopg

    try:
        yield
    except (psycopg.ProgrammingError, psycopg.IntegrityError, psycopg.InterfaceError):
        raise
    except psycopg.Error as exc:
        raise state_error(exc, url) from exc


def _reset(conn: Any) -> None:
    conn.execute("SELECT pg_advisory_unlock_all()")


def _configure(conn: Any) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


def pool_for(url: str) -> Any:
    """The process's pool for ``url``; the first call proves the URL with one direct connection."""
    import psycopg
    from psycopg_pool import ConnectionPool

    with _pools_lock:
        pool = _pools.get(url)
        if pool is not None:
            return pool
        try:  # the pool would only say "timed out"; a direct attempt names the cause
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.Error as exc:
            raise connect_error(exc, url) from None
        pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX, open=True, timeout=30.0, name="casavi-sync",
                              kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                              configure=_configure, reset=_reset, check=ConnectionPool.check_connection)
        _pools[url] = pool
        return pool


def borrow(url: str) -> PgConn:
    import psycopg_pool

    pool = pool_for(url)
    try:
        raw = pool.getconn()
    except psycopg_pool.PoolTimeout as exc:
        raise StateError(f"cannot connect to PostgreSQL {_host_and_db(url)}: no connection within "
                         f"{pool.timeout:g} s (server down or all {pool.max_size} connections busy)") from exc
    return PgConn(raw)


def give_back(url: str, conn: PgConn) -> None:
    pool = _pools.get(url)
    if pool is None:
        conn.close()
        return
    with contextlib.suppress(Exception):
        pool.putconn(conn.raw)


@atexit.register
def close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        with contextlib.suppress(Exception):
            pool.close(timeout=1.0)


# --- advisory locks ----------------------------------------------------------------------------

def lock_key(name: str) -> int:
    """A stable positive int4 for a lock name ("tenant:acme", "serve")."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def try_lock(conn: PgConn, name: str) -> bool:
    row = conn.raw.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, lock_key(name))).fetchone()
    return bool(row[0])


def unlock(conn: PgConn, name: str) -> None:
    conn.raw.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, lock_key(name)))


def lock_held(conn: PgConn, name: str) -> bool:
    """Does any session (this one included) hold the lock ``name`` in this database?"""
    row = conn.raw.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 "
        "AND l.granted AND d.datname = current_database())", (LOCK_SPACE, lock_key(name))).fetchone()
    return bool(row[0])
