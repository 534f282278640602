"""The three renderings of a validation result: for people, for programs, for GitHub Actions.

``text`` is what a consultant reads in a terminal (compiler style, caret under the column)::

    mappings/units.yaml:24:7: error: casavi units have no field 'adress'; did you mean 'address'? [unknown-target-field]
        address: "join_nonempty(' ', [building.street, building.houseNumber])"
        ^
      at $.rules[0].fields.adress
      hint: fields of casavi units: propertyId, name, ...
    1 error in 1 file

``json`` is a stable document for tools; ``github`` emits workflow commands so that each problem
shows up as an annotation on the pull request's diff. The functions return text; the CLI prints.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine.errors import Diagnostic

if TYPE_CHECKING:
    from engine.validate import ValidationResult


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary(result: ValidationResult) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    if not errors:
        text = f"{_plural(len(result.files), 'file')} valid"
        return text + (f" ({_plural(warnings, 'warning')})" if warnings else "")
    files = len({d.file for d in result.diagnostics})
    text = _plural(errors, "error")
    if warnings:
        text += f", {_plural(warnings, 'warning')}"
    return f"{text} in {_plural(files, 'file')}"


EXCERPT = 120  # characters of a long source line shown around the column


def _window(source: str, col: int) -> tuple[str, int]:
    """A long line cut to the part around the column (with '...'), and the column within it."""
    if len(source) <= EXCERPT:
        return source, col
    start = max(0, min(col - 1 - EXCERPT // 2, len(source) - EXCERPT))
    piece = source[start:start + EXCERPT]
    prefix = "..." if start else ""
    suffix = "..." if start + EXCERPT < len(source) else ""
    return prefix + piece + suffix, col - start + len(prefix)


def _caret(source: str, col: int) -> str:
    """Spaces (tabs kept as tabs) up to the column, then '^', so it aligns in any terminal."""
    prefix = "".join(ch if ch == "\t" else " " for ch in source[: max(col - 1, 0)])
    return prefix + "^"


def render_diagnostic(diag: Diagnostic) -> str:
    lines = [f"{diag.location()}: {diag.severity}: {diag.message} [{diag.code}]"]
    if diag.line and diag.source_line is not None:
        shown, col = _window(diag.source_line, diag.col)
        lines.append("    " + shown)
        lines.append("    " + _caret(shown, col))
    if diag.path != "$" or diag.line:
        lines.append(f"  at {diag.path}")
    if diag.hint:
        lines.append(f"  hint: {diag.hint}")
    return "\n".join(lines)


def render_text(result: ValidationResult) -> str:
    parts = [render_diagnostic(d) for d in result.diagnostics]
    parts.append(summary(result))
    return "\n".join(parts) + "\n"


def as_document(result: ValidationResult) -> dict[str, object]:
    return {
        "valid": result.valid,
        "files": list(result.files),
        "diagnostics": [d.as_dict() for d in result.diagnostics],
        "counts": {
            "files": len(result.files),
            "errors": len(result.errors),
            "warnings": len(result.warnings),
        },
    }


def render_json(result: ValidationResult) -> str:
    return json.dumps(as_document(result), indent=2, ensure_ascii=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(result: ValidationResult) -> str:
    """GitHub Actions workflow commands, one per diagnostic, plus the summary as a notice."""
    out: list[str] = []
    for diag in result.diagnostics:
        level = "error" if diag.severity == "error" else "warning"
        props = [f"file={_escape_property(diag.file)}"]
        if diag.line:
            props += [f"line={diag.line}", f"col={diag.col}"]
        props.append(f"title={_escape_property('casavi-sync ' + diag.code)}")
        message = diag.message + (f"\nat {diag.path}" if diag.path != "$" else "")
        if diag.hint:
            message += f"\nhint: {diag.hint}"
        out.append(f"::{level} {','.join(props)}::{_escape_data(message)}")
    out.append(f"::notice title=casavi-sync validate::{_escape_data(summary(result))}")
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "github": render_github}
