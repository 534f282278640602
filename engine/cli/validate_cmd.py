"""``casavi-sync validate`` and ``casavi-sync schema``: the author's checks, before anything runs.

Exit codes: 0 valid (warnings allowed), 1 problems found, 2 usage error (bad option, a path that
does not exist). See docs/validate.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from engine.cli.base import main
from engine.paths import MAPPING_SCHEMA, MAPPINGS_DIR, default_mappings


def _shown(path: Path) -> Path:
    """The shipped mappings folder relative to the working directory when it lies below it.

    In a checkout, ``./mappings`` links to the shipped folder: it is shown by that short name.
    """
    if path == MAPPINGS_DIR and Path("mappings").resolve() == MAPPINGS_DIR:
        return Path("mappings")
    try:
        relative = Path(os.path.relpath(path))
    except ValueError:  # another drive on Windows
        return path
    return path if str(relative).startswith("..") else relative


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="text for people, json for tools, github for workflow annotations.")
def validate(paths: tuple[Path, ...], output_format: str) -> None:
    """Check mapping files (default: $CASAVI_SYNC_MAPPINGS, else the shipped mappings) and report every problem.

    PATH may be a file or a folder (its *.yaml files; *.test.yaml are skipped).
    """
    from engine.validate import validate_paths
    from engine.validate.report import RENDERERS

    targets = list(paths) or [_shown(default_mappings())]
    result = validate_paths(targets)
    if not result.files:  # an empty folder is a wrong path, not a valid set of mappings
        raise click.UsageError(f"no mapping files (*.yaml) in {', '.join(map(str, targets))}")
    click.echo(RENDERERS[output_format](result), nl=False)
    click.get_current_context().exit(0 if result.valid else 1)


@main.command()
@click.option("--path", "show_path", is_flag=True, help="Print the schema file's path (for editor setup).")
def schema(show_path: bool) -> None:
    """Print the JSON Schema of the mapping DSL (or, with --path, where it is)."""
    if show_path:
        click.echo(str(MAPPING_SCHEMA))
        return
    click.echo(MAPPING_SCHEMA.read_text(encoding="utf-8"), nl=False)
