"""What evaluating one field of a mapping run needs, apart from the run itself.

The signals a field raises (``Skip``, ``Failure``, ``RefMissing``), value maps (the closure
and the miss path the generated code calls), finding the failed field after a failure
(``locate``), casavi's required fields, and merging records that share a reference id.
engine.interpret runs them; engine.rulegen's generated loops call into them.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from typing import Any

from engine.compile import MappingSet, MergePlan, RefField, RulePlan, ValueMapField, code_text
from engine.expr import Expr, describe_error
from engine.mapresult import MissKey, Output, singular
from engine.text import quote

__all__ = ["MISS", "Failure", "RefMissing", "Skip", "failure_reason", "locate", "merged", "missing_required", "read_path",
           "value_map", "value_map_miss"]

Fn = Callable[[Any], Any]
MISS = object()


class Skip(Exception):
    """The record is dropped quietly (on_missing: skip)."""


class Failure(Exception):
    """A reason that is already phrased for the user (the field is added by the caller)."""

    def __init__(self, reason: str, code: str = "record_failed", **info: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # what kind of problem, for the customer's notice (catalog/notice.de.yaml)
        self.info = info


class RefMissing(Exception):
    def __init__(self, ref: RefField, sid: Any, failed_reason: str | None) -> None:
        super().__init__(ref.mapping)
        self.ref, self.sid, self.failed_reason = ref, sid, failed_reason


def value_map_miss(f: ValueMapField, misses: Counter[MissKey] | None = None,
                   where: tuple[str, str, str] | None = None) -> Callable[[Any, Any], Any]:
    """``miss(ctx, code)``: a code without an entry; counted into ``misses`` if given."""
    allowed = ", ".join(f.values)

    def miss(ctx: Any, code: Any) -> Any:
        if misses is not None and where is not None:
            text = code if code is None or type(code) is str else code_text(code)
            misses[(*where, text)] += 1
        if f.has_default:
            return f.default.root(ctx) if isinstance(f.default, Expr) else copy.deepcopy(f.default)
        if f.on_missing == "skip":
            raise Skip
        raise Failure(f"unknown code {quote(code)} from `{f.code.source}`; allowed: {allowed}", "unknown_code",
                      value=code if code is None or type(code) is str else code_text(code))
    return miss


def value_map(f: ValueMapField, misses: Counter[MissKey] | None = None,
              where: tuple[str, str, str] | None = None) -> Fn:
    """The closure of a value map. Misses are counted into ``misses`` (the slow path only)."""
    code_fn = f.code.root
    table = f.values
    miss = value_map_miss(f, misses, where)

    def general(ctx: Any) -> Any:
        code = code_fn(ctx)
        value = table.get(code if type(code) is str else code_text(code), MISS)  # type: ignore[arg-type]
        if value is MISS:
            return miss(ctx, code)
        if isinstance(value, Expr):
            return value.root(ctx)
        return copy.deepcopy(value)
    return general


def read_path(payload: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a nested field path of a payload (None where the path is missing)."""
    value: Any = payload
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def locate(evs: list[tuple[str, Fn]], ctx: Any) -> tuple[str, BaseException]:
    """Find the field that failed (only after a failure: re-evaluating is the cheap way to know).

    The exception comes without its traceback: kept, it would tie the caller's frame (and with it
    the whole run) into a reference cycle that only the cyclic collector could free.
    """
    for name, fn in evs:
        try:
            fn(ctx)
        except Exception as exc:
            exc.__context__ = None
            return name, exc.with_traceback(None)
    return "?", RuntimeError("a field failed, then succeeded when evaluated again")


def missing_required(payload: dict[str, Any], required: tuple[str, ...],
                     one_of: tuple[str, ...]) -> tuple[str, str] | None:
    for name in required:
        value = payload.get(name)
        if value is None or value == "":
            return name, f"required field '{name}' is empty"
    if one_of and all(payload.get(n) is None or payload.get(n) == "" for n in one_of):
        return one_of[0], f"needs {' or '.join(one_of)}; all are empty"
    return None


def merged(first: Output, payload: dict[str, Any], deps: tuple[tuple[str, str], ...], merge: MergePlan) -> Output:
    """Two records of one rule with one reference id, as one casavi record (``on_duplicate_id``)."""
    combined = dict(first.payload)
    for name, sep in merge.join.items():
        parts = [p for p in str(combined.get(name) or "").split(sep) if p] if combined.get(name) else []
        new = payload.get(name)
        if new not in (None, "") and str(new) not in parts:
            parts.append(str(new))
        combined[name] = sep.join(parts) if parts else combined.get(name)
    for name in merge.any:
        combined[name] = bool(combined.get(name)) or bool(payload.get(name))
    all_deps = first.depends_on + tuple(d for d in deps if d not in first.depends_on)
    return Output(first.kind, first.ref_id, combined, first.mapping, first.rule, first.source_resource,
                  first.source_id, all_deps, first.references_assumed)


def failure_reason(mset: MappingSet, rule: RulePlan, sid: str, name: str,
                   exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """The reason of a failed field, and its problem code and facts for the customer's notice."""
    what = f"{singular(rule.source)} {sid}"
    if isinstance(exc, RefMissing):
        target = mset.mappings[exc.ref.mapping]
        source = next(r.source for r in target.rules if not r.for_each)
        other = singular(source)
        info: dict[str, Any] = {"target": source, "targetId": exc.sid}
        if exc.sid is None:
            return (f"{name}: `{exc.ref.source.source}` is null, so {what} refers to no {other} "
                    f"(ref {exc.ref.mapping})", "ref_null", info)
        if exc.failed_reason is not None:
            return f"{what} depends on failed {other} {exc.sid} ({exc.failed_reason})", "depends_on_failed", info
        return (f"{what} refers to {other} {exc.sid}, which the {exc.ref.mapping} mapping did not produce",
                "ref_missing", info)
    if isinstance(exc, Failure):
        return f"{name}: {exc.reason}", exc.code, exc.info
    return f"{name}: {describe_error(exc)}", "record_failed", {}
