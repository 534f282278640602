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
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from engine.catalog import casavi_kinds, reference_id_rule
from engine.errors import ConfigError
from engine.sandbox.app import Request, Response
from engine.sandbox.casavi_fields import (
    FieldError,
    Reject,
    allow,
    contact_key,
    copy_json,
    error,
    json_object,
    person_key,
    validate_body,
)
from engine.sandbox.clock import Clock

KINDS = ("properties", "units", "contacts", "contracts")
_TOKEN_HEADER = "token"


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
        body = json_object(request)
        errors = [FieldError(name, "required" if body.get(name) is None else "invalid_type")
                  for name in ("key", "secret") if not isinstance(body.get(name), str)]
        errors += [FieldError(name, "unknown_field") for name in body if name not in ("key", "secret")]
        if errors:
            raise error(400, "invalid authentication request", errors=errors)
        account = self._by_key.get(body["key"])
        if account is None or not hmac.compare_digest(account.secret_hash, _hash(account.salt, body["secret"])):
            raise error(401, "wrong key or secret", code="invalid_credentials")
        token = secrets.token_urlsafe(32)
        expires = self.clock.now() + dt.timedelta(seconds=self.token_lifetime_s)
        self._tokens[_hash(self._token_salt, token)] = (account.name, expires)
        stamp = expires.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return Response(200, {"token": token, "expiresAt": stamp})

    def _account_of(self, request: Request) -> _Account:
        token = request.headers.get(_TOKEN_HEADER)
        if not token:
            raise error(401, "missing token header", code="unauthorized")
        entry = self._tokens.get(_hash(self._token_salt, token))
        if entry is None:
            raise error(401, "unknown token", code="unauthorized")
        if entry[1] <= self.clock.now():
            del self._tokens[_hash(self._token_salt, token)]
            raise error(401, "token expired; authenticate again", code="token_expired")
        return self._accounts[entry[0]]

    # -- the App protocol ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        with self._lock:
            try:
                return self._route(request)
            except Reject as reject:
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
            raise error(404, f"no such endpoint: {request.path}", code="not_found")
        if parts[1] == "authenticate" and len(parts) == 2:
            allow(method, "POST")
            return self._authenticate(request)
        kind = parts[1]
        if kind not in KINDS or len(parts) > 5:
            raise error(404, f"no such endpoint: {request.path}", code="not_found")
        shape = len(parts)
        sub = parts[3] if shape >= 4 else None
        bad_sub = sub not in ("archive", "restore") if shape == 4 else (
            shape == 5 and (kind != "properties" or sub != "responsibilities"))
        if bad_sub:
            raise error(404, f"no such endpoint: {request.path}", code="not_found")
        account = self._account_of(request)
        if shape == 2:
            allow(method, "GET")
            return self._list(account, kind, request)
        record_id = self._check_id(parts[2], "id")
        if shape == 3:
            allow(method, "GET", "PUT", "DELETE")
            if method == "GET":
                return Response(200, self._view(account, kind, self._get(account, kind, record_id)))
            if method == "PUT":
                return self._put(account, kind, record_id, json_object(request))
            return self._delete(account, kind, record_id)
        if shape == 4:
            allow(method, "POST")
            return self._set_archived(account, kind, record_id, archived=sub == "archive")
        contact_id = self._check_id(parts[4], "contactId")
        allow(method, "PUT", "DELETE")
        if method == "PUT":
            return self._put_responsibility(account, record_id, contact_id, json_object(request))
        return self._delete_responsibility(account, record_id, contact_id)

    def _check_id(self, value: str, name: str) -> str:
        if not self._id_pattern.match(value):
            raise error(400, f"invalid reference id in path ({name}): 1-64 of A-Z a-z 0-9 . _ -",
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
            raise error(400, "invalid query parameters", errors=errors)
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
            raise error(404, f"{kind[:-1]} {record_id} not found", code="not_found")
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
            raise error(400, f"invalid {kind[:-1]}", errors=errors)
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
            raise error(422, "reference to an unknown record", errors=errors)

    def _check_unit(self, account: _Account, fields: dict[str, Any], *, creating: bool) -> None:
        prop = account.records["properties"][fields["propertyId"]]
        streets = {a["street"] for a in prop.fields.get("addresses", [])}
        if fields.get("address") is not None and fields["address"] not in streets:
            raise error(400, "unit address is not one of its property's address streets",
                         errors=[FieldError("address", "address_not_in_property")])
        if creating:
            self._check_quota(account)

    def _check_quota(self, account: _Account) -> None:
        if self.unit_quota is None:
            return
        active = sum(1 for u in account.records["units"].values() if not u.archived)
        if active >= self.unit_quota:
            raise error(409, f"unit quota of {self.unit_quota} reached", code="unit_quota_exceeded",
                         limit=self.unit_quota)

    def _check_duplicate_contact(self, account: _Account, record_id: str, fields: dict[str, Any]) -> None:
        email = (fields.get("email") or "").strip().lower()
        if not email:
            return
        contacts = account.records["contacts"]
        for other_id in account.contacts_by_person.get((email, *person_key(fields)), {}):
            if other_id != record_id and not contacts[other_id].archived:
                raise error(409, f"the same person exists already as contact {other_id}",
                             code="duplicate_contact", existingId=other_id)

    def _index(self, account: _Account, kind: str, record: _Record) -> None:
        if kind == "units":
            account.units_by_property.setdefault(record.fields["propertyId"], {})[record.id] = None
        elif kind == "contracts":
            account.contracts_by_unit.setdefault(record.fields["unitId"], {})[record.id] = None
            account.contracts_by_contact.setdefault(record.fields["contactId"], {})[record.id] = None
        elif kind == "contacts" and (key := contact_key(record.fields)) is not None:
            account.contacts_by_person.setdefault(key, {})[record.id] = None

    def _unindex(self, account: _Account, kind: str, record: _Record) -> None:
        if kind == "units":
            account.units_by_property.get(record.fields["propertyId"], {}).pop(record.id, None)
        elif kind == "contracts":
            account.contracts_by_unit.get(record.fields["unitId"], {}).pop(record.id, None)
            account.contracts_by_contact.get(record.fields["contactId"], {}).pop(record.id, None)
        elif kind == "contacts" and (key := contact_key(record.fields)) is not None:
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
            raise error(409, f"archive the {kind[:-1]} before deleting it", code="not_archived")
        if kind == "properties" and account.units_by_property.get(record_id):
            raise error(409, "the property still has units", code="has_dependents")
        if kind == "contacts" and account.contracts_by_contact.get(record_id):
            raise error(409, "the contact still has contracts", code="has_dependents")
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
            raise error(400, "invalid responsibility", errors=errors)
        if contact_id not in account.records["contacts"]:
            raise error(422, "reference to an unknown record",
                         errors=[FieldError("contactId", "unknown_reference")])
        existing = prop.responsibilities.get(contact_id)
        if existing != fields:
            prop.responsibilities[contact_id] = fields
            prop.modified = self.clock.timestamp()
        return Response(200 if existing is not None else 201, {"contactId": contact_id, **fields})

    def _delete_responsibility(self, account: _Account, property_id: str, contact_id: str) -> Response:
        prop = self._get(account, "properties", property_id)
        if prop.responsibilities.pop(contact_id, None) is None:
            raise error(404, f"contact {contact_id} has no responsibility on {property_id}", code="not_found")
        prop.modified = self.clock.timestamp()
        return Response(204, None)

    # -- Python accessors for tests and the demo ---------------------------------------------------

    def records(self, kind: str, account: str = "demo", *, include_archived: bool = True) -> list[dict[str, Any]]:
        """What is stored, as the API would read it (in internalId order)."""
        with self._lock:
            acc = self._account(account)
            views: list[dict[str, Any]] = copy_json([self._view(acc, kind, r) for r in acc.records[kind].values()
                                                 if include_archived or not r.archived])
            return views

    def record(self, kind: str, record_id: str, account: str = "demo") -> dict[str, Any] | None:
        with self._lock:
            acc = self._account(account)
            rec = acc.records[kind].get(record_id)
            return None if rec is None else copy_json(self._view(acc, kind, rec))

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
