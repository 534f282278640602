"""`casavi-sync state migrate|copy`: schema migrations and moving a deployment between backends.

A SQLite file migrates itself when it is opened (the embedded default needs no extra step); a
PostgreSQL database is migrated only by `state migrate`, so a fleet's workers never change the
schema under each other: a worker refuses a schema it does not know, with the instruction.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.base import main
from engine.cli.context import EXIT_OK, handle_errors


@main.group("state")
def state_group() -> None:
    """The state store: migrate its schema, copy it between SQLite and PostgreSQL."""


def _location(value: str | None) -> Path | str:
    from engine.state import state_location

    return state_location(value)


@state_group.command("migrate")
@click.option("--state", "state_path", metavar="PATH|URL", envvar="CASAVI_SYNC_STATE", show_envvar=True,
              help="State file or postgresql:// URL (default: $XDG_STATE_HOME/casavi-sync/state.db).")
@handle_errors
def migrate_cmd(state_path: str | None) -> None:
    """Bring the state store to this release's schema (creating the tables in a new database).

    Run it once per release before starting the new workers. Safe to repeat and to run from two
    machines at once: each step is applied exactly once, in its own transaction.
    """
    from engine.errors import StateError
    from engine.state import LATEST_VERSION, StateStore, describe_location

    where = _location(state_path)
    if isinstance(where, Path) and not where.exists():
        raise StateError(f"no state file at {where}; a new SQLite state is created by casavi-sync tenant add")
    with StateStore.open(where, migrate=True) as store:
        version = store.schema_version
    click.echo(f"{describe_location(where)}: state schema v{version} (this release: v{LATEST_VERSION})")
    if isinstance(where, str):  # PostgreSQL: the worker fleet's job tables live in the same database
        from engine.fleet.worker import install_schema

        created = install_schema(where)
        click.echo("job queue tables (procrastinate) " + ("created" if created else "present"))
    raise SystemExit(EXIT_OK)


@state_group.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@handle_errors
def copy_cmd(source: str, destination: str) -> None:
    """Copy a whole deployment from SRC to DST (each a state file or a postgresql:// URL).

    Tenants, secrets, connections, record state, run history and every other table are copied;
    locks are not. DST must be new and empty (a new file, or a database after `state migrate`),
    SRC at the same schema version (`state migrate` it first). Stop `serve` and the workers
    before copying: runs that finish during the copy are not in DST.
    """
    from engine.errors import StateError
    from engine.state import StateStore, describe_location
    from engine.state.copy import copy_state

    src, dst = _location(source), _location(destination)
    if isinstance(src, Path) and not src.exists():
        raise StateError(f"no state file at {src}")
    if isinstance(dst, Path) and dst.exists() and dst.stat().st_size:
        raise StateError(f"{dst} already exists; copy into a new file")
    with StateStore.open(src, migrate=False) as s, StateStore.open(dst) as d:
        result = copy_state(s, d)
    tables = ", ".join(f"{name} {n}" for name, n in result.tables.items())
    click.echo(f"copied {result.rows} rows from {describe_location(src)} to {describe_location(dst)}: {tables}")
    raise SystemExit(EXIT_OK)
