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
from engine.state.pg import describe as describe_url
from engine.state.pg import is_url as is_postgres_url
from engine.state.store import StateStore

STATE_ENV = "CASAVI_SYNC_STATE"
REPORTS_ENV = "CASAVI_SYNC_REPORTS"


def local_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/casavi-sync``, else ``~/.local/state/casavi-sync`` (this machine's own files)."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_STATE_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "casavi-sync"


def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$CASAVI_SYNC_STATE``, else ``$XDG_STATE_HOME/casavi-sync/state.db``, else ``~/.local/state/...``."""
    env = os.environ if environ is None else environ
    explicit = env.get(STATE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return local_state_dir(env) / "state.db"


def state_location(value: str | Path | None, environ: Mapping[str, str] | None = None) -> Path | str:
    """``--state`` / ``$CASAVI_SYNC_STATE`` as given: a ``postgresql://`` URL stays a string, else a path."""
    env = os.environ if environ is None else environ
    text = str(value).strip() if value is not None else env.get(STATE_ENV, "").strip()
    if is_postgres_url(text):
        return text
    return Path(text).expanduser() if text else default_state_path(env)


def reports_dir(state: Path | str, environ: Mapping[str, str] | None = None) -> Path:
    """Where run reports go: ``$CASAVI_SYNC_REPORTS``, else beside the state file (or, for a
    PostgreSQL state, in this machine's state directory)."""
    env = os.environ if environ is None else environ
    explicit = env.get(REPORTS_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    if isinstance(state, Path):
        return state.parent / "reports"
    return local_state_dir(env) / "reports"


def describe_location(state: Path | str) -> str:
    """The state's location safe to show: a path, or the URL without its password."""
    return describe_url(state) if isinstance(state, str) and is_postgres_url(state) else str(state)


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
    "describe_location",
    "is_postgres_url",
    "local_state_dir",
    "migrate",
    "payload_hash",
    "reports_dir",
    "state_location",
]
