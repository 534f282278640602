"""Tenants (casavi customer accounts), their SCALARA connections and schedule bookkeeping.

One deployment serves many tenants; single-tenant users never name one, because a tenant called
"default" always exists (re-created empty if removed). Secrets are stored in the 0600 state file
and leave the store only through ``tenant_credentials`` and ``connection_token``: every object
returned here carries fingerprints ("…wxyz"), never a secret.

"Connected before" outlives a disconnect: ``save_connection`` reports ``first_save`` only for a
tenant that never had a connection, so reconnecting after ``delete_connection`` (or replacing a
revoked token) never triggers a second initial import.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from engine.errors import ConfigError, StateError
from engine.state.base import StoreBase
from engine.state.db import HOSTNAME, process_alive
from engine.state.models import (
    DEFAULT_TENANT,
    CasaviCredentials,
    Connection,
    ConnectionSaveResult,
    Tenant,
    fingerprint,
)

TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_TENANT_COLUMNS = "name, activated, activated_at, created_at, casavi_key"


def check_tenant_name(name: str) -> None:
    if not TENANT_NAME.match(name or ""):
        raise ConfigError(
            f"invalid tenant name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


class TenantsMixin(StoreBase):
    def _tenant(self, row: tuple[Any, ...]) -> Tenant:
        return Tenant(name=row[0], activated=bool(row[1]), activated_at=row[2], created_at=row[3],
                      casavi_key_fingerprint=fingerprint(self._unseal(row[4])))

    # -- tenants ------------------------------------------------------------------------------

    def ensure_default_tenant(self) -> None:
        with self._read() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name = ?", (DEFAULT_TENANT,)).fetchone():
                return
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?, ?)", (DEFAULT_TENANT, self.now()))

    def add_tenant(self, name: str, casavi_key: str, casavi_secret: str) -> Tenant:
        """Create the tenant, or replace the key pair of an existing one (a rotated secret)."""
        check_tenant_name(name)
        if not casavi_key or not casavi_secret:
            raise ConfigError(f"tenant '{name}': the casavi API key and secret must not be empty")
        with self._write() as db:
            db.execute(
                "INSERT INTO tenants (name, casavi_key, casavi_secret, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET casavi_key = excluded.casavi_key, "
                "casavi_secret = excluded.casavi_secret",
                (name, self._seal(casavi_key), self._seal(casavi_secret), self.now()),
            )
        self._forget_tenant_caches(name)
        tenant = self.get_tenant(name)
        assert tenant is not None
        return tenant

    def get_tenant(self, name: str) -> Tenant | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE name = ?", (name,)).fetchone()
        return self._tenant(row) if row else None

    def tenant(self, name: str) -> Tenant:
        """Like ``get_tenant``, but an unknown name is the operator's mistake (did-you-mean)."""
        found = self.get_tenant(name)
        if found is None:
            raise self._unknown_tenant(name)
        return found

    def list_tenants(self) -> list[Tenant]:
        with self._read() as db:
            return [self._tenant(row) for row in db.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY name")]

    def activate_tenant(self, name: str) -> Tenant:
        """Switch scheduled syncs on; ``activated_at`` keeps the first moment of the current activation."""
        self._set_activated(name, True)
        return self.tenant(name)

    def deactivate_tenant(self, name: str) -> Tenant:
        self._set_activated(name, False)
        return self.tenant(name)

    def _set_activated(self, name: str, on: bool) -> None:
        with self._write() as db:
            if on:
                cur = db.execute(
                    "UPDATE tenants SET activated = 1, activated_at = CASE WHEN activated = 1 "
                    "THEN activated_at ELSE ? END WHERE name = ?", (self.now(), name))
            else:
                cur = db.execute("UPDATE tenants SET activated = 0, activated_at = NULL WHERE name = ?", (name,))
            found = cur.rowcount > 0
        if not found:
            raise self._unknown_tenant(name)

    def remove_tenant(self, name: str) -> None:
        """Delete the tenant with its connection, record state and history.

        Refused while a live process holds the tenant's run lock. Removing "default" leaves an
        empty "default" behind.
        """
        self._require_tenant(name)
        with self._write() as db:
            row = db.execute("SELECT pid, hostname, proc_start FROM locks WHERE tenant = ?", (name,)).fetchone()
            if self.postgres:
                alive = row is not None and self._pg_lock_held(f"tenant:{name}")
            else:
                alive = row is not None and (row[1] != HOSTNAME or process_alive(int(row[0]), row[2]))
            if row and alive:
                raise StateError(f"tenant '{name}' is being synced by pid {row[0]} on host {row[1]}; "
                                 "stop that run before removing the tenant")
            db.execute("DELETE FROM tenants WHERE name = ?", (name,))
        self._forget_tenant_caches(name)
        if name == DEFAULT_TENANT:
            self.ensure_default_tenant()

    def tenant_credentials(self, name: str) -> CasaviCredentials:
        """The casavi key pair (unpacks as ``key, secret``); ConfigError if none is stored."""
        with self._read() as db:
            row = db.execute("SELECT casavi_key, casavi_secret FROM tenants WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise self._unknown_tenant(name)
        if not row[0] or not row[1]:
            raise ConfigError(f"tenant '{name}' has no casavi API key and secret stored yet")
        return CasaviCredentials(self._unseal(row[0]) or "", self._unseal(row[1]) or "")

    # -- connections --------------------------------------------------------------------------

    def save_connection(self, tenant: str, scalara_token: str, account_id: str | None) -> ConnectionSaveResult:
        """Store (or replace) the SCALARA token. ``first_save`` is True only for a never-connected tenant."""
        self._require_tenant(tenant)
        if not scalara_token:
            raise ConfigError(f"tenant '{tenant}': the SCALARA token must not be empty")
        now = self.now()
        with self._write() as db:
            first = db.execute("SELECT first_connected_at FROM tenants WHERE name = ?", (tenant,)).fetchone()
            first_save = first is not None and first[0] is None
            if first_save:
                db.execute("UPDATE tenants SET first_connected_at = ? WHERE name = ?", (now, tenant))
            before = db.execute("SELECT account_id FROM connections WHERE tenant = ?", (tenant,)).fetchone()
            if before is not None and before[0] != account_id:
                # another SCALARA account: the source snapshot is not its data; the next run reads fully
                db.execute("DELETE FROM source_cursors WHERE tenant = ?", (tenant,))
            db.execute(
                "INSERT INTO connections (tenant, scalara_token, account_id, connected_since, token_updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant) DO UPDATE SET "
                "scalara_token = excluded.scalara_token, account_id = excluded.account_id, "
                "token_updated_at = excluded.token_updated_at",
                (tenant, self._seal(scalara_token), account_id, now, now),
            )
        self._secrets.pop(tenant, None)
        return ConnectionSaveResult(first_save=first_save)

    def get_connection(self, tenant: str) -> Connection | None:
        with self._read() as db:
            row = db.execute(
                "SELECT c.tenant, c.connected_since, c.scalara_token, c.account_id, t.initial_import_at, "
                "t.initial_import_run, c.token_updated_at FROM connections c JOIN tenants t ON t.name = c.tenant "
                "WHERE c.tenant = ?", (tenant,)).fetchone()
        if row is None:
            return None
        return Connection(tenant=row[0], connected_since=row[1], token_fingerprint=fingerprint(self._unseal(row[2])) or "",
                          account_id=row[3], initial_import_at=row[4], initial_import_run=row[5],
                          token_updated_at=row[6])

    def connection_token(self, tenant: str) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT scalara_token FROM connections WHERE tenant = ?", (tenant,)).fetchone()
        return self._unseal(str(row[0])) if row else None

    def mark_initial_import(self, tenant: str, run_id: int) -> None:
        """The first full import finished (run ``run_id``); kept across disconnect and reconnect."""
        with self._write() as db:
            cur = db.execute("UPDATE tenants SET initial_import_at = ?, initial_import_run = ? WHERE name = ?",
                             (self.now(), run_id, tenant))
            found = cur.rowcount > 0
        if not found:
            raise self._unknown_tenant(tenant)

    def delete_connection(self, tenant: str) -> bool:
        """Disconnect: the token is deleted; record state and run history stay. True if one existed."""
        self._require_tenant(tenant)
        with self._write() as db:
            deleted = db.execute("DELETE FROM connections WHERE tenant = ?", (tenant,)).rowcount > 0
        self._secrets.pop(tenant, None)
        return deleted

    # -- schedule -----------------------------------------------------------------------------

    def scheduled_tenants(self) -> list[tuple[str, dt.date | None]]:
        """(name, last scheduled day) of every activated, connected tenant, in one query (the fleet's tick)."""
        with self._read() as db:
            rows = db.execute("SELECT t.name, t.last_scheduled_day FROM tenants t JOIN connections c "
                              "ON c.tenant = t.name WHERE t.activated = 1 ORDER BY t.name").fetchall()
        return [(str(r[0]), dt.date.fromisoformat(r[1]) if r[1] else None) for r in rows]

    def last_scheduled_day(self, tenant: str) -> dt.date | None:
        """The last day the scheduler started this tenant's daily run (so a restart does not repeat it)."""
        with self._read() as db:
            row = db.execute("SELECT last_scheduled_day FROM tenants WHERE name = ?", (tenant,)).fetchone()
        if row is None:
            raise self._unknown_tenant(tenant)
        return dt.date.fromisoformat(row[0]) if row[0] else None

    def set_last_scheduled_day(self, tenant: str, day: dt.date) -> None:
        with self._write() as db:
            found = db.execute("UPDATE tenants SET last_scheduled_day = ? WHERE name = ?",
                               (day.isoformat(), tenant)).rowcount > 0
        if not found:
            raise self._unknown_tenant(tenant)

