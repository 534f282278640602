"""Compile a JMESPath expression once into plain Python closures.

Mappings evaluate the same few expressions on every record (``number``, ``building.street``,
``ref_id('u', id)``, ``join_nonempty(' ', [street, houseNumber])``). jmespath.py walks its AST
with a visitor on every call, which costs a dictionary dispatch per node per record. Here the
AST is walked *once* and turned into nested closures, so evaluating ``a.b.c`` is a chain of
``dict.get`` calls and ``ref_id('u', id)`` is one call of :func:`engine.functions.ref_id`::

    expr = compile_expr("join_nonempty(' ', [building.street, building.houseNumber])")
    expr({"building": {"street": "Lindenstraße", "houseNumber": "12"}})  # 'Lindenstraße 12'

Semantics are jmespath.py's (the reference for the tests): JMESPath truthiness (false, null,
'', [], {} are falsey), ``==`` without 0/1 == false/true confusion, ordering comparisons only
between two numbers or two strings (anything else gives null), projections drop nulls.
Node types without a closure here (``expref`` and functions taking one, e.g. ``sort_by``) are
evaluated by jmespath's own interpreter with our functions registered, so every valid
expression works.

Errors: a bad expression raises :class:`ExpressionError` (a ``SpecError``) when compiled;
a function that cannot handle a value raises while evaluating. ``Expr.__call__`` turns such
a failure into a ``RecordError``; the interpreter calls ``Expr.fn`` directly and does its own
wrapping (it knows the record and field).
"""

from __future__ import annotations

import copy
import difflib
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from jmespath import exceptions as jexc
from jmespath import functions as jfunctions
from jmespath.visitor import Options, TreeInterpreter

from engine.codegen import build_function, unique_name
from engine.errors import Diagnostic, RecordError, SpecError
from engine.functions import REGISTRY, FunctionError, FunctionSpec
from engine.jmes import FastParser
from engine.text import clip

Fn = Callable[[Any], Any]
Node = dict[str, Any]

__all__ = ["Expr", "ExpressionError", "build_function", "compile_expr", "describe_error", "is_truthy",
           "unique_name"]


class ExpressionError(SpecError):
    """An expression does not parse, or calls an unknown function or with the wrong arity.

    ``offset`` is the 0-based position inside the expression text (None if unknown), so that a
    caller knowing where the expression sits in a file can point at the exact column.
    """

    def __init__(self, source: str, message: str, offset: int | None = None, hint: str | None = None):
        self.source = source
        self.reason = message
        self.offset = offset
        self.hint = hint
        col = offset + 1 if offset is not None else 0
        super().__init__([Diagnostic(file="<expression>", line=1 if col else 0, col=col,
                                     message=message, hint=hint, code="expression")])


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


def _check_arity(spec: FunctionSpec, args: tuple[Any, ...]) -> None:
    if not spec.accepts(len(args)):
        raise FunctionError(f"{spec.name}() takes {spec.arity_text()} arguments, got {len(args)}")


def _custom_method(spec: FunctionSpec) -> Callable[..., Any]:
    impl = spec.impl
    assert impl is not None

    def method(self: Any, *args: Any) -> Any:
        _check_arity(spec, args)
        return impl(*args)

    return method


def _custom_signature(spec: FunctionSpec) -> list[dict[str, Any]]:
    if spec.min_args == 0:
        return []
    sig: list[dict[str, Any]] = [{"types": []} for _ in range(spec.min_args - 1)]
    sig.append({"types": [], "variadic": True})
    return sig


class _Functions(jfunctions.Functions):
    """jmespath's built-ins plus our registry, for the nodes jmespath evaluates itself."""


_Functions.FUNCTION_TABLE = {
    **jfunctions.Functions.FUNCTION_TABLE,
    **{
        spec.name: {"function": _custom_method(spec), "signature": _custom_signature(spec)}
        for spec in REGISTRY.values()
        if not spec.builtin and spec.impl is not None
    },
}
_FUNCTIONS = _Functions()
_INTERPRETER = TreeInterpreter(Options(custom_functions=_FUNCTIONS))
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
    compiler = _Compiler(text)
    _check_functions(compiler, ast)  # also inside &expressions, which jmespath evaluates for us
    fn = compiler.build(ast)
    inline = compiler.src(ast)
    namespace = compiler.namespace
    root = build_function(inline, namespace)
    return Expr(text, fn, root, inline, MappingProxyType(namespace), _dotted(ast), ast["type"] == "literal", ast)


def _check_functions(compiler: _Compiler, node: Any) -> None:
    if not isinstance(node, dict):
        return
    if node.get("type") == "function_expression":
        compiler.check_call(node)
    for child in node.get("children", ()):
        _check_functions(compiler, child)


def _dotted(node: Node) -> tuple[str, ...] | None:
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression" and all(c["type"] == "field" for c in node["children"]):
        return tuple(c["value"] for c in node["children"])
    return None


def _is_false(v: Any) -> bool:
    return v is None or v is False or v == "" or v == [] or v == {}


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _equals(x: Any, y: Any) -> bool:
    # jmespath: 0/1 never equal false/true although Python says so.
    if type(x) is bool or type(y) is bool:
        return type(x) is type(y) and x is y
    return bool(x == y)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge,
}


def _getter(name: str) -> Fn:
    def get(v: Any) -> Any:
        try:
            return v.get(name)
        except AttributeError:
            return None
    return get


def _path_getter(names: tuple[str, ...]) -> Fn:
    if len(names) == 1:
        return _getter(names[0])
    if len(names) == 2:
        a, b = names

        def get2(v: Any) -> Any:
            try:
                return v.get(a).get(b)
            except AttributeError:
                return None
        return get2
    if len(names) == 3:
        a, b, c = names

        def get3(v: Any) -> Any:
            try:
                return v.get(a).get(b).get(c)
            except AttributeError:
                return None
        return get3

    def getn(v: Any) -> Any:
        try:
            for n in names:
                v = v.get(n)
        except AttributeError:
            return None
        return v
    return getn


def _chain(fns: list[Fn]) -> Fn:
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        f, g = fns
        return lambda v: g(f(v))

    def chained(v: Any) -> Any:
        for f in fns:
            v = f(v)
        return v
    return chained


def _identity(v: Any) -> Any:
    return v


class _Compiler:
    """Turns one AST into closures; one builder per node type (a registry, not an if-chain)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.namespace: dict[str, Any] = {}

    # -- source for a dict context (see Expr.inline); anything not inlined calls its closure
    def helper(self, value: Any) -> str:
        name = unique_name()
        self.namespace[name] = value
        return name

    def src(self, node: Node) -> str:
        kind = node["type"]
        if kind == "field":
            return f"get({node['value']!r})"
        if kind in ("current", "identity"):
            return "v"
        if kind == "literal":
            value = node["value"]
            if value is None or isinstance(value, bool | int | str) or (
                    isinstance(value, float) and math.isfinite(value)):
                return repr(value)
        if kind == "multi_select_list":
            return "[" + ", ".join(self.src(c) for c in node["children"]) + "]"
        if kind == "multi_select_dict":
            return "{" + ", ".join(f"{c['value']!r}: {self.src(c['children'][0])}"
                                   for c in node["children"]) + "}"
        if kind in ("and_expression", "or_expression"):
            left, right = (self.src(c) for c in node["children"])
            t = unique_name("_t")
            # JMESPath falseness (see codegen.falsey), with the left side evaluated once into t
            test = f"(not ({t} := {left}) and type({t}) is not int and type({t}) is not float)"
            if kind == "and_expression":
                return f"({t} if {test} else {right})"
            return f"({right} if {test} else {t})"
        if kind == "comparator" and node["value"] in ("eq", "ne"):
            left, right = (self.src(c) for c in node["children"])
            test = f"{self.helper(_equals)}({left}, {right})"
            return test if node["value"] == "eq" else f"(not {test})"
        if kind == "function_expression":
            spec = REGISTRY.get(node["value"])
            children = node["children"]
            if (spec is not None and not spec.builtin and spec.impl is not None and spec.accepts(len(children))
                    and not any(c["type"] == "expref" for c in children)):
                return f"{self.helper(spec.impl)}({', '.join(self.src(c) for c in children)})"
        return f"{self.helper(self.build(node))}(v)"

    def build(self, node: Node) -> Fn:
        builder = getattr(self, "n_" + node["type"], None)
        if builder is None:
            return self.fallback(node)
        fn: Fn = builder(node)
        return fn

    def fallback(self, node: Node) -> Fn:
        visit = _INTERPRETER.visit
        tree = cast(Any, node)
        return lambda v: visit(tree, v)

    # -- leaves
    def n_field(self, node: Node) -> Fn:
        return _getter(node["value"])

    def n_current(self, node: Node) -> Fn:
        return _identity

    n_identity = n_current

    def n_literal(self, node: Node) -> Fn:
        value = node["value"]
        if isinstance(value, dict | list):
            # a fresh copy each time, so no two payloads share one mutable literal
            return lambda v: copy.deepcopy(value)
        return lambda v: value

    def n_index(self, node: Node) -> Fn:
        i = node["value"]

        def index(v: Any) -> Any:
            if not isinstance(v, list):
                return None
            try:
                return v[i]
            except IndexError:
                return None
        return index

    def n_slice(self, node: Node) -> Fn:
        start, stop, step = node["children"]
        if step == 0:
            raise ExpressionError(self.source, f"invalid expression `{self.source}`: slice step cannot be 0")
        s = slice(start, stop, step)
        return lambda v: v[s] if isinstance(v, list) else None

    # -- paths
    def n_subexpression(self, node: Node) -> Fn:
        path = _dotted(node)
        if path is not None:
            return _path_getter(path)
        return _chain([self.build(c) for c in node["children"]])

    n_index_expression = n_subexpression
    n_pipe = n_subexpression

    # -- logic
    def n_comparator(self, node: Node) -> Fn:
        left, right = (self.build(c) for c in node["children"])
        op = node["value"]
        if op == "eq":
            return lambda v: _equals(left(v), right(v))
        if op == "ne":
            return lambda v: not _equals(left(v), right(v))
        cmp = _ORDER[op]

        def order(v: Any) -> Any:
            x, y = left(v), right(v)
            if _is_number(x) and _is_number(y):
                return cmp(x, y)
            if isinstance(x, str) and isinstance(y, str):
                return cmp(x, y)
            return None
        return order

    def n_and_expression(self, node: Node) -> Fn:
        left, right = (self.build(c) for c in node["children"])

        def and_(v: Any) -> Any:
            x = left(v)
            return x if _is_false(x) else right(v)
        return and_

    def n_or_expression(self, node: Node) -> Fn:
        left, right = (self.build(c) for c in node["children"])

        def or_(v: Any) -> Any:
            x = left(v)
            return right(v) if _is_false(x) else x
        return or_

    def n_not_expression(self, node: Node) -> Fn:
        inner = self.build(node["children"][0])

        def not_(v: Any) -> Any:
            x = inner(v)
            if _is_number(x) and x == 0:
                return False
            return not x
        return not_

    # -- functions
    def check_call(self, node: Node) -> FunctionSpec:
        """Unknown function (with did-you-mean) or wrong arity: an ExpressionError now, not later."""
        name: str = node["value"]
        children: list[Node] = node["children"]
        spec = REGISTRY.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(REGISTRY), n=1) if len(name) <= 100 else []
            hint = f"did you mean '{close[0]}'?" if close else None
            msg = f"unknown function '{name}'" + (f"; {hint}" if hint else "")
            raise ExpressionError(self.source, msg + f"; available: {', '.join(sorted(REGISTRY))}",
                                  hint=hint)
        if not spec.accepts(len(children)):
            raise ExpressionError(self.source, f"{name}() takes {spec.arity_text()} arguments, "
                                               f"got {len(children)} in `{self.source}`")
        return spec

    def n_function_expression(self, node: Node) -> Fn:
        name: str = node["value"]
        children: list[Node] = node["children"]
        spec = self.check_call(node)
        if any(c["type"] == "expref" for c in children):
            return self.fallback(node)
        args = [self.build(c) for c in children]
        if spec.builtin or spec.impl is None:
            call = _FUNCTIONS.call_function
            return lambda v: call(name, [a(v) for a in args])
        return _call(spec.impl, args)

    # -- projections and multi-selects
    def n_projection(self, node: Node) -> Fn:
        base = self.build(node["children"][0])
        right_node = node["children"][1]
        if right_node["type"] == "identity":
            def project_all(v: Any) -> Any:
                xs = base(v)
                if not isinstance(xs, list):
                    return None
                return [x for x in xs if x is not None]
            return project_all
        right = self.build(right_node)

        def project(v: Any) -> Any:
            xs = base(v)
            if not isinstance(xs, list):
                return None
            out = []
            for x in xs:
                y = right(x)
                if y is not None:
                    out.append(y)
            return out
        return project

    def n_value_projection(self, node: Node) -> Fn:
        base = self.build(node["children"][0])
        right = self.build(node["children"][1])

        def project_values(v: Any) -> Any:
            obj = base(v)
            if not isinstance(obj, dict):
                return None
            return [y for y in (right(x) for x in obj.values()) if y is not None]
        return project_values

    def n_filter_projection(self, node: Node) -> Fn:
        base, right, cond = (self.build(c) for c in node["children"])

        def filter_(v: Any) -> Any:
            xs = base(v)
            if not isinstance(xs, list):
                return None
            out = []
            for x in xs:
                if not _is_false(cond(x)):
                    y = right(x)
                    if y is not None:
                        out.append(y)
            return out
        return filter_

    def n_flatten(self, node: Node) -> Fn:
        base = self.build(node["children"][0])

        def flatten(v: Any) -> Any:
            xs = base(v)
            if not isinstance(xs, list):
                return None
            out: list[Any] = []
            for x in xs:
                if isinstance(x, list):
                    out.extend(x)
                else:
                    out.append(x)
            return out
        return flatten

    def n_multi_select_list(self, node: Node) -> Fn:
        items = [self.build(c) for c in node["children"]]
        if len(items) == 2:
            a, b = items
            return lambda v: None if v is None else [a(v), b(v)]
        return lambda v: None if v is None else [f(v) for f in items]

    def n_multi_select_dict(self, node: Node) -> Fn:
        pairs = [(c["value"], self.build(c["children"][0])) for c in node["children"]]
        return lambda v: None if v is None else {k: f(v) for k, f in pairs}


def _call(impl: Callable[..., Any], args: list[Fn]) -> Fn:
    """A direct call of a custom function, unrolled for the usual argument counts."""
    n = len(args)
    if n == 0:
        return lambda v: impl()
    if n == 1:
        (a,) = args
        return lambda v: impl(a(v))
    if n == 2:
        a, b = args
        return lambda v: impl(a(v), b(v))
    if n == 3:
        a, b, c = args
        return lambda v: impl(a(v), b(v), c(v))
    return lambda v: impl(*[f(v) for f in args])
