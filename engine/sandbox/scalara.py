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

import bisect
import datetime as dt
import hashlib
import hmac
import json
import random
import secrets
import string
import threading
import uuid
from typing import Any

from engine.sandbox.app import Request, Response
from engine.sandbox.clock import Clock
from engine.sandbox.dataset import FIELDS
from engine.sandbox.generator import RESOURCES, Dataset, Record, generate
from engine.sandbox.scalara_checks import (
    LIMIT_DEFAULT,
    READ_ONLY,
    ScalaraApiError,
    allow,
    bad_body,
    check_type,
    clock_body,
    encode_cursor,
    list_params,
    no_query,
    not_found,
    only,
    parse_date,
    stamp,
    validate_fields,
)

DEFAULT_ACCOUNT = "demo"
DEFAULT_ADMIN_PASSWORD = "admin-sandbox"     # sandbox-only credentials, not secrets
DEFAULT_USER_PASSWORD = "user-sandbox"
ADMIN_USER, STAFF_USER = "admin", "user"
DEMO_PROPERTIES, DEMO_SEED = 12, 1
TOMBSTONE_DAYS = 90
MAX_BODY_BYTES = 1024 * 1024
TOKEN_PREFIX, TOKEN_LENGTH = "scl_", 40

_ALPHABET = string.ascii_letters + string.digits


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
            raise not_found(f"{resource[:-1] if resource != 'property-roles' else 'property role'} "
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
            raise not_found(f"account '{name}'") from None

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
        limit, after, since, deleted = list_params(resource, query)
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
        next_cursor = encode_cursor(resource, items[-1]["id"]) if more and items else None
        return {"items": items, "nextCursor": next_cursor}

    def get_record(self, account: str, resource: str, record_id: str) -> Record:
        acct = self._account(account)
        with acct.lock:
            return acct.live(self._resource(resource), record_id)

    @staticmethod
    def _resource(resource: str) -> str:
        if resource not in RESOURCES:
            raise not_found(f"resource '{resource}' (resources: {', '.join(RESOURCES)})")
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
        missing = [f for f, spec in table.items() if f not in record and f not in READ_ONLY
                   and not spec.endswith("?")]
        if missing:
            raise bad_body(f"missing required field(s) of {resource}: {', '.join(missing)}")
        with acct.lock:
            record_id = record.get("id")
            if record_id is None:
                record_id = str(uuid.UUID(int=acct.rng.getrandbits(128), version=4))
            elif not check_type("uuid", record_id):
                raise bad_body("field 'id' must be a uuid")
            if record_id in acct.data.records[resource]:
                raise ScalaraApiError(409, "conflict", f"{resource} '{record_id}' already exists")
            new = {"id": record_id, **{f: fields.get(f) for f in table if f not in READ_ONLY},
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
                raise bad_body(f"'endDate' {end} is before the usage's startDate {usage['startDate']}")
            return self.update_record("usages", usage_id, {"endDate": end.isoformat()}, account=account)

    def change_owner(self, unit_id: str, owner_ids: list[str], valid_from: str | dt.date, *,
                     account: str = DEFAULT_ACCOUNT) -> Record:
        """Register a new owner: the open ownership ends the day before ``valid_from``."""
        acct = self._account(account)
        start = parse_date(valid_from, "validFrom")
        if not owner_ids or not check_type("uuids", owner_ids):
            raise bad_body("'newOwnerContactIds' must be a non-empty list of contact ids")
        with acct.lock:
            acct.live("units", unit_id)
            unknown = [c for c in owner_ids if c not in acct.data.records["contacts"]]
            if unknown:
                raise bad_body(f"unknown contact(s) in 'newOwnerContactIds': {', '.join(unknown)}")
            held = [o for o in acct.data.records["ownerships"].values() if o["unitId"] == unit_id]
            for other in held:
                if other["validTo"] is None and other["validFrom"] >= start.isoformat():
                    raise bad_body(f"'validFrom' must be after the current ownership's validFrom "
                                    f"{other['validFrom']}")
                if other["validTo"] is not None and other["validTo"] >= start.isoformat():
                    raise bad_body(f"'validFrom' overlaps an ownership valid until {other['validTo']}")
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
            allow(request, "GET")
            no_query(request)
            return 200, {"accountId": acct.account_id, "accountName": acct.name}
        if not parts or len(parts) > 2 or parts[0] not in RESOURCES:
            raise not_found(f"path '{request.path}'")
        allow(request, "GET")
        if len(parts) == 1:
            return 200, self._list(acct, parts[0], request.query)
        no_query(request)
        with acct.lock:
            return 200, acct.live(parts[0], parts[1])

    def _sandbox(self, request: Request, parts: list[str]) -> tuple[int, Any]:
        no_query(request)
        if parts == ["clock", "advance"]:
            allow(request, "POST")
            return 200, {"now": self.advance_clock(**clock_body(self._body(request)))}
        if len(parts) < 3 or parts[0] != "accounts":
            raise not_found(f"path '{request.path}'")
        account, rest = parts[1], parts[2:]
        if rest == ["casavi-token"]:
            allow(request, "POST")
            body = self._body(request)
            user, password = body.get("user"), body.get("password")
            if not isinstance(user, str) or not isinstance(password, str) or set(body) - {"user", "password"}:
                raise bad_body("body must be {\"user\": <string>, \"password\": <string>}")
            return 201, {"token": self.issue_token(account, user, password)}
        self._account(account)
        if len(rest) == 2 and rest[0] == "records" and rest[1] in RESOURCES:
            allow(request, "POST")
            return 201, self.add_record(rest[1], self._body(request), account=account)
        if len(rest) == 3 and rest[0] == "records" and rest[1] in RESOURCES:
            allow(request, "PATCH", "DELETE")
            if request.method == "DELETE":
                return 200, self.delete_record(rest[1], rest[2], account=account)
            return 200, self.update_record(rest[1], rest[2], self._body(request), account=account)
        if len(rest) == 3 and rest[0] == "usages" and rest[2] == "end":
            allow(request, "POST")
            body = only(self._body(request), "endDate")
            return 200, self.end_usage(rest[1], parse_date(body.get("endDate"), "endDate"), account=account)
        if len(rest) == 3 and rest[0] == "units" and rest[2] == "owner-change":
            allow(request, "POST")
            body = only(self._body(request), "newOwnerContactIds", "validFrom")
            return 201, self.change_owner(rest[1], body.get("newOwnerContactIds") or [],
                                          parse_date(body.get("validFrom"), "validFrom"), account=account)
        raise not_found(f"path '{request.path}'")

    def _body(self, request: Request) -> dict[str, Any]:
        if len(request.body) > self.max_body_bytes:
            raise bad_body(f"body larger than {self.max_body_bytes} bytes")
        try:
            body = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise bad_body(f"body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise bad_body("body must be a JSON object")
        return body

