"""The state store: what casavi-sync remembers between runs, in one SQLite file per deployment.

It holds the tenants (casavi customer accounts) with their casavi API key pairs and SCALARA
connections, what was last written to casavi for every record, the run history with its
per-record outcomes, the run locks, and the scheduler's bookkeeping. See docs/state.md.

    from engine.state import StateStore, default_state_path

    with StateStore.open(default_state_path()) as store:
        with store.acquire_lock("default", "manual"):
            run_id = store.begin_run("default", "manual")
            known = store.records("default")
            ...
            store.finish_run(run_id, "clean", counts, report_path=None)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from engine.state.locks import RunLock, ServeLock
from engine.state.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate
from engine.state.models import (
    DEFAULT_TENANT,
    INTERRUPTED,
    RECORD_STATUSES,
    RUN_OUTCOMES,
    RUN_TRIGGERS,
    CasaviCredentials,
    Connection,
    ConnectionSaveResult,
    LockInfo,
    Outcome,
    RecordState,
    RunInfo,
    Tenant,
    canonical_json,
    payload_hash,
)
from engine.state.store import StateStore

STATE_ENV = "CASAVI_SYNC_STATE"


def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$CASAVI_SYNC_STATE``, else ``$XDG_STATE_HOME/casavi-sync/state.db``, else ``~/.local/state/...``."""
    env = os.environ if environ is None else environ
    explicit = env.get(STATE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_STATE_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "casavi-sync" / "state.db"


__all__ = [
    "DEFAULT_TENANT",
    "INTERRUPTED",
    "LATEST_VERSION",
    "MIGRATIONS",
    "RECORD_STATUSES",
    "RUN_OUTCOMES",
    "RUN_TRIGGERS",
    "STATE_ENV",
    "CasaviCredentials",
    "Connection",
    "ConnectionSaveResult",
    "LockInfo",
    "Migration",
    "Outcome",
    "RecordState",
    "RunInfo",
    "RunLock",
    "ServeLock",
    "StateStore",
    "Tenant",
    "canonical_json",
    "default_state_path",
    "migrate",
    "payload_hash",
]
