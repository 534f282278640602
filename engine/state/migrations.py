"""Versioned schema migrations, counted in ``PRAGMA user_version``.

Why this shape: a state file outlives many releases of casavi-sync, and an operator must be able
to upgrade without thinking about it. Step N (1-based) brings a file from version N-1 to N. Each
step runs in its own ``BEGIN IMMEDIATE`` transaction together with the version bump, and re-reads
the version inside that transaction, so two processes opening an old file at the same moment
migrate it exactly once, and a crash mid-step leaves the file at the old version, intact.

Adding a change later means appending a step, never editing a shipped one::

    MIGRATIONS.append(Migration("runs: remember the mapping version", (
        "ALTER TABLE runs ADD COLUMN mapping_version TEXT",
    )))

``APPLICATION_ID`` marks the file as ours (``PRAGMA application_id``), so the store never adopts,
let alone migrates, somebody else's SQLite database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# "CSYN" in ASCII: casavi-sync state files carry it at byte offset 68 of the header.
APPLICATION_ID = 0x4353594E


@dataclass(frozen=True)
class Migration:
    """One step: its SQL statements, or a function for changes SQL alone cannot express."""

    description: str
    statements: tuple[str, ...] = ()
    function: Callable[[sqlite3.Connection], None] | None = None

    def apply(self, db: sqlite3.Connection) -> None:
        # Statement by statement: ``executescript`` would COMMIT the surrounding transaction.
        for statement in self.statements:
            db.execute(statement)
        if self.function is not None:
            self.function(db)


V1 = Migration(
    "tenants, connections, record state, run history, locks, schedule",
    (
        """CREATE TABLE tenants (
            name TEXT PRIMARY KEY,
            casavi_key TEXT,
            casavi_secret TEXT,
            activated INTEGER NOT NULL DEFAULT 0,
            activated_at TEXT,
            created_at TEXT NOT NULL,
            first_connected_at TEXT,
            initial_import_at TEXT,
            initial_import_run INTEGER,
            last_scheduled_day TEXT
        )""",
        """CREATE TABLE connections (
            tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
            scalara_token TEXT NOT NULL,
            account_id TEXT,
            connected_since TEXT NOT NULL,
            token_updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE records (
            tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            ref_id TEXT NOT NULL,
            payload_hash TEXT,
            payload TEXT,
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'written', 'failed', 'archived')),
            previous_status TEXT,
            source_resource TEXT,
            source_id TEXT,
            error TEXT,
            updated_run INTEGER,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (tenant, kind, ref_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
            trigger TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            outcome TEXT,
            counts TEXT,
            tally TEXT NOT NULL DEFAULT '{}',
            report_path TEXT,
            error TEXT,
            pid INTEGER,
            hostname TEXT,
            proc_start TEXT
        )""",
        "CREATE INDEX runs_by_tenant ON runs (tenant, id)",
        """CREATE TABLE run_outcomes (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            ref_id TEXT NOT NULL,
            source_resource TEXT,
            source_id TEXT,
            action TEXT NOT NULL,
            status TEXT,
            error TEXT,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE locks (
            name TEXT PRIMARY KEY,
            tenant TEXT REFERENCES tenants(name) ON DELETE CASCADE,
            pid INTEGER NOT NULL,
            hostname TEXT NOT NULL,
            proc_start TEXT,
            started_at TEXT NOT NULL,
            purpose TEXT NOT NULL,
            nonce TEXT NOT NULL
        )""",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
)

V2 = Migration(
    "source snapshot and extraction cursor (incremental reads of SCALARA)",
    (
        # The SCALARA records the last committed run mapped, exactly as SCALARA sent them: an
        # incremental run merges what changed into them and maps the same input a full read gives.
        """CREATE TABLE source_records (
            tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
            resource TEXT NOT NULL,
            id TEXT NOT NULL,
            stamp TEXT,
            body TEXT NOT NULL,
            PRIMARY KEY (tenant, resource, id)
        ) WITHOUT ROWID""",
        # One row per tenant: where the next incremental read starts (SCALARA's clock) and why a
        # full read may be due (our clock, mapping fingerprint, resources held, last run date).
        """CREATE TABLE source_cursors (
            tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
            cursor TEXT,
            full_read_at TEXT NOT NULL,
            mapping_hash TEXT NOT NULL,
            resources TEXT NOT NULL,
            mapped_date TEXT,
            settled INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        )""",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (V1, V2)
LATEST_VERSION = len(MIGRATIONS)


def user_version(db: sqlite3.Connection) -> int:
    row = db.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(db: sqlite3.Connection, steps: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring ``db`` (opened with ``isolation_level=None``) up to ``len(steps)``; return the versions applied.

    Idempotent: an up-to-date file costs one read. The caller has already refused files from a
    newer release; this function re-checks inside each transaction and simply stops there.
    """
    applied: list[int] = []
    for target, step in enumerate(steps, start=1):
        if user_version(db) >= target:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            if user_version(db) >= target:  # another process got here first
                db.execute("ROLLBACK")
                continue
            step.apply(db)
            db.execute(f"PRAGMA user_version = {int(target)}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        applied.append(target)
    return applied
