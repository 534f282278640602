"""A tenant's SCALARA interface: activation by the casavi team, the token, the disconnect.

The flow of the seed's "Administration > Anbindungen > SCALARA" page, for every face:

1. the casavi team activates the interface (``activate``); before that no token is accepted;
2. an admin saves the token generated in SCALARA (``save_token``): it is checked against SCALARA
   first (the first page of a resource; an account endpoint only when configured), then stored (the state file is 0600) and from then on only its fingerprint is shown;
3. the first save ever starts the initial import (``connect`` does both); a later save replaces
   the token and the next scheduled run uses it;
4. ``disconnect`` removes the token; history and record state stay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import AuthError, ConfigError
from engine.ops.context import Context

if TYPE_CHECKING:
    from engine.sync.apply import Progress

SCALARA_MENU = "SCALARA: Systemeinstellungen -> Externe Anbindungen -> casavi -> Generieren"


@dataclass(frozen=True)
class TokenSaved:
    """What saving a token did; never carries the token itself."""

    tenant: str
    first_save: bool
    token_fingerprint: str | None
    account_id: str | None
    account_name: str | None


@dataclass(frozen=True)
class Connected:
    """``connect``'s result: the save, and the initial import's outcome when one ran."""

    saved: TokenSaved
    run: Any = None  # engine.sync.session.RunOutcome | None
    queued_job: int | None = None  # on a fleet deployment: the initial import's job id
    queued: bool = False           # the initial import was queued for the fleet (maybe already waiting)


def require_activated(store: Any, tenant: str) -> None:
    if not store.tenant(tenant).activated:
        raise ConfigError(f"the SCALARA interface is not activated for tenant '{tenant}'; it must first be "
                          f"activated by the casavi team (casavi-sync tenant activate {tenant})")


CASAVI_MENU = "casavi: Administration > API-Zugangsdaten"


@dataclass(frozen=True)
class TenantSaved:
    """What registering a tenant did; ``warning`` says why the key pair could not be checked."""

    tenant: Any  # engine.state.Tenant
    checked: bool
    warning: str | None = None

    def __getattr__(self, name: str) -> Any:  # reads like the Tenant it saved (name, activated, ...)
        if name == "tenant":
            raise AttributeError(name)
        return getattr(self.tenant, name)


def check_casavi_credentials(ctx: Context, key: str, secret: str) -> str | None:
    """Prove a casavi key pair with casavi's authenticate call before it is saved.

    None when casavi accepted it; AuthError when casavi rejected it; a warning text when casavi
    could not be reached (the pair is then saved unchecked: the first run will tell). Few retries:
    someone is waiting at a form or a prompt.
    """
    import dataclasses

    from engine.connectors.casavi import CasaviClient
    from engine.errors import NetworkError

    config = ctx.connector_config()
    quick = dataclasses.replace(config.casavi, retry=dataclasses.replace(config.casavi.retry, max_attempts=2,
                                                                          max_delay_s=2.0, retry_after_cap_s=2.0))
    try:
        with CasaviClient(dataclasses.replace(config, casavi=quick), key, secret) as client:
            client.authenticate()
    except AuthError:
        raise AuthError(f"casavi rejected this API key/secret pair; nothing was saved. Check both values "
                        f"(a casavi admin creates a pair under {CASAVI_MENU})") from None
    except NetworkError as exc:
        return f"could not check the key pair with casavi ({exc}); saved unchecked, the first run will tell"
    return None


def add_tenant(ctx: Context, key: str, secret: str, *, check: bool = True) -> TenantSaved:
    """Register ctx.tenant with its casavi API key pair (creates the state file if needed).

    The pair is checked with casavi first: a rejected pair is not saved (AuthError); when casavi
    cannot be reached the pair is saved with a warning.
    """
    from engine.state.tenants import check_tenant_name

    key, secret = key.strip(), secret.strip()
    check_tenant_name(ctx.tenant)
    if not key or not secret:
        raise ConfigError(f"tenant '{ctx.tenant}': the casavi API key and secret must not be empty")
    warning = check_casavi_credentials(ctx, key, secret) if check else None
    with ctx.store(must_exist=False) as store:
        tenant = store.add_tenant(ctx.tenant, key, secret)
        ctx.audit(store, "tenant.saved", ctx.tenant, key=tenant.casavi_key_fingerprint, checked=warning is None)
    return TenantSaved(tenant, check and warning is None, warning)


def set_activation(ctx: Context, *, on: bool) -> Any:
    """The casavi team's switch: activate (``on``) or deactivate the interface; returns the tenant."""
    with ctx.store() as store:
        tenant = (store.activate_tenant if on else store.deactivate_tenant)(ctx.tenant)
        ctx.audit(store, "tenant.activated" if on else "tenant.deactivated", ctx.tenant)
        return tenant


def activate(ctx: Context) -> Any:
    return set_activation(ctx, on=True)


def deactivate(ctx: Context) -> Any:
    return set_activation(ctx, on=False)


def check_token(ctx: Context, token: str) -> dict[str, Any]:
    """Prove ``token`` with a contract call; the account (``accountId``, ``accountName``) only when
    an account endpoint is configured and answers, else {}. AuthError naming the SCALARA menu when
    the token is refused."""
    from engine.connectors.scalara import ScalaraClient

    try:
        with ScalaraClient(ctx.connector_config(), token) as client:
            return client.check_token() or {}
    except AuthError:
        raise AuthError(f"SCALARA refused this token (wrong or revoked). An admin generates a new one in "
                        f"{SCALARA_MENU}, then runs casavi-sync connect again") from None


def save_token(ctx: Context, token: str) -> TokenSaved:
    """Check ``token`` against SCALARA, then store it for ``ctx.tenant``."""
    token = token.strip()
    if not token:
        raise ConfigError(f"the SCALARA token is empty; paste it again (it is shown once in SCALARA; generate a "
                          f"new one if it is lost: {SCALARA_MENU})")
    with ctx.store() as store:
        require_activated(store, ctx.tenant)
        me = check_token(ctx, token)
        account = str(me.get("accountId") or "") or None
        name = str(me.get("accountName") or "") or None
        conn = store.get_connection(ctx.tenant)
        if conn is not None and conn.account_id and account and conn.account_id != account:
            raise ConfigError(f"this token belongs to SCALARA account '{name or account}', but "
                              f"tenant '{ctx.tenant}' is connected to another SCALARA account (id {conn.account_id});"
                              f" use a token of that account, or disconnect first "
                              f"(casavi-sync disconnect --tenant {ctx.tenant})")
        saved = store.save_connection(ctx.tenant, token, account)
        now = store.get_connection(ctx.tenant)
        ctx.audit(store, "token.saved" if conn is None else "token.replaced", ctx.tenant,
                  token=now.token_fingerprint if now else None, account=name or account,
                  firstSave=saved.first_save)
    return TokenSaved(ctx.tenant, saved.first_save, now.token_fingerprint if now else None, account, name)


def connect(ctx: Context, token: str, *, initial_import: bool = True,
            on_saved: Callable[[TokenSaved], None] | None = None, progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> Connected:
    """Save the token; the first save of a tenant runs the initial import at once.

    On a fleet deployment (PostgreSQL state with the job tables) the import is queued as a job
    instead (``queued``), for a worker to run under the tenant's lock.

    ``on_saved`` is called between the save and the import (a face tells its user the token is
    stored, or a web request returns while the import goes on in the background).
    """
    from engine.ops.jobs import fleet_enabled, queue_run
    from engine.ops.runs import start_run

    saved = save_token(ctx, token)
    if on_saved is not None:
        on_saved(saved)
    run = None
    if saved.first_save and initial_import:
        if fleet_enabled(ctx):  # a worker fleet serves this database: the import is one of its jobs
            return Connected(saved, None, queue_run(ctx, "initial"), queued=True)
        run = start_run(ctx, trigger="initial", progress=progress, should_stop=should_stop)
    return Connected(saved, run)


def disconnect(ctx: Context) -> bool:
    """Remove the stored token of ctx.tenant; False when it was not connected."""
    with ctx.store() as store:
        store.tenant(ctx.tenant)
        removed: bool = store.delete_connection(ctx.tenant)
        if removed:
            ctx.audit(store, "token.removed", ctx.tenant)
    return removed
