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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.cli.console import Console
from engine.errors import CasaviSyncError, ConfigError, OperatorError, SpecError, StateError

EXIT_OK, EXIT_RECORDS, EXIT_USAGE, EXIT_ABORTED, EXIT_PENDING = 0, 1, 2, 3, 4
DEFAULT_TENANT = "default"

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
        click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="CASAVI_SYNC_STATE", show_envvar=True,
                     help="State file (default: $XDG_STATE_HOME/casavi-sync/state.db)."),
        click.option("--tenant", default=DEFAULT_TENANT, show_default=True, envvar="CASAVI_SYNC_TENANT",
                     help="casavi customer account (tenant) to work on."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="CASAVI_SYNC_CONNECTOR_CONFIG", show_envvar=True,
                     help="Connector config overriding engine/connectors/default.yaml."),
        click.option("--mappings", "mappings_path", type=click.Path(exists=True, path_type=Path),
                     envvar="CASAVI_SYNC_MAPPINGS", show_envvar=True,
                     help="Mapping folder or file (default: the shipped mappings)."),
        click.option("--quiet", "-q", is_flag=True, help="Only warnings, errors and the result."),
        click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="json: one JSON object per log line (for log collectors)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


@dataclass
class OperatorContext:
    state_path: Path
    tenant: str
    config_path: Path | None
    mappings_path: Path | None
    console: Console
    env: Mapping[str, str] | None = None  # None: the process environment (the demo passes {})
    max_archive_share: float = 0.10       # the mass-archive guard (run and serve)
    archive_floor: int = 0

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> OperatorContext:
        from engine.state import default_state_path

        console = Console(quiet=kwargs.pop("quiet", False), log_format=kwargs.pop("log_format", "text"))
        state = kwargs.pop("state_path", None) or default_state_path()
        return cls(Path(state), kwargs.pop("tenant", DEFAULT_TENANT), kwargs.pop("config_path", None),
                   kwargs.pop("mappings_path", None), console,
                   max_archive_share=kwargs.pop("max_archive_share", 0.10),
                   archive_floor=kwargs.pop("archive_floor", 0))

    @property
    def report_dir(self) -> Path:
        return self.state_path.parent / "reports" / self.tenant

    @contextmanager
    def store(self, *, must_exist: bool = True) -> Iterator[Any]:
        """The state store; only ``tenant add`` (must_exist=False) may create the file."""
        from engine.state import StateStore

        if must_exist and not self.state_path.exists():
            raise StateError(f"no state file at {self.state_path}; register a tenant first (casavi-sync tenant "
                             f"add) or point --state / CASAVI_SYNC_STATE at the deployment's state file")
        store = StateStore.open(self.state_path)
        try:
            yield store
        finally:
            store.close()

    def connector_config(self) -> Any:
        from engine.connectors import load_connector_config

        return load_connector_config(self.config_path, env=self.env)

    def mapping_set(self) -> Any:
        from engine.compile import compile_mappings
        from engine.paths import MAPPINGS_DIR
        from engine.validate import load_mapping_set

        where = self.mappings_path or MAPPINGS_DIR
        specs = load_mapping_set([where])
        if not specs:
            raise ConfigError(f"no mapping files (*.yaml) in {where}; point --mappings at the mappings folder")
        return compile_mappings(specs)

    def clients(self, store: Any) -> tuple[Any, Any]:
        """SCALARA and casavi clients for this tenant, from the stored connection."""
        from engine.connectors.casavi import CasaviClient
        from engine.connectors.scalara import ScalaraClient

        tenant = store.tenant(self.tenant)  # ConfigError with did-you-mean if unknown
        if not tenant.activated:
            raise ConfigError(f"the SCALARA interface is not activated for tenant '{self.tenant}'; "
                              f"the casavi team activates it: casavi-sync tenant activate {self.tenant}")
        token = store.connection_token(self.tenant)
        if not token:
            raise ConfigError(f"tenant '{self.tenant}' has no SCALARA connection yet; an admin saves the "
                              f"token with: casavi-sync connect --tenant {self.tenant}")
        key, secret = store.tenant_credentials(self.tenant)
        config = self.connector_config()
        return ScalaraClient(config, token), CasaviClient(config, key, secret)


def handle_errors(func: F) -> F:
    """Turn engine errors into one-line messages and documented exit codes; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpecError as exc:
            for d in exc.diagnostics[:20]:
                click.echo(f"{d.location()}: {d.severity}: {d.message}", err=True)
            click.echo("the mappings are invalid; run `casavi-sync validate` for details", err=True)
            raise SystemExit(EXIT_ABORTED) from None
        except OperatorError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_ABORTED) from None
        except CasaviSyncError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_ABORTED) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None
        except (SystemExit, click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug, not the user's mistake: one line, details on request
            if env_flag("CASAVI_SYNC_DEBUG"):
                raise
            click.echo(f"internal error ({type(exc).__name__}: {str(exc)[:200]}); this is a bug in casavi-sync. "
                       f"Nothing stored was lost; rerun with CASAVI_SYNC_DEBUG=1 for the traceback and "
                       f"report it.", err=True)
            raise SystemExit(EXIT_ABORTED) from None

    return wrapper  # type: ignore[return-value]


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
