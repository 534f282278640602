"""The closure compiler must agree with jmespath.search on every expression it compiles.

The table crosses many expressions with many contexts (including nulls, wrong types, empty
values, booleans vs 0/1), so a shortcut in a closure that changes JMESPath's semantics fails.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import jmespath
import pytest

from engine.errors import RecordError, SpecError
from engine.expr import Expr, ExpressionError, compile_expr, is_truthy
from engine.functions import RUN_DATE

EXPRESSIONS = [
    "a", "a.b", "a.b.c", "a.b.c.d", "@", "a[0]", "a[-1]", "a[5]", "a[0].b", "a[1:3]", "a[::-1]",
    "a[*].b", "a[].b", "a[]", "a[][]", "a.*", "a.*.b", "a[?b == `1`].c", "a[?b > `0`]",
    "a[?b]", "a[?!b].c", "a | b", "a | [0]", "[a, b]", "{x: a, y: b.c}", "a.[b, c]", "a.{b: b}",
    "a == b", "a != b", "a < b", "a <= b", "a > b", "a >= b", "a == `true`", "a == `1`",
    "a == `0`", "b == `false`", "a && b", "a || b", "!a", "!b", "a && 'x' || 'y'",
    "`{\"k\": [1, 2]}`", "'text'", "`null`", "a.b || 'none'", "length(a)", "length(@)",
    "not_null(a, b, 'd')", "keys(@)", "sort_by(a, &b)[].b", "max_by(a, &b).b", "map(&b, a)",
    "to_string(a)", "type(a)", "a[?b == 'x'] | [0]", "[a, b][?@]", "a[].b[]",
    "contains(a, `1`)", "starts_with(a, 'x')", "a && b && 'c' || `null` || b", "(a || b) && !a",
    "a == b && a != `null`", "[a, 'q\\'uote\"d\\\\n', `\"x\\ny\"`]", "{\"k'ey\": a}.\"k'ey\"",
]

CONTEXTS: list[Any] = [
    {},
    {"a": None, "b": None},
    {"a": 1, "b": 2},
    {"a": 1, "b": True},
    {"a": 0, "b": False},
    {"a": True, "b": 1},
    {"a": "", "b": "x"},
    {"a": "abc", "b": "abd"},
    {"a": [], "b": {}},
    {"a": {"b": {"c": {"d": "deep"}}}, "b": {"c": 3}},
    {"a": {"b": None, "c": [1, 2]}},
    {"a": [{"b": 1, "c": "x"}, {"b": 0, "c": "y"}, {"b": None, "c": "z"}, {"c": "w"}], "b": 5},
    {"a": [{"b": 3}, {"b": 1}, {"b": 2}]},
    {"a": [[1, 2], [3], 4, None], "b": [1]},
    {"a": [1, "x", None, True, [2]], "b": "x"},
    {"a": {"x": {"b": 1}, "y": {"b": None}, "z": 7}},
    [1, 2, 3],
    "just a string",
    None,
]


def _reference(expression: str, context: Any) -> tuple[str, Any]:
    try:
        return "ok", jmespath.search(expression, context)
    except jmespath.exceptions.JMESPathError as exc:
        return "error", type(exc).__name__
    except TypeError:
        return "error", "TypeError"


def _ours(expr: Expr, context: Any, root: bool = False) -> tuple[str, Any]:
    try:
        return "ok", (expr.root if root else expr.fn)(context)
    except jmespath.exceptions.JMESPathError as exc:
        return "error", type(exc).__name__
    except TypeError:
        return "error", "TypeError"


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_compiled_agrees_with_jmespath(expression: str) -> None:
    expr = compile_expr(expression)
    assert expr.source == expression
    for context in CONTEXTS:
        expected = _reference(expression, context)
        got = _ours(expr, context)
        if expected == ("error", "TypeError"):
            # jmespath raises on ordering a string against a number; we answer null (the spec's
            # "invalid comparison yields null"); anything else must agree exactly.
            assert got in (expected, ("ok", None)), (expression, context, got)
            continue
        assert got == expected, (expression, context)
        # booleans must stay booleans (True == 1 in Python, not in JMESPath)
        if expected[0] == "ok":
            assert type(got[1]) is type(expected[1]), (expression, context)
        if isinstance(context, dict):
            # the dict-specialised (generated) function must give the very same answer
            assert _ours(expr, context, root=True) == got, (expression, context)


def test_dotted_paths_are_marked_for_direct_reading() -> None:
    assert compile_expr("a.b.c").path == ("a", "b", "c")
    assert compile_expr("number").path == ("number",)
    assert compile_expr("a[0].b").path is None
    assert compile_expr("'x'").constant
    assert not compile_expr("a").constant


def test_inline_source_uses_direct_gets_and_calls() -> None:
    expr = compile_expr("join_nonempty(' ', [number, label])")
    assert "get('number')" in expr.inline and "get('label')" in expr.inline
    assert expr.inline.count("(v)") == 0  # nothing left to a closure
    assert compile_expr("a.b").inline.endswith("(v)")  # nested paths keep their None-safe getter
    names = set(expr.namespace)
    assert names.isdisjoint(compile_expr("join_nonempty(' ', [a])").namespace)


def test_mutable_literal_is_a_fresh_copy_every_time() -> None:
    expr = compile_expr('`{"k": [1]}`')
    first = expr({})
    first["k"].append(2)
    assert expr({}) == {"k": [1]}


@pytest.mark.parametrize(
    ("expression", "context", "expected"),
    [
        ("ref_id('u', id)", {"id": "abc"}, "u-abc"),
        ("join_nonempty(' ', [street, houseNumber])", {"street": "Große Straße", "houseNumber": 3},
         "Große Straße 3"),
        ("join_nonempty(' ', [street, houseNumber])", {"street": None, "houseNumber": None}, None),
        ("fmt('Dienstleister ({})', serviceType)", {"serviceType": "Reinigung"}, "Dienstleister (Reinigung)"),
        ("coalesce(label, number)", {"label": "", "number": "WE 1"}, "WE 1"),
        ("lookup(`{\"WEG\": \"Wohnungseigentum\"}`, kind, 'Sonstige')", {"kind": "MV"}, "Sonstige"),
        ("upper(trim(x))", {"x": "  ab  c "}, "AB C"),
        ("valid_email(email) && 'ONLINE' || 'POSTAL'", {"email": "a@b.de"}, "ONLINE"),
        ("valid_email(email) && 'ONLINE' || 'POSTAL'", {"email": "kaputt"}, "POSTAL"),
        ("valid_email(email) && 'ONLINE' || 'POSTAL'", {}, "POSTAL"),
        ("unique(b[].{street: s})", {"b": [{"s": "x"}, {"s": "x"}, {"s": "y"}]},
         [{"street": "x"}, {"street": "y"}]),
        ("active(validFrom, validTo)", {"validFrom": "2024-01-01", "validTo": None}, True),
        ("active(validFrom, validTo)", {"validFrom": "2024-01-01", "validTo": "2024-05-31"}, False),
        ("today()", {}, "2024-06-01"),
        ("format_number(mea, `2`)", {"mea": 1234.5}, "1.234,50"),
        ("sort_by(xs, &k)[].k", {"xs": [{"k": "b"}, {"k": "a"}]}, ["a", "b"]),
        ("xs[?active(f, t)].n", {"xs": [{"n": 1, "f": "2025-01-01", "t": None}, {"n": 2, "f": None, "t": None}]},
         [2]),
        ("ref_id('x', a) == 'x-1'", {"a": 1}, True),
        ("map(&ref_id('x', @), xs)", {"xs": ["a", "b"]}, ["x-a", "x-b"]),  # jmespath evaluates, ours called
        ("sort_by(xs, &upper(@))", {"xs": ["b", "A"]}, ["A", "b"]),
    ],
)
def test_custom_functions(expression: str, context: Any, expected: Any) -> None:
    token = RUN_DATE.set(dt.date(2024, 6, 1))
    try:
        expr = compile_expr(expression)
        assert expr(context) == expected
        assert expr.root(context) == expected
    finally:
        RUN_DATE.reset(token)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("uper(a)", "did you mean 'upper'"),
        ("ref_id('u')", "ref_id() takes at least 2 arguments, got 1"),
        ("today(a)", "today() takes 0 arguments"),
        ("a.[", "incomplete expression"),
        ("a ==== b", "invalid expression"),
        ("", "empty expression"),
        ("a[::0]", "slice step cannot be 0"),
        ("map(&ref_id('x'), xs)", "ref_id() takes at least 2 arguments"),
        ("sort_by(xs, &lenght(@))", "did you mean 'length'"),
    ],
)
def test_bad_expressions_raise_spec_errors(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expr(expression)
    assert isinstance(info.value, SpecError)
    assert message in info.value.reason


def test_parse_error_knows_its_offset() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expr("a.b ! c")
    assert info.value.offset == 4


@pytest.mark.parametrize(
    ("expression", "context", "message"),
    [
        ("ref_id('u', id)", {}, "ref_id: a part is empty"),
        ("length(a)", {"a": 1}, "invalid type for value: 1"),
        ("date(d)", {"d": "gestern"}, "'gestern' is not a date"),
        ("sort_by(xs, &k)", {"xs": [{"k": 1}, {"k": "a"}]}, "sort_by"),
    ],
)
def test_evaluation_failure_becomes_a_record_error(expression: str, context: Any, message: str) -> None:
    expr = compile_expr(expression)
    with pytest.raises(RecordError) as info:
        expr(context)
    assert message in info.value.reason
    assert f"`{expression}`" in info.value.reason
    assert "Traceback" not in info.value.reason


@pytest.mark.parametrize(
    ("value", "truthy"),
    [(None, False), (False, False), ("", False), ([], False), ({}, False), (0, True), ("0", True),
     ([0], True), (True, True)],
)
def test_truthiness(value: Any, truthy: bool) -> None:
    assert is_truthy(value) is truthy
