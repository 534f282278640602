"""The web console's share of the state file: users, sessions, login throttling, the audit log.

Passwords arrive here already hashed (argon2id, engine/ops/users.py); session ids are stored as
their SHA-256, so a copy of the state file does not let anyone log in. The audit log is
append-only: who (``web:anna``, ``cli:root``, ``serve``), when, what, which tenant, and a short
detail that never holds a secret (fingerprints only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from engine.state.base import StoreBase, iso


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    role: str
    tenant: str | None
    password_hash: str
    created_at: str

    def __repr__(self) -> str:
        return f"ConsoleUser(name={self.name!r}, role={self.role!r}, tenant={self.tenant!r})"


@dataclass(frozen=True)
class ConsoleSession:
    user: ConsoleUser
    csrf: str
    expires_at: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    tenant: str | None
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action, "tenant": self.tenant,
                "detail": self.detail}


def _hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _user(row: tuple[Any, ...]) -> ConsoleUser:
    return ConsoleUser(row[0], row[1], row[2], row[3], row[4])


_USER_COLUMNS = "name, role, tenant, password_hash, created_at"


class ConsoleMixin(StoreBase):
    # -- users --------------------------------------------------------------------------------------
    def save_user(self, name: str, role: str, tenant: str | None, password_hash: str) -> ConsoleUser:
        """Create the user or replace its role, tenant and password (sessions of a changed user end)."""
        if tenant is not None:
            self._require_tenant(tenant)
        now = self.now()
        with self._write() as db:
            db.execute(f"INSERT INTO console_users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET role = excluded.role, tenant = excluded.tenant, "
                       "password_hash = excluded.password_hash", (name, role, tenant, password_hash, now))
            db.execute("DELETE FROM console_sessions WHERE user_name = ?", (name,))
        user = self.get_user(name)
        assert user is not None
        return user

    def get_user(self, name: str) -> ConsoleUser | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_USER_COLUMNS} FROM console_users WHERE name = ?", (name,)).fetchone()
        return _user(row) if row else None

    def list_users(self) -> list[ConsoleUser]:
        with self._read() as db:
            return [_user(r) for r in db.execute(f"SELECT {_USER_COLUMNS} FROM console_users ORDER BY name")]

    def delete_user(self, name: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM console_users WHERE name = ?", (name,)).rowcount > 0

    # -- sessions -----------------------------------------------------------------------------------
    def create_session(self, session_id: str, user: str, csrf: str, lifetime: dt.timedelta) -> None:
        now = self._clock()
        with self._write() as db:
            db.execute("DELETE FROM console_sessions WHERE expires_at < ?", (iso(now),))
            db.execute("INSERT INTO console_sessions (id_hash, user_name, csrf, created_at, expires_at) "
                       "VALUES (?, ?, ?, ?, ?)", (_hash_id(session_id), user, csrf, iso(now), iso(now + lifetime)))

    def get_session(self, session_id: str) -> ConsoleSession | None:
        with self._read() as db:
            row = db.execute(
                f"SELECT s.csrf, s.expires_at, {', '.join('u.' + c for c in _USER_COLUMNS.split(', '))} "
                "FROM console_sessions s JOIN console_users u ON u.name = s.user_name "
                "WHERE s.id_hash = ? AND s.expires_at > ?", (_hash_id(session_id), self.now())).fetchone()
        return ConsoleSession(_user(row[2:]), row[0], row[1]) if row else None

    def delete_session(self, session_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM console_sessions WHERE id_hash = ?", (_hash_id(session_id),))

    # -- login throttling ---------------------------------------------------------------------------
    def note_login_failure(self, *subjects: str) -> None:
        now = self.now()
        with self._write() as db:
            db.executemany("INSERT INTO console_login_failures (subject, at) VALUES (?, ?)",
                           [(s, now) for s in subjects])

    def login_failures(self, subject: str, window: dt.timedelta) -> int:
        since = iso(self._clock() - window)
        with self._read() as db:
            row = db.execute("SELECT count(*) FROM console_login_failures WHERE subject = ? AND at > ?",
                             (subject, since)).fetchone()
        return int(row[0])

    def clear_login_failures(self, subject: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM console_login_failures WHERE subject = ?", (subject,))

    # -- audit log ----------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, tenant: str | None = None, **detail: Any) -> None:
        with self._write() as db:
            db.execute("INSERT INTO audit_log (at, actor, action, tenant, detail) VALUES (?, ?, ?, ?, ?)",
                       (self.now(), actor, action, tenant, json.dumps(detail, ensure_ascii=False, default=str)))

    def audit_log(self, *, tenant: str | None = None, limit: int | None = 200) -> list[AuditEntry]:
        sql = "SELECT id, at, actor, action, tenant, detail FROM audit_log"
        params: list[Any] = []
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params.append(tenant)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._read() as db:
            rows = db.execute(sql, params).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in rows]
