"""SCALARA's export API (API.md section 1) as a sandbox ``App``, plus the sandbox-only mutations.

Why: the engine reads SCALARA through cursor pages, bearer tokens and tombstones, and nobody
outside SCALARA can test against the real one. This stand-in serves a generated ``Dataset``
exactly as the contract says -- stable order by id, opaque cursors, ``updatedSince``,
``includeDeleted`` with a 90-day tombstone window -- and lets tests drive day-two changes
(edit, add, delete, end a tenancy, change an owner, advance the clock).

    app = ScalaraApp(Clock())
    token = app.issue_token("demo", "admin", DEFAULT_ADMIN_PASSWORD)
    app.handle(Request("GET", "/units", {"limit": ["500"]}, {"authorization": f"Bearer {token}"}))

Latency, rate limits and injected 5xx belong to the HTTP layer (``engine.sandbox.http``), not here.
Records are never changed in place: a mutation stores a new dict, so a page being serialised by
another thread never sees a half-written record.

Choices API.md leaves open (all [assumed], listed in docs/sandbox-data.md):
- ``GET /me`` -> ``{"accountId", "accountName"}``: an account endpoint the contract lacks; the engine
  uses it only when ``scalara.me_path`` configures it (``account_endpoint = False`` switches it off);
- the cursor is base64url of ``<resource>:<last id>``; a cursor of another resource is rejected;
- ``updatedSince`` is inclusive and needs an explicit zone (``Z`` or ``+hh:mm``);
- tombstones honour ``updatedSince`` through their ``deletedAt``; ``GET /<resource>/<id>`` of a
  deleted record is 404;
- unknown query parameters are rejected (400), so a typo never silently widens a sync.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime as dt
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import string
import threading
import uuid
from collections.abc import Callable
from typing import Any

from engine.errors import CasaviSyncError
from engine.sandbox.app import Request, Response
from engine.sandbox.clock import Clock
from engine.sandbox.generator import FIELDS, RESOURCES, Dataset, Record, generate

DEFAULT_ACCOUNT = "demo"
DEFAULT_ADMIN_PASSWORD = "admin-sandbox"     # sandbox-only credentials, not secrets
DEFAULT_USER_PASSWORD = "user-sandbox"
ADMIN_USER, STAFF_USER = "admin", "user"
DEMO_PROPERTIES, DEMO_SEED = 12, 1
TOMBSTONE_DAYS = 90
MAX_BODY_BYTES = 1024 * 1024
LIMIT_DEFAULT, LIMIT_MAX = 100, 500
TOKEN_PREFIX, TOKEN_LENGTH = "scl_", 40
LIST_PARAMS = ("limit", "cursor", "updatedSince", "includeDeleted")

_ALPHABET = string.ascii_letters + string.digits
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_STAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$")
_READ_ONLY = frozenset({"id", "updatedAt"})


class ScalaraApiError(CasaviSyncError):
    """A request the sandbox refuses; becomes ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _bad_param(name: str, why: str) -> ScalaraApiError:
    return ScalaraApiError(400, "invalid_parameter", f"query parameter '{name}': {why}")


def _bad_body(why: str) -> ScalaraApiError:
    return ScalaraApiError(400, "invalid_body", why)


def _not_found(what: str) -> ScalaraApiError:
    return ScalaraApiError(404, "not_found", f"{what} not found")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamp(moment: dt.datetime) -> str:
    """The one timestamp format of the API (ms, ``Z``): fixed width, so strings sort like times."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise _bad_body(f"'{name}' must be a date YYYY-MM-DD")


# --------------------------------------------------------------------------------------------
# field validation for mutations, driven by generator.FIELDS


def _check_type(spec: str, value: Any) -> bool:
    if spec.endswith("?"):
        if value is None:
            return True
        spec = spec[:-1]
    if spec.startswith("enum:"):
        return isinstance(value, str) and value in spec[5:].split("|")
    checks: dict[str, Callable[[Any], bool]] = {
        "uuid": lambda v: isinstance(v, str) and bool(_UUID.match(v)),
        "uuids": lambda v: isinstance(v, list) and all(isinstance(x, str) and _UUID.match(x) for x in v),
        "string": lambda v: isinstance(v, str),
        "date": lambda v: isinstance(v, str) and bool(_DATE.match(v)) and _valid_date(v),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    return checks[spec](value)


def _valid_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def validate_fields(resource: str, fields: dict[str, Any]) -> None:
    """Reject unknown, read-only and mistyped fields; name every offender in one message."""
    table = FIELDS[resource]
    problems = []
    for name, value in fields.items():
        if name not in table:
            problems.append(f"unknown field '{name}' (fields of {resource}: {', '.join(table)})")
        elif name in _READ_ONLY:
            problems.append(f"field '{name}' is read-only")
        elif not _check_type(table[name], value):
            problems.append(f"field '{name}' must be {table[name].replace('?', ' or null')}")
    if problems:
        raise _bad_body("; ".join(problems))


# --------------------------------------------------------------------------------------------
# accounts


class _Account:
    """One SCALARA customer: its data, users, the one valid casavi token (as a hash), a lock."""

    __slots__ = ("account_id", "data", "ids", "lock", "name", "rng", "token_hash", "users")

    def __init__(self, name: str, data: Dataset, users: dict[str, tuple[str, bool]]) -> None:
        self.name = name
        self.account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"scalara-sandbox:{name}"))
        self.data = data
        self.users = users                         # user -> (sha256 of password, is admin)
        self.token_hash: str | None = None
        self.lock = threading.RLock()
        self.rng = random.Random(f"scalara-sandbox:{name}")        # ids of added records
        self.ids: dict[str, list[str]] = {
            res: sorted({*data.records[res], *data.tombstones[res]}) for res in RESOURCES
        }

    def live(self, resource: str, record_id: str) -> Record:
        record = self.data.records[resource].get(record_id)
        if record is None:
            raise _not_found(f"{resource[:-1] if resource != 'property-roles' else 'property role'} "
                             f"'{record_id}'")
        return record


class ScalaraApp:
    """The SCALARA export API over one or more accounts; see the module docstring."""

    name = "scalara"

    def __init__(self, clock: Clock, accounts: dict[str, Dataset] | None = None, *,
                 admin_password: str = DEFAULT_ADMIN_PASSWORD, user_password: str = DEFAULT_USER_PASSWORD,
                 tombstone_days: int = TOMBSTONE_DAYS, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.clock = clock
        self.tombstone_days = tombstone_days
        self.max_body_bytes = max_body_bytes
        self.account_endpoint = True               # False: GET /me is 404, as in a contract-only SCALARA
        self._users = {ADMIN_USER: (_hash(admin_password), True), STAFF_USER: (_hash(user_password), False)}
        self._accounts: dict[str, _Account] = {}
        self._tokens: dict[str, str] = {}          # sha256 of token -> account name
        self._tokens_lock = threading.Lock()
        if accounts is None:
            accounts = {DEFAULT_ACCOUNT: generate(DEMO_PROPERTIES, DEMO_SEED, today=clock.today())}
        for account, data in accounts.items():
            self.add_account(account, data)

    # -- accounts and tokens ------------------------------------------------------------------

    def add_account(self, name: str, data: Dataset) -> None:
        """Serve ``data`` as account ``name``; the app takes ownership of the data set."""
        self._accounts[name] = _Account(name, data, dict(self._users))

    def account_names(self) -> list[str]:
        return sorted(self._accounts)

    def dataset(self, account: str = DEFAULT_ACCOUNT) -> Dataset:
        return self._account(account).data

    def _account(self, name: str) -> _Account:
        try:
            return self._accounts[name]
        except KeyError:
            raise _not_found(f"account '{name}'") from None

    def issue_token(self, account: str, user: str, password: str) -> str:
        """SCALARA's "generate token" button: admin only, password asked again, old token revoked."""
        acct = self._account(account)
        entry = acct.users.get(user)
        if entry is None or not hmac.compare_digest(entry[0], _hash(password)):
            raise ScalaraApiError(401, "invalid_credentials", "unknown user or wrong password")
        if not entry[1]:
            raise ScalaraApiError(403, "forbidden", f"user '{user}' is not an admin of this account")
        token = TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(TOKEN_LENGTH))
        with self._tokens_lock:
            if acct.token_hash is not None:
                self._tokens.pop(acct.token_hash, None)
            acct.token_hash = _hash(token)
            self._tokens[acct.token_hash] = acct.name
        return token

    def _authenticate(self, request: Request) -> _Account:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="scalara"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise ScalaraApiError(401, "invalid_token", "missing 'Authorization: Bearer <token>' header",
                                  challenge)
        with self._tokens_lock:
            name = self._tokens.get(_hash(token.strip()))
        if name is None:
            raise ScalaraApiError(401, "invalid_token",
                                  "the token is unknown or was revoked; an admin can generate a new one "
                                  "in SCALARA", challenge)
        return self._accounts[name]

    # -- reads ----------------------------------------------------------------------------------

    def list_page(self, account: str, resource: str, *, limit: int = LIMIT_DEFAULT, cursor: str | None = None,
                  updated_since: str | None = None, include_deleted: bool = False) -> dict[str, Any]:
        """One page ``{"items", "nextCursor"}``; ``updated_since`` as accepted by the query string."""
        query: dict[str, list[str]] = {"limit": [str(limit)],
                                       "includeDeleted": ["true" if include_deleted else "false"]}
        if cursor is not None:
            query["cursor"] = [cursor]
        if updated_since is not None:
            query["updatedSince"] = [updated_since]
        return self._list(self._account(account), self._resource(resource), query)

    def _list(self, acct: _Account, resource: str, query: dict[str, list[str]]) -> dict[str, Any]:
        limit, after, since, deleted = _list_params(resource, query)
        with acct.lock:
            ids = acct.ids[resource]
            live = acct.data.records[resource]
            graves = acct.data.tombstones[resource]
            oldest = stamp(self.clock.now() - dt.timedelta(days=self.tombstone_days))

            def visible(record_id: str) -> Record | None:
                record = live.get(record_id)
                if record is not None:
                    return record if since is None or record["updatedAt"] >= since else None
                gone = graves.get(record_id) if deleted else None
                if gone is None or gone < oldest or (since is not None and gone < since):
                    return None
                return {"id": record_id, "deleted": True, "deletedAt": gone}

            items: list[Record] = []
            position = bisect.bisect_right(ids, after) if after is not None else 0
            while position < len(ids) and len(items) < limit:
                item = visible(ids[position])
                position += 1
                if item is not None:
                    items.append(item)
            more = any(visible(ids[i]) is not None for i in range(position, len(ids)))
        next_cursor = _encode_cursor(resource, items[-1]["id"]) if more and items else None
        return {"items": items, "nextCursor": next_cursor}

    def get_record(self, account: str, resource: str, record_id: str) -> Record:
        acct = self._account(account)
        with acct.lock:
            return acct.live(self._resource(resource), record_id)

    @staticmethod
    def _resource(resource: str) -> str:
        if resource not in RESOURCES:
            raise _not_found(f"resource '{resource}' (resources: {', '.join(RESOURCES)})")
        return resource

    # -- mutations (Python API; the /sandbox endpoints call these) ------------------------------

    def update_record(self, resource: str, record_id: str, changes: dict[str, Any], *,
                      account: str = DEFAULT_ACCOUNT) -> Record:
        """Change fields of a record; ``updatedAt`` moves to the clock's now."""
        acct = self._account(account)
        validate_fields(self._resource(resource), changes)
        with acct.lock:
            record = {**acct.live(resource, record_id), **changes, "updatedAt": self.clock.timestamp()}
            acct.data.records[resource][record_id] = record
        return record

    def add_record(self, resource: str, record: dict[str, Any], *, account: str = DEFAULT_ACCOUNT) -> Record:
        """Add a record (nullable fields may be left out; ``id`` is generated when absent)."""
        acct = self._account(account)
        table = FIELDS[self._resource(resource)]
        fields = {k: v for k, v in record.items() if k != "id"}
        validate_fields(resource, fields)
        missing = [f for f, spec in table.items() if f not in record and f not in _READ_ONLY
                   and not spec.endswith("?")]
        if missing:
            raise _bad_body(f"missing required field(s) of {resource}: {', '.join(missing)}")
        with acct.lock:
            record_id = record.get("id")
            if record_id is None:
                record_id = str(uuid.UUID(int=acct.rng.getrandbits(128), version=4))
            elif not _check_type("uuid", record_id):
                raise _bad_body("field 'id' must be a uuid")
            if record_id in acct.data.records[resource]:
                raise ScalaraApiError(409, "conflict", f"{resource} '{record_id}' already exists")
            new = {"id": record_id, **{f: fields.get(f) for f in table if f not in _READ_ONLY},
                   "updatedAt": self.clock.timestamp()}
            if acct.data.tombstones[resource].pop(record_id, None) is None:
                bisect.insort(acct.ids[resource], record_id)
            acct.data.records[resource][record_id] = new
        return new

    def delete_record(self, resource: str, record_id: str, *, account: str = DEFAULT_ACCOUNT) -> dict[str, Any]:
        """Delete a record; it lives on as a tombstone for ``tombstone_days``."""
        acct = self._account(account)
        with acct.lock:
            acct.live(self._resource(resource), record_id)
            del acct.data.records[resource][record_id]
            deleted_at = self.clock.timestamp()
            acct.data.tombstones[resource][record_id] = deleted_at
        return {"id": record_id, "deleted": True, "deletedAt": deleted_at}

    def end_usage(self, usage_id: str, end_date: str | dt.date, *, account: str = DEFAULT_ACCOUNT) -> Record:
        """End a tenancy (or vacancy, self use) on ``end_date``."""
        acct = self._account(account)
        end = parse_date(end_date, "endDate")
        with acct.lock:
            usage = acct.live("usages", usage_id)
            if end < dt.date.fromisoformat(usage["startDate"]):
                raise _bad_body(f"'endDate' {end} is before the usage's startDate {usage['startDate']}")
            return self.update_record("usages", usage_id, {"endDate": end.isoformat()}, account=account)

    def change_owner(self, unit_id: str, owner_ids: list[str], valid_from: str | dt.date, *,
                     account: str = DEFAULT_ACCOUNT) -> Record:
        """Register a new owner: the open ownership ends the day before ``valid_from``."""
        acct = self._account(account)
        start = parse_date(valid_from, "validFrom")
        if not owner_ids or not _check_type("uuids", owner_ids):
            raise _bad_body("'newOwnerContactIds' must be a non-empty list of contact ids")
        with acct.lock:
            acct.live("units", unit_id)
            unknown = [c for c in owner_ids if c not in acct.data.records["contacts"]]
            if unknown:
                raise _bad_body(f"unknown contact(s) in 'newOwnerContactIds': {', '.join(unknown)}")
            held = [o for o in acct.data.records["ownerships"].values() if o["unitId"] == unit_id]
            for other in held:
                if other["validTo"] is None and other["validFrom"] >= start.isoformat():
                    raise _bad_body(f"'validFrom' must be after the current ownership's validFrom "
                                    f"{other['validFrom']}")
                if other["validTo"] is not None and other["validTo"] >= start.isoformat():
                    raise _bad_body(f"'validFrom' overlaps an ownership valid until {other['validTo']}")
            day_before = (start - dt.timedelta(days=1)).isoformat()
            for other in held:
                if other["validTo"] is None:
                    self.update_record("ownerships", other["id"], {"validTo": day_before}, account=account)
            return self.add_record("ownerships", {"unitId": unit_id, "ownerContactIds": list(owner_ids),
                                                  "validFrom": start.isoformat(), "validTo": None},
                                   account=account)

    def advance_clock(self, *, days: float = 0, seconds: float = 0) -> str:
        self.clock.advance(days=days, seconds=seconds)
        return self.clock.timestamp()

    # -- the App protocol -----------------------------------------------------------------------

    def resource_of(self, request: Request) -> str:
        first = request.path.strip("/").split("/", 1)[0]
        return first if first in (*RESOURCES, "me", "sandbox") else "unknown"

    @staticmethod
    def error_body(status: int, code: str, message: str) -> dict[str, str]:
        return {"error": code, "message": message}

    def handle(self, request: Request) -> Response:
        try:
            status, body = self._route(request)
        except ScalaraApiError as error:
            return Response(error.status, self.error_body(error.status, error.code, error.message),
                            dict(error.headers))
        return Response(status, body)

    def _route(self, request: Request) -> tuple[int, Any]:
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["sandbox"]:
            return self._sandbox(request, parts[1:])
        acct = self._authenticate(request)
        if len(parts) == 1 and parts[0] == "me" and self.account_endpoint:
            _allow(request, "GET")
            _no_query(request)
            return 200, {"accountId": acct.account_id, "accountName": acct.name}
        if not parts or len(parts) > 2 or parts[0] not in RESOURCES:
            raise _not_found(f"path '{request.path}'")
        _allow(request, "GET")
        if len(parts) == 1:
            return 200, self._list(acct, parts[0], request.query)
        _no_query(request)
        with acct.lock:
            return 200, acct.live(parts[0], parts[1])

    def _sandbox(self, request: Request, parts: list[str]) -> tuple[int, Any]:
        _no_query(request)
        if parts == ["clock", "advance"]:
            _allow(request, "POST")
            return 200, {"now": self.advance_clock(**_clock_body(self._body(request)))}
        if len(parts) < 3 or parts[0] != "accounts":
            raise _not_found(f"path '{request.path}'")
        account, rest = parts[1], parts[2:]
        if rest == ["casavi-token"]:
            _allow(request, "POST")
            body = self._body(request)
            user, password = body.get("user"), body.get("password")
            if not isinstance(user, str) or not isinstance(password, str) or set(body) - {"user", "password"}:
                raise _bad_body("body must be {\"user\": <string>, \"password\": <string>}")
            return 201, {"token": self.issue_token(account, user, password)}
        self._account(account)
        if len(rest) == 2 and rest[0] == "records" and rest[1] in RESOURCES:
            _allow(request, "POST")
            return 201, self.add_record(rest[1], self._body(request), account=account)
        if len(rest) == 3 and rest[0] == "records" and rest[1] in RESOURCES:
            _allow(request, "PATCH", "DELETE")
            if request.method == "DELETE":
                return 200, self.delete_record(rest[1], rest[2], account=account)
            return 200, self.update_record(rest[1], rest[2], self._body(request), account=account)
        if len(rest) == 3 and rest[0] == "usages" and rest[2] == "end":
            _allow(request, "POST")
            body = _only(self._body(request), "endDate")
            return 200, self.end_usage(rest[1], parse_date(body.get("endDate"), "endDate"), account=account)
        if len(rest) == 3 and rest[0] == "units" and rest[2] == "owner-change":
            _allow(request, "POST")
            body = _only(self._body(request), "newOwnerContactIds", "validFrom")
            return 201, self.change_owner(rest[1], body.get("newOwnerContactIds") or [],
                                          parse_date(body.get("validFrom"), "validFrom"), account=account)
        raise _not_found(f"path '{request.path}'")

    def _body(self, request: Request) -> dict[str, Any]:
        if len(request.body) > self.max_body_bytes:
            raise _bad_body(f"body larger than {self.max_body_bytes} bytes")
        try:
            body = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _bad_body(f"body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise _bad_body("body must be a JSON object")
        return body


# --------------------------------------------------------------------------------------------
# request helpers


def _allow(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise ScalaraApiError(405, "method_not_allowed",
                              f"{request.method} is not allowed on {request.path}; use {', '.join(methods)}",
                              {"Allow": ", ".join(methods)})


def _no_query(request: Request) -> None:
    if request.query:
        raise _bad_param(sorted(request.query)[0], "unknown parameter (this endpoint takes none)")


def _only(body: dict[str, Any], *names: str) -> dict[str, Any]:
    extra = sorted(set(body) - set(names))
    if extra:
        raise _bad_body(f"unknown field(s) {', '.join(extra)}; expected {', '.join(names)}")
    return body


def _clock_body(body: dict[str, Any]) -> dict[str, float]:
    _only(body, "days", "seconds")
    if not body:
        raise _bad_body("give 'days' and/or 'seconds'")
    for name, value in body.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise _bad_body(f"'{name}' must be a non-negative number")
    return {name: float(value) for name, value in body.items()}


def _list_params(resource: str, query: dict[str, list[str]]) -> tuple[int, str | None, str | None, bool]:
    """Validate the list query: (limit, id after which to start, updatedSince stamp, includeDeleted)."""
    for name, values in query.items():
        if name not in LIST_PARAMS:
            raise _bad_param(name, f"unknown parameter (allowed: {', '.join(LIST_PARAMS)})")
        if len(values) != 1:
            raise _bad_param(name, "given more than once")
    value = query.get("limit", [str(LIMIT_DEFAULT)])[0]
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= LIMIT_MAX:
        raise _bad_param("limit", f"must be an integer from 1 to {LIMIT_MAX}")
    limit = int(value)
    after = _decode_cursor(resource, query["cursor"][0]) if "cursor" in query else None
    since = _parse_since(query["updatedSince"][0]) if "updatedSince" in query else None
    deleted = query.get("includeDeleted", ["false"])[0]
    if deleted not in ("true", "false"):
        raise _bad_param("includeDeleted", "must be true or false")
    return limit, after, since, deleted == "true"


def _encode_cursor(resource: str, last_id: str) -> str:
    return base64.urlsafe_b64encode(f"{resource}:{last_id}".encode()).decode("ascii").rstrip("=")


def _decode_cursor(resource: str, cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor.translate(str.maketrans("-_", "+/")) + "=" * (-len(cursor) % 4),
                               validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_param("cursor", "not a cursor this API issued") from None
    kind, _, last_id = raw.partition(":")
    if kind != resource or not last_id or _encode_cursor(kind, last_id) != cursor:
        raise _bad_param("cursor", f"not a cursor of {resource}")
    return last_id


def _parse_since(value: str) -> str:
    """``updatedSince`` -> the API's own stamp format, rounded up to the millisecond (inclusive)."""
    if not _STAMP.match(value):
        raise _bad_param("updatedSince", "must be an ISO 8601 timestamp with zone, e.g. 2024-05-01T00:00:00Z")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _bad_param("updatedSince", "not a valid date and time") from None
    if moment.microsecond % 1000:
        moment += dt.timedelta(microseconds=1000 - moment.microsecond % 1000)
    return stamp(moment)
