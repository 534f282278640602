"""Compile a JMESPath expression once: the ``Expr`` a mapping evaluates on every record.

Mappings evaluate the same few expressions on every record (``number``, ``building.street``,
``ref_id('u', id)``, ``join_nonempty(' ', [street, houseNumber])``). jmespath.py walks its AST
with a visitor on every call, which costs a dictionary dispatch per node per record. Here the
expression is parsed *once*; engine.closures turns the AST into nested closures (``fn``, for
any context), engine.codegen into Python source for a dict context (``inline``, compiled as
``root``)::

    expr = compile_expr("join_nonempty(' ', [building.street, building.houseNumber])")
    expr({"building": {"street": "Lindenstraße", "houseNumber": "12"}})  # 'Lindenstraße 12'

Semantics are jmespath.py's (the reference for the tests): JMESPath truthiness (false, null,
'', [], {} are falsey), ``==`` without 0/1 == false/true confusion, ordering comparisons only
between two numbers or two strings (anything else gives null), projections drop nulls.

Errors: a bad expression raises :class:`ExpressionError` (a ``SpecError``) when compiled;
a function that cannot handle a value raises while evaluating. ``Expr.__call__`` turns such
a failure into a ``RecordError``; the interpreter calls ``Expr.fn`` directly and does its own
wrapping (it knows the record and field).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from jmespath import exceptions as jexc

from engine.closures import Compiler, dotted
from engine.codegen import InlineSource, build_function, unique_name
from engine.errors import ExpressionError, RecordError
from engine.functions import FunctionError
from engine.jmes import FastParser
from engine.text import clip

Fn = Callable[[Any], Any]
Node = dict[str, Any]

__all__ = ["Expr", "ExpressionError", "build_function", "compile_expr", "describe_error", "is_truthy",
           "unique_name"]


@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled expression: ``source`` for messages, ``fn`` for the hot path.

    ``fn`` accepts any JSON value as context. ``root`` is the same function specialised for a
    context that is a dict (as a record is): top-level fields become inline ``dict.get`` calls.
    ``inline`` is that specialisation as a Python expression over the names ``v`` (the dict) and
    ``get`` (``v.get``), with its helpers in ``namespace`` (names unique per process), so that a
    caller generating code for many expressions, such as the interpreter's payload builder, can
    put them into one function. ``path`` is set for a plain dotted path (``a.b.c``);
    ``constant`` is True when the expression is a literal.
    """

    source: str
    fn: Fn
    root: Fn
    inline: str
    namespace: Mapping[str, Any]
    path: tuple[str, ...] | None = None
    constant: bool = False
    ast: Any = None  # the parsed expression (JMESPath AST dicts), for code generators

    def __call__(self, context: Any) -> Any:
        try:
            return self.fn(context)
        except Exception as exc:  # any failure of one evaluation is a record error
            raise RecordError(reason=f"`{self.source}`: {describe_error(exc)}") from exc

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failure while evaluating (no traceback, no Python jargon)."""
    if isinstance(exc, RecordError):
        return exc.reason
    if isinstance(exc, FunctionError | jexc.JMESPathError):   # a type error quotes the value it got
        return clip(" ".join(clip(str(exc), 2000).split()), 500)
    return clip(f"{type(exc).__name__}: {exc}", 500)


def is_truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, '', [] and {} are false; 0 is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


# --------------------------------------------------------------------------- functions


_PARSER = FastParser()   # jmespath's parser over a linear-time lexer (engine.jmes)


# --------------------------------------------------------------------------- compile


def compile_expr(text: str) -> Expr:
    """Parse ``text`` once and build its closure; raises :class:`ExpressionError` if it is bad."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(str(text), "empty expression")
    try:
        ast: Node = cast(Node, _PARSER.parse(text).parsed)
    except jexc.ParseError as exc:
        pos = getattr(exc, "lex_position", None)
        token = getattr(exc, "token_value", None)
        if isinstance(exc, jexc.IncompleteExpressionError):
            msg = "incomplete expression"
        elif isinstance(exc, jexc.LexerError):
            msg = " ".join(str(exc.message).split())
        else:
            msg = f"unexpected {token!r}" if token not in (None, "") else "syntax error"
        raise ExpressionError(text, f"invalid expression `{text}`: {msg}",
                              pos if isinstance(pos, int) else None) from None
    except jexc.JMESPathError as exc:
        raise ExpressionError(text, f"invalid expression `{text}`: {exc}") from None
    compiler = Compiler(text)
    _check_functions(compiler, ast)  # also inside &expressions, which jmespath evaluates for us
    fn = compiler.build(ast)
    source = InlineSource(compiler)
    inline = source.src(ast)
    root = build_function(inline, source.namespace)
    return Expr(text, fn, root, inline, MappingProxyType(source.namespace), dotted(ast), ast["type"] == "literal",
                ast)


def _check_functions(compiler: Compiler, node: Any) -> None:
    if not isinstance(node, dict):
        return
    if node.get("type") == "function_expression":
        compiler.check_call(node)
    for child in node.get("children", ()):
        _check_functions(compiler, child)
