"""`casavi-sync init DIR`: a consultant's own mapping project, to keep in their own git repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from engine.cli.base import main
from engine.cli.context import handle_errors


@main.command("init")
@click.argument("folder", type=click.Path(file_okay=True, path_type=Path))
@click.option("--name", help="Customer or project name for the README (default: the folder's name).")
@handle_errors
def init(folder: Path, name: str | None, **_: Any) -> None:
    """Start a mapping project in FOLDER: the default mappings with their tests, the schemas,
    editor settings, a pre-commit config, a CI workflow (validate + test) and a README.

    FOLDER must be new or empty of these files: init never overwrites. Exit codes: 0 written,
    3 the folder already holds project files or cannot be written.
    """
    from engine.ops.project import init_project

    project = init_project(folder, name)
    click.echo(f"mapping project written to {project.folder} ({len(project.files)} files):")
    for rel in project.files:
        click.echo(f"  {rel}")
    click.echo(f"\nnext:\n  cd {project.folder}\n  git init && git add . && git commit -m 'mappings: start from the defaults'"
               "\n  casavi-sync validate mappings && casavi-sync test mappings")
