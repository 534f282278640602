"""Python source generated from compiled mappings, and the one place it is compiled.

Expressions (engine.expr) and rules (engine.rulegen) are turned into Python source once, then
``compile``d, so a record costs a few direct calls instead of a walk over closures. The rule for
everything written here: the text contains only names made by :func:`unique_name`, fixed
keywords, and ``repr`` of strings and numbers; every other value is passed in a namespace. So a
mapping file (a field name, a constant, an expression) can never become code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["build", "build_function", "falsey", "unique_name"]

Fn = Callable[[Any], Any]


def build(source: str, namespace: Mapping[str, Any], name: str) -> Any:
    """Compile ``source`` (which defines function ``name``) with ``namespace`` as its globals."""
    scope: dict[str, Any] = dict(namespace)
    exec(compile(source + "\n", "<casavi-sync generated>", "exec"), scope)
    return scope[name]


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
