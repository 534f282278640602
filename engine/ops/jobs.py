"""Queueing runs for the worker fleet (engine/fleet): the job names and locks every face shares.

A face that starts a run on a fleet deployment (``connect``'s initial import, from the CLI or the
console) queues a job instead of running the sync in its own process, so the run obeys the same
per-tenant lock as every scheduled run and survives the face going away. The fleet's workers
execute the jobs (engine/fleet/jobs.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.errors import StateError
from engine.ops.context import Context

QUEUE = "casavi_sync"
TASK_RUN = "casavi_sync.run_tenant"


def defer_run(app: Any, tenant: str, trigger: str, day: dt.date | None = None, *,
              schedule_in_s: float | None = None) -> int | None:
    """Queue a run of ``tenant`` on an open procrastinate app; None when an equal one already waits.

    ``lock="tenant:<name>"``: no two jobs of a tenant run at once. ``queueing_lock``: at most one
    waiting job per tenant and purpose.
    """
    from procrastinate import exceptions

    options: dict[str, Any] = {"lock": f"tenant:{tenant}", "queueing_lock": f"{trigger}:{tenant}", "queue": QUEUE}
    if schedule_in_s:
        options["schedule_in"] = {"seconds": schedule_in_s}
    try:
        job_id: int = app.configure_task(TASK_RUN, **options).defer(
            tenant=tenant, trigger=trigger, day=day.isoformat() if day else None)
    except exceptions.AlreadyEnqueued:
        return None
    return job_id


def fleet_enabled(ctx: Context) -> bool:
    """A PostgreSQL state whose database holds the job tables (set up by ``state migrate``)."""
    from engine.state import is_postgres_url

    if not is_postgres_url(ctx.state_path):
        return False
    import psycopg

    from engine.state import pg

    try:
        with psycopg.connect(str(ctx.state_path), connect_timeout=pg.CONNECT_TIMEOUT_S) as conn:
            row = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
    except psycopg.Error as exc:
        raise pg.connect_error(exc, str(ctx.state_path)) from None
    return row is not None and row[0] is not None


def queue_run(ctx: Context, trigger: str) -> int | None:
    """Queue a run of ``ctx.tenant`` for the fleet; the job id, or None if one is already waiting."""
    import procrastinate

    from engine.state import pg

    url = str(ctx.state_path)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    try:
        with app.open():
            return defer_run(app, ctx.tenant, trigger)
    except procrastinate.exceptions.ConnectorException as exc:
        raise StateError(f"cannot queue the {trigger} run of tenant '{ctx.tenant}' in {pg.describe(url)}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
