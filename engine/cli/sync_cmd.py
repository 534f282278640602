"""`casavi-sync plan` and `casavi-sync run`: the dry run and the real thing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import (
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_RECORDS,
    OperatorContext,
    guard_options,
    handle_errors,
    operator_options,
    parse_date_option,
)
from engine.cli.observe_cmd import alert_options
from engine.ops import runs


@main.command()
@operator_options
@click.option("--details", is_flag=True, help="Show the field-level diff of every record.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--reconcile", is_flag=True, help="Compare with casavi's current records, not only the state.")
@click.option("--date", "run_date", metavar="YYYY-MM-DD", help="Pretend today is this date (for today()/active()).")
@click.option("--full", is_flag=True, help="Read all of SCALARA, not only what changed since the last run.")
@click.option("--strict", is_flag=True, help="Exit 1 when any record cannot be mapped (for CI).")
@click.option("--fail-on-unmapped-codes", is_flag=True,
              help="Exit 1 when SCALARA sent codes that a value map does not list (for CI).")
@handle_errors
def plan(details: bool, fmt: str, reconcile: bool, run_date: str | None, full: bool, strict: bool,
         fail_on_unmapped_codes: bool, **kwargs: Any) -> None:
    """Show what a run would do, writing nothing anywhere.

    Exit codes: 0 casavi is up to date, 4 changes are pending, 1 (only with --strict) some records
    cannot be mapped, 3 aborted (auth, network, config).
    """
    from engine.coverage import unmapped_codes
    from engine.ops import mappings
    from engine.sync.plan import update_lines
    from engine.sync.report import plan_document, plan_summary

    ctx = OperatorContext.from_kwargs(kwargs)
    try:
        prepared = runs.plan(ctx, reconcile=reconcile, run_date=parse_date_option(run_date),
                             progress=ctx.console.progress, full=full)
    finally:
        ctx.console.finish()
    change = mappings.since_last_run(ctx)
    updates = mappings.rewrites(prepared.plan.actions)
    if fmt == "json":
        doc = plan_document(prepared, details=details)
        doc["mappings"] = {"path": change.current.path, "contentHash": change.current.content_hash,
                           "origin": change.current.origin, "changedSinceLastRun": change.changed,
                           "lastRun": None if change.previous is None else
                           {"runId": change.previous.run_id, "path": change.previous.path,
                            "contentHash": change.previous.content_hash},
                           "updatesByKind": updates}
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        for line in plan_summary(prepared):
            click.echo(line)
        note = mappings.describe_change(change, updates)
        if note:
            click.echo(note)
        if details:
            for a in prepared.plan.actions:
                click.echo(f"{a.action} {a.kind} {a.ref_id}  ({a.reason}; SCALARA {a.source_resource} {a.source_id})")
                for line in update_lines(a) if a.action in ("update", "restore") else []:
                    click.echo(f"    {line}")
    if strict and prepared.plan.errors:
        raise SystemExit(EXIT_RECORDS)
    if fail_on_unmapped_codes and unmapped_codes(prepared.coverage):
        click.echo("error: SCALARA sent codes that no value map lists (see coverage above); add them to the "
                   "mappings", err=True)
        raise SystemExit(EXIT_RECORDS)
    raise SystemExit(EXIT_PENDING if prepared.plan.pending_changes else EXIT_OK)


@main.command()
@operator_options
@click.option("--allow-archive", is_flag=True, help="Archive even when the mass-archive guard would refuse.")
@guard_options
@click.option("--reconcile", is_flag=True, help="Read casavi's records and correct those that differ.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: print the run report.")
@click.option("--date", "run_date", metavar="YYYY-MM-DD", help="Pretend today is this date (for today()/active()).")
@click.option("--full", is_flag=True, help="Read all of SCALARA, not only what changed since the last run.")
@click.option("--write-order", type=click.Choice(["property", "kind"]), default="property", show_default=True,
              help="property: each property complete (units, contacts, contracts, ...) before the next; "
                   "kind: all properties, then all contacts, ... (the older order, for comparison).")
@alert_options
@click.option("--retry-failed", is_flag=True,
              help="Send again the records casavi refused before, even if unchanged (normally held back).")
@click.option("--retry-record", "retry_records", multiple=True, metavar="KIND/ID",
              help="The same for one record (casavi reference id or SCALARA id); repeatable.")
@handle_errors
def run(allow_archive: bool, reconcile: bool, fmt: str, run_date: str | None, full: bool, write_order: str,
        retry_failed: bool, retry_records: tuple[str, ...], **kwargs: Any) -> None:
    """Make casavi equal to what the mappings produce from SCALARA.

    A record casavi refused (400/422) is not sent again until its payload changes (--retry-failed
    or --retry-record to send it anyway); conflicts (409 ...) are retried on a backoff. Exit codes:
    0 clean (failures all acknowledged, see `casavi-sync ack`), 1 some records failed or the
    mass-archive guard held archives back, 3 aborted (auth, network, config, state).
    """
    from engine.cli.observe_cmd import observe_config, store_opener
    from engine.observe.wiring import Observability

    observe = observe_config(kwargs)
    ctx = OperatorContext.from_kwargs(kwargs)
    targets = [_record_target(t) for t in retry_records]
    if retry_failed or targets:
        from engine.ops.failures import request_retry

        request_retry(ctx, None if retry_failed else targets)
    with Observability(observe, store_opener(ctx)):  # alerts of this run, when a webhook is configured
        code = run_tenant(ctx, allow_archive=allow_archive, reconcile=reconcile, run_date=parse_date_option(run_date),
                          trigger="reconcile" if reconcile else "manual", fmt=fmt, full=full,
                          write_order=write_order)
    raise SystemExit(code)


def _record_target(text: str) -> tuple[str, str]:
    kind, sep, ident = text.partition("/")
    if not sep or not kind or not ident:
        raise click.BadParameter(f"{text!r} is not KIND/ID (e.g. units/u-4711)", param_hint="--retry-record")
    return kind, ident


def run_tenant(ctx: OperatorContext, *, allow_archive: bool = False, reconcile: bool = False,
               run_date: dt.date | None = None, trigger: str = "manual", fmt: str = "text",
               should_stop: Any = None, full: bool = False, write_order: str = "property") -> int:
    """One run for ``ctx.tenant``; prints the summary and returns the exit code."""
    outcome = sync_tenant(ctx, allow_archive=allow_archive, reconcile=reconcile, run_date=run_date,
                          trigger=trigger, should_stop=should_stop, full=full, write_order=write_order)
    return report_outcome(ctx, outcome, fmt)


def report_outcome(ctx: OperatorContext, outcome: Any, fmt: str = "text") -> int:
    """Print a run's summary (or its JSON report) and return the exit code."""
    from engine.sync.report import run_summary

    if fmt == "json":
        click.echo(json.dumps(outcome.report, indent=2, ensure_ascii=False, default=str))
    elif ctx.console.log_format == "json":  # structured logs: the summary is one more event, as serve logs it
        from engine.serve import total_counts

        r = outcome.report
        fields = {"event": "run.end", "tenant": r["tenant"], "outcome": r["outcome"], "run_id": r["runId"],
                  "trigger": r["trigger"], "counts": total_counts(r["counts"]), "duration_s": r["durationS"],
                  "failures": len(r["mapErrors"]) + len(r["writeFailures"]), "report": str(outcome.report_path)}
        fails = (r.get("failureStates") or {}).get("counts")
        if fails:  # alerting keys on news: failures_new
            fields.update({f"failures_{k}": v for k, v in fails.items()})
        props = r.get("properties") or {}
        if props.get("total"):
            fields["properties"] = {k: props.get(k) for k in ("complete", "total", "firstCompleteS",
                                                              "medianCompleteS", "p90CompleteS")}
        text = "\n".join(run_summary(r)[:1])
        if r["outcome"] == "clean":
            ctx.console.info(text, **fields)
        else:  # a warning, so that --quiet still shows it
            ctx.console.warn(text, **fields, error=r["error"])
    else:
        for line in run_summary(outcome.report):
            click.echo(line)
        if outcome.report_path:
            click.echo(f"report: {outcome.report_path}")
    if outcome.outcome == "aborted":
        return EXIT_ABORTED
    return EXIT_OK if outcome.outcome == "clean" else EXIT_RECORDS


def sync_tenant(ctx: OperatorContext, *, allow_archive: bool = False, reconcile: bool = False,
                run_date: dt.date | None = None, trigger: str = "manual", should_stop: Any = None,
                full: bool = False, write_order: str = "property") -> Any:
    """One run for ``ctx.tenant``, printing nothing but progress; returns the session's RunOutcome."""
    try:
        return runs.start_run(ctx, trigger=trigger, allow_archive=allow_archive, reconcile=reconcile,
                              run_date=run_date, progress=ctx.console.progress, should_stop=should_stop, full=full,
                              write_order=write_order)
    finally:
        ctx.console.finish()
