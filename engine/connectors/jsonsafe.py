"""Decoding answers so that no value can crash the engine later.

Python's ``json`` module accepts what JSON cannot carry on (``NaN``, ``Infinity``, ``1e400``
becomes ``inf``), refuses integers of more than 4,300 digits with a ValueError, and recurses: a
100,000-deep answer raises RecursionError, and a record nested a few hundred levels deep parses but
breaks whatever later walks it (hashing, storing, copying). So:

* a body that cannot be decoded at all (garbled, nested too deeply for the decoder) is a
  ``TransientResponse``: retried, then a clear abort naming the call;
* a record holding a value JSON cannot carry, or nested deeper than ``MAX_DEPTH``, arrives as a
  ``FlaggedRecord`` naming its problems: the sync reports it as a per-record error and leaves it
  out (``engine.sync.screen``), it is never sent anywhere.

The checks cost nothing on ordinary pages: the walk over a page's records only happens when the
decoder met such a value or the page has far more brackets than its records need.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from engine.connectors.retry import TransientResponse

MAX_DEPTH = 32                    # a SCALARA record is 2-3 levels deep; anything near this is garbage
_HUGE_EXPONENT = re.compile(rb"[eE]\+?[0-9]{3,}")


class Unusable(str):
    """Stands in for a value JSON cannot carry (NaN, Infinity, an integer of thousands of digits)."""


class FlaggedRecord(dict[str, Any]):
    """A record with values the engine must not use; ``problems`` says which (one line each)."""

    problems: list[str]


def decode(content: bytes) -> tuple[Any, bool]:
    """(body, suspect): ``suspect`` when the records need ``flag_records`` before use."""
    found: list[str] = []

    def constant(name: str) -> Unusable:
        found.append(name)
        return Unusable(name)

    def integer(text: str) -> int | Unusable:
        if len(text) > 300:
            found.append(text)
            return Unusable(f"an integer of {len(text):,} digits")
        return int(text)

    try:
        try:
            body = json.loads(content, parse_constant=constant)
        except ValueError:  # e.g. an integer beyond Python's digit limit: decode the slow way once
            body = json.loads(content, parse_constant=constant, parse_int=integer)
    except RecursionError:
        raise TransientResponse("JSON body nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise TransientResponse("malformed JSON body") from None
    return body, bool(found) or _HUGE_EXPONENT.search(content) is not None


def suspect_page(content: bytes, suspect: bool, records: int) -> bool:
    """Must a page's records be checked? When the decoder met something, or when its brackets far
    outnumber what its records need (a record is one object with a list or two)."""
    return suspect or content.count(b"{") + content.count(b"[") > 8 * records + 64


def flag_records(records: list[Any]) -> list[Any]:
    """The records, each one with a problem replaced by a ``FlaggedRecord`` saying what it is."""
    out: list[Any] = []
    for rec in records:
        problems = problems_of(rec)
        if problems and isinstance(rec, dict):
            flagged = FlaggedRecord(rec)
            flagged.problems = problems
            out.append(flagged)
        else:
            out.append(rec)
    return out


def problems_of(record: Any) -> list[str]:
    """What in ``record`` JSON cannot carry, or how it is nested too deeply (iterative: no recursion)."""
    problems: list[str] = []
    stack: list[tuple[str, Any, int]] = [("", record, 0)]
    while stack and len(problems) < 5:
        path, value, depth = stack.pop()
        if isinstance(value, Unusable):
            problems.append(f"{path or 'the record'} is {str(value)[:60]}, which JSON cannot carry")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{path or 'the record'} is {value}, which JSON cannot carry")
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                problems.append(f"{path or 'the record'} is nested deeper than {MAX_DEPTH} levels")
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                stack.append((f"{path}.{key}" if path else str(key)[:60], child, depth + 1))
    return problems
