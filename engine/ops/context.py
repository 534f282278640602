"""One tenant's working context: where the state lives, which config and mappings apply.

Faces build a ``Context`` from their input (CLI options, a web request, a job's arguments) and
hand it to the ops functions; ``dataclasses.replace(ctx, tenant=...)`` gives the same deployment
for another tenant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, StateError

DEFAULT_TENANT = "default"


@dataclass
class Context:
    state_path: Path | str  # a SQLite file, or a postgresql:// URL (show it with ``state_display``)
    tenant: str = DEFAULT_TENANT
    config_path: Path | None = None
    mappings_path: Path | None = None
    env: Mapping[str, str] | None = None  # None: the process environment (the demo passes {})
    max_archive_share: float = 0.10       # the mass-archive guard (run and serve)
    archive_floor: int = 0
    actor: str = "system"                 # who acts, for the audit log: "cli:anna", "web:anna", "serve"
    shared_store: Any = field(default=None, repr=False, compare=False)  # a store this thread keeps open

    def for_tenant(self, tenant: str) -> Any:
        """The same deployment, another tenant (keeps the subclass of a face)."""
        return dataclasses.replace(self, tenant=tenant)

    @property
    def report_dir(self) -> Path:
        from engine.state import reports_dir

        return reports_dir(self.state_path, self.env) / self.tenant

    @property
    def state_display(self) -> str:
        """The state's location, safe to print (a PostgreSQL URL loses its password)."""
        from engine.state import describe_location

        return describe_location(self.state_path)

    @property
    def state_exists(self) -> bool:
        """A PostgreSQL state always exists for this purpose; a SQLite file once created."""
        return not isinstance(self.state_path, Path) or self.state_path.exists()

    def require_state(self) -> None:
        """A StateError when the SQLite state file does not exist (nothing may create it by accident)."""
        if isinstance(self.state_path, Path) and not self.state_path.exists():
            raise StateError(f"no state file at {self.state_display}; register a tenant first (casavi-sync tenant "
                             f"add) or point --state / CASAVI_SYNC_STATE at the deployment's state file")

    @contextmanager
    def store(self, *, must_exist: bool = True) -> Iterator[Any]:
        """The state store; only registering a tenant (must_exist=False) may create the file."""
        if self.shared_store is not None:  # a long-lived face (the console) keeps one store per thread
            yield self.shared_store
            return
        if must_exist:
            self.require_state()
        store = self.open_store()
        try:
            yield store
        finally:
            store.close()

    def open_store(self) -> Any:
        """A new StateStore on this deployment's file; the caller closes it."""
        from engine.secrets import SecretBox
        from engine.state import StateStore

        # The key that decrypts the stored secrets comes from this context's environment (the demo's is empty).
        return StateStore.open(self.state_path, secrets=SecretBox.for_state(self.state_path, self.env))

    def audit(self, store: Any, action: str, tenant: str | None = None, **detail: Any) -> None:
        """One audit-log entry by ``self.actor`` (never pass a secret in ``detail``)."""
        store.audit(self.actor, action, tenant, **detail)

    def connector_config(self) -> Any:
        from engine.connectors import load_connector_config

        return load_connector_config(self.config_path, env=self.env)

    def mapping_set(self, store: Any = None) -> Any:
        """The tenant's mapping set, validated and compiled (engine.ops.mappings: which one applies)."""
        from engine.ops.mappings import load, resolve

        if store is None and self.mappings_path is None and self.state_exists:
            with self.store() as opened:  # the tenant may have a set of its own
                return load(resolve(self, opened), self.tenant)
        return load(resolve(self, store), self.tenant)

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
