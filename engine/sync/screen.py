"""Screen SCALARA records before mapping: every record needs an id of the contract's form, and
values JSON can carry (the connector flags the others: ``engine.connectors.jsonsafe``).

A flagged record (NaN, Infinity, a 5,000-digit number, absurd nesting) is a per-record error.

A record whose ``id`` is missing, null, not a string, or not of the form the SCALARA catalog gives
(``type: uuid`` -> a UUID) cannot be matched to what casavi got from it before: it is a per-record
error, left out of the run. And the read that contained it is not a complete picture of its
resource, so nothing made from that resource is archived in this run (``incomplete``).

    screened = screen_ids(records)
    screened.records          # the usable ones, per resource
    screened.errors           # one RecordError per unusable record
    screened.incomplete       # resources with at least one unusable record
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.connectors.jsonsafe import FlaggedRecord
from engine.errors import RecordError
from engine.interpret import singular
from engine.text import quote

_FORMS: dict[str, tuple[re.Pattern[str], str]] = {
    "uuid": (re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"), "a UUID"),
    "string": (re.compile(r"^\S(?:.*\S)?$", re.S), "a non-blank string"),
}


@dataclass
class Screened:
    records: dict[str, list[dict[str, Any]]]
    errors: list[RecordError] = field(default_factory=list)
    incomplete: dict[str, int] = field(default_factory=dict)   # resource -> records without a usable id
    flagged: dict[str, int] = field(default_factory=dict)      # resource -> records with unusable values


def id_form(resource: str) -> tuple[re.Pattern[str], str]:
    """The pattern and the wording of ``resource``'s id, from the SCALARA catalog."""
    from engine.catalog import scalara_resources

    spec = scalara_resources().get(resource, {}).get("fields", {}).get("id", {})
    return _FORMS.get(str(spec.get("type", "string")), _FORMS["string"])


def usable_check(resource: str) -> Callable[[Any], bool]:
    """A test for one record of ``resource``: has it an id of the resource's form and only values
    JSON can carry (what ``screen_ids`` keeps)?"""
    pattern = id_form(resource)[0]

    def usable(rec: Any) -> bool:
        rid = rec.get("id") if isinstance(rec, dict) else None
        return type(rec) is not FlaggedRecord and isinstance(rid, str) and pattern.match(rid) is not None

    return usable


def has_unusable_ids(records: Mapping[str, list[dict[str, Any]]]) -> bool:
    """True when any record lacks an id of its resource's form (``screen_ids`` would report it)."""
    for resource, rows in records.items():
        pattern = id_form(resource)[0]
        for rec in rows:
            rid = rec.get("id") if isinstance(rec, dict) else None
            if type(rec) is FlaggedRecord or not (isinstance(rid, str) and pattern.match(rid)):
                return True
    return False


def screen_ids(records: Mapping[str, list[dict[str, Any]]]) -> Screened:
    out = Screened({})
    for resource, rows in records.items():
        pattern, wording = id_form(resource)
        good: list[dict[str, Any]] = []
        for n, rec in enumerate(rows, 1):
            rid = rec.get("id", _MISSING) if isinstance(rec, dict) else _MISSING
            usable_id = isinstance(rid, str) and pattern.match(rid) is not None
            if usable_id and type(rec) is not FlaggedRecord:
                good.append(rec)
                continue
            if usable_id:       # a value JSON cannot carry, or absurd nesting: this record only
                assert isinstance(rec, FlaggedRecord)
                out.errors.append(RecordError(
                    reason=f"{singular(resource)} {rid}: {'; '.join(rec.problems)}; it is left out",
                    source_id=rid, resource=resource, details={"stage": "extract"}))
                out.flagged[resource] = out.flagged.get(resource, 0) + 1
                continue
            what = ("has no id" if rid is _MISSING else "has id null" if rid is None
                    else f"has id {quote(rid, 80)}, not {wording}")
            out.errors.append(RecordError(
                reason=f"SCALARA {resource} record #{n} of this read {what}; it is left out, and nothing made "
                       f"from {resource} is archived in this run",
                source_id=rid if isinstance(rid, str) else None, resource=resource, field="id",
                details={"stage": "extract"}))
            out.incomplete[resource] = out.incomplete.get(resource, 0) + 1
        out.records[resource] = good if len(good) != len(rows) else rows
    return out


_MISSING: Any = object()
