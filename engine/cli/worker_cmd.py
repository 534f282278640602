"""`casavi-sync worker`: one member of the worker fleet (PostgreSQL state only).

Start as many as you like, on as many machines as you like, all with the same --state URL and the
same schedule options; they share the tenants through procrastinate's job queue (engine/fleet).
"""

from __future__ import annotations

from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import EXIT_OK, OperatorContext, guard_options, handle_errors, operator_options
from engine.cli.observe_cmd import alert_options, metrics_options, observability, observe_config
from engine.cli.serve_cmd import check_mapping_sets, schedule_from_kwargs, schedule_options


@main.command()
@operator_options
@guard_options
@schedule_options
@click.option("--concurrency", type=click.IntRange(1, 32), default=2, show_default=True,
              envvar="CASAVI_SYNC_PARALLEL", show_envvar=True, help="Most tenants this worker syncs at once.")
@click.option("--stall-timeout", "stall_timeout_s", type=click.FloatRange(2, 3600), default=120.0,
              show_default=True, envvar="CASAVI_SYNC_STALL_TIMEOUT", show_envvar=True, metavar="SECONDS",
              help="A worker silent this long is dead: its tenants go to another worker.")
@click.option("--heartbeat", "heartbeat_s", type=click.FloatRange(0.2, 600), default=10.0, show_default=True,
              hidden=True, help="Seconds between heartbeats (keep well below --stall-timeout).")
@click.option("--tick", "tick_s", type=click.FloatRange(1, 3600), default=30.0, show_default=True, hidden=True,
              help="Seconds between schedule checks (cluster-wide).")
@metrics_options
@alert_options
@handle_errors
def worker(concurrency: int, stall_timeout_s: float, heartbeat_s: float, tick_s: float, **kwargs: Any) -> None:
    """Run scheduled and queued tenant syncs from the shared job queue, until SIGTERM or Ctrl-C.

    Needs --state postgresql://... (after `casavi-sync state migrate`). Each tenant runs once per
    local day at its slot (--at, --timezone, --jitter: give every worker the same), never twice at
    once. A worker that dies mid-run is replaced: after --stall-timeout another worker finishes
    its runs. SIGTERM drains: no new job, running syncs stop after their writes in flight and are
    handed to another worker; exit 0. --tenant is ignored.

    Exit codes: 0 stopped by a signal, 3 could not start (SQLite state, schema not migrated,
    database unreachable, invalid mappings or connector config).
    """
    from engine.errors import ConfigError
    from engine.fleet.jobs import Runtime
    from engine.fleet.worker import run_worker, worker_name
    from engine.serve import LockedLog
    from engine.state import StateStore, is_postgres_url

    schedule = schedule_from_kwargs(kwargs)
    observe = observe_config(kwargs)
    ctx = OperatorContext.from_kwargs(kwargs)
    if not is_postgres_url(ctx.state_path):
        raise ConfigError("casavi-sync worker needs a PostgreSQL state (--state postgresql://...); a single "
                          "machine with a state file runs casavi-sync serve")
    if heartbeat_s * 2 > stall_timeout_s:
        raise click.BadParameter("keep the heartbeat below half of --stall-timeout", param_hint="--heartbeat")
    StateStore.open(ctx.state_path).close()  # refuses an unknown schema version, in one line
    ctx.connector_config()
    ctx.mapping_set()  # the deployment's set, even with no tenant yet
    check_mapping_sets(ctx, "worker")  # and every tenant's own set, as serve checks
    rt = Runtime(ctx=ctx, schedule=schedule, log=LockedLog(ctx.console), worker_name=worker_name(),
                 stall_timeout_s=stall_timeout_s)
    with observability(ctx, observe, schedule, loop_tick_s=heartbeat_s) as obs:
        if obs.url:
            ctx.console.info(obs.endpoints(), event="worker.metrics", url=obs.url)
        run_worker(str(ctx.state_path), rt, concurrency=concurrency, tick_s=tick_s, heartbeat_s=heartbeat_s,
                   pulse=obs.health.tick)
    raise SystemExit(EXIT_OK)
