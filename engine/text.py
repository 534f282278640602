"""Quoting values in messages, reports and state: never more than a sensible length.

A SCALARA record may carry a 10 MB text field; an error that quotes it must not copy 10 MB into
stdout, the run report and the state file. Every place that puts a value (or an exception text
that may contain one) into a message goes through ``clip`` or ``quote``.
"""

from __future__ import annotations

import reprlib
from typing import Any

LIMIT = 200  # characters of a quoted value; the rest is counted, not shown
DETAIL_LIMIT = 10_000  # where a person asked to see a value (explain, plan --details)


def clip(text: str, limit: int = LIMIT) -> str:
    """``text`` cut to ``limit`` characters; a cut text ends with how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def quote(value: Any, limit: int = LIMIT) -> str:
    """``repr``-style quote of a value, cut to about ``limit`` characters; never repr's a huge or
    deeply nested value whole."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value):,} characters)"
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 4, limit, limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    try:
        return clip(short.repr(value), limit)
    except (RecursionError, ValueError):
        return f"<{type(value).__name__}>"


def bounded(value: Any, limit: int = LIMIT, *, items: int = 50, depth: int = 6) -> Any:
    """A copy of JSON-like data fit for a report: strings clipped, lists cut, nesting capped."""
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, bool | int | float) or value is None:
        return quote(value, limit) if isinstance(value, int) and value.bit_length() > 256 else value
    if depth <= 0:
        return quote(value, limit)
    if isinstance(value, dict):
        out = {clip(str(k), limit): bounded(v, limit, items=items, depth=depth - 1)
               for k, v in list(value.items())[:items]}
        if len(value) > items:
            out["…"] = f"{len(value) - items} more"
        return out
    if isinstance(value, list | tuple):
        cut = [bounded(v, limit, items=items, depth=depth - 1) for v in value[:items]]
        return cut + ([f"… {len(value) - items} more"] if len(value) > items else [])
    return quote(value, limit)
