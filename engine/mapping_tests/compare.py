"""Run one mapping test case and say, field by field, how the result differs from the expectation.

A failure must be readable without opening a debugger, so each difference is one line with the
casavi kind, reference id and field path, and JSON values::

    contracts/own-3f2a.endDate: expected "2026-12-31", got null
    contracts/own-9c1e: expected, but not produced (contract o2 refers to unit u9, which ...)
    contracts/rent-77ab: produced, but not expected (from SCALARA usages us1)
    unexpected error: units u2: no building with id 'b404' (lookup 'building' is required)

Comparison is exact by default (the listed records of a kind, each with exactly the listed
payload) and ``match: subset`` checks only what is listed. ``true`` is not ``1`` here: JSON
types must match, as casavi would see them; ``1`` and ``1.0`` are the same number.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from engine.compile import MappingSet
from engine.errors import CasaviSyncError, RecordError
from engine.interpret import MapResult, Output, map_records
from engine.loader import JsonPath, format_path
from engine.mapping_tests import CaseResult, Problem, TestCase
from engine.mapping_tests.load import resolve_id

__all__ = ["run_case", "same", "show"]

_NO_FIELD = object()


def show(value: Any, limit: int = 120) -> str:
    """A value as JSON text for a message, shortened when long."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def same(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: true is not 1, but 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _protect(mset: MappingSet, only: list[str] | None, given: Mapping[str, Any]) -> bool:
    """Data protection applies unless a tested mapping's referrers have no records in the case."""
    if only is None:
        return True
    for name in only:
        plan = mset.mappings[name]
        if not plan.only_if_referenced_by:
            continue
        sources = {rule.source for other in plan.only_if_referenced_by if other in mset.mappings
                   for rule in mset.mappings[other].rules}
        if not sources & set(given):
            return False
    return True


class _Case:
    def __init__(self, case: TestCase, result: MapResult) -> None:
        self.case, self.result = case, result
        self.problems: list[Problem] = []

    def problem(self, path: JsonPath, message: str, **details: Any) -> None:
        line, col = self.case.doc.locate((self.case.index, *path))
        self.problems.append(Problem(message, line, col, format_path((self.case.index, *path)), details))

    # -- payloads
    def expect(self, mode: str) -> None:
        for kind, payloads in (self.case.spec.get("expect") or {}).items():
            produced = self.result.outputs.get(kind, {})
            wanted: dict[str, str] = {resolve_id(key): key for key in payloads}
            for ref_id, key in wanted.items():
                output = produced.get(ref_id)
                if output is None:
                    self.problem(("expect", kind, key), f"{kind}/{ref_id}: expected, but not produced"
                                 + self._why_missing(kind, ref_id, produced), kind=kind, id=ref_id)
                    continue
                self._payload(kind, key, ref_id, payloads[key], output.payload, mode)
            if mode == "exact":
                for ref_id, output in produced.items():
                    if ref_id not in wanted:
                        self.problem(("expect", kind), f"{kind}/{ref_id}: produced, but not expected "
                                     f"(from SCALARA {output.source_resource} {output.source_id})",
                                     kind=kind, id=ref_id, actual=output.payload)

    def _why_missing(self, kind: str, ref_id: str, produced: Mapping[str, Output]) -> str:
        for err in self.result.errors:
            if err.target_id == ref_id:
                return f" ({err.reason})"
        if not produced:
            return f" (no {kind} were produced)"
        shown = ", ".join(list(produced)[:5]) + (", ..." if len(produced) > 5 else "")
        return f" (produced: {shown})"

    def _payload(self, kind: str, key: str, ref_id: str, expected: Any, actual: Any, mode: str) -> None:
        for rel, exp, act in _diff(expected, actual, (), mode == "exact"):
            where = f"{kind}/{ref_id}" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rel)
            details = {"kind": kind, "id": ref_id, "field": format_path(rel)[2:] or None}
            if exp is _NO_FIELD:
                self.problem(("expect", kind, key), f"{where}: not expected, got {show(act)}", **details, actual=act)
            elif act is _NO_FIELD:
                self.problem(("expect", kind, key, *rel), f"{where}: expected {show(exp)}, got no such field",
                             **details, expected=exp)
            else:
                self.problem(("expect", kind, key, *rel), f"{where}: expected {show(exp)}, got {show(act)}",
                             **details, expected=exp, actual=act)

    # -- errors
    def errors(self) -> None:
        actual = list(self.result.errors)
        expected = self.case.spec.get("expect_errors")
        if expected is None:
            for err in actual:
                self.problem(("name",), f"unexpected error: {_error_text(err)}", error=err.as_dict())
            return
        for j, want in enumerate(expected):
            hit = next((e for e in actual if _error_matches(want, e)), None)
            if hit is None:
                what = " ".join(str(x) for x in (want.get("resource"), want.get("sourceId")) if x is not None)
                reason = f" containing {show(want['reason'])}" if want.get("reason") else ""
                seen = "; errors: " + " | ".join(_error_text(e) for e in actual[:3]) if actual else ", got none"
                self.problem(("expect_errors", j), f"expected an error for {what or 'a record'}{reason}{seen}",
                             expected=want)
            else:
                actual.remove(hit)
        for err in actual:
            self.problem(("expect_errors",), f"unexpected error: {_error_text(err)}", error=err.as_dict())

    # -- data protection and filters
    def absent(self) -> None:
        for kind, entries in (self.case.spec.get("expect_absent") or {}).items():
            produced = self.result.outputs.get(kind, {})
            for j, entry in enumerate(entries):
                if isinstance(entry, str):
                    ref_id = resolve_id(entry)
                    output = produced.get(ref_id)
                    if output is not None:
                        self.problem(("expect_absent", kind, j), f"{kind}/{ref_id}: must not be produced, but was "
                                     f"(from SCALARA {output.source_resource} {output.source_id})",
                                     kind=kind, id=ref_id, actual=output.payload)
                    continue
                sid = entry["sourceId"]
                for output in produced.values():
                    if output.source_id == sid:
                        self.problem(("expect_absent", kind, j), f"{kind} from SCALARA record {sid} must not be "
                                     f"produced, but {kind}/{output.ref_id} was", kind=kind, id=output.ref_id)


def _diff(expected: Any, actual: Any, path: tuple[Any, ...], exact: bool) -> list[tuple[tuple[Any, ...], Any, Any]]:
    """(relative path, expected, actual) of every difference; objects and equal-length lists recurse."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[tuple[tuple[Any, ...], Any, Any]] = []
        for key, value in expected.items():
            if key not in actual:
                out.append(((*path, key), value, _NO_FIELD))
            else:
                out.extend(_diff(value, actual[key], (*path, key), exact))
        if exact:
            out.extend(((*path, key), _NO_FIELD, value) for key, value in actual.items() if key not in expected)
        return out
    if (isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual)
            and not same(expected, actual)):
        nested: list[tuple[tuple[Any, ...], Any, Any]] = []
        for n, (exp, act) in enumerate(zip(expected, actual, strict=True)):
            nested.extend(_diff(exp, act, (*path, n), exact))
        return nested
    return [] if same(expected, actual) else [(path, expected, actual)]


def _error_text(err: RecordError) -> str:
    what = " ".join(str(x) for x in (err.resource, err.source_id) if x is not None)
    return f"{what}: {err.reason}" if what else err.reason


def _error_matches(want: Mapping[str, Any], err: RecordError) -> bool:
    if "resource" in want and want["resource"] != err.resource:
        return False
    if want.get("sourceId") != err.source_id:
        return False
    if want.get("reason") and str(want["reason"]) not in err.reason:
        return False
    return not ("field" in want and want["field"] != err.field)


def run_case(case: TestCase) -> CaseResult:
    """Map the case's records with its folder's mappings and compare; never raises for user data."""
    outcome = CaseResult(case.file, case.name, case.line, case.col)
    spec = case.spec
    only: list[str] | None = spec.get("mappings")
    given: dict[str, Any] = spec.get("given") or {}
    try:
        run_date = dt.date.fromisoformat(spec["date"]) if spec.get("date") else None
    except ValueError:
        line, col = case.doc.locate((case.index, "date"))
        outcome.problems.append(Problem(f"'{spec['date']}' is not a date", line, col,
                                        format_path((case.index, "date"))))
        return outcome
    try:
        result = map_records(case.mset, given, run_date=run_date, only=only, assume_references=only is not None,
                             data_protection=_protect(case.mset, only, given))
    except CasaviSyncError as exc:
        outcome.problems.append(Problem(f"the mappings could not run: {exc}", case.line, case.col))
        return outcome
    check = _Case(case, result)
    check.expect(str(spec.get("match") or "exact"))
    check.errors()
    check.absent()
    outcome.problems.extend(check.problems)
    return outcome
