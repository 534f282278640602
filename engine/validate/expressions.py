"""Static checks of one JMESPath expression against what the context will hold.

The interpreter only finds ``building.stret`` when a record runs through it, and then it silently
yields null. Here the expression is parsed once and its AST walked with a *shape* of the context
(the SCALARA record's fields from ``engine/catalog/scalara.yaml``, one entry per lookup and per
``for_each`` variable), so that a typo is an error with a did-you-mean at the exact column::

    units.yaml:21:37: error: unknown field 'stret' of buildings (lookup 'building');
                             did you mean 'street'? [unknown-field]

Shapes follow projections: in ``buildings[].{s: street}`` the ``street`` is checked against the
buildings resource because ``buildings`` is a ``many`` lookup. Where the shape is unknown (a
literal, a loop variable, a function result) the walk stops checking instead of guessing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from engine.functions import REGISTRY
from engine.validate.literals import nonfinite

# (message, hint, code, offset inside the expression or None for the expression's start)
Report = Callable[[str, str | None, str, int | None], None]


@dataclass(frozen=True)
class Shape:
    """What a sub-expression yields, as far as the catalog tells."""

    kind: str  # "any" | "object" | "list" | "scalar"
    label: str = ""
    fields: dict[str, Shape] = field(default_factory=dict)
    elem: Shape | None = None
    values: tuple[str, ...] = ()

    def element(self) -> Shape:
        return self.elem if self.kind == "list" and self.elem is not None else ANY


ANY = Shape("any")


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """``"; did you mean 'street'?"`` or ``""`` when nothing is close."""
    if len(name) > 100:                  # nothing is close, and difflib would take seconds
        return ""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def resource_shape(fields: dict[str, Any], label: str, prefix: str = "") -> Shape:
    """The shape of one record of a SCALARA resource, from its catalog entry.

    ``label`` names the object in messages ("buildings (lookup 'building')"), ``prefix`` is how
    its members are written in expressions ("building.").
    """
    members: dict[str, Shape] = {}
    for name, spec in fields.items():
        ftype = str(spec.get("type", ""))
        if ftype.startswith("array"):
            members[name] = Shape("list", f"{prefix}{name}", elem=ANY)
        else:
            members[name] = Shape("scalar", f"{prefix}{name}",
                                  values=tuple(str(v) for v in spec.get("values") or ()))
    return Shape("object", label, fields=members)


@dataclass(frozen=True)
class Parsed:
    ast: dict[str, Any]
    tokens: list[dict[str, Any]]


def parse(expression: str) -> tuple[Parsed | None, str | None, int]:
    """``(parsed, None, 0)`` or ``(None, message, offset)`` for a syntax error."""
    from jmespath import exceptions

    from engine.jmes import FastLexer, FastParser

    try:
        ast = FastParser().parse(expression).parsed
        tokens = list(FastLexer().tokenize(expression))
    except exceptions.LexerError as exc:
        return None, "invalid expression: " + _lexer_text(exc), int(exc.lex_position)
    except exceptions.IncompleteExpressionError as exc:
        return None, "invalid expression: " + _incomplete_text(expression), int(exc.lex_position)
    except exceptions.ParseError as exc:
        position = int(exc.lex_position)
        return None, "invalid expression: " + _parse_error_text(expression, exc, position), position
    except (exceptions.JMESPathError, RecursionError, ValueError, TypeError) as exc:
        return None, f"invalid expression: {type(exc).__name__}", 0
    return Parsed(cast("dict[str, Any]", ast), tokens), None, 0


_TOKEN_TEXT = {
    "comma": "','", "colon": "':'", "rparen": "')'", "lparen": "'('", "rbracket": "']'", "lbracket": "'['",
    "rbrace": "'}'", "lbrace": "'{'", "dot": "'.'", "pipe": "'|'", "eof": "the end",
    "quoted_identifier": "a field name", "unquoted_identifier": "a field name",
}
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_OPERATORS = ("||", "&&", "==", "!=", "<=", ">=", "|", ".", ",", "<", ">", "!", ":", "?")


def _open_brackets(expression: str, end: int) -> list[tuple[str, int]]:
    """The brackets still open at ``end`` (outside quotes and literals): (bracket, offset)."""
    stack: list[tuple[str, int]] = []
    quote = ""
    for i, ch in enumerate(expression[:end]):
        if quote:
            if ch == quote and expression[i - 1] != "\\":
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch in _CLOSERS:
            stack.append((ch, i))
        elif ch in ")]}" and stack and _CLOSERS[stack[-1][0]] == ch:
            stack.pop()
    return stack


def _ending_operator(text: str) -> str | None:
    stripped = text.rstrip()
    return next((op for op in _OPERATORS if stripped.endswith(op)), None)


def _incomplete_text(expression: str) -> str:
    """What the expression lacks at its end: a closing bracket, or an operand after an operator."""
    operator = _ending_operator(expression)
    if operator and operator not in "([{":
        return f"expected an expression after '{operator}' at the caret, but the expression ends"
    stack = _open_brackets(expression, len(expression))
    if stack:
        bracket, offset = stack[-1]
        return (f"expected '{_CLOSERS[bracket]}' at the caret to close the '{bracket}' at column {offset + 1} "
                f"of the expression, but the expression ends")
    return "expected more at the caret, but the expression ends"


def _parse_error_text(expression: str, exc: Any, position: int) -> str:
    token = exc.token_value
    found = "the end" if exc.token_type == "eof" or token in (None, "") else f"'{token}'"
    msg = str(getattr(exc, "msg", "") or "")
    if msg.startswith("Expecting: "):
        wanted_raw = msg[len("Expecting: "):].split(", got:", 1)[0].strip("[] ")
        wanted = [w.strip(" '") for w in wanted_raw.split(",")]
        names = list(dict.fromkeys(_TOKEN_TEXT.get(w, w) for w in wanted))
        stack = _open_brackets(expression, position)
        if names == ["','"] and stack:
            names.append(f"'{_CLOSERS[stack[-1][0]]}'")
        return f"expected {' or '.join(names)} at the caret, found {found}"
    operator = _ending_operator(expression[:position])
    if operator:
        return f"expected an expression after '{operator}' at the caret, found {found}"
    if token in (")", "]", "}") and not any(_CLOSERS[b] == token for b, _ in _open_brackets(expression, position)):
        opener = {v: k for k, v in _CLOSERS.items()}[str(token)]
        return f"the '{token}' at the caret closes nothing (no '{opener}' is open before it); remove it"
    if msg.startswith("Unexpected token"):
        return (f"expected an operator (. | || && == != < > ...) or the end at the caret, found {found}; "
                "two names or values next to each other need an operator between them")
    return f"unexpected {found} at the caret"


def _lexer_text(exc: Any) -> str:
    token = str(getattr(exc, "token_value", "") or "")
    if token[:1] in ("'", "`", '"'):
        return f"expected a closing {token[0]} for the {_quoted_kind(token[0])} that starts at the caret"
    return f"{exc.msg} at the caret" if getattr(exc, "msg", None) else "not a valid expression"


def _quoted_kind(quote: str) -> str:
    return {"'": "text in single quotes", "`": "literal in backticks", '"': "quoted field name"}[quote]


def field_names(ast: dict[str, Any]) -> set[str]:
    """Every identifier used anywhere in the expression (for 'id uses every loop variable')."""
    names: set[str] = set()
    stack = [ast]
    while stack:
        node = stack.pop()
        if node.get("type") == "field":
            names.add(str(node.get("value")))
        stack.extend(c for c in node.get("children", ()) if isinstance(c, dict))
    return names


class Checker:
    """Walks one parsed expression in a context shape, reporting through ``report``."""

    def __init__(self, parsed: Parsed, report: Report) -> None:
        self.parsed = parsed
        self.report = report
        self._used_offsets: set[int] = set()

    def offset_of(self, name: str, kinds: tuple[str, ...]) -> int | None:
        for token in self.parsed.tokens:
            if token["type"] in kinds and token["value"] == name and token["start"] not in self._used_offsets:
                self._used_offsets.add(int(token["start"]))
                return int(token["start"])
        return None

    def run(self, scope: Shape) -> Shape:
        return self.walk(self.parsed.ast, scope)

    def walk(self, node: dict[str, Any], scope: Shape) -> Shape:
        kind = node.get("type")
        kids: list[dict[str, Any]] = [c for c in node.get("children", ()) if isinstance(c, dict)]
        if kind == "field":
            return self.field(scope, str(node.get("value")))
        if kind in ("subexpression", "pipe") and len(kids) == 2:
            return self.walk(kids[1], self.walk(kids[0], scope))
        if kind == "index_expression" and kids:
            return self.walk(kids[0], scope).element()
        if kind == "flatten" and kids:
            inner = self.walk(kids[0], scope)
            elem = inner.element()
            return elem if elem.kind == "list" else inner
        if kind == "projection" and len(kids) == 2:
            elem = self.walk(kids[0], scope).element()
            return Shape("list", elem=self.walk(kids[1], elem))
        if kind == "filter_projection" and len(kids) == 3:
            elem = self.walk(kids[0], scope).element()
            self.walk(kids[2], elem)
            return Shape("list", elem=self.walk(kids[1], elem))
        if kind == "value_projection" and len(kids) == 2:
            self.walk(kids[0], scope)
            self.walk(kids[1], ANY)
            return Shape("list", elem=ANY)
        if kind == "function_expression":
            return self.function(str(node.get("value")), kids, scope)
        if kind in ("current", "identity"):
            return scope
        if kind == "literal":
            self.literal(node.get("value"))
        for kid in kids:
            self.walk(kid, ANY if kind == "expref" else scope)
        return ANY

    def literal(self, value: Any) -> None:
        """A backtick literal holding NaN or Infinity (1e999 in backticks): JSON cannot carry it."""
        where = nonfinite(value)
        if where is None:
            return
        offset = next((int(t["start"]) for t in self.parsed.tokens
                       if t["type"] == "literal" and nonfinite(t["value"]) is not None
                       and int(t["start"]) not in self._used_offsets), None)
        if offset is not None:
            self._used_offsets.add(offset)
        self.report(f"{'.' + where + ' of ' if where else ''}the literal would be NaN or Infinity, "
                    "which JSON cannot carry", "write a number, or null", "value-not-allowed", offset)

    def field(self, scope: Shape, name: str) -> Shape:
        if scope.kind == "object":
            if name in scope.fields:
                return scope.fields[name]
            offset = self.offset_of(name, ("unquoted_identifier", "quoted_identifier"))
            self.report(f"unknown field '{name}' of {scope.label}{did_you_mean(name, list(scope.fields))}",
                        "available: " + ", ".join(sorted(scope.fields)), "unknown-field", offset)
        elif scope.kind == "list" and scope.label:
            offset = self.offset_of(name, ("unquoted_identifier", "quoted_identifier"))
            base = scope.label
            self.report(f"'{base}' is a list, so '{base}.{name}' is always null",
                        f"write {base}[].{name} (all of them) or {base}[0].{name} (the first)",
                        "list-field", offset)
        elif scope.kind == "scalar" and scope.label:
            offset = self.offset_of(name, ("unquoted_identifier", "quoted_identifier"))
            self.report(f"'{scope.label}' is a single value; it has no field '{name}'", None,
                        "unknown-field", offset)
        return ANY

    def function(self, name: str, kids: list[dict[str, Any]], scope: Shape) -> Shape:
        spec = REGISTRY.get(name)
        offset = self.offset_of(name, ("unquoted_identifier",))
        if spec is None:
            custom = sorted(n for n, f in REGISTRY.items() if not f.builtin)
            self.report(f"unknown function '{name}'{did_you_mean(name, list(REGISTRY))}",
                        "available: " + ", ".join(custom) + " and JMESPath's built-ins", "unknown-function",
                        offset)
        elif not spec.accepts(len(kids)):
            self.report(f"{name}() takes {spec.arity_text()} argument(s), {len(kids)} given",
                        f"signature: {spec.signature}", "function-arity", offset)
        shapes: list[Shape] = []
        for kid in kids:
            shapes.append(ANY if kid.get("type") == "expref" else self.walk(kid, scope))
        lists = [s for s in shapes if s.kind == "list"]
        elem = lists[0].element() if lists else ANY
        for kid in kids:
            if kid.get("type") == "expref":
                for sub in kid.get("children", ()):
                    if isinstance(sub, dict):
                        self.walk(sub, elem)
        if name in ("unique", "sort", "sort_by", "reverse") and shapes:
            return shapes[0]
        if name in ("max_by", "min_by"):
            return elem
        return ANY
