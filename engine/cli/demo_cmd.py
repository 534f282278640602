"""`casavi-sync demo`: the whole product on the embedded sandbox, with no network and no setup.

It walks the path the SCALARA help article describes: the casavi side registers and activates the
customer account, an admin generates a SCALARA token, the token is saved (which runs the initial
import at once), then SCALARA data changes, the plan shows what the next run will do, and the run
carries it over. State lives in a temporary folder unless ``--state`` is given.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import click

from engine.cli.base import main
from engine.cli.console import Console
from engine.cli.context import EXIT_ABORTED, OperatorContext, handle_errors
from engine.errors import ConfigError

KINDS = ("properties", "units", "contacts", "contracts")


def _casavi_summary(sb: Any) -> list[str]:
    counts = {k: len(sb.casavi.records(k, include_archived=False)) for k in KINDS}
    props = sb.casavi.records("properties", include_archived=False)
    counts["responsibilities"] = sum(len(p.get("responsibilities") or []) for p in props)
    lines = ["   what arrived in casavi:"]
    lines += [f"     {kind:<17} {n:>5}" for kind, n in counts.items()]
    if props:
        p = sorted(props, key=lambda r: str(r["id"]))[0]
        lines.append(f"     e.g. property {p['id']}: {p['name']} ({len(p.get('addresses') or [])} address(es), "
                     f"{sum(len(a.get('units') or []) for a in p.get('addresses') or [])} units)")
    return lines


def _day_two(sb: Any) -> list[str]:
    """Change SCALARA data the way a property manager's day does; returns what was done."""
    app = sb.scalara
    data = app.dataset()
    done = []
    contact = next(c for c in sorted(data["contacts"]) if data["contacts"][c].get("email"))
    app.update_record("contacts", contact, {"email": "neue.adresse@example.org"})
    done.append(f"contact {contact}: new e-mail address")
    rental = next((u for u in sorted(data["usages"]) if data["usages"][u]["type"] == "RENTAL"
                   and data["usages"][u]["endDate"] is None and data["usages"][u]["tenantContactIds"]), None)
    if rental:
        app.end_usage(rental, "2026-12-31")
        done.append(f"usage {rental}: tenancy ends 2026-12-31")
    unit = next(u for u in sorted(data["units"]) if data["units"][u]["buildingId"] in data["buildings"])
    src = data["units"][unit]
    new = app.add_record("units", {**{k: v for k, v in src.items() if k not in ("id", "updatedAt")},
                                   "number": "TG 99", "label": "Neuer Stellplatz", "type": "PARKING",
                                   "mea": None, "areaSqm": 12.5, "persons": None})
    done.append(f"unit {new['id']}: new parking space TG 99")
    return done


@main.command()
@click.option("--properties", default=3, show_default=True, type=click.IntRange(1, 200),
              help="Size of the generated SCALARA data set.")
@click.option("--seed", default=1, show_default=True, help="Seed of the generated data.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Keep the demo's state and run reports here (default: a temporary folder, removed afterwards).")
@click.option("--quiet", "-q", is_flag=True, help="Only the summaries.")
@handle_errors
def demo(properties: int, seed: int, state_path: Path | None, quiet: bool) -> None:
    """Run the whole flow on the embedded sandbox: activate, connect, initial import, change, plan,
    scheduled run, idle run - each step saying what it proves."""
    from engine.cli import demo_story as story
    from engine.cli.sync_cmd import sync_tenant
    from engine.ops import connection, runs
    from engine.sandbox import FaultConfig, Sandbox

    if state_path is not None and (state_path.exists() or state_path.is_symlink()):
        # every demo runs against a new sandbox: an old state would hold records this casavi never got
        # (and a deployment's real state file must never be touched by a demo)
        raise ConfigError(f"{state_path} already exists; the demo starts from a new state file each time: "
                          "give a path that does not exist yet, or leave out --state")
    console = Console(quiet=quiet, plain_progress=False)
    with tempfile.TemporaryDirectory(prefix="casavi-sync-demo-") as tmp:
        state = state_path or Path(tmp) / "state.db"
        faults = FaultConfig(latency_ms=2)
        with Sandbox(properties=properties, seed=seed, scalara_faults=faults, casavi_faults=faults) as sb:
            for line in story.para(story.INTRO, indent=""):
                click.echo(line)
            click.echo(f"sandbox: SCALARA {sb.scalara_url}, casavi {sb.casavi_url} ({properties} properties, "
                       f"seed {seed})")
            edge_cases = sb.scalara.dataset().edge_cases
            config = Path(tmp) / "connectors.yaml"
            config.write_text(
                f"scalara:\n  base_url: {sb.scalara_url}\n  rate_limit: {{rate_per_s: 200, burst: 50}}\n"
                f"casavi:\n  base_url: {sb.casavi_url}\n  rate_limit: {{rate_per_s: 400, burst: 50}}\n",
                encoding="utf-8")
            ctx = OperatorContext(state, "default", config, None, env={}, actor="demo", console=console)
            reports: list[Path] = []

            _echo(story.step(1))
            connection.add_tenant(ctx, sb.casavi_key, sb.casavi_secret)
            connection.activate(ctx)
            click.echo("   tenant 'default' registered with its casavi API key, and activated")
            _echo(story.step(2))
            token = sb.generate_scalara_token()
            click.echo("   token generated (shown once in SCALARA; never printed here)")
            _echo(story.step(3))
            saved = connection.save_token(ctx, token)
            outcome = sync_tenant(ctx, trigger="initial") if saved.first_save else None
            if outcome is None or outcome.outcome == "aborted":
                _abort(outcome)
            reports.append(outcome.report_path)
            _echo(story.summary_lines(outcome.report))
            _echo(story.failures(outcome.report, edge_cases))
            explained = story.problem_keys(outcome.report)
            _echo(_casavi_summary(sb))

            _echo(story.step(4))
            for line in _day_two(sb):
                click.echo(f"     - {line}")
            _echo(story.step(5))
            prepared = runs.plan(ctx, progress=console.progress)
            console.finish()
            _echo(story.plan_table(prepared))
            _echo(story.change_lines(prepared))
            _echo(story.failures({"mapErrors": prepared.plan.errors}, edge_cases, explained))

            _echo(story.step(6))
            report = _scheduled_run(ctx)
            reports.append(Path(report["_path"]))
            _echo(story.summary_lines(report))
            _echo(story.failures(report, edge_cases, explained))

            _echo(story.step(7))
            before = sb.casavi_server.counters.writes()
            outcome = sync_tenant(ctx, trigger="manual")
            if outcome.outcome == "aborted":
                _abort(outcome)
            reports.append(outcome.report_path)
            _echo(story.summary_lines(outcome.report))
            _echo(story.failures(outcome.report, edge_cases, explained))
            click.echo(f"   write calls to casavi: {sb.casavi_server.counters.writes() - before}")
        click.echo("")
        if state_path is not None:
            click.echo(f"state kept in {state}; the run reports: "
                       + ", ".join(str(p) for p in reports if p is not None and p.exists()))
        else:
            click.echo("The demo's state and run reports lived in a temporary folder, removed now; "
                       "keep them with --state PATH.")
        click.echo("demo finished. Next: casavi-sync --help, docs/dsl.md for mappings, docs/operations.md "
                   "to run it for real.")
    raise SystemExit(0)


def _echo(lines: Any) -> None:
    for line in lines:
        click.echo(line)


def _abort(outcome: Any) -> NoReturn:
    reason = outcome.report.get("error") if outcome is not None else "the token was saved before"
    click.echo(f"error: the demo's run was aborted: {reason}", err=True)
    raise SystemExit(EXIT_ABORTED)


def _scheduled_run(ctx: OperatorContext) -> dict[str, Any]:
    """Step 6: the real scheduler (engine.serve) with its clock set just after the tenant's next slot."""
    import datetime as dt

    from engine.ops.runs import scheduled_runner
    from engine.schedule import Schedule
    from engine.serve import ServeOptions, Server
    from engine.timefmt import human_time

    schedule = Schedule()
    with ctx.store() as store:
        last = store.last_scheduled_day(ctx.tenant)
    now = dt.datetime.now(dt.UTC)
    slot = schedule.next_run(ctx.tenant, last, now)
    clock_at = max(now, slot + dt.timedelta(seconds=1))
    click.echo(f"   the scheduler's clock reads {human_time(clock_at, schedule.zone)}; "
               f"tenant '{ctx.tenant}' is due at {human_time(slot, schedule.zone)}")
    log = _SchedulerLog()
    with Server(ctx.state_path, ServeOptions(schedule, parallel=1), scheduled_runner(ctx), log,
                clock=lambda: clock_at) as server:
        started = server.tick()
        server.wait()
    if started != [ctx.tenant] or log.result is None:
        raise SystemExit(_fail(f"the scheduler did not start the tenant's run: {log.messages}"))
    if log.result.get("outcome") not in ("clean", "partial") or not log.result.get("report"):
        raise SystemExit(_fail(f"the scheduled run ended {log.result.get('outcome')}: {log.result.get('error')}"))
    path = Path(str(log.result["report"]))
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    report["_path"] = str(path)
    return report


def _fail(message: str) -> int:
    click.echo(f"error: {message}", err=True)
    return EXIT_ABORTED


class _SchedulerLog:
    """The serve loop's log for the demo: echoes its start line, keeps its end line for the summary."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.messages: list[str] = []

    def info(self, message: str, **fields: Any) -> None:
        self._log(message, fields)

    def warn(self, message: str, **fields: Any) -> None:
        self._log(message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log(message, fields)

    def _log(self, message: str, fields: dict[str, Any]) -> None:
        self.messages.append(message)
        if fields.get("event") == "run.end":
            self.result = fields
        else:
            click.echo(f"   serve: {message}")
