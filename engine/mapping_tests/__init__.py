"""Mapping tests: ``*.test.yaml`` files beside the mappings, run offline by ``casavi-sync test``.

Why: a consultant who changes ``mappings/units.yaml`` needs to know, in a second and without a
SCALARA or casavi account, that co-owners still give two contracts and that a contact without a
link still stays in SCALARA. A test file is a list of cases::

    # yaml-language-server: $schema=../schemas/mapping-test.schema.json
    - name: two co-owners become two OWNER contracts
      date: 2024-06-01
      mappings: [contracts]                # optional: only these (references are assumed)
      match: subset                        # optional: exact (default) or subset
      given:                               # SCALARA records by resource
        ownerships:
          - {id: o1, unitId: u1, ownerContactIds: [c1, c2], validFrom: 2019-03-15, validTo: null}
      expect:                              # casavi payloads by kind and reference id
        contracts:
          "=ref_id('own', 'o1', 'c1')": {type: OWNER, contactId: c-c1, unitId: u-u1}
      expect_errors: []                    # optional: exactly these per-record errors
      expect_absent: {contacts: [c-c9]}    # optional: must not be produced

Three verbs::

    suite = collect(["mappings"])          # files, positioned diagnostics, runnable cases
    result = run_suite(suite)              # every case's problems (empty = passed)
    result = run_tests(["mappings"])       # both

The stages live in :mod:`.load` (discover, schema and semantic checks with file:line:col, the
mapping set of each folder), :mod:`.compare` (run one case, diff expected vs actual) and
:mod:`.report` (text, json and github renderings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.compile import MappingSet
from engine.errors import Diagnostic
from engine.loader import Document

__all__ = ["CaseResult", "Problem", "Suite", "TestCase", "TestRunResult", "collect", "run_case", "run_suite",
           "run_tests"]


@dataclass(frozen=True)
class Problem:
    """One way a case failed, phrased for people and positioned in the test file."""

    message: str          # 'contracts/own-abc.endDate: expected "2026-12-31", got null'
    line: int = 0
    col: int = 0
    path: str = "$"       # JSON path inside the test file
    details: dict[str, Any] = field(default_factory=dict)  # kind, id, field, expected, actual

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "line": self.line, "col": self.col, "path": self.path, **self.details}


@dataclass
class TestCase:
    """One runnable case: plain data from the file plus what is needed to point into it."""

    __test__ = False  # not a pytest test class, whatever its name

    file: str
    index: int
    name: str
    spec: dict[str, Any]      # the case as plain data (dates as YYYY-MM-DD text)
    mset: MappingSet
    doc: Document
    line: int = 0
    col: int = 0


@dataclass
class CaseResult:
    file: str
    name: str
    line: int
    col: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "name": self.name, "line": self.line, "col": self.col,
                "status": "ok" if self.passed else "fail", "problems": [p.as_dict() for p in self.problems]}


@dataclass
class Suite:
    files: list[str]
    diagnostics: list[Diagnostic]
    cases: list[TestCase]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


@dataclass
class TestRunResult:
    __test__ = False

    files: list[str]
    diagnostics: list[Diagnostic]
    cases: list[CaseResult]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed


def collect(paths: Sequence[str | Path], *, mappings: str | Path | None = None) -> Suite:
    """Find and check test files; ``mappings`` overrides the folder their mappings come from."""
    from engine.mapping_tests.load import collect_suite

    return collect_suite(paths, mappings)


def run_case(case: TestCase) -> CaseResult:
    from engine.mapping_tests.compare import run_case as run

    return run(case)


def run_suite(suite: Suite) -> TestRunResult:
    return TestRunResult(files=list(suite.files), diagnostics=list(suite.diagnostics),
                         cases=[run_case(case) for case in suite.cases])


def run_tests(paths: Sequence[str | Path], *, mappings: str | Path | None = None) -> TestRunResult:
    return run_suite(collect(paths, mappings=mappings))
