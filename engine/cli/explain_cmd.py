"""``casavi-sync explain <resource> <scalara-id>``: the path of one SCALARA record into casavi.

Live (the tenant's SCALARA connection and state store) or offline (``--input records.json``)::

    casavi-sync explain units 6f1c...e2 --tenant hausverwaltung-nord
    casavi-sync explain contacts c7 --input records.json --date 2024-06-01 --format json

Exit codes: 0 explained, 1 no such record (a close id is suggested), 2 usage error,
3 aborted (auth, network, config, state).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import (
    EXIT_OK,
    EXIT_RECORDS,
    OperatorContext,
    handle_errors,
    operator_options,
    parse_date_option,
)
from engine.errors import RecordError


class _ResourceChoice(click.Choice):  # type: ignore[type-arg]
    """SCALARA's resources, read from the catalog only when needed (every CLI start imports this module)."""

    def __init__(self) -> None:
        super().__init__(())

    # click releases differ in how they declare `choices`, so the override is flagged by some only
    @property  # type: ignore[override,unused-ignore]
    def choices(self) -> list[str]:
        from engine.catalog import scalara_resources

        return list(scalara_resources())

    @choices.setter
    def choices(self, value: object) -> None:
        pass


@main.command()
@click.argument("resource", type=_ResourceChoice())
@click.argument("scalara_id")
@operator_options
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path),
              help='Offline: JSON file {"<resource>": [records...]} instead of the live SCALARA data.')
@click.option("--date", "run_date", metavar="YYYY-MM-DD", help="Pretend today is this date (for today()/active()).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def explain(resource: str, scalara_id: str, input_path: Path | None, run_date: str | None, fmt: str,
            **kwargs: Any) -> None:
    """Show how one SCALARA record becomes casavi records, and what the next run does with them."""
    from engine.explain import explain_record, render_text
    from engine.ops.records import explain_live

    when = parse_date_option(run_date)
    ctx = OperatorContext.from_kwargs(kwargs)
    mset = ctx.mapping_set()
    try:
        if input_path is not None:
            from engine.cli.map_cmd import _load_records

            doc = explain_record(mset, _load_records(input_path), resource, scalara_id, run_date=when)
        else:
            try:
                doc = explain_live(ctx, resource, scalara_id, run_date=when, progress=ctx.console.progress,
                                   mset=mset)
            finally:
                ctx.console.finish()
    except RecordError as exc:
        click.echo(f"error: {exc.reason}", err=True)
        raise SystemExit(EXIT_RECORDS) from None
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        for line in render_text(doc):
            click.echo(line)
    raise SystemExit(EXIT_OK)
