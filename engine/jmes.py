"""A linear-time JMESPath lexer and the parser that uses it.

jmespath's own lexer builds every identifier, number and quoted string one character at a time
(``buff += char``), which is quadratic: one expression with a 1 MB identifier took over a minute
to validate, 3 MB several. This lexer yields exactly the same tokens (type, value, start, end --
including jmespath's quirks) but takes identifiers and numbers with a regular expression and
quoted parts with ``str.find``, so its time is linear in the expression's length.

    FastParser().parse("building.street")       # a jmespath ParsedResult, cached like jmespath's
    list(FastLexer().tokenize("a.b"))           # the same dicts jmespath.lexer.Lexer yields
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from json import loads
from typing import Any, ClassVar

from jmespath import exceptions
from jmespath.lexer import Lexer
from jmespath.parser import ParsedResult, Parser

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]*")
_WHITESPACE = " \t\n\r"
_SIMPLE = Lexer.SIMPLE_TOKENS
_PAIRS = {"<": ("=", "lte", "lt"), ">": ("=", "gte", "gt"), "!": ("=", "ne", "not"),
          "|": ("|", "or", "pipe"), "&": ("&", "and", "expref")}


class FastLexer:
    """Yields the token dicts of ``jmespath.lexer.Lexer.tokenize``, in linear time."""

    def tokenize(self, expression: str) -> Iterator[dict[str, Any]]:
        if not expression:
            raise exceptions.EmptyExpressionError()
        text, n, i = expression, len(expression), 0
        while i < n:
            ch = text[i]
            if ch in _SIMPLE:
                yield {"type": _SIMPLE[ch], "value": ch, "start": i, "end": i + 1}
                i += 1
            elif ch == "_" or (ch.isascii() and ch.isalpha()):
                m = _IDENTIFIER.match(text, i)
                assert m is not None
                yield {"type": "unquoted_identifier", "value": m.group(), "start": i, "end": m.end()}
                i = m.end()
            elif ch in _WHITESPACE:
                i += 1
            elif ch == "[":
                nxt = text[i + 1] if i + 1 < n else None
                if nxt == "]":
                    yield {"type": "flatten", "value": "[]", "start": i, "end": i + 2}
                    i += 2
                elif nxt == "?":
                    yield {"type": "filter", "value": "[?", "start": i, "end": i + 2}
                    i += 2
                else:
                    yield {"type": "lbracket", "value": "[", "start": i, "end": i + 1}
                    i += 1
            elif ch == "'":
                lexeme, after = _until(text, i, "'")
                yield {"type": "literal", "value": lexeme.replace("\\'", "'"), "start": i, "end": _span(i, after, n)}
                i = after
            elif ch in _PAIRS:
                expected, match_type, else_type = _PAIRS[ch]
                if i + 1 < n and text[i + 1] == expected:
                    yield {"type": match_type, "value": ch + expected, "start": i, "end": i + 1}
                    i += 2
                else:
                    yield {"type": else_type, "value": ch, "start": i, "end": i}
                    i += 1
            elif ch == "`":
                yield _literal(text, i)
                i = _until(text, i, "`")[1]
            elif (ch.isdigit() and ch.isascii()) or ch == "-":
                m = _DIGITS.match(text, i + 1)
                assert m is not None
                buff = text[i:m.end()]
                if buff == "-":
                    raise exceptions.LexerError(lexer_position=i, lexer_value=buff,
                                                message=f"Unknown token '{buff}'")
                yield {"type": "number", "value": int(buff), "start": i, "end": i + len(buff)}
                i = m.end()
            elif ch == '"':
                lexeme, after = _until(text, i, '"')
                try:
                    value = loads('"' + lexeme + '"')
                except ValueError as e:
                    raise exceptions.LexerError(lexer_position=i, lexer_value='"' + lexeme + '"',
                                                message=str(e).split(":")[0]) from None
                yield {"type": "quoted_identifier", "value": value, "start": i, "end": _span(i, after, n)}
                i = after
            elif ch == "=":
                if i + 1 < n and text[i + 1] == "=":
                    yield {"type": "eq", "value": "==", "start": i, "end": i + 1}
                    i += 2
                else:
                    raise exceptions.LexerError(lexer_position=i, lexer_value="=", message="Unknown token '='")
            else:
                raise exceptions.LexerError(lexer_position=i, lexer_value=ch, message=f"Unknown token {ch}")
        yield {"type": "eof", "value": "", "start": n, "end": n}


def _span(start: int, after: int, n: int) -> int:
    """jmespath's "end" of a quoted token: its length, one less when it closes the expression
    (its lexer does not step past the last character)."""
    return min(after, n - 1) - start


def _until(text: str, start: int, delimiter: str) -> tuple[str, int]:
    """(lexeme, index after the closing delimiter) of a part opened at ``start``; a backslash
    escapes the next character, and stays in the lexeme (as jmespath keeps it)."""
    i = start + 1
    while True:
        close = text.find(delimiter, i)
        slash = text.find("\\", i, close if close >= 0 else len(text))
        if slash >= 0:
            if slash + 1 >= len(text):
                break
            i = slash + 2
            continue
        if close < 0:
            break
        return text[start + 1:close], close + 1
    raise exceptions.LexerError(lexer_position=start, lexer_value=text[start:],
                                message=f"Unclosed {delimiter} delimiter")


def _literal(text: str, start: int) -> dict[str, Any]:
    lexeme, after = _until(text, start, "`")
    lexeme = lexeme.replace("\\`", "`")
    try:
        value = loads(lexeme)
    except ValueError:
        try:
            value = loads(f'"{lexeme.lstrip()}"')
            warnings.warn("deprecated string literal syntax", PendingDeprecationWarning, stacklevel=2)
        except ValueError:
            raise exceptions.LexerError(lexer_position=start, lexer_value=text[start:],
                                        message=f"Bad token {lexeme}") from None
    return {"type": "literal", "value": value, "start": start, "end": _span(start, after, len(text))}


class FastParser(Parser):
    """jmespath's parser over ``FastLexer`` (same AST, same errors, its own cache)."""

    _CACHE: ClassVar[dict[str, Any]] = {}

    def _parse(self, expression: str) -> Any:
        me: Any = self                      # jmespath's parser internals carry no types
        me.tokenizer = FastLexer().tokenize(expression)
        me._tokens = list(me.tokenizer)
        me._index = 0
        parsed = me._expression(binding_power=0)
        if me._current_token() != "eof":
            t = me._lookahead_token(0)
            raise exceptions.ParseError(t["start"], t["value"], t["type"], f"Unexpected token: {t['value']}")
        return ParsedResult(expression, parsed)
