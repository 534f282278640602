"""`casavi-sync status`, `history` and `report`: what the operator asks before and after a run.

All three only read the state file (and the stored run reports); they never reach SCALARA or
casavi and never show a secret: the SCALARA token and the casavi key appear as fingerprints.
Without an explicit ``--tenant`` (option or ``CASAVI_SYNC_TENANT``) `status` and `history` cover
every tenant of the state file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import (
    EXIT_ABORTED,
    EXIT_USAGE,
    OperatorContext,
    check_zone,
    handle_errors,
    operator_options,
)
from engine.cli.context import RUN_ID as RUN_ID_TYPE
from engine.cli.serve_cmd import schedule_from_kwargs, schedule_options
from engine.ops.overview import changes_text as _changes
from engine.ops.overview import run_counts as run_counts
from engine.ops.overview import run_doc as _run_doc
from engine.ops.overview import run_duration as _duration
from engine.ops.overview import tenant_status
from engine.schedule import ZONE_ENV
from engine.timefmt import human_time, parse_stamp


def _tenant_explicit() -> bool:
    source = click.get_current_context().get_parameter_source("tenant")
    return source is not None and source.name != "DEFAULT"


def _tenants(ctx: OperatorContext, store: Any) -> list[Any]:
    if _tenant_explicit():
        return [store.tenant(ctx.tenant)]  # ConfigError with a did-you-mean when unknown
    return list(store.list_tenants())


def _parse(stamp: str | None) -> dt.datetime | None:
    return parse_stamp(stamp)


def _local(stamp: str | None, zone: dt.tzinfo) -> str:
    return human_time(stamp, zone)


def _failure_line(f: dict[str, Any]) -> str | None:
    if not (f["new"] or f["known"] or f["acknowledged"]):
        return None
    line = f"  failures      {f['new']} new, {f['known']} known"
    if f["oldestKnown"]:
        o = f["oldestKnown"]
        line += f" (the oldest since run {o['sinceRun']}, {o['occurrences']}x)"
    return line + f", {f['acknowledged']} acknowledged (casavi-sync failures)"


def _status_lines(doc: dict[str, Any], zone: dt.tzinfo) -> list[str]:
    lines = [f"tenant {doc['tenant']}"]
    lines.append("  activated     " + (f"yes, since {_local(doc['activatedAt'], zone)}" if doc["activated"] else "no"))
    conn = doc["connection"]
    if conn is None:
        lines.append("  connected     no")
    else:
        account = f", SCALARA account {conn['accountId']}" if conn["accountId"] else ""
        lines.append(f"  connected     since {_local(conn['connectedSince'], zone)}, SCALARA token "
                     f"{conn['tokenFingerprint']}{account}")
    last = doc["lastRun"]
    if last is None:
        lines.append("  last run      none yet")
    else:
        lines.append(f"  last run      #{last['runId']} ({last['trigger']}) {_local(last['startedAt'], zone)}: "
                     f"{last['outcome']}; {_changes(last['changes'])}")
        if last["error"]:
            lines.append(f"                {last['error']}")
    failure_line = _failure_line(doc["failures"]) if doc.get("failures") else None
    if failure_line:
        lines.append(failure_line)
    if doc["nextRunDue"]:
        lines.append("  next run      due now (`casavi-sync serve` starts it at its next check)")
    elif doc["nextRun"]:
        lines.append(f"  next run      {_local(doc['nextRun'], zone)} (when `casavi-sync serve` is running)")
    else:
        lines.append(f"  next run      not scheduled: {doc['notScheduled']}")
    if doc["running"]:
        r = doc["running"]
        lines.append(f"  running now   {r['purpose']} run, pid {r['pid']} on host {r['host']} since "
                     f"{_local(r['since'], zone)}")
    return lines


@main.command()
@operator_options
@schedule_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def status(fmt: str, **kwargs: Any) -> None:
    """Per tenant: activation, connection (token fingerprint), last run, next scheduled run, a run in progress.

    Give the same --at/--timezone/--jitter (or environment) as `serve`, so the next run shown is
    the one serve will start. Exit codes: 0, 3 (unreadable state, unknown --tenant).
    """
    schedule = schedule_from_kwargs(kwargs)
    ctx = OperatorContext.from_kwargs(kwargs)
    now = dt.datetime.now(dt.UTC)
    with ctx.store() as store:
        docs = [tenant_status(store, t, schedule, now) for t in _tenants(ctx, store)]
    if fmt == "json":
        click.echo(json.dumps({"schedule": schedule.describe(), "tenants": docs}, indent=2, ensure_ascii=False))
        return
    click.echo(f"schedule: {schedule.describe()}")
    for doc in docs:
        click.echo("")
        for line in _status_lines(doc, schedule.zone):
            click.echo(line)


# -- history ------------------------------------------------------------------------------------------

def _zone_option(func: Any) -> Any:
    return click.option("--timezone", "zone", default="Europe/Berlin", show_default=True, envvar=ZONE_ENV,
                        callback=check_zone, help="Show times in this IANA time zone.")(func)


@main.command()
@operator_options
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="How many runs.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_zone_option
@handle_errors
def history(limit: int, fmt: str, zone: str, **kwargs: Any) -> None:
    """Recent runs, newest first: trigger, start, duration, outcome and what changed.

    Exit codes: 0, 3 (unreadable state, unknown --tenant).
    """
    from engine.schedule import load_zone

    tz = load_zone(zone)
    ctx = OperatorContext.from_kwargs(kwargs)
    with ctx.store() as store:
        runs = [r for t in _tenants(ctx, store) for r in store.runs(t.name, limit=limit)]
        runs = sorted(runs, key=lambda r: r.id, reverse=True)[:limit]
        sets = {r.id: store.run_mappings(r.id) for r in runs}  # which mapping set each run used
    if fmt == "json":
        docs = [{**_run_doc(r), "mappings": None if sets[r.id] is None else
                 {"path": sets[r.id].path, "contentHash": sets[r.id].content_hash, "origin": sets[r.id].origin}}
                for r in runs]
        click.echo(json.dumps({"runs": docs}, indent=2, ensure_ascii=False))
        return
    if not runs:
        click.echo("no runs yet")
        return
    width = max(6, *(len(r.tenant) for r in runs))
    click.echo(f"{'run':>6}  {'tenant':<{width}}  {'trigger':<9}  {'started':<23}  {'took':>8}  {'outcome':<11}  "
               f"{'mappings':<12}  changes")
    for r in runs:
        took = _duration(r)
        click.echo(f"{r.id:>6}  {r.tenant:<{width}}  {r.trigger:<9}  {_local(r.started_at, tz):<23}  "
                   f"{(f'{took:.1f} s' if took is not None else '-'):>8}  {r.outcome:<11}  "
                   f"{(sets[r.id].content_hash[:12] if sets[r.id] else '-'):<12}  {_changes(run_counts(r))}")


# -- report ---------------------------------------------------------------------------------------------

@main.command()
@click.argument("run_id", type=RUN_ID_TYPE, metavar="RUN-ID")
@operator_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: the stored report file as written by the run.")
@_zone_option
@handle_errors
def report(run_id: int, fmt: str, zone: str, **kwargs: Any) -> None:
    """Show the report of one run (ids as `history` lists them).

    Exit codes: 0, 2 no run with that id, 3 the report file exists but cannot be read, or the
    state cannot be read. A run without a report file (it was interrupted, or the file was
    deleted) is shown from the run history, with a note.
    """
    from engine.schedule import load_zone
    from engine.sync.report import run_summary

    tz = load_zone(zone)
    ctx = OperatorContext.from_kwargs(kwargs)
    with ctx.store() as store:
        run = store.get_run(run_id)
    if run is None:
        click.echo(f"error: there is no run {run_id} in {ctx.state_display}; `casavi-sync history` lists the runs",
                   err=True)
        raise SystemExit(EXIT_USAGE)
    path = Path(run.report_path) if run.report_path else None
    text: str | None = None
    if path is not None and path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            doc = json.loads(text)
        except (OSError, ValueError) as exc:
            click.echo(f"error: cannot read the report of run {run_id} ({path}): {exc}", err=True)
            raise SystemExit(EXIT_ABORTED) from None
    if fmt == "json":
        if text is not None:
            click.echo(text.rstrip("\n"))
        else:
            click.echo(json.dumps({**_run_doc(run), "reportMissing": True}, indent=2, ensure_ascii=False))
        return
    if text is None:
        why = f"its report file {path} is gone" if path else "the run left no report file"
        click.echo(f"run {run.id} ({run.trigger}) for tenant '{run.tenant}': {run.outcome}; started "
                   f"{human_time(run.started_at, tz)}, finished {human_time(run.finished_at, tz)}")
        click.echo(f"  changes: {_changes(run_counts(run))}")
        if run.error:
            click.echo(f"  error: {run.error}")
        click.echo(f"  ({why}; this is what the run history holds)")
        return
    click.echo(f"started {human_time(doc.get('startedAt'), tz)}")
    for line in run_summary(doc):
        click.echo(line)
    click.echo(f"report: {path}")
