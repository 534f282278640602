"""Tenants and connections: `tenant add|activate|deactivate|list`, `connect`, `disconnect`.

The SCALARA token is never a visible command-line argument: it comes from a hidden prompt, from
standard input (``--token-stdin``) or from ``CASAVI_SYNC_SCALARA_TOKEN``. It is checked against
SCALARA before it is saved, stored in the state file (mode 0600) and shown only as a fingerprint.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import DEFAULT_TENANT, EXIT_ABORTED, OperatorContext, handle_errors, operator_options
from engine.errors import ConfigError
from engine.ops import connection
from engine.ops.connection import SCALARA_MENU
from engine.timefmt import human_time

TOKEN_ENV = "CASAVI_SYNC_SCALARA_TOKEN"
KEY_ENV, SECRET_ENV = "CASAVI_SYNC_CASAVI_KEY", "CASAVI_SYNC_CASAVI_SECRET"


def read_secret(*, what: str, env: str, from_stdin: bool, prompt: str, stdin_flag: str = "--token-stdin") -> str:
    """A secret from stdin, the environment or a hidden prompt; stripped; never echoed."""
    if from_stdin:
        value = sys.stdin.readline()
    elif os.environ.get(env) is not None:
        value = os.environ[env]
    elif sys.stdin.isatty():
        value = click.prompt(prompt, hide_input=True, default="", show_default=False)
    else:
        raise ConfigError(f"no {what} given: pipe it with {stdin_flag}, set {env}, or run in a terminal "
                          f"to be prompted")
    value = value.strip()
    if not value:
        raise ConfigError(f"the {what} is empty; paste it again (it is shown once in SCALARA; generate a new "
                          f"one if it is lost: {SCALARA_MENU})" if "token" in what else f"the {what} is empty")
    return value


@main.group()
def tenant() -> None:
    """casavi customer accounts served by this deployment."""


def _tenant_name(argument: str | None, ctx: OperatorContext) -> str:
    """NAME, or --tenant / CASAVI_SYNC_TENANT; both given and different is a usage error."""
    if argument and ctx.tenant not in (argument, DEFAULT_TENANT):
        raise click.UsageError(f"two tenant names given: '{argument}' and --tenant '{ctx.tenant}'")
    return argument or ctx.tenant


@tenant.command("add")
@click.argument("name", required=False)
@click.option("--key", help="casavi API key (Administration > API-Zugangsdaten); visible in `ps`: prefer the "
              f"prompt, --key-stdin or {KEY_ENV}.")
@click.option("--key-stdin", is_flag=True, help="Read the casavi API key from standard input (first line).")
@click.option("--secret-stdin", is_flag=True,
              help="Read the casavi API secret from standard input (the line after the key with --key-stdin).")
@operator_options
@handle_errors
def tenant_add(name: str | None, key: str | None, key_stdin: bool, secret_stdin: bool, **kwargs: Any) -> None:
    """Register a casavi customer account with its API key pair, checked with casavi before it is saved.

    Key and secret come from a hidden prompt, standard input (--key-stdin, --secret-stdin: one
    line each, key first) or CASAVI_SYNC_CASAVI_KEY / CASAVI_SYNC_CASAVI_SECRET. A pair casavi
    rejects is not saved (exit 3); when casavi cannot be reached the pair is saved with a warning.
    """
    ctx = OperatorContext.from_kwargs(kwargs)
    name = ctx.tenant = _tenant_name(name, ctx)
    if key and key_stdin:
        raise click.UsageError("give the key either with --key or with --key-stdin, not both")
    if key:
        ctx.console.warn(f"--key is visible to other users in the process list; prefer the prompt, --key-stdin "
                         f"or {KEY_ENV}")
    else:
        key = read_secret(what="casavi API key", env=KEY_ENV, from_stdin=key_stdin, prompt="casavi API key",
                          stdin_flag="--key-stdin")
    secret = read_secret(what="casavi API secret", env=SECRET_ENV, from_stdin=secret_stdin,
                         prompt="casavi API secret (input hidden)", stdin_flag="--secret-stdin")
    saved = connection.add_tenant(ctx, key, secret)
    if saved.warning:
        ctx.console.warn(saved.warning)
    t = saved.tenant
    ctx.console.info(f"tenant '{t.name}' saved (key {t.casavi_key_fingerprint}"
                     + (", accepted by casavi); " if saved.checked else "); ")
                     + ("activated" if t.activated else f"next: casavi-sync tenant activate {name}"))


def _set_activation(argument: str | None, kwargs: dict[str, Any], *, on: bool) -> None:
    ctx = OperatorContext.from_kwargs(kwargs)
    name = ctx.tenant = _tenant_name(argument, ctx)
    connection.set_activation(ctx, on=on)
    ctx.console.info(f"SCALARA interface {'activated' if on else 'deactivated'} for tenant '{name}'"
                     + (f"; next: casavi-sync connect --tenant {name}" if on else ""))


@tenant.command("activate")
@click.argument("name", required=False)
@operator_options
@handle_errors
def tenant_activate(name: str | None, **kwargs: Any) -> None:
    """Activate the SCALARA interface for a tenant (done by the casavi team)."""
    _set_activation(name, kwargs, on=True)


@tenant.command("deactivate")
@click.argument("name", required=False)
@operator_options
@handle_errors
def tenant_deactivate(name: str | None, **kwargs: Any) -> None:
    """Deactivate the SCALARA interface for a tenant (no more runs; state is kept)."""
    _set_activation(name, kwargs, on=False)


@tenant.command("list")
@operator_options
@handle_errors
def tenant_list(**kwargs: Any) -> None:
    """List tenants with activation and connection."""
    ctx = OperatorContext.from_kwargs(kwargs)
    with ctx.store() as store:
        for t in store.list_tenants():
            conn = store.get_connection(t.name)
            own = store.tenant_mappings(t.name)
            click.echo(f"{t.name:<20} {'activated' if t.activated else 'not activated':<14} "
                       + (f"connected since {human_time(conn.connected_since)} (token {conn.token_fingerprint})"
                          if conn else "not connected")
                       + (f"; mappings {own.path}" if own else ""))


@tenant.command("set")
@click.argument("name", required=False)
@click.option("--default-mappings", is_flag=True,
              help="Drop the tenant's own mappings: use the deployment's again.")
@operator_options
@handle_errors
def tenant_set(name: str | None, default_mappings: bool, **kwargs: Any) -> None:
    """Give a tenant its own mapping set: tenant set NAME --mappings DIR.

    DIR (a consultant's mapping project's mappings folder) is validated first; an invalid set is
    not assigned (exit 3). The tenant's runs, plans, explain and serve then use it; every run
    records the set's path and content hash. --default-mappings goes back to the deployment's
    mappings ($CASAVI_SYNC_MAPPINGS, else the shipped ones). Then `casavi-sync plan --tenant NAME`
    shows what the next run would rewrite.
    """
    from engine.ops.mappings import assign, short

    ctx = OperatorContext.from_kwargs(kwargs)
    name = ctx.tenant = _tenant_name(name, ctx)
    folder = ctx.mappings_path
    if default_mappings == (folder is not None):
        raise click.UsageError("give either --mappings DIR or --default-mappings (on the command line)")
    ref = assign(ctx, None if default_mappings else folder)
    after = f"; next: casavi-sync plan --tenant {name} --details shows what the next run would rewrite"
    if ref is None:
        ctx.console.info(f"tenant '{name}' uses the deployment's mappings again" + after)
    else:
        ctx.console.info(f"tenant '{name}' uses the mappings in {ref.path} (valid; content {short(ref.content_hash)})"
                         + after)


def announce_saved(ctx: OperatorContext, saved: connection.TokenSaved) -> None:
    # the account as `status` shows it (the state keeps its id), its name once beside it; both known
    # only from a configured account endpoint
    account = saved.account_id or saved.account_name
    if saved.account_id and saved.account_name and saved.account_name != saved.account_id:
        account = f"{saved.account_id} '{saved.account_name}'"
    ctx.console.info(f"token saved for tenant '{saved.tenant}' ("
                     + (f"SCALARA account {account}, " if account else "")
                     + f"token {saved.token_fingerprint or '?'})")


@main.command()
@operator_options
@click.option("--token-stdin", is_flag=True, help="Read the SCALARA token from standard input.")
@click.option("--no-initial-import", is_flag=True, help="Save only; do not start the initial import.")
@handle_errors
def connect(token_stdin: bool, no_initial_import: bool, **kwargs: Any) -> None:
    """Save the SCALARA token of a tenant; the first save runs the initial import at once.

    The token comes from a hidden prompt, standard input (--token-stdin) or CASAVI_SYNC_SCALARA_TOKEN.
    """
    from engine.cli.sync_cmd import report_outcome

    ctx = OperatorContext.from_kwargs(kwargs)
    with ctx.store() as store:
        connection.require_activated(store, ctx.tenant)  # before asking for a token that could not be used
    token = read_secret(what="SCALARA token", env=TOKEN_ENV, from_stdin=token_stdin,
                        prompt="SCALARA token (input hidden)")

    def on_saved(saved: connection.TokenSaved) -> None:
        announce_saved(ctx, saved)
        if saved.first_save and not no_initial_import:
            ctx.console.info("first connection: starting the initial import")

    try:
        done = connection.connect(ctx, token, initial_import=not no_initial_import, on_saved=on_saved,
                                  progress=ctx.console.progress)
    finally:
        ctx.console.finish()
    if done.run is not None:
        raise SystemExit(report_outcome(ctx, done.run))
    if done.queued:
        job = f" as job {done.queued_job}" if done.queued_job is not None else " (one was already waiting)"
        ctx.console.info(f"initial import of tenant '{ctx.tenant}' queued{job}; a casavi-sync worker runs it "
                         "(casavi-sync status shows when it is done)")
        return
    if not done.saved.first_save:
        ctx.console.info("token replaced; the next scheduled run uses it (no new initial import)")


@main.command()
@operator_options
@handle_errors
def disconnect(**kwargs: Any) -> None:
    """Remove the stored SCALARA token of a tenant (history and record state stay)."""
    ctx = OperatorContext.from_kwargs(kwargs)
    if not connection.disconnect(ctx):
        ctx.console.error(f"tenant '{ctx.tenant}' was not connected; nothing to remove")
        raise SystemExit(EXIT_ABORTED)
    ctx.console.info(f"SCALARA token removed for tenant '{ctx.tenant}'")
