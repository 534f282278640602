"""Python source generated from compiled mappings, and the one place it is compiled.

Expressions (engine.expr) and rules (engine.rulegen) are turned into Python source once, then
``compile``d, so a record costs a few direct calls instead of a walk over closures. The rule for
everything written here: the text contains only names made by :func:`unique_name`, fixed
keywords, and ``repr`` of strings and numbers; every other value is passed in a namespace. So a
mapping file (a field name, a constant, an expression) can never become code.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from engine.closures import Compiler, equals
from engine.functions import REGISTRY

__all__ = ["InlineSource", "build", "build_function", "falsey", "has_plain_call", "plain_call", "unique_name"]

Fn = Callable[[Any], Any]
Node = dict[str, Any]


def build(source: str, namespace: Mapping[str, Any], name: str) -> Any:
    """Compile ``source`` (which defines function ``name``) with ``namespace`` as its globals.

    The function is taken out of its globals again: left in, function and globals would form a
    reference cycle, and everything the namespace holds (a run's tables) would live on until
    the cyclic collector, which a run switches off, gets round to it.
    """
    scope: dict[str, Any] = dict(namespace)
    exec(compile(source + "\n", "<casavi-sync generated>", "exec"), scope)
    return scope.pop(name)


def build_function(body: str, namespace: Mapping[str, Any], prelude: str = "") -> Fn:
    """``def f(v): get = v.get; return <body>`` compiled once, with the helpers in ``namespace``."""
    fn: Fn = build(f"def _generated(v):\n    get = v.get\n{prelude}    return {body}", namespace, "_generated")
    return fn


def unique_name(prefix: str = "_x") -> str:
    """A helper name no other generated code uses (so namespaces can be merged)."""
    return f"{prefix}{next(_NAMES)}"


_NAMES = itertools.count()


def falsey(var: str) -> str:
    """JMESPath falseness of a JSON value in variable ``var``: null, false, '', [], {} (not 0).

    Python's ``not`` agrees on every JSON value except the numbers 0 and 0.0, which JMESPath
    counts as true; comparing the type beats building ``[]`` and ``{}`` to compare with.
    """
    return f"(not {var} and type({var}) is not int and type({var}) is not float)"


class InlineSource:
    """An expression's AST as Python source over a dict context ``v`` (with ``get = v.get``).

    Fields become ``get('name')``, literals their ``repr``, calls of our functions direct calls;
    any other node calls its closure (engine.closures), passed in ``namespace``. ``shared``
    turns on common-subexpression elimination across the expressions of one generated function:
    a call of one of our functions on plain fields (``valid_email(email)``), where it is sure to
    run, is stored in a variable (``(_cse1 := valid_email(get('email')))``), and later
    occurrences read the variable. The functions are pure, so the result is the same; the
    order of evaluation is unchanged, so a failure still happens in the field it happened before.
    """

    def __init__(self, compiler: Compiler, namespace: dict[str, Any] | None = None,
                 shared: dict[str, str] | None = None) -> None:
        self.compiler = compiler
        self.namespace: dict[str, Any] = {} if namespace is None else namespace
        self.shared = shared

    def helper(self, value: Any) -> str:
        name = unique_name()
        self.namespace[name] = value
        return name

    def src(self, node: Node, conditional: bool = False) -> str:
        """The source of ``node``; ``conditional`` if it may not run (right side of && and ||)."""
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
            return "[" + ", ".join(self.src(c, conditional) for c in node["children"]) + "]"
        if kind == "multi_select_dict":
            return "{" + ", ".join(f"{c['value']!r}: {self.src(c['children'][0], conditional)}"
                                   for c in node["children"]) + "}"
        if kind in ("and_expression", "or_expression"):
            left = self.src(node["children"][0], conditional)
            right = self.src(node["children"][1], True)
            t = unique_name("_t")
            # JMESPath falseness (see falsey), with the left side evaluated once into t
            test = f"(not ({t} := {left}) and type({t}) is not int and type({t}) is not float)"
            if kind == "and_expression":
                return f"({t} if {test} else {right})"
            return f"({right} if {test} else {t})"
        if kind == "comparator" and node["value"] in ("eq", "ne"):
            left, right = (self.src(c, conditional) for c in node["children"])
            test = f"{self.helper(equals)}({left}, {right})"
            return test if node["value"] == "eq" else f"(not {test})"
        if kind == "function_expression":
            spec = REGISTRY.get(node["value"])
            children = node["children"]
            if (spec is not None and not spec.builtin and spec.impl is not None and spec.accepts(len(children))
                    and not any(c["type"] == "expref" for c in children)):
                call = f"{self.helper(spec.impl)}({', '.join(self.src(c, conditional) for c in children)})"
                return self.shared_call(node, call, conditional)
        return f"{self.helper(self.compiler.build(node))}(v)"

    def shared_call(self, node: Node, call: str, conditional: bool) -> str:
        if self.shared is None or not plain_call(node):
            return call
        key = json.dumps(node, sort_keys=True)
        var = self.shared.get(key)
        if var is not None:
            return var
        if conditional:
            return call
        var = unique_name("_cse")
        self.shared[key] = var
        return f"({var} := {call})"


def plain_call(node: Any) -> bool:
    """A call of one of our functions whose arguments are fields, paths or literals."""
    if not isinstance(node, dict) or node.get("type") != "function_expression":
        return False
    spec = REGISTRY.get(node["value"])
    if spec is None or spec.builtin or spec.impl is None:
        return False
    return all(_plain_argument(c) for c in node["children"])


def has_plain_call(node: Any) -> bool:
    """True if a plain call (see plain_call) occurs anywhere in the AST."""
    if not isinstance(node, dict):
        return False
    return plain_call(node) or any(has_plain_call(c) for c in node.get("children", ()))


def _plain_argument(node: Node) -> bool:
    kind = node["type"]
    if kind in ("field", "current", "identity"):
        return True
    if kind == "literal":
        return node["value"] is None or isinstance(node["value"], bool | int | float | str)
    return kind == "subexpression" and all(c["type"] == "field" for c in node["children"])
