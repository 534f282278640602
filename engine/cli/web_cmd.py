"""`casavi-sync web` (the console), `casavi-sync user add|list|remove`, `casavi-sync audit`.

``web --sandbox`` is the one-command tour: an embedded sandbox, a state file with two tenants,
three console users with fresh passwords, the sandbox's SCALARA token in a 0600 file, and the URL.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import EXIT_ABORTED, OperatorContext, handle_errors, operator_options
from engine.cli.observe_cmd import alert_options, metrics_options, observability, observe_config
from engine.cli.serve_cmd import schedule_from_kwargs, schedule_options
from engine.cli.status_cmd import _zone_option
from engine.ops import connection, users
from engine.ops.users import ROLES


@main.command()
@operator_options
@schedule_options
@click.option("--host", default="127.0.0.1", show_default=True, envvar="CASAVI_SYNC_WEB_HOST",
              help="Address to listen on (put a TLS-terminating reverse proxy in front for anything but loopback).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, envvar="CASAVI_SYNC_WEB_PORT")
@click.option("--trusted-user-header", metavar="HEADER", envvar="CASAVI_SYNC_WEB_USER_HEADER",
              help="Header a trusted reverse proxy sets to the logged-in console user (e.g. X-Remote-User).")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="IP",
              help="Address of that proxy (repeatable); the header from anyone else is ignored.")
@click.option("--sandbox", "with_sandbox", is_flag=True,
              help="Try it: an embedded sandbox, two tenants, three users with fresh passwords.")
@click.option("--properties", default=3, show_default=True, type=click.IntRange(1, 200),
              help="With --sandbox: size of the generated SCALARA data.")
@metrics_options
@alert_options
@handle_errors
def web(host: str, port: int, trusted_user_header: str | None, trusted_proxies: tuple[str, ...],
        with_sandbox: bool, properties: int, **kwargs: Any) -> None:
    """Serve the web console (tenants, Anbindungen > SCALARA, runs, plan, mappings, audit log)."""
    schedule = schedule_from_kwargs(kwargs)
    observe = observe_config(kwargs)
    state_given = kwargs.get("state_path") is not None
    ctx = OperatorContext.from_kwargs(kwargs)
    if with_sandbox:
        with tempfile.TemporaryDirectory(prefix="casavi-sync-web-") as tmp:
            from engine.sandbox import FaultConfig, Sandbox

            faults = FaultConfig(latency_ms=2)
            with Sandbox(properties=properties, seed=1, scalara_faults=faults, casavi_faults=faults) as sb:
                if not state_given:
                    ctx.state_path = Path(tmp) / "state.db"
                ctx.config_path = Path(tmp) / "connectors.yaml"
                ctx.config_path.write_text(
                    f"scalara:\n  base_url: {sb.scalara_url}\n  rate_limit: {{rate_per_s: 200, burst: 50}}\n"
                    f"casavi:\n  base_url: {sb.casavi_url}\n  rate_limit: {{rate_per_s: 400, burst: 50}}\n",
                    encoding="utf-8")
                ctx.env = {}
                logins = _sandbox_setup(ctx, sb, Path(tmp))
                _serve(ctx, schedule, host, port, trusted_user_header, trusted_proxies, logins, observe)
        return
    _serve(ctx, schedule, host, port, trusted_user_header, trusted_proxies, None, observe)


def _sandbox_setup(ctx: OperatorContext, sb: Any, tmp: Path) -> list[str]:
    ctx.actor = "web-sandbox-setup"
    for name in ("default", "hv-sued"):
        connection.add_tenant(ctx.for_tenant(name), sb.casavi_key, sb.casavi_secret)
    token_file = tmp / "scalara-token.txt"
    token_file.touch(mode=0o600)
    token_file.write_text(sb.generate_scalara_token() + "\n", encoding="utf-8")
    lines = [f"sandbox SCALARA token (what an admin copies from SCALARA): in {token_file}"]
    for name, role, tenant in (("team", "casavi-team", None), ("kunde", "customer-admin", "default"),
                               ("ops", "operator", None)):
        password = secrets.token_urlsafe(12)
        users.add_user(ctx, name, role, password, tenant)
        lines.append(f"login {name:<6} password {password}   ({role}{', tenant ' + tenant if tenant else ''})")
    return lines


def _serve(ctx: OperatorContext, schedule: Any, host: str, port: int, header: str | None,
           proxies: tuple[str, ...], logins: list[str] | None, observe: Any) -> None:
    import uvicorn

    from engine.web import Deployment, create_app

    if header and not proxies:
        raise click.UsageError("--trusted-user-header needs --trusted-proxy (the proxy's address)")
    # the state store first: a wrong secrets key or a broken state fails here, before any URL is shown
    lines = ["  " + line for line in logins or []]
    if not logins:
        with ctx.store() as store:
            if not store.list_users():
                lines.append("  no console users yet: casavi-sync user add NAME --role casavi-team")
    dep = Deployment(ctx, schedule, header, frozenset(proxies))
    app = create_app(dep)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            proxy_headers=True, forwarded_allow_ips=",".join(proxies) or "127.0.0.1")
    server = _announcing_server(config, ctx.state_display, lines)
    try:
        # the console's own runs (initial imports, "run now") feed the metrics and alerts too
        with observability(ctx, observe, schedule) as obs:
            if obs.url:
                lines.append(f"  {obs.endpoints()}")
            server.run()
    finally:
        dep.jobs.stop_all()


def _announcing_server(config: Any, state: str, lines: list[str]) -> Any:
    """uvicorn's server that prints the console's URL once it is bound (``--port 0``: the real port)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            bound = [s.getsockname() for srv in self.servers for s in (srv.sockets or ())]
            host, port = (bound[0][0], bound[0][1]) if bound else (self.config.host, self.config.port)
            shown = f"[{host}]" if ":" in str(host) else host
            click.echo(f"casavi-sync console: http://{shown}:{port}/  (state {state}; Ctrl-C stops)")
            for line in lines:
                click.echo(line)

    return Server(config)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (loopback) for --web."""
    host, _, port = value.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint="--web") from None
    if not 0 < number < 65536:
        raise click.BadParameter(f"port {number} is out of range", param_hint="--web")
    return (host.strip("[]") or "127.0.0.1"), number


def start_in_thread(ctx: OperatorContext, schedule: Any, host: str, port: int) -> Any:
    """The console on a background thread (``serve --web``); returns a function that stops it."""
    import threading

    import uvicorn

    from engine.web import Deployment, create_app

    dep = Deployment(ctx, schedule)
    server = uvicorn.Server(uvicorn.Config(create_app(dep), host=host, port=port, log_level="warning",
                                           access_log=False, proxy_headers=True))
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()

    def stop() -> None:
        dep.jobs.stop_all()
        server.should_exit = True
        thread.join(timeout=15)

    return stop


@main.group()
def user() -> None:
    """Console users and their roles."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@operator_options
@handle_errors
def user_add(name: str, role: str, password_stdin: bool, **kwargs: Any) -> None:
    """Create a console user (or set its role, tenant and password); the password by hidden prompt or stdin.

    --tenant limits the user to that tenant (required for customer-admin; without it the other
    roles see every tenant).
    """
    source = click.get_current_context().get_parameter_source("tenant")
    ctx = OperatorContext.from_kwargs(kwargs)
    user_tenant = ctx.tenant if source is not None and source.name != "DEFAULT" else None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        raise click.UsageError("no password given: pipe it with --password-stdin or run in a terminal")
    saved = users.add_user(ctx, name, role, password, user_tenant)
    ctx.console.info(f"console user '{saved.name}' saved ({saved.role}"
                     + (f", tenant {saved.tenant})" if saved.tenant else ")"))


@user.command("list")
@operator_options
@handle_errors
def user_list(**kwargs: Any) -> None:
    """List console users with role and tenant."""
    ctx = OperatorContext.from_kwargs(kwargs)
    with ctx.store() as store:
        for u in store.list_users():
            click.echo(f"{u.name:<24} {u.role:<15} {u.tenant or '(all tenants)'}")


@user.command("remove")
@click.argument("name")
@operator_options
@handle_errors
def user_remove(name: str, **kwargs: Any) -> None:
    """Remove a console user (their sessions end)."""
    ctx = OperatorContext.from_kwargs(kwargs)
    with ctx.store() as store:
        if not store.delete_user(name):
            click.echo(f"error: no console user '{name}'", err=True)
            raise SystemExit(EXIT_ABORTED)
        ctx.audit(store, "user.removed", None, user=name)
    ctx.console.info(f"console user '{name}' removed")


@main.command()
@operator_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the newest N entries.")
@click.option("--all-tenants", is_flag=True, help="Every tenant (default: only --tenant when given).")
@_zone_option
@handle_errors
def audit(fmt: str, limit: int | None, all_tenants: bool, zone: str, **kwargs: Any) -> None:
    """The audit log: who did what, when, on which tenant (newest first); export with --format json|csv."""
    source = click.get_current_context().get_parameter_source("tenant")
    ctx = OperatorContext.from_kwargs(kwargs)
    only = None if all_tenants or source is None or source.name == "DEFAULT" else ctx.tenant
    with ctx.store() as store:
        entries = [e.as_dict() for e in store.audit_log(tenant=only, limit=limit)]
    if fmt == "json":
        click.echo(json.dumps(entries, ensure_ascii=False, indent=2))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["id", "at", "actor", "action", "tenant", "detail"])
        for e in entries:
            writer.writerow([e["id"], e["at"], e["actor"], e["action"], e["tenant"] or "",
                             json.dumps(e["detail"], ensure_ascii=False)])
    else:  # for a person: local time with its zone, no empty values (json and csv keep everything)
        from engine.schedule import load_zone
        from engine.timefmt import human_time

        tz = load_zone(zone)
        for e in entries:
            detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if v is not None and v != "")
            click.echo(f"{human_time(e['at'], tz)}  {e['actor']:<16} {e['action']:<18} {e['tenant'] or '-':<14} "
                       f"{detail}".rstrip())
