"""What the faces show about tenants and runs: status rows, run documents, reports, mapping health.

Read-only views over the state store (and the run reports next to it), JSON-ready and free of
secrets (fingerprints only), so ``casavi-sync status`` and the console's tenant list agree.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.files import read_report
from engine.ops.context import Context
from engine.timefmt import machine_time, parse_stamp

ACTION_ORDER = ("create", "update", "restore", "archive", "unchanged", "error", "skipped")


def run_duration(run: Any) -> float | None:
    start, end = parse_stamp(run.started_at), parse_stamp(run.finished_at)
    return round((end - start).total_seconds(), 1) if start and end else None


def changes_text(counts: dict[str, int]) -> str:
    keys = [k for k in ACTION_ORDER if counts.get(k)] + sorted(k for k in counts if k not in ACTION_ORDER and counts[k])
    return ", ".join(f"{k} {counts[k]}" for k in keys) or "-"


def run_counts(run: Any) -> dict[str, int]:
    """What a run did, ``unchanged`` included: the changed and failed records it recorded one by one,
    plus the unchanged ones its report counted (they have no rows of their own)."""
    from engine.serve import total_counts

    counts = dict(run.outcome_counts or {})
    per_kind = run.counts if isinstance(run.counts, dict) else {}
    unchanged = total_counts({k: v for k, v in per_kind.items() if isinstance(v, dict)}).get("unchanged", 0)
    if unchanged:
        counts["unchanged"] = unchanged
    return counts


def run_doc(run: Any) -> dict[str, Any]:
    return {"runId": run.id, "tenant": run.tenant, "trigger": run.trigger, "startedAt": run.started_at,
            "finishedAt": run.finished_at, "durationS": run_duration(run), "outcome": run.outcome,
            "changes": run_counts(run), "error": run.error, "reportPath": run.report_path}


def tenant_status(store: Any, tenant: Any, schedule: Any, now: dt.datetime) -> dict[str, Any]:
    """Everything `status` shows about one tenant, as a JSON-ready dict (no secrets)."""
    name = tenant.name
    conn = store.get_connection(name)
    runs = store.runs(name, limit=1)
    holder = store.lock_holder(name)
    last_day = store.last_scheduled_day(name)
    doc: dict[str, Any] = {
        "tenant": name,
        "activated": tenant.activated,
        "activatedAt": tenant.activated_at,
        "casaviKey": tenant.casavi_key_fingerprint,
        "connection": None if conn is None else {
            "connectedSince": conn.connected_since, "tokenFingerprint": conn.token_fingerprint,
            "tokenUpdatedAt": conn.token_updated_at, "accountId": conn.account_id,
            "initialImportAt": conn.initial_import_at},
        "lastRun": run_doc(runs[0]) if runs else None,
        "lastScheduledDay": last_day.isoformat() if last_day else None,
        "nextRun": None,
        "nextRunDue": False,
        "notScheduled": None,
        "running": None if holder is None else {
            "pid": holder.pid, "host": holder.hostname, "since": holder.started_at, "purpose": holder.purpose},
        "failures": _failure_overview(store, name),
    }
    if not tenant.activated:
        doc["notScheduled"] = f"not activated (casavi-sync tenant activate {name})"
    elif conn is None:
        doc["notScheduled"] = f"not connected (casavi-sync connect --tenant {name})"
    else:
        when = schedule.next_run(name, last_day, now)
        doc["nextRun"] = machine_time(max(when, now))
        doc["nextRunDue"] = when <= now
    return doc


def load_report(ctx: Context, run_id: int) -> tuple[Any, dict[str, Any] | None]:
    """(RunInfo, its JSON report or None when the file is gone) of a run of ``ctx.tenant``."""
    with ctx.store() as store:
        run = store.get_run(run_id)
    if run is None or run.tenant != ctx.tenant:
        raise ConfigError(f"tenant '{ctx.tenant}' has no run {run_id}")
    return run, read_report(run.report_path) if run.report_path else None


def failed_records(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every failed record of a report, one shape: kind, casavi id, SCALARA resource and id, field, reason."""
    rows: list[dict[str, Any]] = []
    for e in report.get("mapErrors") or []:
        rows.append({"stage": "map", "kind": e.get("kind"), "id": e.get("targetId"), "resource": e.get("resource"),
                     "sourceId": e.get("sourceId"), "field": e.get("field") or e.get("path"),
                     "reason": e.get("reason")})
    for f in report.get("writeFailures") or []:
        err, src = f.get("error") or {}, f.get("source") or {}
        rows.append({"stage": "write", "kind": f.get("kind"), "id": f.get("id"), "resource": src.get("resource"),
                     "sourceId": src.get("id"), "field": err.get("field"), "reason": err.get("reason")})
    return rows


def mapping_health(ctx: Context) -> dict[str, Any]:
    """Which mapping set ctx.tenant uses (and why), whether it validates, and the last run's coverage."""
    from engine.ops.mappings import resolve
    from engine.validate import validate_paths

    with ctx.store() as store:
        resolved = resolve(ctx, store)
    where = resolved.path
    report = validate_paths([where])
    problems = [{"location": d.location(), "severity": d.severity, "message": d.message}
                for d in report.diagnostics]
    files = sorted(p.name for p in Path(where).glob("*.yaml")) if Path(where).is_dir() else [Path(where).name]
    coverage: dict[str, Any] = {}
    run_id = None
    with ctx.store() as store:
        for run in store.runs(ctx.tenant, limit=20):
            if run.report_path and run.outcome not in ("aborted", "running", "interrupted"):
                doc = read_report(run.report_path)
                if doc is None:
                    continue
                coverage, run_id = doc.get("coverage") or {}, run.id
                break
    return {"path": str(where), "origin": resolved.origin, "files": [f for f in files if not f.endswith(".test.yaml")],
            "valid": not any(p["severity"] == "error" for p in problems), "problems": problems,
            "coverage": coverage, "coverageRun": run_id}


def _failure_overview(store: Any, name: str) -> Any:
    # imported here: the CLI imports this module at every start, engine.ops.failures pulls in the
    # state store and the sync (a quarter second)
    from engine.ops.failures import failure_overview

    return failure_overview(store, name)
