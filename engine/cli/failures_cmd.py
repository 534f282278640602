"""`casavi-sync failures`, `ack` and `unack`: the records that keep failing, and what is known about them."""

from __future__ import annotations

import json
from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import OperatorContext, handle_errors, operator_options

# engine.ops.failures and engine.sync.report are imported inside the commands: every CLI start
# imports this module, and those pull in the interpreter and the state store (a quarter second).


@main.command()
@operator_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def failures(fmt: str, **kwargs: Any) -> None:
    """List a tenant's failing records: new, known (since which run, how often), acknowledged.

    A record casavi refused (400/422) is not sent again until its payload changes (or `run
    --retry-failed`); a conflict (409 ...) is retried on a backoff. Exit codes: 0, 3.
    """
    from engine.ops import failures as ops_failures
    from engine.sync.report import explain_command, failure_label, problem_line

    ctx = OperatorContext.from_kwargs(kwargs)
    docs = ops_failures.list_failures(ctx)
    if fmt == "json":
        click.echo(json.dumps({"tenant": ctx.tenant, "failures": docs}, indent=2, ensure_ascii=False))
        return
    if not docs:
        click.echo(f"tenant '{ctx.tenant}': no failing records")
        return
    for d in docs:
        extra = f"; next try after {d['nextRetryAt']}" if d.get("nextRetryAt") else ""
        click.echo(f"{failure_label(d)}: {problem_line(d)}{extra}")
        command = explain_command(d)
        if command:
            click.echo(f"  why: {command}")


@main.command()
@click.argument("kind", required=False)
@click.argument("record_id", metavar="ID", required=False)
@click.option("--note", help="Why this failure is acceptable for now (shown in reports and status).")
@click.option("--all", "all_", is_flag=True, help="Acknowledge every failure not acknowledged yet.")
@operator_options
@handle_errors
def ack(kind: str | None, record_id: str | None, note: str | None, all_: bool, **kwargs: Any) -> None:
    """Acknowledge a known failure (KIND and casavi reference id or SCALARA id), with a note.

    Acknowledged failures are still listed, but a run whose only failures are acknowledged ends
    clean (exit 0), so alerting fires on news. A failure that goes away and comes back, or fails
    for another reason, is new again. Exit codes: 0, 2 usage, 3 no such failure.
    """
    if all_ == bool(kind and record_id):
        raise click.UsageError("give KIND and ID of one failure, or --all")
    ctx = OperatorContext.from_kwargs(kwargs)
    from engine.ops import failures as ops_failures

    n = ops_failures.acknowledge(ctx, None if all_ else kind, record_id, note)
    ctx.console.info(f"{n} failure(s) acknowledged for tenant '{ctx.tenant}'")


@main.command()
@click.argument("kind")
@click.argument("record_id", metavar="ID")
@operator_options
@handle_errors
def unack(kind: str, record_id: str, **kwargs: Any) -> None:
    """Withdraw the acknowledgement of a failure (it makes runs partial again)."""
    ctx = OperatorContext.from_kwargs(kwargs)
    from engine.ops import failures as ops_failures

    n = ops_failures.unacknowledge(ctx, kind, record_id)
    ctx.console.info(f"{n} acknowledgement(s) withdrawn for tenant '{ctx.tenant}'")
