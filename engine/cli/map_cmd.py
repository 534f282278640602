"""``casavi-sync map``: what would one mapping send for these records? Offline, no casavi needed.

A consultant edits ``mappings/units.yaml``, exports a few SCALARA records into ``records.json``
(``{"units": [...], "buildings": [...], ...}``) and sees the payloads and per-record errors::

    casavi-sync map units --input records.json --date 2024-06-01
    casavi-sync map units --input units-only.json --assume-references

``--assume-references`` previews a mapping without the records it refers to: a ``ref`` into a
mapping whose source resource is absent from the input takes the id that mapping's id expression
gives for ``{"id": <SCALARA id>}`` (marked ``"referencesAssumed": true``).

Exit codes: 0 no per-record errors, 1 per-record errors (or invalid mapping files), 2 usage errors
(unknown mapping, missing or invalid input file).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import shlex
from pathlib import Path
from typing import Any, NoReturn

import click

from engine.cli.base import main
from engine.errors import CasaviSyncError, SpecError
from engine.paths import default_mappings, mapping_files
from engine.text import clip


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


def _load_specs(paths: list[Path]) -> dict[str, dict[str, Any]]:
    try:
        from engine.validate import load_mapping_set
    except ImportError:  # the validator is optional for a preview; a plain safe load will do
        return _safe_load(paths)
    return load_mapping_set(paths)


def _safe_load(paths: list[Path]) -> dict[str, dict[str, Any]]:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    files: list[Path] = []
    for path in paths:
        files.extend(mapping_files(path) if path.is_dir() else [path])
    specs: dict[str, dict[str, Any]] = {}
    for file in files:
        spec = yaml.load(file.read_text(encoding="utf-8"))
        if isinstance(spec, dict) and isinstance(spec.get("mapping"), str):
            specs[spec["mapping"]] = spec
    return specs


def _load_records(path: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot read ({exc.__class__.__name__})")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        _fail(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")
    except RecursionError:
        _fail(f"{path}: invalid JSON: nested too deeply")
    except ValueError as exc:   # NaN/Infinity (refused above), an integer beyond Python's digit limit
        _fail(f"{path}: invalid JSON: {str(exc).split(';')[0][:120]}")
    if not isinstance(data, dict):
        _fail(f'{path}: expected an object {{"<resource>": [records...]}}, got {type(data).__name__}')
    for resource, records in data.items():
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            _fail(f"{path}: '{clip(str(resource), 80)}' must be a list of records (objects)")
        for n, record in enumerate(records, 1):
            problems = _problems_of(record)        # absurd nesting or numbers JSON cannot carry
            if problems:
                _fail(f"{path}: {clip(str(resource), 80)} record #{n}: {problems[0]}")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@main.command("map")
@click.argument("mapping")
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help='JSON file {"<resource>": [records...]} with SCALARA records.')
@click.option("--mappings", "mapping_paths", multiple=True, type=click.Path(path_type=Path),
              help="Mapping folder or files (repeatable; default: the shipped mappings/).")
@click.option("--date", "run_date", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Run date for today()/active() (default: today).")
@click.option("--assume-references", is_flag=True,
              help="Derive ids of referenced records whose resource is not in the input.")
def map_command(mapping: str, input_path: Path, mapping_paths: tuple[Path, ...], run_date: dt.datetime | None,
                assume_references: bool) -> None:
    """Print the casavi payloads MAPPING makes from the records in --input (as JSON)."""
    from engine.compile import compile_mappings
    from engine.interpret import map_records

    paths = list(mapping_paths) or [default_mappings()]
    for path in paths:
        if not path.exists():
            _fail(f"{path}: no such file or folder")
    records = _load_records(input_path)
    try:
        mset = compile_mappings(_load_specs(paths))
    except SpecError as exc:
        for diag in exc.diagnostics:
            where = f"{diag.location()}: {diag.path}" if diag.path != "$" else diag.location()
            click.echo(f"{where}: {diag.message}", err=True)
        given = " ".join(shlex.quote(str(p)) for p in paths)
        _fail(f"the mapping files have problems; run `casavi-sync validate {given}` for details", 1)
    if mapping not in mset.mappings:
        close = difflib.get_close_matches(mapping, list(mset.mappings), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        _fail(f"unknown mapping '{mapping}'{hint}; known: {', '.join(sorted(mset.mappings))}")

    plan = mset.mappings[mapping]
    protect = True
    if plan.only_if_referenced_by:
        sources = {rule.source for name in plan.only_if_referenced_by if name in mset.mappings
                   for rule in mset.mappings[name].rules}
        if not sources & set(records):
            protect = False
            click.echo(f"note: only_if_referenced_by not applied: no records of "
                       f"{', '.join(sorted(sources))} in the input", err=True)
    try:
        result = map_records(mset, records, run_date=run_date.date() if run_date else None, only=[mapping],
                             assume_references=assume_references, data_protection=protect)
    except CasaviSyncError as exc:
        _fail(str(exc))

    payloads = []
    for output in result.outputs.get(plan.target, {}).values():
        entry: dict[str, Any] = {"id": output.ref_id, "payload": output.payload,
                                 "source": {"resource": output.source_resource, "id": output.source_id}}
        if output.references_assumed:
            entry["referencesAssumed"] = True
        payloads.append(entry)
    document = {"payloads": payloads, "errors": [e.as_dict() for e in result.errors]}
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))
    if result.errors:
        raise click.exceptions.Exit(1)


def _problems_of(record: Any) -> Any:
    # imported here: engine.connectors pulls in httpx and both clients, and every CLI start imports
    # this module
    from engine.connectors.jsonsafe import problems_of

    return problems_of(record)
