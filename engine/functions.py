"""The function registry: what JMESPath lacks in this domain, registered by name.

A mapping calls these inside any expression, e.g.::

    id: "ref_id('unit', id)"
    fields:
      address: "join_nonempty(' ', [building.street, building.houseNumber])"

Every function has a spec (name, arity, signature, description, examples). The validator uses the
specs for unknown-function and arity checks (with did-you-mean), the JSON Schema documents them,
and the expression compiler calls ``impl`` directly. JMESPath's own built-ins are listed too (as
``builtin=True``, ``impl=None``) so that a misspelled built-in gets the same help.

Functions are pure and deterministic; ``today()`` reads the run date from a context variable the
interpreter sets, so tests pin it.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.text import quote

RUN_DATE: contextvars.ContextVar[_dt.date | None] = contextvars.ContextVar("RUN_DATE", default=None)
# While a sync maps, a one-element list: the earliest later date on which a date function could
# answer differently for the records seen (``today()``: the next day; ``active()``: the next
# validFrom or validTo + 1). Until then, the same records map to the same payloads.
HORIZON: contextvars.ContextVar[list[_dt.date] | None] = contextvars.ContextVar("HORIZON", default=None)

REFERENCE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class FunctionError(ValueError):
    """A function got a value it cannot work with (becomes a per-record error)."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    min_args: int
    max_args: int | None  # None: variadic
    signature: str
    description: str
    examples: tuple[str, ...]
    impl: Callable[..., Any] | None = None
    builtin: bool = False

    def arity_text(self) -> str:
        if self.max_args is None:
            return f"at least {self.min_args}"
        if self.min_args == self.max_args:
            return str(self.min_args)
        return f"{self.min_args} to {self.max_args}"

    def accepts(self, n: int) -> bool:
        return n >= self.min_args and (self.max_args is None or n <= self.max_args)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ref_id(prefix: Any, *parts: Any) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise FunctionError("ref_id: the prefix must be a non-empty string")
    if not parts:
        raise FunctionError("ref_id: needs at least one part after the prefix")
    if any(p is None or p == "" for p in parts):
        raise FunctionError("ref_id: a part is empty (null); the reference id cannot be derived")
    texts = [_text(p) for p in parts]
    if len(texts) == 1:
        candidate = f"{prefix}-{texts[0]}"
        if REFERENCE_ID.match(candidate):
            return candidate
    digest = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:32]
    return f"{prefix}-{digest}"


def join_nonempty(sep: Any, values: Any) -> str | None:
    if not isinstance(values, list):
        values = [values]
    texts = [_text(v).strip() for v in values if v is not None]
    texts = [t for t in texts if t]
    return _text(sep).join(texts) if texts else None


def fmt(template: Any, *args: Any) -> str:
    if not isinstance(template, str):
        raise FunctionError("fmt: the template must be a string")
    pieces = template.split("{}")
    if len(pieces) - 1 != len(args):
        raise FunctionError(f"fmt: the template has {len(pieces) - 1} '{{}}' but {len(args)} values were given")
    out = [pieces[0]]
    for arg, piece in zip(args, pieces[1:], strict=True):
        out.append(_text(arg))
        out.append(piece)
    return "".join(out)


def coalesce(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def lookup(table: Any, key: Any, default: Any = None) -> Any:
    if not isinstance(table, dict):
        raise FunctionError("lookup: the first argument must be an object, e.g. `{\"A\": \"x\"}`")
    return table.get(_text(key), default)


def upper(value: Any) -> str | None:
    return None if value is None else _text(value).upper()


def lower(value: Any) -> str | None:
    return None if value is None else _text(value).lower()


def trim(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(_text(value).split())
    return text or None


def _parse_date(value: Any, fn: str) -> _dt.date:
    if isinstance(value, _dt.date):
        return value
    if not isinstance(value, str) or len(value) < 10:
        raise FunctionError(f"{fn}: {quote(value)} is not a date (expected YYYY-MM-DD)")
    try:
        return _dt.date.fromisoformat(value[:10])
    except ValueError:
        raise FunctionError(f"{fn}: {quote(value)} is not a date (expected YYYY-MM-DD)") from None


def date(value: Any) -> str | None:
    return None if value is None else _parse_date(value, "date").isoformat()


def format_date(value: Any, pattern: Any) -> str | None:
    if value is None:
        return None
    return _parse_date(value, "format_date").strftime(_text(pattern))


def _run_day() -> _dt.date:
    return RUN_DATE.get() or _dt.date.today()


def _changes_on(day: _dt.date) -> None:
    horizon = HORIZON.get()
    if horizon is not None and day < horizon[0]:
        horizon[0] = day


def today() -> str:
    now = _run_day()
    if HORIZON.get() is not None:
        _changes_on(now + _dt.timedelta(days=1))
    return now.isoformat()


def active(valid_from: Any, valid_to: Any) -> bool:
    now = _run_day()
    if valid_from is not None:
        start = _parse_date(valid_from, "active")
        if start > now:
            _changes_on(start)
            return False
    if valid_to is not None:
        end = _parse_date(valid_to, "active")
        if end < now:
            return False
        if end < _dt.date.max:
            _changes_on(end + _dt.timedelta(days=1))
    return True


def date_cmp(a: Any, b: Any) -> int:
    da, db = _parse_date(a, "date_cmp"), _parse_date(b, "date_cmp")
    return (da > db) - (da < db)


def unique(values: Any) -> list[Any]:
    if not isinstance(values, list):
        raise FunctionError("unique: expects an array")
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def round_number(value: Any, digits: Any = 0) -> Any:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FunctionError(f"round: {quote(value)} is not a number")
    result = round(float(value), int(digits))
    return int(result) if int(digits) == 0 else result


def format_number(value: Any, decimals: Any = 2) -> str | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FunctionError(f"format_number: {quote(value)} is not a number")
    text = f"{float(value):,.{int(decimals)}f}"
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def valid_email(value: Any) -> str | None:
    if value is None:
        return None
    text = _text(value).strip()
    return text if _EMAIL.match(text) else None


def _spec(name: str, lo: int, hi: int | None, sig: str, desc: str, ex: tuple[str, ...],
          impl: Callable[..., Any]) -> FunctionSpec:
    return FunctionSpec(name, lo, hi, sig, desc, ex, impl)


CUSTOM: tuple[FunctionSpec, ...] = (
    _spec("ref_id", 2, None, "ref_id(prefix, part, ...) -> string",
          "Deterministic casavi reference id. One part that fits casavi's id syntax gives "
          "'<prefix>-<part>'; several parts (or an unfit one) give '<prefix>-<32 hex of sha256>'. "
          "Stable across runs and machines; a null part is a per-record error.",
          ("ref_id('p', id)", "ref_id('rent', id, unit, tenant)"), ref_id),
    _spec("join_nonempty", 2, 2, "join_nonempty(separator, array) -> string | null",
          "Joins the non-empty values with the separator (numbers become text); null if none is left.",
          ("join_nonempty(' ', [street, houseNumber])", "join_nonempty(', ', [title, firstName, lastName])"),
          join_nonempty),
    _spec("fmt", 1, None, "fmt(template, value, ...) -> string",
          "Fills each '{}' of the template with the next value (null becomes empty).",
          ("fmt('Dienstleister ({})', serviceType)",), fmt),
    _spec("coalesce", 1, None, "coalesce(value, ...) -> any",
          "The first value that is neither null nor an empty string; null if there is none.",
          ("coalesce(label, number)",), coalesce),
    _spec("lookup", 2, 3, "lookup(object, key, default?) -> any",
          "Looks the key up in a literal object; the default (or null) when it is missing.",
          ("lookup(`{\"WEG\": \"Wohnungseigentum\"}`, kind, 'Sonstige')",), lookup),
    _spec("upper", 1, 1, "upper(string) -> string", "Upper case.", ("upper(country)",), upper),
    _spec("lower", 1, 1, "lower(string) -> string", "Lower case.", ("lower(email)",), lower),
    _spec("trim", 1, 1, "trim(string) -> string | null",
          "Removes surrounding and doubled whitespace; null if nothing is left.", ("trim(lastName)",), trim),
    _spec("date", 1, 1, "date(date_or_timestamp) -> string",
          "The YYYY-MM-DD date of a date or ISO timestamp.", ("date(updatedAt)",), date),
    _spec("format_date", 2, 2, "format_date(date, pattern) -> string",
          "Formats a date with a strftime pattern.", ("format_date(validFrom, '%d.%m.%Y')",), format_date),
    _spec("today", 0, 0, "today() -> string", "The run date (YYYY-MM-DD).", ("today()",), today),
    _spec("active", 2, 2, "active(validFrom, validTo) -> boolean",
          "True if the run date lies within [validFrom, validTo]; null bounds are open.",
          ("active(validFrom, validTo)",), active),
    _spec("date_cmp", 2, 2, "date_cmp(a, b) -> number",
          "Compares two dates: -1 if a is earlier, 0 if equal, 1 if later.",
          ("date_cmp(validFrom, today()) <= `0`",), date_cmp),
    _spec("unique", 1, 1, "unique(array) -> array", "The array without repeated values, in order.",
          ("unique(buildings[].street)",), unique),
    _spec("round", 1, 2, "round(number, digits?) -> number", "Rounds to the given decimal places.",
          ("round(areaSqm, `1`)",), round_number),
    _spec("format_number", 1, 2, "format_number(number, decimals?) -> string",
          "German number format: 1.234,50.", ("format_number(mea, `2`)",), format_number),
    _spec("valid_email", 1, 1, "valid_email(string) -> string | null",
          "The address if it is a valid e-mail address, else null (so one bad address does not "
          "block the whole contact).", ("valid_email(email)",), valid_email),
)

# JMESPath's own functions (arity only; jmespath implements them).
_BUILTINS: tuple[tuple[str, int, int | None], ...] = (
    ("abs", 1, 1), ("avg", 1, 1), ("ceil", 1, 1), ("contains", 2, 2), ("ends_with", 2, 2),
    ("floor", 1, 1), ("join", 2, 2), ("keys", 1, 1), ("length", 1, 1), ("map", 2, 2),
    ("max", 1, 1), ("max_by", 2, 2), ("merge", 1, None), ("min", 1, 1), ("min_by", 2, 2),
    ("not_null", 1, None), ("reverse", 1, 1), ("sort", 1, 1), ("sort_by", 2, 2),
    ("starts_with", 2, 2), ("sum", 1, 1), ("to_array", 1, 1), ("to_number", 1, 1),
    ("to_string", 1, 1), ("type", 1, 1), ("values", 1, 1),
)

BUILTIN: tuple[FunctionSpec, ...] = tuple(
    FunctionSpec(n, lo, hi, f"{n}(...)", "JMESPath built-in function.", (), None, True)
    for n, lo, hi in _BUILTINS
)

REGISTRY: dict[str, FunctionSpec] = {f.name: f for f in (*BUILTIN, *CUSTOM)}
