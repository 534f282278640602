"""What a mapping run returns: payloads (``Output``), per-record errors, counts and misses.

Split off engine.interpret so that readers of results (coverage, mapping tests, the sync) need
not know how a run computes them. ``new_output`` builds an ``Output`` about twice as fast as its
frozen dataclass ``__init__`` (which sets each field through ``object.__setattr__``); the
interpreter makes one per payload.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from engine.errors import RecordError

__all__ = ["MapResult", "MappingStats", "MissKey", "Output", "new_output", "singular"]


@dataclass(frozen=True, slots=True)
class Output:
    """One casavi payload and where it came from."""

    kind: str
    ref_id: str
    payload: dict[str, Any]
    mapping: str
    rule: str
    source_resource: str
    source_id: str
    depends_on: tuple[tuple[str, str], ...]  # (target kind, reference id) of every referenced record
    references_assumed: bool = False  # only with assume_references: a ref was derived, not looked up


@dataclass(slots=True)
class MappingStats:
    read: int = 0          # source records seen (tombstones excluded), per rule
    filtered_out: int = 0  # filter false, empty for_each, value map or ref with on_missing: skip
    produced: int = 0      # payloads in the result
    errors: int = 0        # per-record errors reported
    dropped: int = 0       # left out by only_if_referenced_by (data protection)

    def as_dict(self) -> dict[str, int]:
        return {"read": self.read, "filteredOut": self.filtered_out, "produced": self.produced,
                "errors": self.errors, "dropped": self.dropped}


# (mapping, rule, field path, code as text or None) of a value-map miss; see MapResult.misses
MissKey = tuple[str, str, str, str | None]


@dataclass(frozen=True, slots=True)
class MapResult:
    outputs: dict[str, dict[str, Output]]  # target kind -> reference id -> Output
    errors: list[RecordError]
    stats: dict[str, MappingStats]  # mapping name -> counts
    # Value-map misses: codes with no entry under ``values`` (those that fell back to ``default``
    # included), counted per (mapping, rule, field path, code text). Filled only on the miss
    # path, so the hot path pays nothing; engine.coverage reports them.
    misses: Counter[MissKey] = field(default_factory=Counter)
    # mapping -> SCALARA id -> reference id (rules without for_each; before data protection),
    # and mapping -> SCALARA id -> reason for the records that failed. Explanations read these.
    identities: dict[str, dict[Any, str]] = field(default_factory=dict)
    failed: dict[str, dict[Any, str]] = field(default_factory=dict)


def singular(resource: str) -> str:
    """'properties' -> 'property', 'property-roles' -> 'property role' (for messages)."""
    word = resource.replace("-", " ")
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") else word


def _output_factory() -> Any:
    """``new_output(kind, ref_id, ..., references_assumed)``: an Output without the frozen __init__.

    The slots of a frozen dataclass can be filled through their member descriptors; the result
    is an ordinary, equal, still frozen Output. Generated once from the field names.
    """
    names = [f.name for f in fields(Output)]
    setters = {f"_set_{n}": getattr(Output, n).__set__ for n in names}
    lines = [f"def new_output({', '.join(names)}):", "    o = _new(_Output)"]
    lines += [f"    _set_{n}(o, {n})" for n in names]
    lines.append("    return o")
    scope: dict[str, Any] = {"_new": object.__new__, "_Output": Output, **setters}
    exec(compile("\n".join(lines) + "\n", "<casavi-sync output>", "exec"), scope)
    return scope["new_output"]


new_output = _output_factory()
