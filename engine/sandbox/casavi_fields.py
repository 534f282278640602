"""The sandbox casavi's request checks: JSON bodies, PUT bodies against the catalog's field rules
(API.md section 2), and the error answers they raise.

Split from engine.sandbox.casavi so the app module holds the endpoints and this one the checks; both read engine/catalog/casavi.yaml through the catalog, so they cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.sandbox.app import Request, Response

__all__ = ["READ_ONLY", "FieldError", "Reject", "allow", "contact_key", "copy_json", "error", "json_object",
           "person_key", "validate_body"]

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


class Reject(Exception):
    """Carries an error response out of deep validation code; never leaves this module."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def error(status: int, message: str, code: str | None = None, errors: list[FieldError] | None = None,
           **extra: Any) -> Reject:
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body["code"] = code
    if errors is not None:
        body["errors"] = [{"field": e.field, "code": e.code} for e in errors]
    body.update(extra)
    return Reject(Response(status, body))


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (faster than copy.deepcopy for plain dicts and lists)."""
    return json.loads(json.dumps(value))


def person_key(fields: dict[str, Any]) -> tuple[str, ...]:
    return tuple((fields.get(n) or "").strip().lower() for n in ("firstName", "lastName", "companyName"))


def contact_key(fields: dict[str, Any]) -> tuple[str, ...] | None:
    """The "same person" key of a contact: e-mail plus names (None without an e-mail)."""
    email = (fields.get("email") or "").strip().lower()
    return (email, *person_key(fields)) if email else None


def allow(method: str, *methods: str) -> None:
    if method not in methods:
        reject = error(405, f"method {method} not allowed here", code="method_not_allowed")
        reject.response.headers["Allow"] = ", ".join(methods)
        raise reject


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_object(request: Request) -> dict[str, Any]:
    parse: Callable[[str], Any] = lambda text: json.loads(text, parse_constant=_reject_constant)  # noqa: E731
    try:
        body = parse(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise error(400, "the body is not valid JSON", errors=[FieldError("$", "invalid_json")]) from None
    if not isinstance(body, dict):
        raise error(400, "the body must be a JSON object", errors=[FieldError("$", "invalid_type")])
    return body
