"""The store's side of secrets at rest: sealing old plaintext, checking the key, rotating it.

Three kinds of cells hold secrets: ``tenants.casavi_key``, ``tenants.casavi_secret`` and
``connections.scalara_token``. ``StateStore.open`` seals any plaintext left by an older release
(in one transaction) and then checks that the configured key decrypts every stored secret, so a
process with the wrong key refuses to start with a message naming the key, instead of failing
later with "credentials rejected".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.secrets import PREFIX, SecretKeyError, key_id_of
from engine.state.base import StoreBase

# (table, key column, secret column, what it is for the operator)
SECRET_CELLS = (
    ("tenants", "name", "casavi_key", "casavi API key"),
    ("tenants", "name", "casavi_secret", "casavi API secret"),
    ("connections", "tenant", "scalara_token", "SCALARA token"),
)


@dataclass(frozen=True)
class Cell:
    table: str
    key_column: str
    column: str
    what: str
    tenant: str
    stored: str


@dataclass
class RotationResult:
    reencrypted: int = 0
    already_current: int = 0
    key_id: str | None = None
    forgotten: list[tuple[str, str]] = field(default_factory=list)  # (tenant, what)


class SecretsMixin(StoreBase):
    def _cells(self) -> list[Cell]:
        cells: list[Cell] = []
        with self._read() as db:
            for table, key_column, column, what in SECRET_CELLS:
                for tenant, stored in db.execute(
                        f"SELECT {key_column}, {column} FROM {table} WHERE {column} IS NOT NULL"):
                    if stored:
                        cells.append(Cell(table, key_column, column, what, str(tenant), str(stored)))
        return cells

    def seal_plaintext_secrets(self) -> int:
        """Encrypt secrets stored by a release before encryption; returns how many."""
        plain = [c for c in self._cells() if not c.stored.startswith(PREFIX)]
        if not plain:
            return 0
        with self._write() as db:
            for c in plain:
                db.execute(f"UPDATE {c.table} SET {c.column} = ? WHERE {c.key_column} = ? AND {c.column} = ?",
                           (self._box.seal(c.stored), c.tenant, c.stored))
        return len(plain)

    def _unreadable(self, cells: list[Cell]) -> list[Cell]:
        bad: list[Cell] = []
        for c in cells:
            try:
                self._box.unseal(c.stored)
            except SecretKeyError:
                bad.append(c)
        return bad

    def verify_secrets(self) -> None:
        """Raise ``SecretKeyError`` unless the configured key decrypts every stored secret."""
        cells = self._cells()
        if not cells:
            return
        have = set(self._box.key_ids())
        missing = [kid for c in cells if (kid := key_id_of(c.stored)) is not None and kid not in have]
        if missing:
            raise self._box.unknown_key_error(missing)
        bad = self._unreadable(cells)
        if bad:
            self._box.unseal(bad[0].stored)  # raises the one-line error naming the key

    def rotate_secrets(self, *, forget_unreadable: bool = False) -> RotationResult:
        """Re-encrypt every secret under the current (first) key, in one transaction.

        With ``forget_unreadable``, secrets no configured key decrypts are deleted (the tenant's
        key pair, or its SCALARA connection), so the operator can enter them again.
        """
        result = RotationResult(key_id=self._box.primary_id(create=True))
        cells = self._cells()
        bad = self._unreadable(cells)
        if bad and not forget_unreadable:
            self.verify_secrets()
        bad_ids = {id(c) for c in bad}
        with self._write() as db:
            for c in cells:
                if id(c) in bad_ids:
                    if c.table == "connections":
                        db.execute("DELETE FROM connections WHERE tenant = ?", (c.tenant,))
                    else:
                        db.execute(f"UPDATE tenants SET {c.column} = NULL WHERE name = ?", (c.tenant,))
                    result.forgotten.append((c.tenant, c.what))
                elif self._box.is_current(c.stored):
                    result.already_current += 1
                else:
                    fresh = self._box.seal(self._box.unseal(c.stored))
                    db.execute(f"UPDATE {c.table} SET {c.column} = ? WHERE {c.key_column} = ? AND {c.column} = ?",
                               (fresh, c.tenant, c.stored))
                    result.reencrypted += 1
        self._secrets.clear()
        return result

    def secret_key_ids(self) -> dict[str | None, int]:
        """How many stored secrets each key encrypted (None: plaintext from an older release)."""
        counts: dict[str | None, int] = {}
        for c in self._cells():
            kid = key_id_of(c.stored)
            counts[kid] = counts.get(kid, 0) + 1
        return counts
