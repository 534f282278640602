"""The customer's data-quality notice of a tenant: the CLI's `notice` and the console's page.

Picks the tenant's latest finished run that has a report (or the one asked for) and the finished
run before it (to mark new items), and builds the notice (engine.observe.notice).
"""

from __future__ import annotations

from typing import Any

from engine.errors import StateError
from engine.files import read_report
from engine.observe.notice import Notice, build_notice
from engine.ops.context import Context

EARLIER = 30  # older reports read for the details of failures carried over from run to run


def reports(ctx: Context, run_id: int | None = None) -> tuple[dict[str, Any], dict[str, Any] | None,
                                                              list[dict[str, Any]]]:
    """(the report, the report of the finished run before it or None, older reports newest first).

    With ``run_id``: exactly that run of this tenant (never an earlier one in its place).
    """
    with ctx.store() as store:
        store.tenant(ctx.tenant)  # an unknown tenant: ConfigError with did-you-mean
        asked = store.get_run(run_id) if run_id is not None else None
        finished = [r for r in store.runs(ctx.tenant, limit=200) if r.finished_at]
    if run_id is not None:
        if asked is None or asked.tenant != ctx.tenant:
            raise StateError(f"tenant '{ctx.tenant}' has no run {run_id}; see casavi-sync history")
        if not asked.finished_at:
            raise StateError(f"run {run_id} of tenant '{ctx.tenant}' has not finished yet")
        if not asked.report_path:
            raise StateError(f"run {run_id} of tenant '{ctx.tenant}' left no report (it was interrupted)")
        finished = [asked, *[r for r in finished if r.id < run_id]]
    with_report = [r for r in finished if r.report_path]
    if not with_report:
        raise StateError(f"tenant '{ctx.tenant}' has no finished run with a report yet; run a sync first")
    latest = with_report[0]
    report = read_report(latest.report_path)
    if report is None:
        raise StateError(f"the report of run {latest.id} ({latest.report_path}) cannot be read")
    before = [r for r in finished if r.id < latest.id]
    previous = None
    if before:
        previous = read_report(before[0].report_path) or {"runId": before[0].id, "outcome": before[0].outcome}
    earlier = [doc for r in before[1:EARLIER] if (doc := read_report(r.report_path)) is not None]
    return report, previous, earlier


def tenant_notice(ctx: Context, run_id: int | None = None, language: str = "de") -> Notice:
    report, previous, earlier = reports(ctx, run_id)
    return build_notice(report, previous, language, earlier)
