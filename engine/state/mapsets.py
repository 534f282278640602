"""Mapping sets in the state: a tenant's own mapping folder, and the set each run mapped with.

A tenant without an assignment uses the deployment's mappings. The folder itself is not copied
into the state: consultants keep it in their git repository and the deployment checks it out;
the state remembers the path and a hash of the files' content, for history and for noticing
that a set changed between two runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.state.base import StoreBase


@dataclass(frozen=True)
class MappingSetRef:
    path: str
    content_hash: str
    origin: str = "tenant"        # tenant | --mappings | CASAVI_SYNC_MAPPINGS | shipped
    assigned_at: str | None = None
    run_id: int | None = None


class MappingSetsMixin(StoreBase):
    def set_tenant_mappings(self, tenant: str, path: str | None, content_hash: str | None = None) -> None:
        """Give the tenant its own mapping folder (path and hash); None: back to the deployment's."""
        self._require_tenant(tenant)
        with self._write() as db:
            if path is None:
                db.execute("DELETE FROM tenant_mappings WHERE tenant = ?", (tenant,))
                return
            db.execute("INSERT INTO tenant_mappings (tenant, path, content_hash, assigned_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (tenant) DO UPDATE SET path = excluded.path, "
                       "content_hash = excluded.content_hash, assigned_at = excluded.assigned_at",
                       (tenant, path, content_hash or "", self.now()))

    def tenant_mappings(self, tenant: str) -> MappingSetRef | None:
        self._require_tenant(tenant)
        with self._read() as db:
            row = db.execute("SELECT path, content_hash, assigned_at FROM tenant_mappings WHERE tenant = ?",
                             (tenant,)).fetchone()
        return None if row is None else MappingSetRef(row[0], row[1], "tenant", row[2])

    def set_run_mappings(self, run_id: int, ref: MappingSetRef) -> None:
        with self._write() as db:
            db.execute("INSERT INTO run_mappings (run_id, path, content_hash, origin) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (run_id) DO UPDATE SET path = excluded.path, "
                       "content_hash = excluded.content_hash, origin = excluded.origin",
                       (run_id, ref.path, ref.content_hash, ref.origin))

    def run_mappings(self, run_id: int) -> MappingSetRef | None:
        with self._read() as db:
            row = db.execute("SELECT path, content_hash, origin FROM run_mappings WHERE run_id = ?",
                             (run_id,)).fetchone()
        return None if row is None else MappingSetRef(row[0], row[1], row[2], run_id=run_id)

    def last_run_mappings(self, tenant: str) -> MappingSetRef | None:
        """The set of the tenant's newest finished run, if it recorded one."""
        self._require_tenant(tenant)
        with self._read() as db:
            row = db.execute(
                "SELECT m.path, m.content_hash, m.origin, r.id FROM runs r JOIN run_mappings m ON m.run_id = r.id "
                "WHERE r.tenant = ? AND r.outcome IS NOT NULL ORDER BY r.id DESC LIMIT 1",
                (tenant,)).fetchone()
        return None if row is None else MappingSetRef(row[0], row[1], row[2], run_id=row[3])
