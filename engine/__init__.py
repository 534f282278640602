"""casavi-sync: a declarative mapping engine, SCALARA -> casavi.

The facade offers a handful of verbs (named apart from the stage modules: ``engine.validate`` is
the validator package); each stage lives in its own module (and is imported only
when a verb needs it, so that `casavi-sync validate` starts fast)::

    import engine
    report = engine.validate_mappings(["mappings"])   # every problem, positioned
    mappings = engine.load_mappings(["mappings"])     # validated and compiled (frozen plans)
    result = engine.map_records(mappings, {"units": [...], "buildings": [...]})  # payloads + record errors
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import datetime as dt

    from engine.compile import MappingSet
    from engine.interpret import MapResult
    from engine.validate import ValidationResult


def validate_mappings(paths: Sequence[str | Path]) -> ValidationResult:
    """Check mapping files or folders; collects every problem (never raises for a user's mistake)."""
    from engine.validate import validate_paths

    return validate_paths(paths)


def load_mappings(paths: Sequence[str | Path]) -> MappingSet:
    """Validate and compile mappings; raises ``engine.errors.SpecError`` with every problem."""
    from engine.compile import compile_mappings
    from engine.validate import load_mapping_set

    return compile_mappings(load_mapping_set(paths))


def map_records(mappings: MappingSet, records: Mapping[str, Iterable[dict[str, Any]]], *,
                run_date: dt.date | None = None) -> MapResult:
    """SCALARA records (by resource) -> casavi payloads (by kind and reference id) and record errors."""
    from engine.interpret import map_records as interpret

    return interpret(mappings, records, run_date=run_date)


__all__ = ["__version__", "load_mappings", "map_records", "validate_mappings"]
