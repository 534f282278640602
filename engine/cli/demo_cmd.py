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
from typing import Any

import click

from engine.cli.base import main
from engine.cli.console import Console
from engine.cli.context import EXIT_ABORTED, OperatorContext, handle_errors

KINDS = ("properties", "units", "contacts", "contracts")


def _casavi_summary(sb: Any) -> list[str]:
    counts = {k: len(sb.casavi.records(k, include_archived=False)) for k in KINDS}
    props = sb.casavi.records("properties", include_archived=False)
    counts["responsibilities"] = sum(len(p.get("responsibilities") or []) for p in props)
    lines = ["what arrived in casavi:"]
    lines += [f"  {kind:<17} {n:>5}" for kind, n in counts.items()]
    if props:
        p = sorted(props, key=lambda r: str(r["id"]))[0]
        lines.append(f"  e.g. property {p['id']}: {p['name']} ({len(p.get('addresses') or [])} address(es), "
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
              help="Keep the demo's state here (default: a temporary folder, removed afterwards).")
@click.option("--quiet", "-q", is_flag=True, help="Only the summaries.")
@handle_errors
def demo(properties: int, seed: int, state_path: Path | None, quiet: bool) -> None:
    """Run the whole flow on the embedded sandbox: activate, connect, initial import, change, plan, run."""
    from engine.cli.sync_cmd import run_tenant
    from engine.cli.tenant_cmd import save_token
    from engine.sandbox import FaultConfig, Sandbox
    from engine.sync.report import plan_summary
    from engine.sync.runner import SyncOptions
    from engine.sync.session import plan_for_tenant

    console = Console(quiet=quiet)
    with tempfile.TemporaryDirectory(prefix="casavi-sync-demo-") as tmp:
        state = state_path or Path(tmp) / "state.db"
        faults = FaultConfig(latency_ms=2)
        with Sandbox(properties=properties, seed=seed, scalara_faults=faults, casavi_faults=faults) as sb:
            click.echo(f"sandbox: SCALARA {sb.scalara_url}, casavi {sb.casavi_url} ({properties} properties, seed {seed})")
            config = Path(tmp) / "connectors.yaml"
            config.write_text(
                f"scalara:\n  base_url: {sb.scalara_url}\n  rate_limit: {{rate_per_s: 200, burst: 50}}\n"
                f"casavi:\n  base_url: {sb.casavi_url}\n  rate_limit: {{rate_per_s: 400, burst: 50}}\n",
                encoding="utf-8")
            ctx = OperatorContext(state, "default", config, None, console, env={})

            click.echo("\n1. casavi activates the SCALARA interface for the customer account")
            with ctx.store(must_exist=False) as store:
                store.add_tenant("default", sb.casavi_key, sb.casavi_secret)
                store.activate_tenant("default")
            click.echo("\n2. an admin generates a token in SCALARA (shown once; never printed here)")
            token = sb.generate_scalara_token()
            click.echo("\n3. the token is saved: the first save runs the initial import at once")
            saved = save_token(ctx, token)
            code = run_tenant(ctx, trigger="initial") if saved.first_save else 0
            if code == EXIT_ABORTED:
                raise SystemExit(code)
            for line in _casavi_summary(sb):
                click.echo(line)

            click.echo("\n4. the next day, SCALARA data changes:")
            for line in _day_two(sb):
                click.echo(f"  - {line}")
            click.echo("\n5. casavi-sync plan shows what the next run will do (writes nothing):")
            mset = ctx.mapping_set()
            with ctx.store() as store:
                scalara, casavi = ctx.clients(store)
                with scalara, casavi:
                    prepared = plan_for_tenant(store, "default", mset, scalara, casavi,
                                               SyncOptions(), None)
            for line in plan_summary(prepared):
                click.echo("  " + line)
            for a in prepared.plan.actions[:6]:
                diff = ", ".join(f"{c['field']}: {json.dumps(c['from'], ensure_ascii=False)} -> "
                                 f"{json.dumps(c['to'], ensure_ascii=False)}" for c in a.diff()[:3])
                click.echo(f"  {a.action} {a.kind} {a.ref_id}" + (f"  ({diff})" if diff and a.action == "update" else ""))

            click.echo("\n6. the scheduled run (every day at about 04:00) carries the changes over:")
            code = run_tenant(ctx, trigger="manual")
            click.echo("\n7. a run with no changes in SCALARA makes no write calls:")
            before = sb.casavi_server.counters.writes()
            run_tenant(ctx, trigger="manual")
            click.echo(f"  write calls: {sb.casavi_server.counters.writes() - before}")
        click.echo("\ndemo finished. Next: casavi-sync --help, docs/dsl.md for mappings, docs/operations.md to run it for real.")
    raise SystemExit(0 if code != EXIT_ABORTED else code)
