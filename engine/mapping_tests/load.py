"""Find, read and check mapping test files; every problem positioned like ``casavi-sync validate``.

A test file that cannot be trusted must say so at ``file:line:col`` rather than fail its cases
for a confusing reason: a typo in a resource name (``unis:``) would otherwise give "expected 1
unit, got none". So before anything runs:

* the file is read with :func:`engine.loader.load_document` (safe YAML with positions);
* it is checked against ``schemas/mapping-test.schema.json`` with the same translation of
  jsonschema errors that mapping files get (``unknown key 'unis'; did you mean 'units'?``);
* then against the catalogs and the mapping set of the folder: unknown mapping names, expected
  kinds that no mapping (under test) produces, expected fields casavi does not have
  (``engine.catalog.casavi_kinds()``), ids that can never be casavi reference ids, ``=``
  expressions that do not compile, duplicate case names, and (as warnings) SCALARA fields the
  export API does not have.

A case with an error is not run (it counts as an error); the other cases of the file are.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from engine.catalog import casavi_kinds, scalara_resources
from engine.compile import MappingSet, compile_mappings
from engine.errors import Diagnostic, SpecError
from engine.expr import ExpressionError, compile_expr
from engine.functions import REFERENCE_ID
from engine.loader import Document, JsonPath, format_path, load_document
from engine.mapping_tests import Suite, TestCase
from engine.paths import MAPPING_TEST_SCHEMA
from engine.validate.expressions import did_you_mean
from engine.validate.schema_check import SchemaChecker

TEST_SCHEMA = MAPPING_TEST_SCHEMA
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/mapping-test.schema.json"
TEST_SUFFIXES = (".test.yaml", ".test.yml")

__all__ = ["SCHEMA_LINE", "TEST_SCHEMA", "collect_suite", "discover", "is_test_file", "resolve_id"]


def is_test_file(path: Path) -> bool:
    return path.name.endswith(TEST_SUFFIXES)


def resolve_id(key: str) -> str:
    """An expected reference id: as written, or computed when it starts with ``=``.

    ``"=ref_id('own', 'o1', 'c1')"`` -> ``own-<hash>``: ids of for_each rules are hashes, and a
    test should show how they are made rather than paste 32 hex digits. Raises ExpressionError
    or ValueError (the loader turns both into positioned diagnostics).
    """
    if not key.startswith("="):
        return key
    value = compile_expr(key[1:]).fn({})
    if not isinstance(value, str):
        raise ValueError(f"`{key[1:]}` gave {json.dumps(value)}, not text")
    return value


@cache
def _schema_validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(TEST_SCHEMA.read_text(encoding="utf-8")))


@cache
def _case_keys() -> tuple[str, ...]:
    return tuple(json.loads(TEST_SCHEMA.read_text(encoding="utf-8"))["$defs"]["case"]["properties"])


class _TestSchemaChecker(SchemaChecker):
    """The mapping checker's error translation, run against the test-file schema."""

    def run(self) -> list[Diagnostic]:
        for error in _schema_validator().iter_errors(self.doc.plain):
            self._translate(error)
        return self.diagnostics

    def _translate(self, error: Any) -> None:
        path: JsonPath = tuple(error.absolute_path)
        if not path and error.validator == "type":
            self._add(path, "a mapping test file is a list of cases ('- name: ...')", "not-a-test-file",
                      "see the example at the top of schemas/mapping-test.schema.json")
        elif error.validator == "anyOf" and len(path) == 1:
            allowed = _case_keys()
            if isinstance(error.instance, dict) and any(k not in allowed for k in error.instance):
                return  # an unknown key (expected:, expect_error:) is reported, and is the likely cause
            self._add(path, "a case needs at least one of expect, expect_errors and expect_absent",
                      "missing-expectation", "expect: {<kind>: {<reference id>: {<field>: <value>}}}", at="key")
        elif error.validator == "anyOf":
            self._add(path, "expected a reference id (text) or {sourceId: <SCALARA id>}", "invalid-form")
        elif error.validator == "pattern" and path and path[-1] == "date":
            self._add(path, f"'{error.instance}' is not a date (YYYY-MM-DD)", "invalid-date")
        else:
            super()._translate(error)


def discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[Diagnostic]]:
    """Test files of the given files and folders (a folder: its ``*.test.yaml``, sorted)."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and is_test_file(p)))
        elif not path.exists():
            problems.append(Diagnostic(str(path), 0, 0, "no such file or folder", code="not-found"))
        elif not is_test_file(path):
            problems.append(Diagnostic(str(path), 0, 0, "not a mapping test file", code="not-a-test-file",
                                       hint="mapping tests are named <name>.test.yaml"))
        else:
            files.append(path)
    return files, problems


def _mapping_set(folder: Path, cache_: dict[Path, tuple[MappingSet | None, list[Diagnostic]]]
                 ) -> tuple[MappingSet | None, list[Diagnostic], bool]:
    """The compiled mappings of ``folder`` (once per folder); ``fresh`` says whether to report."""
    key = folder.resolve()
    if key in cache_:
        return cache_[key][0], [], False
    from engine.validate import load_mapping_set

    mset: MappingSet | None
    try:
        specs = load_mapping_set([folder])
        mset = compile_mappings(specs) if specs else None
        problems = [] if specs else [Diagnostic(str(folder), 0, 0, "no mapping files in this folder",
                                                code="no-mappings",
                                                hint="put the test next to the mappings or use --mappings")]
    except SpecError as exc:
        mset, problems = None, [*exc.diagnostics,
                                Diagnostic(str(folder), 0, 0, "the mappings are invalid, so their tests cannot "
                                           "run", code="invalid-mappings",
                                           hint=f"run `casavi-sync validate {folder}`")]
    cache_[key] = (mset, problems)
    return mset, problems, True


def collect_suite(paths: Sequence[str | Path], mappings: str | Path | None = None) -> Suite:
    files, diagnostics = discover(paths)
    msets: dict[Path, tuple[MappingSet | None, list[Diagnostic]]] = {}
    cases: list[TestCase] = []
    for path in files:
        folder = Path(mappings) if mappings is not None else path.parent
        mset, problems, _ = _mapping_set(folder, msets)
        diagnostics.extend(problems)
        doc, load_problems = load_document(path, str(path))
        diagnostics.extend(_for_tests(d) for d in load_problems)
        if doc is None:
            continue
        checker = _FileChecker(doc, mset)
        diagnostics.extend(checker.run())
        cases.extend(checker.cases)
    diagnostics.sort(key=lambda d: (d.file, d.line, d.col, d.code, d.message))
    return Suite(files=[str(p) for p in files], diagnostics=diagnostics, cases=cases)


def _for_tests(diag: Diagnostic) -> Diagnostic:
    """The loader's hints speak of mapping files; an empty test file needs its own."""
    if diag.code != "file-empty":
        return diag
    return dataclasses.replace(diag, hint="a mapping test file is a list of cases: '- name: ...', 'given:', "
                               "'expect:'")


class _FileChecker:
    """Schema and semantic checks of one test file; ``cases`` are those without errors."""

    def __init__(self, doc: Document, mset: MappingSet | None) -> None:
        self.doc, self.mset = doc, mset
        self.diagnostics: list[Diagnostic] = []
        self.cases: list[TestCase] = []
        self.bad: set[int] = set()

    def add(self, path: JsonPath, message: str, code: str, hint: str | None = None, *, at: str = "key",
            severity: str = "error") -> None:
        line, col = self.doc.locate(path, at=at)
        if path and isinstance(path[0], int) and severity == "error":
            self.bad.add(path[0])
        self.diagnostics.append(Diagnostic(self.doc.file, line, col, message, format_path(path), hint, code,
                                           severity, self.doc.source_line(line)))

    def run(self) -> list[Diagnostic]:
        first = self.doc.lines[0].strip() if self.doc.lines else ""
        if first != SCHEMA_LINE:
            self.diagnostics.append(Diagnostic(
                self.doc.file, 1, 1, "the first line does not bind the mapping test schema", "$",
                f"add '{SCHEMA_LINE}' as the first line so editors check the file as you type",
                "schema-line", "warning", self.doc.source_line(1)))
        schema = _TestSchemaChecker(self.doc)
        self.diagnostics.extend(schema.run())
        plain = self.doc.plain
        if not isinstance(plain, list) or any(not p for p in schema.bad_paths):
            return self.diagnostics
        self.bad.update(int(p[0]) for p in schema.bad_paths if isinstance(p[0], int))
        names: dict[str, int] = {}
        for i, case in enumerate(plain):
            if i in self.bad or not isinstance(case, dict):
                continue
            name = str(case.get("name"))
            if name in names:
                self.add((i, "name"), f"the case name '{name}' is used twice (first in case {names[name] + 1})",
                         "duplicate-name", "give each case its own name; it is the test's id", at="value")
            names.setdefault(name, i)
            if self.mset is not None:
                self._case(i, case, self.mset)
        if self.mset is None:
            return self.diagnostics
        for i, case in enumerate(plain):
            if i not in self.bad and isinstance(case, dict):
                line, col = self.doc.locate((i,), at="key")
                self.cases.append(TestCase(self.doc.file, i, str(case["name"]), case, self.mset, self.doc,
                                           line, col))
        return self.diagnostics

    def _case(self, i: int, case: dict[str, Any], mset: MappingSet) -> None:
        only = case.get("mappings")
        produced_kinds = {p.target for p in mset.mappings.values()}
        if only is not None:
            unknown = False
            for j, name in enumerate(only):
                if name not in mset.mappings:
                    unknown = True
                    self.add((i, "mappings", j), f"unknown mapping '{name}'{did_you_mean(name, list(mset.mappings))}",
                             "unknown-mapping", "mappings here: " + ", ".join(sorted(mset.mappings)), at="value")
            if unknown:
                return  # which kinds it produces is unknown; the name is the problem to fix first
            produced_kinds = {mset.mappings[n].target for n in only}
        resources = scalara_resources()
        for resource, records in (case.get("given") or {}).items():
            known = resources.get(resource, {}).get("fields", {})
            for k, record in enumerate(records):
                for fname in record:
                    if fname not in known and fname != "deleted" and fname != "deletedAt":
                        self.add((i, "given", resource, k, fname),
                                 f"SCALARA {resource} have no field '{fname}'{did_you_mean(fname, list(known))}",
                                 "unknown-source-field", "fields: " + ", ".join(known), severity="warning")
        kinds = casavi_kinds()
        for kind, payloads in (case.get("expect") or {}).items():
            self._kind(i, ("expect", kind), kind, produced_kinds, only is not None)
            fields = kinds.get(kind, {}).get("fields", {})
            for key, payload in payloads.items():
                self._id(i, ("expect", kind, key), key)
                for fname in payload:
                    if fname not in fields:
                        hint = f"fields of casavi {kind}: " + ", ".join(fields)
                        close = did_you_mean(fname, list(fields))
                        if "customFields" in fields and not close:
                            hint += f"; free fields go under customFields: {{customFields: {{{fname}: ...}}}}"
                        self.add((i, "expect", kind, key, fname), f"casavi {kind} have no field '{fname}'{close}",
                                 "unknown-target-field", hint)
        for kind, entries in (case.get("expect_absent") or {}).items():
            self._kind(i, ("expect_absent", kind), kind, produced_kinds, only is not None)
            for j, entry in enumerate(entries):
                if isinstance(entry, str):
                    self._id(i, ("expect_absent", kind, j), entry, at="value")

    def _kind(self, i: int, where: tuple[str, str], kind: str, produced: set[str], subset: bool) -> None:
        if kind in produced:
            return
        by = "the mappings under test (mappings:)" if subset else "any mapping of this folder"
        self.add((i, *where), f"casavi {kind} are not produced by {by}", "kind-not-produced",
                 "kinds produced: " + ", ".join(sorted(produced)))

    def _id(self, i: int, path: tuple[Any, ...], key: str, *, at: str = "key") -> None:
        try:
            ref_id = resolve_id(key)
        except ExpressionError as exc:
            self.add((i, *path), f"the id expression does not compile: {exc.reason}", "jmespath-syntax",
                     exc.hint or "a key starting with '=' is an expression, e.g. \"=ref_id('own', 'o1', 'c1')\"",
                     at=at)
            return
        except Exception as exc:  # a function rejecting its arguments, a non-text result
            reason = exc.reason if hasattr(exc, "reason") else str(exc)
            self.add((i, *path), f"the id expression fails: {reason}", "invalid-id", at=at)
            return
        if not REFERENCE_ID.match(ref_id):
            self.add((i, *path), f"'{ref_id}' can never be a casavi reference id (1 to 64 of A-Z a-z 0-9 . _ -)",
                     "invalid-id", "for a computed id write the expression with a leading '=': "
                     "\"=ref_id('rent', 'us1', 'u1', 't1')\"", at=at)
