"""``casavi-sync test``: run the mapping tests (``*.test.yaml``) offline, in well under a second.

Exit codes: 0 every case passed, 1 a case failed or a test or mapping file has problems,
2 usage error (unknown option or format, a path that does not exist). See
docs/consultant-guide.md and docs/ci.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.base import main
from engine.cli.validate_cmd import _shown
from engine.paths import default_mappings


@main.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--mappings", "mappings_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of the mappings under test (default: the folder of each test file).")
@click.option("--format", "output_format", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="text for people, json for tools, github for workflow annotations.")
@click.option("--quiet", "-q", is_flag=True, help="text: list failing cases only.")
def test_command(paths: tuple[Path, ...], mappings_path: Path | None, output_format: str, quiet: bool) -> None:
    """Run mapping tests (default: the *.test.yaml files of $CASAVI_SYNC_MAPPINGS, else the shipped mappings).

    PATH may be a test file or a folder (its *.test.yaml files).
    """
    from engine.mapping_tests import run_tests
    from engine.mapping_tests.report import RENDERERS, render_text

    targets = list(paths) or [_shown(default_mappings())]
    result = run_tests(targets, mappings=mappings_path)
    if output_format == "text":
        click.echo(render_text(result, verbose=not quiet), nl=False)
    else:
        click.echo(RENDERERS[output_format](result), nl=False)
    if not result.files and not result.diagnostics:
        click.echo(f"error: no mapping tests (*.test.yaml) in {', '.join(map(str, targets))}", err=True)
        raise click.exceptions.Exit(2)
    raise click.exceptions.Exit(0 if result.ok else 1)
