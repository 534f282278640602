"""People who use the web console: their roles, their passwords, logging in.

Roles (what each may do is in ``PERMISSIONS``)::

    casavi-team     activates the SCALARA interface of a customer account; sees every tenant
    customer-admin  saves the SCALARA token of *their* tenant, starts runs there
    consultant      reads runs, plans, explanations and mappings (to find why a unit is missing)
    operator        watches the runs, starts them, allows held archives, reads the audit log

Passwords are hashed with argon2id (argon2-cffi's defaults). Logging in is throttled: after
``MAX_FAILURES_USER`` failures for one name, or ``MAX_FAILURES_CLIENT`` from one address, within
``WINDOW``, every attempt is refused until the window has passed, right password or not.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.errors import AuthError, ConfigError
from engine.ops.context import Context

ROLES = ("casavi-team", "customer-admin", "consultant", "operator")
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),
    "activate": frozenset({"casavi-team"}),
    "connect": frozenset({"casavi-team", "customer-admin"}),
    "run": frozenset({"casavi-team", "customer-admin", "operator"}),
    "audit": frozenset({"casavi-team", "operator"}),
}
MIN_PASSWORD = 10
MAX_FAILURES_USER = 5
MAX_FAILURES_CLIENT = 20
WINDOW = dt.timedelta(minutes=15)


def may(user: Any, permission: str, tenant: str | None = None) -> bool:
    """May ``user`` (a ConsoleUser) do ``permission`` on ``tenant`` (None: across tenants)?"""
    if user.role not in PERMISSIONS.get(permission, frozenset()):
        return False
    if permission == "view" and tenant is None:  # lists: filtered to the user's tenant by the caller
        return True
    return user.tenant is None or tenant == user.tenant


# argon2-cffi's defaults (RFC 9106 "low memory": 3 passes, 64 MiB). Tests lower them for speed;
# a hash records its own parameters, so verifying never depends on this setting.
HASH_PARAMS: dict[str, int] = {}


def _hasher() -> Any:
    from argon2 import PasswordHasher

    if not HASH_PARAMS:
        return PasswordHasher()
    return PasswordHasher(time_cost=HASH_PARAMS.get("time_cost", 3),
                          memory_cost=HASH_PARAMS.get("memory_cost", 65536),
                          parallelism=HASH_PARAMS.get("parallelism", 4))


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def add_user(ctx: Context, name: str, role: str, password: str, tenant: str | None = None) -> Any:
    """Create or update a console user; a customer admin needs a tenant."""
    name = name.strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise ConfigError("a user name is 1 to 64 characters without spaces")
    if role not in ROLES:
        raise ConfigError(f"unknown role '{role}'; one of: {', '.join(ROLES)}")
    if role == "customer-admin" and not tenant:
        raise ConfigError("a customer admin belongs to one tenant: add --tenant NAME")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password is too short: at least {MIN_PASSWORD} characters")
    with ctx.store() as store:
        user = store.save_user(name, role, tenant, hash_password(password))
        ctx.audit(store, "user.saved", tenant, user=name, role=role)
    return user


def authenticate(ctx: Context, name: str, password: str, client: str) -> Any:
    """The ConsoleUser for a right name and password; AuthError (throttled or wrong) otherwise."""
    from argon2.exceptions import InvalidHashError, VerificationError

    subjects = (f"user:{name}", f"client:{client}")
    with ctx.store() as store:
        if (store.login_failures(subjects[0], WINDOW) >= MAX_FAILURES_USER
                or store.login_failures(subjects[1], WINDOW) >= MAX_FAILURES_CLIENT):
            ctx.audit(store, "login.throttled", None, user=name[:64], client=client)
            raise AuthError("too many failed logins; try again in 15 minutes")
        user = store.get_user(name)
        ok = False
        try:
            ok = _hasher().verify(user.password_hash if user else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None:
            store.note_login_failure(*subjects)
            ctx.audit(store, "login.failed", None, user=name[:64], client=client)
            raise AuthError("wrong user name or password")
        store.clear_login_failures(subjects[0])
        ctx.audit(store, "login", user.tenant, user=name, client=client)
    return user


_dummy: list[str] = []


def _dummy_hash() -> str:  # verify against it so unknown names take as long as known ones
    if not _dummy:
        _dummy.append(hash_password("not a password of anyone"))
    return _dummy[0]
