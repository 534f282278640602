"""Run history: one row per sync run, plus the records it changed or failed on.

Unchanged records are only counted: a daily run over 50,000 records that changes ten of them
stores ten outcome rows, so years of history stay small. A run whose process died (crash,
SIGKILL, power loss) never gets ``finish_run``; it reads as "interrupted" as soon as its process
is known to be gone, and is recorded so when the next run takes over its stale lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from engine.state.base import StoreBase
from engine.state.db import HOSTNAME, process_alive, process_start
from engine.state.models import INTERRUPTED, RUN_OUTCOMES, RUN_TRIGGERS, RUNNING, Outcome, RunInfo
from engine.state.sql import Conn

_RUN_COLUMNS = ("id, tenant, trigger, started_at, finished_at, outcome, counts, report_path, error, pid, "
                "hostname, proc_start, tally")


def _alive(hostname: str | None, pid: int | None, start: str | None) -> bool:
    """Only this host's processes can be checked; another host's are presumed alive."""
    if hostname != HOSTNAME:
        return True
    return pid is not None and process_alive(pid, start)


def _run(row: tuple[Any, ...], tenant_locked: Callable[[str], bool] | None = None) -> RunInfo:
    """``tenant_locked`` (PostgreSQL): an unfinished run is running while its tenant's lock is held."""
    outcome = row[5]
    if outcome is None:
        alive = _alive(row[10], row[9], row[11])
        if tenant_locked is not None:  # another host's run is known to be alive only by its lock
            alive = tenant_locked(row[1]) or (row[10] == HOSTNAME and alive)
        outcome = RUNNING if alive else INTERRUPTED
    tally: dict[str, int] = json.loads(row[12] or "{}")
    counts: dict[str, Any] = json.loads(row[6]) if row[6] else dict(tally)
    return RunInfo(id=row[0], tenant=row[1], trigger=row[2], started_at=row[3], finished_at=row[4],
                   outcome=outcome, counts=counts, report_path=row[7], error=row[8], pid=row[9],
                   hostname=row[10], outcome_counts=tally)


def interrupt_dead_runs(db: Conn, tenant: str, now: str, all_dead: bool = False) -> list[int]:
    """Record as interrupted every unfinished run of ``tenant`` whose process on this host is gone.

    ``all_dead``: the caller holds the tenant's server-side lock (PostgreSQL), so no other
    process on any host can be running the tenant: every unfinished run is dead.
    """
    dead = [
        (run_id, pid)
        for run_id, pid, hostname, start in db.execute(
            "SELECT id, pid, hostname, proc_start FROM runs WHERE tenant = ? AND outcome IS NULL", (tenant,))
        if all_dead or not _alive(hostname, pid, start)
    ]
    for run_id, pid in dead:
        db.execute("UPDATE runs SET outcome = ?, finished_at = ?, error = COALESCE(error, ?) WHERE id = ?",
                   (INTERRUPTED, now, f"the run's process (pid {pid}) ended before the run finished", run_id))
    return [run_id for run_id, _ in dead]


class RunsMixin(StoreBase):
    def begin_run(self, tenant: str, trigger: str) -> int:
        """Open a run record; the sync calls this right after taking the tenant's lock."""
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"unknown run trigger {trigger!r}; expected one of {', '.join(RUN_TRIGGERS)}")
        self._require_tenant(tenant)
        pid = os.getpid()
        with self._write() as db:
            row = db.execute(
                "INSERT INTO runs (tenant, trigger, started_at, pid, hostname, proc_start) VALUES (?, ?, ?, ?, ?, ?) "
                "RETURNING id", (tenant, trigger, self.now(), pid, HOSTNAME, process_start(pid))).fetchone()
        return int(row[0])

    def finish_run(self, run_id: int, outcome: str, counts: dict[str, Any], report_path: str | None,
                   error: str | None = None) -> None:
        if outcome not in RUN_OUTCOMES:
            raise ValueError(f"unknown run outcome {outcome!r}; expected one of {', '.join(RUN_OUTCOMES)}")
        tenant = self._run_tenant(run_id)
        with self._write() as db:
            db.execute("UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, report_path = ?, error = ? "
                       "WHERE id = ?",
                       (self.now(), outcome, json.dumps(counts, sort_keys=True, default=str), report_path,
                        self._redact(tenant, error), run_id))

    def record_outcomes(self, run_id: int, rows: Iterable[Outcome]) -> int:
        """Store the run's changed and failed records; count every row by action. Returns rows stored."""
        tenant = self._run_tenant(run_id)
        tally: dict[str, int] = {}
        keep: list[Outcome] = []
        for row in rows:
            tally[row.action] = tally.get(row.action, 0) + 1
            if row.action != "unchanged":
                keep.append(row)
        with self._write() as db:
            seq0, old = db.execute("SELECT (SELECT COALESCE(max(seq), 0) FROM run_outcomes WHERE run_id = ?), tally "
                                   "FROM runs WHERE id = ?", (run_id, run_id)).fetchone()
            merged: dict[str, int] = json.loads(old or "{}")
            for action, n in tally.items():
                merged[action] = merged.get(action, 0) + n
            db.executemany(
                "INSERT INTO run_outcomes (run_id, seq, kind, ref_id, source_resource, source_id, action, status, "
                "error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, seq0 + i, o.kind, o.ref_id, o.source_resource, o.source_id, o.action, o.status,
                  self._redact(tenant, o.error)) for i, o in enumerate(keep, start=1)])
            db.execute("UPDATE runs SET tally = ? WHERE id = ?", (json.dumps(merged, sort_keys=True), run_id))
        return len(keep)

    def runs(self, tenant: str, limit: int = 20) -> list[RunInfo]:
        """The tenant's most recent runs, newest first."""
        self._require_tenant(tenant)
        with self._read() as db:
            rows = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                              (tenant, max(0, int(limit)))).fetchall()
        return [_run(row, self._tenant_locked_fn()) for row in rows]

    def get_run(self, run_id: int) -> RunInfo | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row, self._tenant_locked_fn()) if row else None

    def run_outcomes(self, run_id: int) -> list[Outcome]:
        with self._read() as db:
            rows = db.execute("SELECT kind, ref_id, source_resource, source_id, action, status, error "
                              "FROM run_outcomes WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [Outcome(*row) for row in rows]

    def prune_runs(self, tenant: str, keep: int) -> int:
        """Delete all but the newest ``keep`` finished runs of the tenant (with their outcomes)."""
        self._require_tenant(tenant)
        with self._write() as db:
            cur = db.execute(
                "DELETE FROM runs WHERE tenant = ? AND outcome IS NOT NULL AND id NOT IN "
                "(SELECT id FROM runs WHERE tenant = ? ORDER BY id DESC LIMIT ?)", (tenant, tenant, max(0, keep)))
            return int(cur.rowcount)

    def _run_tenant(self, run_id: int) -> str:
        with self._read() as db:
            row = db.execute("SELECT tenant FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise ValueError(f"unknown run id {run_id}")
        return str(row[0])
