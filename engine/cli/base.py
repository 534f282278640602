"""The root click group. Command modules attach to it; see engine/cli/__init__.py."""

from __future__ import annotations

import click

from engine import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="casavi-sync")
def main() -> None:
    """casavi-sync: carries master data from SCALARA into casavi, as the mappings say."""
