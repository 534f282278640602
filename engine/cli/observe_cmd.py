"""Observability options shared by serve/run (metrics endpoint, alert webhook) and `casavi-sync notice`."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.cli.base import main
from engine.cli.context import (
    EXIT_OK,
    EXIT_USAGE,
    RUN_ID,
    OperatorContext,
    check_zone,
    handle_errors,
    operator_options,
)
from engine.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

SECRET_ENV = "CASAVI_SYNC_ALERT_SECRET"
HEALTH_PATHS = ("/healthz", "/livez", "/readyz")  # engine.observe.server answers these


def alert_options(func: F) -> F:
    """--alert-webhook and --alert-secret-file (the secret never on the command line)."""
    opts = [
        click.option("--alert-webhook", "alert_webhook", envvar="CASAVI_SYNC_ALERT_WEBHOOK", show_envvar=True,
                     metavar="URL", help="POST signed JSON alerts here (run aborted, new failures, guard held, "
                     f"recovered). The signing secret comes from ${SECRET_ENV} or --alert-secret-file."),
        click.option("--alert-secret-file", "alert_secret_file", envvar="CASAVI_SYNC_ALERT_SECRET_FILE",
                     show_envvar=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="File holding the webhook signing secret."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def metrics_options(func: F) -> F:
    opts = [
        click.option("--metrics-address", "metrics_address", envvar="CASAVI_SYNC_METRICS_ADDRESS",
                     show_envvar=True, metavar="HOST:PORT",
                     help="Serve Prometheus metrics and /healthz, /readyz here (e.g. 127.0.0.1:9464)."),
        click.option("--metrics-path", "metrics_path", envvar="CASAVI_SYNC_METRICS_PATH", show_envvar=True,
                     default="/metrics", show_default=True, help="Path of the metrics endpoint."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def observe_config(kwargs: dict[str, Any]) -> Any:
    """The ObserveConfig of the popped options (secret from the environment or its file)."""
    from engine.observe.wiring import ObserveConfig

    url = kwargs.pop("alert_webhook", None)
    secret_file = kwargs.pop("alert_secret_file", None)
    secret = None
    if url:
        if secret_file is not None:
            try:
                secret = secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the alert secret file {secret_file}: {exc.strerror}") from None
        else:
            secret = os.environ.get(SECRET_ENV, "").strip()
        if not secret:
            raise ConfigError(f"--alert-webhook needs a signing secret: set {SECRET_ENV} or --alert-secret-file")
    address = kwargs.pop("metrics_address", None)
    path = kwargs.pop("metrics_path", "/metrics") or "/metrics"
    if not path.startswith("/") or any(c in path for c in "?# \t"):
        raise ConfigError(f"--metrics-path must be a plain path starting with '/' (e.g. /metrics), not {path!r}")
    if path in HEALTH_PATHS:  # the metrics would hide the probe: a liveness check would always pass
        raise ConfigError(f"--metrics-path {path} is the health endpoint's path; choose another (e.g. /metrics)")
    return ObserveConfig(address or None, path, url or None, secret)


def store_opener(ctx: OperatorContext) -> Callable[[], AbstractContextManager[Any]]:
    def open_store() -> AbstractContextManager[Any]:
        return ctx.store()
    return open_store


def observability(ctx: OperatorContext, config: Any, schedule: Any = None, loop_tick_s: float | None = None) -> Any:
    """The process's Observability (engine.observe.wiring) over this deployment's store and checks."""
    from engine.observe.wiring import Observability

    return Observability(config, store_opener(ctx), schedule=schedule, checks=readiness_checks(ctx),
                         loop_tick_s=loop_tick_s)


def readiness_checks(ctx: OperatorContext) -> dict[str, Callable[[], None]]:
    def state() -> None:
        with ctx.store() as store:
            store.list_tenants()

    def secrets_key() -> None:
        with ctx.store() as store:
            store.verify_secrets()  # the configured key decrypts every stored token and key pair

    def mappings() -> None:
        ctx.mapping_set()

    def config() -> None:
        ctx.connector_config()

    return {"state store": state, "secrets key": secrets_key, "mappings": mappings, "connector config": config}


@main.command()
@operator_options
@click.option("--run", "run_id", type=RUN_ID, help="The notice of this run (default: the latest).")
@click.option("--format", "fmt", type=click.Choice(["text", "html", "json"]), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the notice to this file (owner-only) instead of standard output.")
@click.option("--timezone", "zone", default="Europe/Berlin", show_default=True, callback=check_zone,
              help="Zone of the date shown.")
@handle_errors
def notice(run_id: int | None, fmt: str, output: Path | None, zone: str, **kwargs: Any) -> None:
    """The customer's data-quality notice (German): what to fix in SCALARA, and where.

    One line per SCALARA record that could not be transferred because of its data, with the menu
    path in SCALARA; new items (not in the run before) are marked NEU. Exit 0.
    """
    from engine.observe.notice import render_html, render_text
    from engine.ops.notice import tenant_notice
    from engine.schedule import load_zone

    ctx = OperatorContext.from_kwargs(kwargs)
    tz: dt.tzinfo = load_zone(zone)
    if run_id is not None:
        with ctx.store() as store:
            store.tenant(ctx.tenant)
            asked = store.get_run(run_id)
        if asked is None or asked.tenant != ctx.tenant:  # as `report` says it: a usage error
            click.echo(f"error: tenant '{ctx.tenant}' has no run {run_id}; `casavi-sync history` lists the runs",
                       err=True)
            raise SystemExit(EXIT_USAGE)
    doc = tenant_notice(ctx, run_id)
    if fmt == "json":
        text = json.dumps(doc.as_dict(), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "html":
        text = render_html(doc, zone=tz)
    else:
        text = render_text(doc, zone=tz)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(output, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write the notice to {output}: {exc.strerror or exc}") from None
        ctx.console.info(f"notice written to {output} ({len(doc.items)} item(s), {doc.new_count} new)")
    raise SystemExit(EXIT_OK)
