"""Validation of mapping files: every problem, positioned, before anything runs.

Two verbs::

    result = validate_paths(["mappings"])        # all diagnostics, for `casavi-sync validate`
    specs = load_mapping_set(["mappings"])       # name -> plain spec, or SpecError(diagnostics)

Stages per file: :mod:`engine.loader` (safe YAML with positions) -> :mod:`.schema_check` (the JSON
Schema, errors rewritten for people) -> :mod:`.semantic` (names, values, references, cycles; over
the whole set). Problems are collected, never raised one at a time, and sorted by file, line and
column.

A file given on its own (``casavi-sync validate mappings/units.yaml``) is checked together with
the other mapping files of its folder, so that ``ref: properties`` resolves; only the given
file's problems are reported. Files named ``*.test.yaml`` are mapping *tests*, not mappings, and
are skipped when a folder is expanded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import Diagnostic, SpecError
from engine.paths import is_mapping_file, mapping_files

FIELD_FORMS: tuple[str, ...] = ("expr", "const", "map", "ref", "object")
"""The long field forms of the DSL (besides the plain expression string); the schema lists one
``$defs/form_<name>`` per entry and the interpreter implements each."""

SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/mapping.schema.json"
_SCHEMA_LINE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=\S*mapping\.schema\.json\s*$")


@dataclass
class ValidationResult:
    """What ``casavi-sync validate`` reports: the files checked and every diagnostic."""

    files: list[str]
    diagnostics: list[Diagnostic]
    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity != "error"]

    @property
    def valid(self) -> bool:
        return not self.errors


def expand(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(requested files, context files)``; folders expand to their mapping files, sorted."""
    requested: list[Path] = []
    context: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            requested.extend(mapping_files(path))
        else:
            requested.append(path)
    known = {p.resolve() for p in requested}
    for path in list(requested):
        if path.is_file() and path.parent.is_dir():
            for sibling in sorted(path.parent.iterdir()):
                if sibling.is_file() and is_mapping_file(sibling) and sibling.resolve() not in known:
                    known.add(sibling.resolve())
                    context.append(sibling)
    return requested, context


def validate_paths(paths: Sequence[str | Path]) -> ValidationResult:
    """Check mapping files (or folders of them) and collect every problem."""
    from engine.loader import load_document
    from engine.validate.schema_check import SchemaChecker
    from engine.validate.semantic import MappingFile, SetChecker

    requested, context = expand(paths)
    shown = {str(p) for p in requested}
    diagnostics: list[Diagnostic] = []
    loaded: list[MappingFile] = []
    unreadable: set[str] = set()  # mapping names that files which cannot be read may define
    broken: set[str] = set()      # those files
    for path in [*requested, *context]:
        if not path.exists():
            diagnostics.append(Diagnostic(file=str(path), line=0, col=0, message="no such file or folder",
                                          code="not-found"))
            continue
        doc, problems = load_document(path, str(path))
        diagnostics.extend(problems)
        if doc is None:
            unreadable.update(_names_in_unreadable(path))
            broken.add(str(path))
            continue
        diagnostics.extend(_schema_line(doc.file, doc.lines))
        if not isinstance(doc.root, dict):
            diagnostics.append(Diagnostic(file=doc.file, line=1, col=1, code="not-a-mapping",
                                          message="the file must be a YAML mapping (mapping:, target:, rules:)",
                                          source_line=doc.source_line(1)))
            continue
        checker = SchemaChecker(doc)
        diagnostics.extend(checker.run())
        loaded.append(MappingFile(doc, checker.bad_paths))
    diagnostics.extend(SetChecker(loaded, unreadable).run())
    diagnostics = [d for d in diagnostics if d.file in shown]
    # A file that cannot be read is reported first: its syntax error explains what follows.
    diagnostics.sort(key=lambda d: (d.file not in broken, d.file, d.line, d.col, d.code, d.message))
    failed = {d.file for d in diagnostics if d.severity == "error"}
    mappings = {mf.name: mf.spec for mf in loaded
                if mf.name is not None and mf.doc.file in shown and mf.doc.file not in failed}
    return ValidationResult(files=[str(p) for p in requested], diagnostics=diagnostics, mappings=mappings)


def load_mapping_set(paths: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """Mapping name -> plain spec dict of the given files/folders; ``SpecError`` if any error."""
    result = validate_paths(paths)
    if result.errors:
        raise SpecError(result.errors)
    return result.mappings


_MAPPING_LINE = re.compile(r"^mapping:\s*[\"']?([A-Za-z0-9_-]+)", re.MULTILINE)


def _names_in_unreadable(path: Path) -> set[str]:
    """The mapping name a file that cannot be parsed probably defines (its mapping: line, its stem)."""
    names = {path.stem}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return names
    names.update(m.group(1) for m in _MAPPING_LINE.finditer(text))
    return names


def _schema_line(file: str, lines: list[str]) -> list[Diagnostic]:
    first = lines[0] if lines else ""
    if _SCHEMA_LINE.match(first.strip()):
        return []
    return [Diagnostic(file=file, line=1, col=1, code="schema-line", severity="warning",
                       message="the first line does not bind the mapping schema",
                       hint=f"add '{SCHEMA_LINE}' as the first line so editors check the file as you type",
                       source_line=first)]


__all__ = ["FIELD_FORMS", "ValidationResult", "load_mapping_set", "validate_paths"]
