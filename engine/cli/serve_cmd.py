"""`casavi-sync serve`: the daily scheduler, as a long-running process (systemd, a container).

The schedule options are shared with `status` (which shows each tenant's next run), so both read
the same environment variables and always agree.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import click

from engine.cli.base import main
from engine.cli.context import (
    EXIT_OK,
    OperatorContext,
    check_zone,
    guard_options,
    handle_errors,
    operator_options,
)
from engine.cli.observe_cmd import alert_options, metrics_options, observability, observe_config
from engine.schedule import AT_ENV, JITTER_ENV, ZONE_ENV

F = TypeVar("F", bound=Callable[..., Any])



def schedule_options(func: F) -> F:
    """--at, --timezone, --jitter (with environment variables)."""
    opts = [
        click.option("--at", "schedule_at", default="04:00", show_default=True, envvar=AT_ENV, show_envvar=True,
                     metavar="HH:MM", help="Local time of the daily run."),
        click.option("--timezone", "schedule_zone", default="Europe/Berlin", show_default=True, envvar=ZONE_ENV,
                     show_envvar=True, callback=check_zone, help="IANA time zone of --at."),
        click.option("--jitter", "schedule_jitter", type=click.IntRange(0, 720), default=30, show_default=True,
                     envvar=JITTER_ENV, show_envvar=True, metavar="MINUTES",
                     help="Spread the tenants over this many minutes after --at (fixed per tenant)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def check_mapping_sets(ctx: OperatorContext, face: str) -> None:
    """Fail at start, not at 04:00: every tenant's mapping set must load (serve and worker).

    Tenants with a set of their own are named with the set's path and hash (event ``<face>.mappings``).
    """
    from engine.ops.mappings import check_all, short

    for tenant, ref in check_all(ctx).items():
        if ref.origin != "tenant":  # the deployment's set: nothing to tell per tenant
            continue
        ctx.console.info(f"tenant '{tenant}': mappings {ref.path} ({ref.origin}, {short(ref.content_hash)})",
                         event=f"{face}.mappings", tenant=tenant, path=ref.path, origin=ref.origin,
                         content_hash=ref.content_hash)


def schedule_from_kwargs(kwargs: dict[str, Any]) -> Any:
    from engine.schedule import Schedule

    return Schedule.from_strings(kwargs.pop("schedule_at"), kwargs.pop("schedule_zone"),
                                 kwargs.pop("schedule_jitter"))


@main.command()
@operator_options
@guard_options
@schedule_options
@metrics_options
@alert_options
@click.option("--parallel", type=click.IntRange(1, 32), default=2, show_default=True,
              envvar="CASAVI_SYNC_PARALLEL", show_envvar=True, help="Most tenants synced at the same time.")
@click.option("--web", "web_at", metavar="HOST:PORT", envvar="CASAVI_SYNC_WEB", show_envvar=True,
              help="Also serve the web console here (one process does both; see casavi-sync web).")
@click.option("--tick", "tick_s", type=click.FloatRange(0.05, 3600), default=30.0, hidden=True,
              help="Seconds between schedule checks.")
@handle_errors
def serve(parallel: int, tick_s: float, web_at: str | None, **kwargs: Any) -> None:
    """Run every activated and connected tenant once a day, until stopped (SIGTERM or Ctrl-C).

    Each tenant's run starts at --at plus a fixed per-tenant offset within --jitter. After
    downtime a missed day is caught up once, at start. A tenant being synced by a manual `run` is
    retried when that run is over. On SIGTERM or SIGINT no new run starts, running ones stop after
    their writes in flight (outcome "stopped"), and serve exits 0. --tenant is ignored: serve
    serves all tenants of the state file.

    Exit codes: 0 stopped by a signal, 3 could not start (no state file, another serve holds this
    state file, invalid mappings or connector config, unreadable state).
    """
    from engine.ops.runs import scheduled_runner
    from engine.serve import ServeOptions, Server

    schedule = schedule_from_kwargs(kwargs)
    observe = observe_config(kwargs)
    ctx = OperatorContext.from_kwargs(kwargs)
    # Fail at start, not at 04:00: the connector config and every tenant's mappings must load.
    ctx.connector_config()
    # As `status` and `run`: a mistyped --state is "no state file" (exit 3), not a new empty state
    # served with zero tenants forever.
    ctx.require_state()
    check_mapping_sets(ctx, "serve")
    server = Server(ctx.state_path, ServeOptions(schedule, parallel, tick_s), scheduled_runner(ctx), ctx.console)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.request_stop(signal.Signals(signum).name)

    stop_web = None
    if web_at:
        from engine.cli.web_cmd import parse_listen, start_in_thread

        host, port = parse_listen(web_at)
        stop_web = start_in_thread(ctx, schedule, host, port)
        ctx.console.info(f"console at http://{host}:{port}/", event="serve.web", url=f"http://{host}:{port}/")
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with observability(ctx, observe, schedule, loop_tick_s=tick_s) as obs, server:
            server.heartbeat = obs.health.tick
            if obs.url:
                ctx.console.info(obs.endpoints(), event="serve.metrics", url=obs.url)
            server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stop_web is not None:
            stop_web()
    raise SystemExit(EXIT_OK)
