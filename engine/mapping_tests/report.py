"""The three renderings of a test run: text for people, json for tools, github for pull requests.

Problems with the test files themselves are :class:`~engine.errors.Diagnostic` objects and are
rendered exactly as ``casavi-sync validate`` renders them (same function). A failing case is
rendered as its differences, one per line, under the case's name::

    mappings/contracts.test.yaml
      ok    two co-owners become two OWNER contracts
      FAIL  a future owner change keeps both owners  (mappings/contracts.test.yaml:31:3)
            mappings/contracts.test.yaml:44:18: contracts/own-3f2a.endDate: expected "2026-12-31", got null
    5 files, 24 cases: 23 passed, 1 failed

Each difference starts with ``file:line:col`` of the expected value that differs (terminals and
editors open it there); a difference with no expected value to point at (an output nobody
expected) points at the case.

In ``github`` format every difference becomes an ``::error`` annotation at the line of the
expected value in the test file, so the pull request shows it where the expectation is written.
The functions return text; the CLI prints.
"""

from __future__ import annotations

import json
from typing import Any

from engine.mapping_tests import CaseResult, TestRunResult
from engine.validate.report import _escape_data, _escape_property, render_diagnostic

__all__ = ["RENDERERS", "render_case", "render_github", "render_json", "render_text", "summary"]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary(result: TestRunResult) -> str:
    passed = sum(c.passed for c in result.cases)
    failed = len(result.cases) - passed
    text = f"{_plural(len(result.files), 'file')}, {_plural(len(result.cases), 'case')}: {passed} passed"
    if failed:
        text += f", {failed} failed"
    errors = len(result.errors)
    if errors:
        text += f"; {_plural(errors, 'problem')} in the test or mapping files"
    return text


def where(case: CaseResult, problem: Any) -> str:
    """``file:line:col`` of the expected value a difference is about (else of the case)."""
    if problem.line:
        return f"{case.file}:{problem.line}:{problem.col}"
    return f"{case.file}:{case.line}:{case.col}"


def render_case(case: CaseResult) -> str:
    """The failure text of one case (also what the pytest item shows)."""
    lines = [f"{case.name}  ({case.file}:{case.line}:{case.col})"]
    lines.extend(f"  {where(case, p)}: {p.message}" for p in case.problems)
    return "\n".join(lines)


def render_text(result: TestRunResult, *, verbose: bool = True) -> str:
    parts = [render_diagnostic(d) for d in result.diagnostics]
    current = None
    for case in result.cases:
        if case.passed and not verbose:
            continue
        if case.file != current:
            parts.append(case.file)
            current = case.file
        if case.passed:
            parts.append(f"  ok    {case.name}")
            continue
        parts.append(f"  FAIL  {case.name}  ({case.file}:{case.line}:{case.col})")
        parts.extend(f"        {where(case, p)}: {p.message}" for p in case.problems)
    parts.append(summary(result))
    return "\n".join(parts) + "\n"


def as_document(result: TestRunResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "files": list(result.files),
        "diagnostics": [d.as_dict() for d in result.diagnostics],
        "cases": [c.as_dict() for c in result.cases],
        "counts": {"files": len(result.files), "cases": len(result.cases),
                   "passed": sum(c.passed for c in result.cases), "failed": len(result.failed),
                   "errors": len(result.errors), "warnings": len(result.diagnostics) - len(result.errors)},
    }


def render_json(result: TestRunResult) -> str:
    return json.dumps(as_document(result), indent=2, ensure_ascii=False, default=str) + "\n"


def _command(level: str, file: str, line: int, col: int, title: str, message: str) -> str:
    props = [f"file={_escape_property(file)}"]
    if line:
        props += [f"line={line}", f"col={col}"]
    props.append(f"title={_escape_property(title)}")
    return f"::{level} {','.join(props)}::{_escape_data(message)}"


def render_github(result: TestRunResult) -> str:
    """Workflow commands: one per file problem and per difference, and a summary notice."""
    out: list[str] = []
    for diag in result.diagnostics:
        message = diag.message + (f"\nat {diag.path}" if diag.path != "$" else "")
        if diag.hint:
            message += f"\nhint: {diag.hint}"
        out.append(_command("error" if diag.severity == "error" else "warning", diag.file, diag.line, diag.col,
                            f"casavi-sync {diag.code}", message))
    for case in result.failed:
        for p in case.problems:
            out.append(_command("error", case.file, p.line or case.line, p.col or case.col,
                                f"casavi-sync test: {case.name}", p.message))
    out.append(f"::notice title=casavi-sync test::{_escape_data(summary(result))}")
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "github": render_github}
