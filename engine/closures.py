"""JMESPath ASTs as nested Python closures: the evaluation of an expression on any context.

engine.expr parses an expression once; this module turns its AST into closures, so evaluating
``a.b.c`` is a chain of ``dict.get`` calls and ``ref_id('u', id)`` one call of
:func:`engine.functions.ref_id`, instead of jmespath's visitor dispatching per node per record.
Node types without a closure here (``&expr`` and the functions taking one, e.g. ``sort_by``)
are evaluated by jmespath's own interpreter with our functions registered (``INTERPRETER``).
The source generator (engine.codegen) calls these closures for the nodes it does not inline.

Semantics are jmespath.py's: JMESPath truthiness, ``==`` without 0/1 == false/true confusion,
ordering comparisons only between two numbers or two strings (anything else gives null),
projections drop nulls.
"""

from __future__ import annotations

import copy
import difflib
import operator
from collections.abc import Callable
from typing import Any, cast

from jmespath import functions as jfunctions
from jmespath.visitor import Options, TreeInterpreter

from engine.errors import ExpressionError
from engine.functions import REGISTRY, FunctionError, FunctionSpec

__all__ = ["FUNCTIONS", "INTERPRETER", "Compiler", "dotted", "equals"]

Fn = Callable[[Any], Any]
Node = dict[str, Any]


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
FUNCTIONS = _Functions()
INTERPRETER = TreeInterpreter(Options(custom_functions=FUNCTIONS))


def dotted(node: Node) -> tuple[str, ...] | None:
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression" and all(c["type"] == "field" for c in node["children"]):
        return tuple(c["value"] for c in node["children"])
    return None


def _is_false(v: Any) -> bool:
    return v is None or v is False or v == "" or v == [] or v == {}


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def equals(x: Any, y: Any) -> bool:
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


class Compiler:
    """Turns one AST into closures; one builder per node type (a registry, not an if-chain)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def build(self, node: Node) -> Fn:
        builder = getattr(self, "n_" + node["type"], None)
        if builder is None:
            return self.fallback(node)
        fn: Fn = builder(node)
        return fn

    def fallback(self, node: Node) -> Fn:
        visit = INTERPRETER.visit
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
        path = dotted(node)
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
            return lambda v: equals(left(v), right(v))
        if op == "ne":
            return lambda v: not equals(left(v), right(v))
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
            call = FUNCTIONS.call_function
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
