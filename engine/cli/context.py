"""What the operator commands share: common options, opening the state, building the clients.

Exit codes (documented in docs/operations.md):
  0 clean / nothing to do      1 some records failed (or a guard held archives back)
  2 usage error                3 run aborted (auth, network, config, state)
  4 plan only: changes are pending
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.cli.console import Console, finish_all
from engine.errors import CasaviSyncError, SpecError
from engine.ops.context import DEFAULT_TENANT as DEFAULT_TENANT
from engine.ops.context import Context
from engine.text import clip

EXIT_OK, EXIT_RECORDS, EXIT_USAGE, EXIT_ABORTED, EXIT_PENDING = 0, 1, 2, 3, 4

# A run id as the state store holds it (a 64-bit integer): anything else is a usage error, not an overflow
RUN_ID = click.IntRange(1, 2**63 - 1)

F = TypeVar("F", bound=Callable[..., Any])


def guard_options(func: F) -> F:
    """--max-archive-share and --archive-floor: the mass-archive guard of run and serve."""
    func = click.option("--archive-floor", type=click.IntRange(0), default=0, show_default=True,
                        envvar="CASAVI_SYNC_ARCHIVE_FLOOR", show_envvar=True,
                        help="Mass-archive guard: archiving up to this many records of a kind is never held.")(func)
    func = click.option("--max-archive-share", type=click.FloatRange(0, 1), default=0.10, show_default=True,
                        envvar="CASAVI_SYNC_MAX_ARCHIVE_SHARE", show_envvar=True,
                        help="Mass-archive guard: the largest share of a kind one run may archive.")(func)
    return func


def operator_options(func: F) -> F:
    """--state, --tenant, --config, --mappings, --quiet, --log-format."""
    opts = [
        click.option("--state", "state_path", metavar="PATH|URL", envvar="CASAVI_SYNC_STATE", show_envvar=True,
                     help="State file (default: $XDG_STATE_HOME/casavi-sync/state.db), or a PostgreSQL "
                          "database: postgresql://user@host/db (password from ~/.pgpass or PGPASSWORD)."),
        click.option("--tenant", default=DEFAULT_TENANT, show_default=True, envvar="CASAVI_SYNC_TENANT",
                     help="casavi customer account (tenant) to work on."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="CASAVI_SYNC_CONNECTOR_CONFIG", show_envvar=True,
                     help="Connector config overriding engine/connectors/default.yaml."),
        click.option("--mappings", "mappings_path", type=click.Path(exists=True, path_type=Path),
                     envvar="CASAVI_SYNC_MAPPINGS", show_envvar=True,
                     help="Mapping folder or file (default: the tenant's own set, else $CASAVI_SYNC_MAPPINGS, "
                          "else the shipped mappings)."),
        click.option("--quiet", "-q", is_flag=True, help="Only warnings, errors and the result."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="json: one JSON object per log line (for log collectors)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


@dataclass
class OperatorContext(Context):
    """The service layer's ``Context`` plus the CLI's console (progress bars, --quiet, JSON logs)."""

    console: Console = field(default_factory=Console)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> OperatorContext:
        from engine.state import state_location

        console = Console(quiet=kwargs.pop("quiet", False), log_format=kwargs.pop("log_format", "text"))
        state = state_location(kwargs.pop("state_path", None) or None)
        mappings = kwargs.pop("mappings_path", None)
        here = click.get_current_context(silent=True)
        if mappings is not None and here is not None and \
                here.get_parameter_source("mappings_path") == click.core.ParameterSource.ENVIRONMENT:
            mappings = None  # $CASAVI_SYNC_MAPPINGS is the deployment's default: a tenant's own set wins
        return cls(state, kwargs.pop("tenant", DEFAULT_TENANT), kwargs.pop("config_path", None),
                   mappings, console=console,
                   max_archive_share=kwargs.pop("max_archive_share", 0.10),
                   archive_floor=kwargs.pop("archive_floor", 0), actor=cli_actor())


def cli_actor() -> str:
    """"cli:<login name>" for the audit log (the OS user who typed the command)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"cli:uid{os.getuid()}"


def handle_errors(func: F) -> F:
    """Turn engine errors into one-line messages and documented exit codes; never a traceback.

    Under ``--log-format json`` every line is a JSON object, error lines included.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        json_logs = kwargs.get("log_format") == "json"

        def say(message: str, plain: str | None = None, **fields: Any) -> None:
            finish_all()  # an open progress bar ends before the error, never under it
            if json_logs:
                Console(log_format="json").error(message, **fields)
            else:
                click.echo(f"error: {message}" if plain is None else plain, err=True)

        try:
            return func(*args, **kwargs)
        except SpecError as exc:
            for d in exc.diagnostics[:20]:
                say(d.message, f"{d.location()}: {d.severity}: {d.message}", severity=d.severity,
                    location=d.location())
            whose = f"{exc.owner} is" if exc.owner else "the mappings are"
            invalid = f"{whose} invalid; run `{validate_command(exc, None if exc.owner else kwargs.get('mappings_path'))}` for details"
            say(invalid, invalid)
            raise SystemExit(EXIT_ABORTED) from None
        except CasaviSyncError as exc:
            say(clip(str(exc), 2000))
            raise SystemExit(EXIT_ABORTED) from None
        except KeyboardInterrupt:
            say("interrupted", "interrupted")
            raise SystemExit(130) from None
        except click.ClickException as exc:
            if not json_logs:
                raise
            say(exc.format_message())
            raise SystemExit(exc.exit_code) from None
        except (SystemExit, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`casavi-sync history | head`): stop quietly
            _silence_stdout()
            raise SystemExit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:  # a bug, not the user's mistake: one line, details on request
            if env_flag("CASAVI_SYNC_DEBUG"):
                raise
            say(f"internal error ({type(exc).__name__}: {str(exc)[:200]}); this is a bug in casavi-sync. "
                f"Nothing stored was lost; rerun with CASAVI_SYNC_DEBUG=1 for the traceback and report it.")
            raise SystemExit(EXIT_ABORTED) from None

    return wrapper  # type: ignore[return-value]


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader quit


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail a second time."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def parse_date_option(value: str | None) -> dt.date | None:
    """``--date YYYY-MM-DD`` (pretend today is this date), or None."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint="--date") from None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def validate_command(exc: SpecError, given: Any = None) -> str:
    """``casavi-sync validate <the folder that failed>``: the mapping set named by --mappings, else
    the folder of the files the diagnostics are about (a tenant's set, $CASAVI_SYNC_MAPPINGS)."""
    import shlex

    where = str(given) if given else ""
    if not where:
        folders = sorted({str(Path(d.file).parent) for d in exc.diagnostics if d.file})
        where = folders[0] if len(folders) == 1 else (os.path.commonpath(folders) if folders else "")
    return f"casavi-sync validate {shlex.quote(where)}" if where else "casavi-sync validate"


def check_zone(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """An unknown --timezone is a usage error (exit 2), found before anything opens."""
    from engine.errors import CasaviSyncError
    from engine.schedule import load_zone

    try:
        load_zone(value)
    except CasaviSyncError as exc:
        raise click.BadParameter(str(exc)) from None
    return value
