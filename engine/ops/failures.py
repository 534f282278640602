"""Known failures for the faces: list them, acknowledge one (with a note), ask for a retry.

The rules (what is held, what is new, when a run is clean) live in engine/sync/failures.py; this
is what an operator, the web console or alerting asks of them. Records are named by casavi kind
and either the casavi reference id or the SCALARA id, as reports and ``casavi-sync failures``
show them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.errors import ConfigError
from engine.ops.context import Context
from engine.state.failures import FailureRow, Key
from engine.sync.failures import ACKNOWLEDGED, KNOWN, NEW, entry


def state_of(row: FailureRow) -> str:
    """Outside a run: acknowledged, new (seen in one run so far), or known."""
    if row.acknowledged:
        return ACKNOWLEDGED
    return NEW if row.occurrences <= 1 else KNOWN


def failure_list(store: Any, tenant: str) -> list[dict[str, Any]]:
    """Every known failure of ``tenant`` as reports show them, new ones first."""
    rows = list(store.failures(tenant).values())
    order = {NEW: 0, KNOWN: 1, ACKNOWLEDGED: 2}
    docs = [entry(r, state_of(r)) for r in rows]
    return sorted(docs, key=lambda d: (order[d["state"]], d["sinceRun"] or 0, d["kind"], d["id"]))


def failure_counts(store: Any, tenant: str) -> dict[str, int]:
    counts = {NEW: 0, KNOWN: 0, ACKNOWLEDGED: 0}
    for row in store.failures(tenant).values():
        counts[state_of(row)] += 1
    return counts


def failure_overview(store: Any, tenant: str) -> dict[str, Any]:
    """Counts of new / known / acknowledged failures, and since when the oldest known one fails."""
    docs = failure_list(store, tenant)
    known = [d for d in docs if d["state"] == KNOWN]
    oldest = min(known, key=lambda d: d["sinceRun"] or 0) if known else None
    return {**failure_counts(store, tenant),
            "oldestKnown": None if oldest is None else {"sinceRun": oldest["sinceRun"], "sinceAt": oldest["sinceAt"],
                                                        "occurrences": oldest["occurrences"]}}


def list_failures(ctx: Context) -> list[dict[str, Any]]:
    with ctx.store() as store:
        store.tenant(ctx.tenant)
        return failure_list(store, ctx.tenant)


def _match(store: Any, tenant: str, kind: str | None, ident: str | None) -> list[Key]:
    rows = store.failures(tenant).values()
    if kind is None:
        return [r.key for r in rows]
    found = [r.key for r in rows if r.kind == kind and ident in (r.ref_id, r.source_id)]
    if not found:
        raise ConfigError(f"tenant '{tenant}' has no known failure of {kind} '{ident}'; `casavi-sync failures "
                          f"--tenant {tenant}` lists them (kind and casavi or SCALARA id)")
    return found


def acknowledge(ctx: Context, kind: str | None, ident: str | None, note: str | None) -> int:
    """Acknowledge one record's failure (``kind`` and casavi/SCALARA id), or every unacknowledged
    one (``kind`` None). Acknowledged failures are listed but no longer make a run partial."""
    with ctx.store() as store:
        store.tenant(ctx.tenant)
        keys = _match(store, ctx.tenant, kind, ident)
        if kind is None:
            keys = [k for k, r in store.failures(ctx.tenant).items() if not r.acknowledged]
        done = int(store.acknowledge_failures(ctx.tenant, keys, (note or "").strip()[:500] or None))
        if done and hasattr(store, "audit"):
            ctx.audit(store, "failure.acknowledged", ctx.tenant, kind=kind or "*", id=ident or "*", records=done)
        return done


def unacknowledge(ctx: Context, kind: str, ident: str) -> int:
    with ctx.store() as store:
        store.tenant(ctx.tenant)
        done = int(store.unacknowledge_failures(ctx.tenant, _match(store, ctx.tenant, kind, ident)))
        if done:
            ctx.audit(store, "failure.unacknowledged", ctx.tenant, kind=kind, id=ident, records=done)
        return done


def request_retry(ctx: Context, targets: Iterable[tuple[str, str]] | None = None) -> int:
    """Send these records (kind, id) again at the next run even if unchanged; all known when None."""
    with ctx.store() as store:
        store.tenant(ctx.tenant)
        if targets is None:
            keys = [k for k, r in store.failures(ctx.tenant).items() if r.stage == "write"]
        else:
            keys = [k for kind, ident in targets for k in _match(store, ctx.tenant, kind, ident)]
        done = int(store.request_retry(ctx.tenant, keys))
        if done:
            ctx.audit(store, "failure.retry_requested", ctx.tenant, records=done)
        return done
