"""The casavi API v2 as the sandbox implements it (API.md section 2), as an ``App``.

casavi is the sync's target and nobody may test against the real one, so this stand-in must be
strict where casavi is strict (reference-id syntax, required fields, unknown references, quota,
delete-only-when-archived) and predictable where casavi is unknown: every such choice is listed
in docs/sandbox.md and tagged [assumed] in schemas/openapi-casavi.yaml.

Field rules come from ``engine/catalog/casavi.yaml`` (the one place the engine's knowledge of the
write model lives), so the sandbox and the engine cannot drift apart.

Decisions where API.md is silent (all [assumed]):
- writing to an archived record is allowed and it stays archived;
- read-only fields in a PUT body (``internalId``, ``modifiedAt``, ``archived``, portal state, ...)
  give 400 ``read_only``; ``id`` is accepted when it equals the path id;
- the unit quota counts non-archived units; creating or restoring one beyond it gives
  ``409 {"message", "code": "unit_quota_exceeded", "limit": N}``;
- deleting a property that still has units, or a contact that still has contracts, gives
  ``409 has_dependents``; deleting a contact drops its responsibilities;
- a property's ``modifiedAt`` moves when its responsibilities change (they are part of its read);
  units and contracts are records of their own and do not touch their parents' ``modifiedAt``;
- reads list only non-archived units under ``addresses`` and non-archived contracts under a contact;
- two non-archived contacts with the same e-mail and the same name are one person twice:
  ``409 duplicate_contact`` ("one contact per person").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from engine.catalog import casavi_kinds, reference_id_rule
from engine.errors import ConfigError
from engine.sandbox.app import Request, Response
from engine.sandbox.clock import Clock

KINDS = ("properties", "units", "contacts", "contracts")
_TOKEN_HEADER = "token"
READ_ONLY = frozenset({"internalId", "modifiedAt", "archived", "isRegistered", "isInvited",
                       "responsibilities", "contracts"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MISSING = object()


@dataclass(frozen=True)
class FieldError:
    """One entry of a 400/422 answer's ``errors`` list."""

    field: str
    code: str


def validate_body(kind: str, spec: dict[str, Any], body: dict[str, Any], *,
                  path_ids: dict[str, str]) -> tuple[dict[str, Any], list[FieldError]]:
    """Check a PUT body against the catalog's field rules; returns (stored fields, ALL problems).

    The body replaces the writable fields: an absent field becomes null (or {} / [] for objects
    and lists). Path ids may be repeated in the body only with the same value.
    """
    fields_spec: dict[str, Any] = spec["fields"]
    errors: list[FieldError] = []
    for name in body:
        if name in path_ids:
            if body[name] != path_ids[name]:
                errors.append(FieldError(name, "path_mismatch"))
        elif name in READ_ONLY:
            errors.append(FieldError(name, "read_only"))
        elif name not in fields_spec:
            errors.append(FieldError(name, "unknown_field"))
    fields: dict[str, Any] = {}
    for name, fspec in fields_spec.items():
        if name in path_ids:
            continue
        value = body.get(name, _MISSING)
        ftype = str(fspec.get("type", "string"))
        if value is _MISSING or value is None:
            if fspec.get("required"):
                errors.append(FieldError(name, "required"))
            elif value is None and not fspec.get("nullable") and ftype in ("object", "array<object>"):
                errors.append(FieldError(name, "invalid_type"))
            fields[name] = {} if ftype == "object" else [] if ftype == "array<object>" else None
            continue
        code = _type_problem(ftype, fspec, value)
        if code is None and fspec.get("required") and isinstance(value, str) and not value.strip():
            code = "required"
        if code is None and ftype == "array<object>":
            errors.extend(_item_problems(name, value))
        if code is not None:
            errors.append(FieldError(name, code))
        fields[name] = value
    one_of = spec.get("required_one_of") or []
    if one_of and not any(isinstance(fields.get(n), str) and fields[n].strip() for n in one_of):
        errors.extend(FieldError(n, "required_one_of") for n in one_of)
    start, end = fields.get("startDate"), fields.get("endDate")
    if kind == "contracts" and isinstance(start, str) and isinstance(end, str) and _DATE.match(start) \
            and _DATE.match(end) and end < start:
        errors.append(FieldError("endDate", "end_before_start"))
    return fields, errors


def _type_problem(ftype: str, fspec: dict[str, Any], value: Any) -> str | None:
    if ftype in ("string", "enum", "date") and not isinstance(value, str):
        return "invalid_type"
    if ftype == "enum" and value not in fspec.get("values", []):
        return "invalid_value"
    if ftype == "date":
        try:
            if not _DATE.match(value):
                raise ValueError(value)
            dt.date.fromisoformat(value)
        except ValueError:
            return "invalid_format"
    if fspec.get("format") == "email" and not _EMAIL.match(value):
        return "invalid_format"
    checks: dict[str, Callable[[Any], bool]] = {
        "object": lambda v: isinstance(v, dict),
        "array<object>": lambda v: isinstance(v, list),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    check = checks.get(ftype)
    return "invalid_type" if check is not None and not check(value) else None


def _item_problems(name: str, items: list[Any]) -> list[FieldError]:
    """Items of a list field; only ``addresses: [{"street"}]`` exists in the write model."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            errors.append(FieldError(where, "invalid_type"))
            continue
        errors.extend(FieldError(f"{where}.{key}", "read_only" if key == "units" else "unknown_field")
                      for key in item if key != "street")
        street = item.get("street")
        if not isinstance(street, str) or not street.strip():
            errors.append(FieldError(f"{where}.street", "required" if street is None else "invalid_type"))
        elif street in seen:
            errors.append(FieldError(f"{where}.street", "duplicate"))
        else:
            seen.add(street)
    return errors


class _Reject(Exception):
    """Carries an error response out of deep validation code; never leaves this module."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _error(status: int, message: str, code: str | None = None, errors: list[FieldError] | None = None,
           **extra: Any) -> _Reject:
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body["code"] = code
    if errors is not None:
        body["errors"] = [{"field": e.field, "code": e.code} for e in errors]
    body.update(extra)
    return _Reject(Response(status, body))


@dataclass
class _Record:
    id: str
    internal_id: int
    fields: dict[str, Any]
    modified: str                      # ISO timestamp, ms precision, Z
    archived: bool = False
    registered: bool = False           # contacts: portal state, owned by casavi
    invited: bool = False
    responsibilities: dict[str, dict[str, Any]] = field(default_factory=dict)  # properties


@dataclass
class _Account:
    name: str
    key: str
    salt: bytes
    secret_hash: bytes
    records: dict[str, dict[str, _Record]] = field(default_factory=lambda: {k: {} for k in KINDS})
    next_internal_id: int = 1
    units_by_property: dict[str, dict[str, None]] = field(default_factory=dict)
    contracts_by_unit: dict[str, dict[str, None]] = field(default_factory=dict)
    contracts_by_contact: dict[str, dict[str, None]] = field(default_factory=dict)
    contacts_by_person: dict[tuple[str, ...], dict[str, None]] = field(default_factory=dict)  # e-mail + name


def _hash(salt: bytes, text: str) -> bytes:
    return hashlib.sha256(salt + text.encode("utf-8")).digest()


def _parse_timestamp(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


class CasaviApp:
    """casavi v2: accounts with key/secret, tokens, four record kinds, responsibilities. Thread-safe."""

    name = "casavi"

    def __init__(self, clock: Clock, *, page_size: int = 50, token_lifetime_s: float = 30 * 24 * 3600,
                 unit_quota: int | None = None, default_account: str | None = "demo") -> None:
        if page_size < 1:
            raise ConfigError("casavi page_size must be at least 1")
        if token_lifetime_s <= 0:
            raise ConfigError("casavi token lifetime must be positive")
        self.clock = clock
        self.page_size = page_size
        self.token_lifetime_s = token_lifetime_s
        self.unit_quota = unit_quota
        self._lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        self._by_key: dict[str, _Account] = {}
        self._tokens: dict[bytes, tuple[str, dt.datetime]] = {}
        self._token_salt = secrets.token_bytes(16)
        self._kinds = casavi_kinds()
        self._id_pattern = re.compile(reference_id_rule()["pattern"])
        # The sandbox's own demo pair: kept so the facade and the CLI can hand it out.
        self.default_credentials: tuple[str, str] | None = None
        if default_account is not None:
            self.default_credentials = self.add_account(default_account)

    # -- accounts and tokens -------------------------------------------------------------------------

    def add_account(self, name: str) -> tuple[str, str]:
        """Create a customer account; returns its (key, secret). Only a hash of the secret is kept."""
        with self._lock:
            if name in self._accounts:
                raise ConfigError(f"casavi sandbox account {name!r} exists already")
            key = "ck_" + secrets.token_hex(12)
            secret = "cs_" + secrets.token_urlsafe(30)
            salt = secrets.token_bytes(16)
            account = _Account(name=name, key=key, salt=salt, secret_hash=_hash(salt, secret))
            self._accounts[name] = account
            self._by_key[key] = account
            return key, secret

    def _authenticate(self, request: Request) -> Response:
        body = _json_object(request)
        errors = [FieldError(name, "required" if body.get(name) is None else "invalid_type")
                  for name in ("key", "secret") if not isinstance(body.get(name), str)]
        errors += [FieldError(name, "unknown_field") for name in body if name not in ("key", "secret")]
        if errors:
            raise _error(400, "invalid authentication request", errors=errors)
        account = self._by_key.get(body["key"])
        if account is None or not hmac.compare_digest(account.secret_hash, _hash(account.salt, body["secret"])):
            raise _error(401, "wrong key or secret", code="invalid_credentials")
        token = secrets.token_urlsafe(32)
        expires = self.clock.now() + dt.timedelta(seconds=self.token_lifetime_s)
        self._tokens[_hash(self._token_salt, token)] = (account.name, expires)
        stamp = expires.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return Response(200, {"token": token, "expiresAt": stamp})

    def _account_of(self, request: Request) -> _Account:
        token = request.headers.get(_TOKEN_HEADER)
        if not token:
            raise _error(401, "missing token header", code="unauthorized")
        entry = self._tokens.get(_hash(self._token_salt, token))
        if entry is None:
            raise _error(401, "unknown token", code="unauthorized")
        if entry[1] <= self.clock.now():
            del self._tokens[_hash(self._token_salt, token)]
            raise _error(401, "token expired; authenticate again", code="token_expired")
        return self._accounts[entry[0]]

    # -- the App protocol ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        with self._lock:
            try:
                return self._route(request)
            except _Reject as reject:
                return reject.response

    def resource_of(self, request: Request) -> str:
        parts = [p for p in request.path.split("/") if p]
        if len(parts) < 2 or parts[0] != "v2":
            return "sandbox" if parts[:1] == ["sandbox"] else "unknown"
        if parts[1] == "authenticate":
            return "authenticate"
        if len(parts) >= 4 and parts[1] == "properties" and parts[3] == "responsibilities":
            return "responsibilities"
        return parts[1] if parts[1] in KINDS else "unknown"

    def is_write(self, request: Request) -> bool:
        """PUT/POST/DELETE on data; authentication is not a write."""
        return request.method in ("PUT", "POST", "DELETE") and self.resource_of(request) not in (
            "authenticate", "unknown", "sandbox")

    @staticmethod
    def error_body(status: int, code: str, message: str) -> Any:
        """casavi's error shape, used by the HTTP layer for the errors it produces itself."""
        return {"message": message, "code": code}

    def _route(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if len(parts) < 2 or parts[0] != "v2":
            raise _error(404, f"no such endpoint: {request.path}", code="not_found")
        if parts[1] == "authenticate" and len(parts) == 2:
            _allow(method, "POST")
            return self._authenticate(request)
        kind = parts[1]
        if kind not in KINDS or len(parts) > 5:
            raise _error(404, f"no such endpoint: {request.path}", code="not_found")
        shape = len(parts)
        sub = parts[3] if shape >= 4 else None
        bad_sub = sub not in ("archive", "restore") if shape == 4 else (
            shape == 5 and (kind != "properties" or sub != "responsibilities"))
        if bad_sub:
            raise _error(404, f"no such endpoint: {request.path}", code="not_found")
        account = self._account_of(request)
        if shape == 2:
            _allow(method, "GET")
            return self._list(account, kind, request)
        record_id = self._check_id(parts[2], "id")
        if shape == 3:
            _allow(method, "GET", "PUT", "DELETE")
            if method == "GET":
                return Response(200, self._view(account, kind, self._get(account, kind, record_id)))
            if method == "PUT":
                return self._put(account, kind, record_id, _json_object(request))
            return self._delete(account, kind, record_id)
        if shape == 4:
            _allow(method, "POST")
            return self._set_archived(account, kind, record_id, archived=sub == "archive")
        contact_id = self._check_id(parts[4], "contactId")
        _allow(method, "PUT", "DELETE")
        if method == "PUT":
            return self._put_responsibility(account, record_id, contact_id, _json_object(request))
        return self._delete_responsibility(account, record_id, contact_id)

    def _check_id(self, value: str, name: str) -> str:
        if not self._id_pattern.match(value):
            raise _error(400, f"invalid reference id in path ({name}): 1-64 of A-Z a-z 0-9 . _ -",
                         errors=[FieldError(name, "invalid_reference_id")])
        return value

    # -- reads -------------------------------------------------------------------------------------

    def _list(self, account: _Account, kind: str, request: Request) -> Response:
        allowed = {"page", "modifiedAfter", "includeArchived"}
        errors = [FieldError(name, "unknown_parameter") for name in request.query if name not in allowed]
        errors += [FieldError(name, "invalid_parameter") for name, values in request.query.items()
                   if name in allowed and len(values) != 1]
        page, after, archived = 1, None, False
        if not errors:
            q = {name: values[0] for name, values in request.query.items()}
            if "page" in q:
                if re.fullmatch(r"[0-9]{1,9}", q["page"]) and int(q["page"]) >= 1:
                    page = int(q["page"])
                else:
                    errors.append(FieldError("page", "invalid_parameter"))
            if "modifiedAfter" in q:
                try:
                    after = _parse_timestamp(q["modifiedAfter"])
                except ValueError:
                    errors.append(FieldError("modifiedAfter", "invalid_parameter"))
            if "includeArchived" in q:
                if q["includeArchived"] not in ("true", "false"):
                    errors.append(FieldError("includeArchived", "invalid_parameter"))
                archived = q["includeArchived"] == "true"
        if errors:
            raise _error(400, "invalid query parameters", errors=errors)
        start, stop = (page - 1) * self.page_size, page * self.page_size
        matched: list[_Record] = []
        for record in account.records[kind].values():      # insertion order = internalId order
            if record.archived and not archived:
                continue
            if after is not None and _parse_timestamp(record.modified) <= after:
                continue
            matched.append(record)
            if len(matched) > stop:
                break
        items = [self._view(account, kind, r) for r in matched[start:stop]]
        next_url = None
        if len(matched) > stop:
            query = {name: values[0] for name, values in request.query.items()}
            query["page"] = str(page + 1)
            host = request.headers.get("host", "localhost")
            next_url = f"http://{host}{request.path}?{urlencode(query)}"
        return Response(200, {"list": items, "_links": {"next": next_url}})

    def _get(self, account: _Account, kind: str, record_id: str) -> _Record:
        record = account.records[kind].get(record_id)
        if record is None:
            raise _error(404, f"{kind[:-1]} {record_id} not found", code="not_found")
        return record

    def _view(self, account: _Account, kind: str, record: _Record) -> dict[str, Any]:
        view: dict[str, Any] = {"id": record.id, "internalId": record.internal_id}
        # Shared, not copied: stored field dicts are replaced on write, never changed in place, and
        # the HTTP layer only serialises. Python accessors hand out deep copies (``_copy``).
        view.update(record.fields)
        if kind == "properties":
            units = [account.records["units"][u] for u in account.units_by_property.get(record.id, {})]
            view["addresses"] = [
                {"street": a["street"],
                 "units": [u.id for u in units if not u.archived and u.fields.get("address") == a["street"]]}
                for a in record.fields.get("addresses", [])]
            view["responsibilities"] = [{"contactId": cid, **r} for cid, r in record.responsibilities.items()]
        elif kind == "contacts":
            view["contracts"] = []
            for cid in account.contracts_by_contact.get(record.id, {}):
                contract = account.records["contracts"][cid]
                if contract.archived:
                    continue
                unit = account.records["units"].get(contract.fields["unitId"])
                view["contracts"].append({
                    "id": cid, "type": contract.fields["type"],
                    "propertyId": unit.fields["propertyId"] if unit else None,
                    "unitId": contract.fields["unitId"], "startDate": contract.fields["startDate"],
                    "endDate": contract.fields["endDate"]})
            view["isRegistered"] = record.registered
            view["isInvited"] = record.invited
        view["modifiedAt"] = record.modified
        view["archived"] = record.archived
        return view

    # -- writes ------------------------------------------------------------------------------------

    def _put(self, account: _Account, kind: str, record_id: str, body: dict[str, Any]) -> Response:
        fields, errors = validate_body(kind, self._kinds[kind], body, path_ids={"id": record_id})
        if errors:
            raise _error(400, f"invalid {kind[:-1]}", errors=errors)
        self._check_references(account, kind, fields)
        existing = account.records[kind].get(record_id)
        if kind == "units":
            self._check_unit(account, fields, creating=existing is None)
        if kind == "contacts":
            self._check_duplicate_contact(account, record_id, fields)
        if existing is not None:
            if existing.fields != fields:
                self._unindex(account, kind, existing)
                existing.fields = fields
                existing.modified = self.clock.timestamp()
                self._index(account, kind, existing)
            return Response(200, self._view(account, kind, existing))
        record = _Record(record_id, account.next_internal_id, fields, self.clock.timestamp())
        account.next_internal_id += 1
        account.records[kind][record_id] = record
        self._index(account, kind, record)
        return Response(201, self._view(account, kind, record))

    def _check_references(self, account: _Account, kind: str, fields: dict[str, Any]) -> None:
        errors = [FieldError(name, "unknown_reference")
                  for name, spec in self._kinds[kind]["fields"].items()
                  if spec.get("references") and name in fields
                  and fields[name] not in account.records[spec["references"]]]
        if errors:
            raise _error(422, "reference to an unknown record", errors=errors)

    def _check_unit(self, account: _Account, fields: dict[str, Any], *, creating: bool) -> None:
        prop = account.records["properties"][fields["propertyId"]]
        streets = {a["street"] for a in prop.fields.get("addresses", [])}
        if fields.get("address") is not None and fields["address"] not in streets:
            raise _error(400, "unit address is not one of its property's address streets",
                         errors=[FieldError("address", "address_not_in_property")])
        if creating:
            self._check_quota(account)

    def _check_quota(self, account: _Account) -> None:
        if self.unit_quota is None:
            return
        active = sum(1 for u in account.records["units"].values() if not u.archived)
        if active >= self.unit_quota:
            raise _error(409, f"unit quota of {self.unit_quota} reached", code="unit_quota_exceeded",
                         limit=self.unit_quota)

    def _check_duplicate_contact(self, account: _Account, record_id: str, fields: dict[str, Any]) -> None:
        email = (fields.get("email") or "").strip().lower()
        if not email:
            return
        contacts = account.records["contacts"]
        for other_id in account.contacts_by_person.get((email, *_person_key(fields)), {}):
            if other_id != record_id and not contacts[other_id].archived:
                raise _error(409, f"the same person exists already as contact {other_id}",
                             code="duplicate_contact", existingId=other_id)

    def _index(self, account: _Account, kind: str, record: _Record) -> None:
        if kind == "units":
            account.units_by_property.setdefault(record.fields["propertyId"], {})[record.id] = None
        elif kind == "contracts":
            account.contracts_by_unit.setdefault(record.fields["unitId"], {})[record.id] = None
            account.contracts_by_contact.setdefault(record.fields["contactId"], {})[record.id] = None
        elif kind == "contacts" and (key := _contact_key(record.fields)) is not None:
            account.contacts_by_person.setdefault(key, {})[record.id] = None

    def _unindex(self, account: _Account, kind: str, record: _Record) -> None:
        if kind == "units":
            account.units_by_property.get(record.fields["propertyId"], {}).pop(record.id, None)
        elif kind == "contracts":
            account.contracts_by_unit.get(record.fields["unitId"], {}).pop(record.id, None)
            account.contracts_by_contact.get(record.fields["contactId"], {}).pop(record.id, None)
        elif kind == "contacts" and (key := _contact_key(record.fields)) is not None:
            account.contacts_by_person.get(key, {}).pop(record.id, None)

    def _set_archived(self, account: _Account, kind: str, record_id: str, *, archived: bool) -> Response:
        record = self._get(account, kind, record_id)
        if record.archived != archived:
            if kind == "units" and not archived:
                self._check_quota(account)
            record.archived = archived
            if kind == "contacts" and archived:      # archiving ends portal access
                record.registered = record.invited = False
            record.modified = self.clock.timestamp()
        return Response(200, self._view(account, kind, record))

    def _delete(self, account: _Account, kind: str, record_id: str) -> Response:
        record = self._get(account, kind, record_id)
        if not record.archived:
            raise _error(409, f"archive the {kind[:-1]} before deleting it", code="not_archived")
        if kind == "properties" and account.units_by_property.get(record_id):
            raise _error(409, "the property still has units", code="has_dependents")
        if kind == "contacts" and account.contracts_by_contact.get(record_id):
            raise _error(409, "the contact still has contracts", code="has_dependents")
        if kind == "units":
            for contract_id in list(account.contracts_by_unit.get(record_id, {})):
                self._remove(account, "contracts", account.records["contracts"][contract_id])
        if kind == "contacts":
            for prop in account.records["properties"].values():
                if prop.responsibilities.pop(record_id, None) is not None:
                    prop.modified = self.clock.timestamp()
        self._remove(account, kind, record)
        return Response(204, None)

    def _remove(self, account: _Account, kind: str, record: _Record) -> None:
        self._unindex(account, kind, record)
        del account.records[kind][record.id]

    def _put_responsibility(self, account: _Account, property_id: str, contact_id: str,
                            body: dict[str, Any]) -> Response:
        prop = self._get(account, "properties", property_id)
        fields, errors = validate_body("responsibilities", self._kinds["responsibilities"], body,
                                       path_ids={"propertyId": property_id, "contactId": contact_id})
        if errors:
            raise _error(400, "invalid responsibility", errors=errors)
        if contact_id not in account.records["contacts"]:
            raise _error(422, "reference to an unknown record",
                         errors=[FieldError("contactId", "unknown_reference")])
        existing = prop.responsibilities.get(contact_id)
        if existing != fields:
            prop.responsibilities[contact_id] = fields
            prop.modified = self.clock.timestamp()
        return Response(200 if existing is not None else 201, {"contactId": contact_id, **fields})

    def _delete_responsibility(self, account: _Account, property_id: str, contact_id: str) -> Response:
        prop = self._get(account, "properties", property_id)
        if prop.responsibilities.pop(contact_id, None) is None:
            raise _error(404, f"contact {contact_id} has no responsibility on {property_id}", code="not_found")
        prop.modified = self.clock.timestamp()
        return Response(204, None)

    # -- Python accessors for tests and the demo ---------------------------------------------------

    def records(self, kind: str, account: str = "demo", *, include_archived: bool = True) -> list[dict[str, Any]]:
        """What is stored, as the API would read it (in internalId order)."""
        with self._lock:
            acc = self._account(account)
            views: list[dict[str, Any]] = _copy([self._view(acc, kind, r) for r in acc.records[kind].values()
                                                 if include_archived or not r.archived])
            return views

    def record(self, kind: str, record_id: str, account: str = "demo") -> dict[str, Any] | None:
        with self._lock:
            acc = self._account(account)
            rec = acc.records[kind].get(record_id)
            return None if rec is None else _copy(self._view(acc, kind, rec))

    def counts(self, account: str = "demo") -> dict[str, int]:
        """Stored records per kind (archived included), plus ``archived`` and ``responsibilities``."""
        with self._lock:
            acc = self._account(account)
            out = {kind: len(acc.records[kind]) for kind in KINDS}
            out["archived"] = sum(r.archived for kind in KINDS for r in acc.records[kind].values())
            out["responsibilities"] = sum(len(p.responsibilities) for p in acc.records["properties"].values())
            return out

    def set_portal_state(self, contact_id: str, *, registered: bool | None = None,
                         invited: bool | None = None, account: str = "demo") -> None:
        """Play casavi's part: a contact was invited to / registered in the portal."""
        with self._lock:
            record = self._account(account).records["contacts"].get(contact_id)
            if record is None:
                raise ConfigError(f"no contact {contact_id!r} in casavi sandbox account {account!r}")
            if registered is not None:
                record.registered = registered
            if invited is not None:
                record.invited = invited
            record.modified = self.clock.timestamp()

    def _account(self, name: str) -> _Account:
        if name not in self._accounts:
            raise ConfigError(f"no casavi sandbox account {name!r}; known: {', '.join(sorted(self._accounts))}")
        return self._accounts[name]


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (faster than copy.deepcopy for plain dicts and lists)."""
    return json.loads(json.dumps(value))


def _person_key(fields: dict[str, Any]) -> tuple[str, ...]:
    return tuple((fields.get(n) or "").strip().lower() for n in ("firstName", "lastName", "companyName"))


def _contact_key(fields: dict[str, Any]) -> tuple[str, ...] | None:
    """The "same person" key of a contact: e-mail plus names (None without an e-mail)."""
    email = (fields.get("email") or "").strip().lower()
    return (email, *_person_key(fields)) if email else None


def _allow(method: str, *methods: str) -> None:
    if method not in methods:
        reject = _error(405, f"method {method} not allowed here", code="method_not_allowed")
        reject.response.headers["Allow"] = ", ".join(methods)
        raise reject


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_object(request: Request) -> dict[str, Any]:
    parse: Callable[[str], Any] = lambda text: json.loads(text, parse_constant=_reject_constant)  # noqa: E731
    try:
        body = parse(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _error(400, "the body is not valid JSON", errors=[FieldError("$", "invalid_json")]) from None
    if not isinstance(body, dict):
        raise _error(400, "the body must be a JSON object", errors=[FieldError("$", "invalid_type")])
    return body
