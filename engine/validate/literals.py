"""Checks of the values a mapping writes literally (``const``, value-map results and defaults)
and of reference-id prefixes: ``validate`` refuses what ``run`` could not send.

* JSON carries no NaN or Infinity: ``const: .nan`` / ``.inf`` anywhere (also inside an object);
* the casavi catalog's field type: text where casavi expects text (``name: {const: 42}`` is
  refused; quote it), a date as ``YYYY-MM-DD``, numbers, booleans, objects and lists as such;
* a ``ref_id('<prefix>', ...)`` prefix must be able to form a reference id under the configured
  pattern (``casavi.reference_id_pattern``): the longest id ``ref_id`` makes is the prefix, '-'
  and 32 hex digits.
"""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Any

from engine.text import quote

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LONGEST_TAIL = "-" + "0" * 32           # what ref_id appends to the prefix at most


def nonfinite(value: Any) -> str | None:
    """Where ``value`` holds NaN or Infinity ("" for the value itself), or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_problem(value: Any, spec: dict[str, Any], name: str) -> tuple[str, str | None] | None:
    """(message, hint) when ``value`` does not have the type casavi's catalog gives ``name``."""
    ftype = str(spec.get("type") or "")
    shown = quote(value, 60)
    if ftype == "string" and not isinstance(value, str):
        return (f"casavi field '{name}' is text, not {shown}",
                f"quote it: '{value}'" if _is_number(value) or isinstance(value, bool) else None)
    if ftype == "date" and not (isinstance(value, str) and _DATE.match(value)):
        return f"casavi field '{name}' is a date (YYYY-MM-DD), not {shown}", "e.g. '2024-01-31'"
    if ftype == "number" and not _is_number(value):
        return f"casavi field '{name}' is a number, not {shown}", None
    if ftype == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"casavi field '{name}' is a whole number, not {shown}", None
    if ftype == "boolean" and not isinstance(value, bool):
        return f"casavi field '{name}' is true or false, not {shown}", None
    if ftype == "object" and not isinstance(value, dict):
        return f"casavi field '{name}' is an object, not {shown}", None
    if ftype.startswith("array") and not isinstance(value, list):
        return f"casavi field '{name}' is a list, not {shown}", None
    return None


@cache
def reference_id_pattern() -> re.Pattern[str]:
    """The configured pattern (connector config, operator file included), else the catalog's."""
    from engine.catalog import reference_id_rule
    from engine.connectors import load_connector_config
    from engine.errors import CasaviSyncError

    try:
        return load_connector_config().casavi.reference_id_pattern
    except CasaviSyncError:          # a broken operator file is `run`'s problem; validate goes on
        return re.compile(str(reference_id_rule()["pattern"]))


def prefix_problem(prefix: str) -> str | None:
    """Why ``ref_id(prefix, ...)`` cannot make a reference id, or None."""
    pattern = reference_id_pattern()
    if not prefix:
        return "the ref_id prefix is empty"
    if pattern.fullmatch(prefix + _LONGEST_TAIL) is None:
        return (f"the ref_id prefix {quote(prefix, 60)} cannot form a casavi reference id "
                f"(the longest is the prefix, '-' and 32 hex digits; allowed: {pattern.pattern})")
    return None
