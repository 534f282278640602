"""The sandbox SCALARA's checks: its error type, query parameters and cursors, and the field table
checks of sandbox mutations (API.md section 1).

Split from engine.sandbox.scalara so the app module holds accounts, tokens and endpoints, and
this one what a request must look like.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

from engine.errors import CasaviSyncError
from engine.sandbox.app import Request
from engine.sandbox.dataset import FIELDS

LIMIT_DEFAULT, LIMIT_MAX = 100, 500
LIST_PARAMS = ("limit", "cursor", "updatedSince", "includeDeleted")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_STAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$")
READ_ONLY = frozenset({"id", "updatedAt"})


class ScalaraApiError(CasaviSyncError):
    """A request the sandbox refuses; becomes ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_param(name: str, why: str) -> ScalaraApiError:
    return ScalaraApiError(400, "invalid_parameter", f"query parameter '{name}': {why}")


def bad_body(why: str) -> ScalaraApiError:
    return ScalaraApiError(400, "invalid_body", why)


def not_found(what: str) -> ScalaraApiError:
    return ScalaraApiError(404, "not_found", f"{what} not found")


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
    raise bad_body(f"'{name}' must be a date YYYY-MM-DD")


# --------------------------------------------------------------------------------------------
# field validation for mutations, driven by generator.FIELDS


def check_type(spec: str, value: Any) -> bool:
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
        "date": lambda v: isinstance(v, str) and bool(_DATE.match(v)) and valid_date(v),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    return checks[spec](value)


def valid_date(text: str) -> bool:
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
        elif name in READ_ONLY:
            problems.append(f"field '{name}' is read-only")
        elif not check_type(table[name], value):
            problems.append(f"field '{name}' must be {table[name].replace('?', ' or null')}")
    if problems:
        raise bad_body("; ".join(problems))


# --------------------------------------------------------------------------------------------
# request helpers


def allow(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise ScalaraApiError(405, "method_not_allowed",
                              f"{request.method} is not allowed on {request.path}; use {', '.join(methods)}",
                              {"Allow": ", ".join(methods)})


def no_query(request: Request) -> None:
    if request.query:
        raise bad_param(sorted(request.query)[0], "unknown parameter (this endpoint takes none)")


def only(body: dict[str, Any], *names: str) -> dict[str, Any]:
    extra = sorted(set(body) - set(names))
    if extra:
        raise bad_body(f"unknown field(s) {', '.join(extra)}; expected {', '.join(names)}")
    return body


def clock_body(body: dict[str, Any]) -> dict[str, float]:
    only(body, "days", "seconds")
    if not body:
        raise bad_body("give 'days' and/or 'seconds'")
    for name, value in body.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise bad_body(f"'{name}' must be a non-negative number")
    return {name: float(value) for name, value in body.items()}


def list_params(resource: str, query: dict[str, list[str]]) -> tuple[int, str | None, str | None, bool]:
    """Validate the list query: (limit, id after which to start, updatedSince stamp, includeDeleted)."""
    for name, values in query.items():
        if name not in LIST_PARAMS:
            raise bad_param(name, f"unknown parameter (allowed: {', '.join(LIST_PARAMS)})")
        if len(values) != 1:
            raise bad_param(name, "given more than once")
    value = query.get("limit", [str(LIMIT_DEFAULT)])[0]
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= LIMIT_MAX:
        raise bad_param("limit", f"must be an integer from 1 to {LIMIT_MAX}")
    limit = int(value)
    after = decode_cursor(resource, query["cursor"][0]) if "cursor" in query else None
    since = parse_since(query["updatedSince"][0]) if "updatedSince" in query else None
    deleted = query.get("includeDeleted", ["false"])[0]
    if deleted not in ("true", "false"):
        raise bad_param("includeDeleted", "must be true or false")
    return limit, after, since, deleted == "true"


def encode_cursor(resource: str, last_id: str) -> str:
    return base64.urlsafe_b64encode(f"{resource}:{last_id}".encode()).decode("ascii").rstrip("=")


def decode_cursor(resource: str, cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor.translate(str.maketrans("-_", "+/")) + "=" * (-len(cursor) % 4),
                               validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_param("cursor", "not a cursor this API issued") from None
    kind, _, last_id = raw.partition(":")
    if kind != resource or not last_id or encode_cursor(kind, last_id) != cursor:
        raise bad_param("cursor", f"not a cursor of {resource}")
    return last_id


def parse_since(value: str) -> str:
    """``updatedSince`` -> the API's own stamp format, rounded up to the millisecond (inclusive)."""
    if not _STAMP.match(value):
        raise bad_param("updatedSince", "must be an ISO 8601 timestamp with zone, e.g. 2024-05-01T00:00:00Z")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise bad_param("updatedSince", "not a valid date and time") from None
    if moment.microsecond % 1000:
        moment += dt.timedelta(microseconds=1000 - moment.microsecond % 1000)
    return stamp(moment)
