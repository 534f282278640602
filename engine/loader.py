"""Safe, position-aware loading of mapping YAML.

Why not ``yaml.safe_load``: every later problem must point at ``file:line:col`` of the key or
value it is about (``units.yaml:24:11: unknown casavi field 'adress'``), so the tree keeps
ruamel.yaml's round-trip positions (``lc.key``/``lc.value``/``lc.item``, 0-based there, 1-based in
a :class:`~engine.errors.Diagnostic`). And a mapping file comes from a consultant's editor, so
loading must never crash or hang, whatever the bytes:

* files above :data:`MAX_BYTES` are refused before they are read;
* binary or non-UTF-8 content, an empty file and YAML syntax errors become diagnostics;
* a first pass over the parser *events* (linear, not recursive) rejects nesting deeper than
  :data:`MAX_DEPTH`, every anchor and alias (mapping files never need them, and refusing them
  outright makes "billion laughs" impossible), every non-standard tag (``!!python/object``,
  ``!foo``: reported, never constructed), non-text keys, and reports *all* duplicate keys with
  both positions;
* only then the round-trip constructor builds the tree.

:func:`load_document` returns a :class:`Document` (or ``None``) plus the diagnostics; it never
raises for anything a user can put into a file.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import Diagnostic

MAX_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 100

PathPart = str | int
JsonPath = tuple[PathPart, ...]

_STANDARD_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
)
_SHORT_TAG = re.compile(r"^tag:yaml\.org,2002:")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(parts: Sequence[PathPart]) -> str:
    """``("rules", 0, "fields", "usage")`` -> ``$.rules[0].fields.usage``."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _DOTTED.match(part):
            out.append(f".{part}")
        else:
            out.append("['" + part.replace("'", "\\'") + "']")
    return "".join(out)


def key_text(key: Any) -> str:
    """A mapping key as text, the way value-map codes are matched (``1`` -> ``"1"``)."""
    if key is None:
        return ""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key)


def to_plain(node: Any) -> Any:
    """The round-trip tree as plain dict/list/str/int/float/bool/None (keys as text).

    Dates and timestamps become ISO text: a payload is JSON in the end, and the schema speaks JSON.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap | dict):
        return {key_text(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq | list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, _dt.datetime | _dt.date):
        return node.isoformat()
    return str(node)


@dataclass
class Document:
    """One loaded YAML file: the round-trip tree, its plain twin and the source lines."""

    file: str
    root: Any
    lines: list[str]
    plain: Any = field(init=False)

    def __post_init__(self) -> None:
        self.plain = to_plain(self.root)

    # -- positions -----------------------------------------------------------------------------

    def node(self, path: Sequence[PathPart]) -> Any:
        """The round-trip node at ``path`` (keys compared as text), or ``None``."""
        current = self.root
        for part in path:
            found, current = _child(current, part)
            if not found:
                return None
        return current

    def locate(self, path: Sequence[PathPart], *, at: str = "auto") -> tuple[int, int]:
        """1-based (line, col) of the node at ``path``.

        ``at="key"`` points at the key that holds the node, ``"value"`` at the value; ``"auto"``
        picks the value for scalars and the key for collections (a caret under ``fields:`` reads
        better than one under the first nested key). Missing tails fall back to the deepest
        existing ancestor.
        """
        parent = self.root
        best: tuple[int, int] = (1, 1)
        for index, part in enumerate(path):
            pos = _position(parent, part, "key")
            if pos is None:
                return best
            found, child = _child(parent, part)
            if not found:
                return best
            last = index == len(path) - 1
            want = at
            if want == "auto":
                want = "key" if _is_collection(child) else "value"
            if last and want == "value":
                pos = _position(parent, part, "value") or pos
            best = (pos[0] + 1, pos[1] + 1)
            parent = child
        return best

    def source_line(self, line: int) -> str | None:
        if 1 <= line <= len(self.lines):
            return self.lines[line - 1]
        return None

    def expression_position(self, path: Sequence[PathPart], offset: int) -> tuple[int, int]:
        """1-based position of character ``offset`` inside the string scalar at ``path``.

        Quoted scalars skip the opening quote (and count doubled/escaped quotes); block scalars
        (``|``, ``>``) and multi-line plain scalars are followed line by line in the source.
        """
        from ruamel.yaml.scalarstring import (
            DoubleQuotedScalarString,
            FoldedScalarString,
            LiteralScalarString,
            SingleQuotedScalarString,
        )

        line, col = self.locate(path, at="value")
        value = self.node(path)
        if not isinstance(value, str):
            return line, col
        offset = max(0, min(offset, len(value)))
        head = value[:offset]
        if isinstance(value, SingleQuotedScalarString):
            return self._walk(line, col + 1, head.count("'") + offset)
        if isinstance(value, DoubleQuotedScalarString):
            extra = sum(1 for ch in head if ch in "\"\\")
            return self._walk(line, col + 1, extra + offset)
        if isinstance(value, LiteralScalarString):
            return self._block(line, head)
        if isinstance(value, FoldedScalarString):  # folding turned newlines into spaces
            first = self.source_line(line + 1) or ""
            return self._walk(line + 1, len(first) - len(first.lstrip(" ")) + 1, offset)
        return self._walk(line, col, offset)

    def _walk(self, line: int, col: int, offset: int) -> tuple[int, int]:
        """Follow ``offset`` characters from (line, col) across folded source lines."""
        text = self.source_line(line) or ""
        remaining = len(text) - (col - 1)
        if offset <= remaining:
            return line, col + offset
        offset -= remaining + 1
        while line < len(self.lines):
            line += 1
            text = self.source_line(line) or ""
            stripped = text.lstrip()
            indent = len(text) - len(stripped)
            if offset <= len(stripped):
                return line, indent + offset + 1
            offset -= len(stripped) + 1
        return line, col

    def _block(self, indicator_line: int, head: str) -> tuple[int, int]:
        # the block's indentation is that of its first content line; deeper lines keep the rest
        first = self.source_line(indicator_line + 1) or ""
        indent = len(first) - len(first.lstrip(" "))
        return indicator_line + 1 + head.count("\n"), indent + len(head.rsplit("\n", 1)[-1]) + 1


def _is_collection(node: Any) -> bool:
    return isinstance(node, dict | list)


def _child(parent: Any, part: PathPart) -> tuple[bool, Any]:
    if isinstance(parent, dict):
        for key, value in parent.items():
            if key_text(key) == str(part):
                return True, value
        return False, None
    if isinstance(parent, list) and isinstance(part, int) and 0 <= part < len(parent):
        return True, parent[part]
    return False, None


def _position(parent: Any, part: PathPart, which: str) -> tuple[int, int] | None:
    lc = getattr(parent, "lc", None)
    if lc is None:
        return None
    try:
        if isinstance(parent, dict):
            for key in parent:
                if key_text(key) == str(part):
                    pos = lc.key(key) if which == "key" else lc.value(key)
                    return int(pos[0]), int(pos[1])
            return None
        if isinstance(parent, list) and isinstance(part, int):
            pos = lc.item(part)
            return int(pos[0]), int(pos[1])
    except (KeyError, IndexError, TypeError):
        return None
    return None


# -- loading -----------------------------------------------------------------------------------


def _diag(file: str, lines: Sequence[str], line: int, col: int, message: str, code: str,
          hint: str | None = None, path: str = "$", severity: str = "error") -> Diagnostic:
    source = lines[line - 1] if 1 <= line <= len(lines) else None
    return Diagnostic(file=file, line=line, col=col, message=message, path=path, hint=hint,
                      code=code, severity=severity, source_line=source)


def load_document(path: str | Path, display: str | None = None) -> tuple[Document | None, list[Diagnostic]]:
    """Load one YAML file safely; ``(None, [errors])`` when it cannot be used."""
    name = display if display is not None else str(path)
    file_path = Path(path)
    try:
        size = file_path.stat().st_size
        if size > MAX_BYTES:
            return None, [_diag(name, [], 0, 0,
                                f"file is too large ({size / 1024 / 1024:.1f} MB; the limit is "
                                f"{MAX_BYTES // 1024 // 1024} MB)", "file-too-large",
                                "a mapping file is a few kilobytes; is this the right file?")]
        data = file_path.read_bytes()
    except OSError as exc:
        return None, [_diag(name, [], 0, 0, f"cannot read the file: {exc.strerror or exc}", "io-error")]
    return load_bytes(data, name)


def load_bytes(data: bytes, name: str) -> tuple[Document | None, list[Diagnostic]]:
    """Like :func:`load_document` for content already in memory (tests, editors)."""
    if len(data) > MAX_BYTES:
        return None, [_diag(name, [], 0, 0, f"content is too large (limit {MAX_BYTES} bytes)",
                            "file-too-large")]
    if b"\x00" in data:
        return None, [_diag(name, [], 0, 0, "this is a binary file, not YAML text", "binary-file",
                            "a mapping file is UTF-8 text; check the path")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, [_diag(name, [], line, col,
                            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})", "encoding",
                            "save the file as UTF-8 (editors: 'Save with Encoding')")]
    return load_text(text, name)


def load_text(text: str, name: str) -> tuple[Document | None, list[Diagnostic]]:
    lines = text.splitlines()
    if not any(line.strip() and not line.lstrip().startswith("#") for line in lines):
        return None, [_diag(name, lines, 1, 1, "the file is empty", "file-empty",
                            "a mapping file starts with 'mapping:', 'target:' and 'rules:'")]
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    yaml.allow_duplicate_keys = True  # the prescan reports duplicates by their text, all of them
    try:
        events: list[Any] = []
        problems = _prescan(yaml, text, name, lines, events)
        if problems:
            return None, problems
        builder = YAML(typ="rt", pure=True)  # builds the tree from the events just checked: one scan
        builder.preserve_quotes = True
        builder.allow_duplicate_keys = True
        builder.Parser = _replaying(events)
        root = builder.load(text)
    except MarkedYAMLError as exc:
        return None, [_syntax_diagnostic(exc, name, lines)]
    except ReaderError as exc:
        line, col = _offset_position(text, int(exc.position))
        return None, [_diag(name, lines, line, col,
                            f"the character #x{ord(exc.character) if isinstance(exc.character, str) else exc.character:04x} "
                            "is not allowed in YAML", "encoding", "remove the control character")]
    except YAMLError as exc:
        return None, [_diag(name, lines, 0, 0, f"not valid YAML: {_first_line(str(exc))}", "yaml-syntax")]
    except RecursionError:
        return None, [_diag(name, lines, 0, 0, "the file is nested too deeply to read", "too-deep")]
    except Exception as exc:  # a parser bug must still not become a traceback for the user
        return None, [_diag(name, lines, 0, 0, f"cannot read the YAML: {type(exc).__name__}", "yaml-syntax")]
    if root is None:
        return None, [_diag(name, lines, 1, 1, "the file is empty", "file-empty")]
    return Document(file=name, root=root, lines=lines), []


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown problem"


def _syntax_diagnostic(exc: Any, name: str, lines: list[str]) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    problem = str(exc.problem or exc.context or "invalid YAML")
    message = f"YAML syntax error: {problem}"
    hint = "check indentation and quoting around this place"
    if "another document" in problem:
        message = "YAML syntax error: a second YAML document starts here"
    if "\\t" in problem or "\t" in problem:
        hint = "YAML indentation must use spaces, not tabs"
    elif "mapping values are not allowed" in problem:
        hint = "a value containing ': ' must be quoted, e.g. \"a: b\""
    elif "another document" in problem:
        hint = "a mapping file holds one YAML document; remove the extra '---'"
    indent = _indentation_hint(lines, line)
    if indent and "\t" not in problem and "another document" not in problem:
        message = "YAML syntax error: wrong indentation (" + problem + ")"
        hint = indent
    return _diag(name, lines, line, col, message, "yaml-syntax", hint)


def _indentation_hint(lines: list[str], line: int) -> str | None:
    """A hint when ``line`` (1-based) starts in a column no line above it opens a block at.

    Keys of one mapping (and items of one list) line up in one column; a line indented one space
    more or less than its siblings is the commonest YAML syntax error in hand-edited files.
    """
    if not 1 <= line <= len(lines):
        return None
    text = lines[line - 1]
    if not text.strip() or text.lstrip().startswith("#"):
        return None
    column = len(text) - len(text.lstrip(" "))
    levels: set[int] = set()
    previous: tuple[int, int] | None = None  # (line, content column) of the nearest content line above
    for number in range(line - 1, 0, -1):
        above = lines[number - 1]
        stripped = above.strip()
        if not stripped or stripped.startswith("#"):
            continue
        start = len(above) - len(above.lstrip(" "))
        levels.add(start)
        content = start
        while above[content:content + 2] == "- ":  # "- name: x": the item's keys start after the dash
            content += 2
            while above[content:content + 1] == " ":
                content += 1
            levels.add(content)
        if previous is None:
            previous = (number, content)
    if column in levels or previous is None:
        return None
    number, expected = previous
    return (f"line {line} is indented {column} space{'s' if column != 1 else ''}, but no block above it is "
            f"(line {number}: {expected}); keys of one mapping must line up in one column, nested keys further in")


def _replaying(events: list[Any]) -> Any:
    """A ruamel parser class that hands out ``events`` instead of scanning the text again
    (scanning is ruamel's slow part: half the time of validating a large file)."""
    from ruamel.yaml.parser import RoundTripParser

    class Replay(RoundTripParser):
        def reset_parser(self) -> None:
            super().reset_parser()
            pending = iter(events)
            self.state = lambda: next(pending, None)

    return Replay


def _prescan(yaml: Any, text: str, name: str, lines: list[str], events: list[Any]) -> list[Diagnostic]:
    """One linear pass over the parser events (kept in ``events``); see the module docstring for
    what it rejects."""
    from ruamel.yaml.events import (
        AliasEvent,
        CollectionEndEvent,
        MappingStartEvent,
        NodeEvent,
        ScalarEvent,
        SequenceStartEvent,
    )

    problems: list[Diagnostic] = []
    # one frame per open collection: [is_mapping, expecting_key, seen keys -> (line, col)]
    frames: list[tuple[bool, list[bool], dict[str, tuple[int, int]]]] = []

    def pos(event: Any) -> tuple[int, int]:
        return event.start_mark.line + 1, event.start_mark.column + 1

    for event in yaml.parse(text):
        events.append(event)
        if isinstance(event, CollectionEndEvent):
            if frames:
                frames.pop()
            continue
        if not isinstance(event, NodeEvent):
            continue
        line, col = pos(event)
        is_key = bool(frames) and frames[-1][0] and frames[-1][1][0]
        if frames and frames[-1][0]:
            frames[-1][1][0] = not frames[-1][1][0]
        if isinstance(event, AliasEvent) or event.anchor is not None:
            problems.append(_diag(name, lines, line, col,
                                  "anchors and aliases (&name, *name) are not allowed in mapping files",
                                  "yaml-alias", "write the value out; a mapping file is read by people"))
            return problems
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _STANDARD_TAGS and tag != "!":
            shown = _SHORT_TAG.sub("!!", str(tag))
            problems.append(_diag(name, lines, line, col, f"the YAML tag '{shown}' is not allowed",
                                  "yaml-tag", "remove the tag; mapping files hold plain values only"))
            continue
        if is_key and not isinstance(event, ScalarEvent):
            problems.append(_diag(name, lines, line, col, "a key must be plain text, not a list or mapping",
                                  "yaml-syntax"))
            return problems
        if is_key and isinstance(event, ScalarEvent):
            seen = frames[-1][2]
            key = str(event.value)
            if key in seen:
                first = seen[key]
                problems.append(_diag(name, lines, line, col,
                                      f"duplicate key '{key}' (first at line {first[0]}, column {first[1]})",
                                      "duplicate-key", "keep one of the two; YAML keys must be unique"))
            else:
                seen[key] = (line, col)
        if isinstance(event, MappingStartEvent | SequenceStartEvent):
            frames.append((isinstance(event, MappingStartEvent), [True], {}))
            if len(frames) > MAX_DEPTH:
                problems.append(_diag(name, lines, line, col,
                                      f"nesting is deeper than {MAX_DEPTH} levels", "too-deep",
                                      "a mapping file needs fewer than 10 levels"))
                return problems
    return problems
