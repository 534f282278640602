"""Generated Python for the two hot loops of a mapping run: identities and payloads, per rule.

The interpreter (engine.interpret) used to walk each record through a chain of generic steps:
a context, a filter closure, a list of loop contexts, an id closure, a tuple per item; then, per
item, a payload builder, a required-fields check, a dependency function and an ``Output``. Each
step is a Python call, and for 100,000 records the calls cost as much as the work. Here every
rule gets two functions written as Python source once per run and compiled with ``compile``:

* ``identify(records) -> filtered`` fills the rule's identities (``seen``, ``ids``, ``items``)
  with the lookups, the filter, the ``for_each`` loops and the id expression inlined;
* ``produce(items) -> produced`` builds every payload as one dict display, with refs and simple
  value maps inlined as dict lookups, checks casavi's required fields on local variables, and
  makes the ``Output``.

Only the common case is generated. Anything unusual (an exception, a reference id that fails
the syntax check or is already taken, a required lookup without a match, a failed field) hands
the record or item to the interpreter's generic code, which re-evaluates it and reports it
exactly as before; the fast path changes no state before that hand-over, so nothing is counted
twice. The generated text contains only names made here, ``repr`` of field names (strings) and
of validated literals; every value (tables, functions, the names of mappings and rules) is
passed in through the namespace, so no text of a mapping file can become code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.closures import Compiler
from engine.codegen import InlineSource, build, falsey, has_plain_call, unique_name
from engine.compile import (
    ConstField,
    ExprField,
    FieldPlan,
    LookupPlan,
    MappingPlan,
    ObjectField,
    RefField,
    RulePlan,
    ValueMapField,
    code_text,
)
from engine.expr import Expr

__all__ = ["PayloadSource", "identify_function", "produce_function", "proven_reference_id"]

Fn = Callable[[Any], Any]
MISS = object()  # a value map's "no such code"

_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,31}$")


def proven_reference_id(expr: Expr) -> bool:
    """True if the id expression can only give a valid reference id (or raise).

    ``ref_id('<prefix>', ...)`` with a literal prefix of at most 31 id characters returns either
    ``<prefix>-<part>`` after checking it against REFERENCE_ID, or ``<prefix>-<32 hex>``: both
    valid, so the interpreter need not check again.
    """
    node = expr.ast
    if not isinstance(node, dict) or node.get("type") != "function_expression" or node.get("value") != "ref_id":
        return False
    children = node.get("children") or []
    if len(children) < 2 or children[0].get("type") != "literal":
        return False
    prefix = children[0].get("value")
    return isinstance(prefix, str) and _PREFIX.match(prefix) is not None


# --------------------------------------------------------------------------- payloads


@dataclass
class PayloadSource:
    """The dict display of one rule's payload, with its helpers in ``ns``.

    ``refs`` lists (target kind, variable, can be null) of every ref in field order (nested
    objects depth-first), ``tops`` the variable holding each top-level field that ``capture``
    asked for (casavi's required fields), so the loop can check them without reading the dict.
    """

    ref_parts: Callable[[RefField], tuple[Mapping[str, str], set[Any] | None, Fn]]
    value_map_parts: Callable[[ValueMapField, tuple[str, str, str]], tuple[Mapping[str, Any], Callable[[Any, Any], Any]] | None]
    evaluator: Callable[[FieldPlan, tuple[str, str, str]], Fn]
    kinds: Mapping[str, str]  # mapping name -> casavi kind
    where: tuple[str, str]    # (mapping, rule) for value-map miss counting
    capture: frozenset[str] = frozenset()
    ns: dict[str, Any] = field(default_factory=dict)
    refs: list[tuple[str, str, bool]] = field(default_factory=list)
    tops: dict[str, str] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)  # common calls, see codegen.InlineSource

    def helper(self, value: Any, prefix: str = "_h") -> str:
        name = unique_name(prefix)
        self.ns[name] = value
        return name

    def dict_source(self, fields: Sequence[FieldPlan], prefix: str = "") -> str:
        parts = []
        for f in fields:
            src = self.field_source(f, prefix)
            if not prefix and f.name in self.capture:
                var = unique_name("_q")
                self.tops[f.name] = var
                src = f"({var} := {src})"
            parts.append(f"{f.name!r}: {src}")
        return "{" + ", ".join(parts) + "}"

    def field_source(self, f: FieldPlan, prefix: str) -> str:
        if isinstance(f, ExprField):
            if has_plain_call(f.expr.ast):  # regenerated, sharing calls with the other fields
                return InlineSource(Compiler(f.expr.source), self.ns, self.shared).src(f.expr.ast)
            self.ns.update(f.expr.namespace)
            return f.expr.inline
        if isinstance(f, ObjectField):
            return self.dict_source(f.fields, f"{prefix}{f.name}.")
        if isinstance(f, ConstField) and (f.value is None or isinstance(f.value, bool | int | str)):
            return repr(f.value)
        where = (*self.where, prefix + f.name)
        if isinstance(f, RefField):
            return self.ref_source(f)
        if isinstance(f, ValueMapField):
            parts = self.value_map_parts(f, where)
            if parts is not None:
                return self.value_map_source(f, *parts)
        return f"{self.helper(self.evaluator(f, where), '_f')}(v)"

    def ref_source(self, f: RefField) -> str:
        table, attempted, missing = self.ref_parts(f)
        self.ns.update(f.source.namespace)
        tbl, miss = self.helper(table.get, "_tbl"), self.helper(missing, "_miss")
        s, r, out = unique_name("_s"), unique_name("_r"), unique_name("_ref")
        found = f"({r} := {tbl}({s})) is not None"
        if attempted is not None:
            found = f"({self.helper(attempted.add, '_att')}({s}) or {found})"
        self.refs.append((self.kinds[f.mapping], out, f.on_missing == "null"))
        return f"({out} := ({r} if (type({s} := {f.source.inline}) is str and {found}) else {miss}({s})))"

    def value_map_source(self, f: ValueMapField, table: Mapping[str, Any],
                         miss: Callable[[Any, Any], Any]) -> str:
        self.ns.update(f.code.namespace)
        get, on_miss = self.helper(table.get, "_vm"), self.helper(miss, "_vmiss")
        ct, missing = self.helper(code_text, "_ct"), self.helper(MISS, "_MISS")
        k, m = unique_name("_k"), unique_name("_m")
        key = f"({k} if type({k} := {f.code.inline}) is str else {ct}({k}))"
        return f"({m} if ({m} := {get}({key}, {missing})) is not {missing} else {on_miss}(v, {k}))"

    def deps_source(self) -> str:
        pairs = [f"({self.helper(kind, '_kind')}, {var})" for kind, var, _ in self.refs]
        if not pairs:
            return "()"
        if not any(nullable for _, _, nullable in self.refs):
            return "(" + ", ".join(pairs) + ",)"
        return f"tuple([p for p in ({', '.join(pairs)},) if p[1] is not None])"


def produce_function(plan: MappingPlan, rule: RulePlan, payload: PayloadSource, *,
                     required: Sequence[str], one_of: Sequence[str], out: dict[str, Any],
                     make: Callable[..., Any], fail: Callable[[Any, str, str, BaseException], None],
                     fail_required: Callable[[dict[str, Any], str, str], None],
                     merged: Callable[..., Any] | None, any_assumed: Callable[[Any], bool] | None,
                     ) -> Callable[[list[tuple[Any, str, str]]], int]:
    """``produce(items) -> number of payloads added to out``, for the items of one rule."""
    body = payload.dict_source(rule.fields)
    h = payload.helper
    tops = payload.tops

    def empty(name: str) -> str:
        var = tops.get(name) or f"payload.get({name!r})"
        return f"({var} is None or {var} == '')"

    checks = [empty(n) for n in required]
    if one_of:
        checks.append("(" + " and ".join(empty(n) for n in one_of) + ")")
    lines = [
        "def produce(items):",
        "    n = 0",
        "    for v, rid, sid in items:",
        "        get = v.get",
        "        try:",
        f"            payload = {body}",
        "        except Exception as exc:",
        f"            {h(fail, '_fail')}(v, rid, sid, exc)",
        "            continue",
    ]
    if checks:
        lines += [f"        if {' or '.join(checks)}:",
                  f"            {h(fail_required, '_freq')}(payload, rid, sid)",
                  "            continue"]
    lines.append(f"        deps = {payload.deps_source()}")
    rule_name = h(rule.name, "_rule")
    if merged is not None:
        lines += ["        first = out.get(rid)",
                  f"        if first is not None and first.rule == {rule_name}:",
                  f"            out[rid] = {h(merged, '_merged')}(first, payload, deps, {h(rule.merge, '_mplan')})",
                  "            continue"]
    assumed = f"{h(any_assumed, '_assumed')}(deps)" if any_assumed is not None else "False"
    lines += [
        f"        out[rid] = {h(make, '_make')}({h(plan.target, '_target')}, rid, payload, "
        f"{h(plan.name, '_mapping')}, {rule_name}, {h(rule.source, '_source')}, sid, deps, {assumed})",
        "        n += 1",
        "    return n",
    ]
    payload.ns["out"] = out
    fn: Callable[[list[tuple[Any, str, str]]], int] = build("\n".join(lines), payload.ns, "produce")
    return fn


# --------------------------------------------------------------------------- identities


def identify_function(rule: RulePlan, lookups: Sequence[tuple[LookupPlan, dict[Any, Any]]], *,
                      seen: dict[str, Any], ids: dict[Any, str], items: list[tuple[Any, str, str]],
                      check_id: Callable[[Any], Any] | None, slow_record: Callable[[dict[str, Any]], None],
                      slow_item: Callable[[dict[str, Any], str], None]) -> Callable[[list[dict[str, Any]]], int]:
    """``identify(records) -> number filtered out``: the identities of one rule's records.

    ``check_id`` (None when the id expression is proven to give valid ids) is REFERENCE_ID.match.
    A record the fast path cannot finish goes to ``slow_record`` (the whole record), an item
    with a bad or taken reference id to ``slow_item``; neither has changed any state before.
    """
    ns: dict[str, Any] = {"seen": seen, "ids": ids, "items": items, "_redo": _Redo,
                          "_slow_record": slow_record, "_slow_item": slow_item}

    def helper(value: Any, prefix: str) -> str:
        name = unique_name(prefix)
        ns[name] = value
        return name

    def inline(expr: Expr) -> str:
        ns.update(expr.namespace)
        return expr.inline

    pre: list[str] = []  # runs inside the try, on the record's context v
    if lookups:
        pre += ["v = dict(rec)", "get = v.get"]
        for lk, idx in lookups:
            k, hit, get = unique_name("_k"), unique_name("_hit"), helper(idx.get, "_idx")
            pre.append(f"{k} = {inline(lk.key)}")
            pre.append(f"{hit} = {get}({k}) if {k} is not None else None")
            if lk.many:
                pre.append(f"v[{lk.name!r}] = list({hit}) if {hit} else []")
                continue
            if lk.required:
                pre.append(f"if {hit} is None: raise _redo")
            pre.append(f"v[{lk.name!r}] = {hit}")
    else:
        pre += ["v = rec", "get = v.get"]
    if rule.filter is not None:
        t = unique_name("_t")
        pre += [f"{t} = {inline(rule.filter)}", f"if {falsey(t)}:", "    filtered += 1", "    continue"]
    loops = []  # (name, list variable, item variable)
    for lp in rule.for_each:
        var = unique_name("_l")
        loops.append((lp.name, var, unique_name("_x")))
        pre += [f"{var} = {inline(lp.source)}", f"if {var} is None:", "    filtered += 1", "    continue",
                f"if not isinstance({var}, list): raise _redo"]
    if loops:
        pre += [f"if {' or '.join(f'not {var}' for _, var, _ in loops)}:", "    filtered += 1", "    continue"]
    id_src = inline(rule.id)
    check = [] if check_id is None else [f"if type(rid) is not str or {helper(check_id, '_check')}(rid) is None: "
                                         "raise _redo"]
    register = [f"seen[rid] = ({helper(rule.source, '_src')}, sid, {helper(rule.name, '_rname')})"]
    lines = ["def identify(records):", "    filtered = 0", "    for rec in records:",
             "        sid = _i if type(_i := rec['id']) is str else str(_i)", "        try:"]
    lines += [f"            {line}" for line in pre]
    if not loops:
        lines += [f"            rid = {id_src}"]
        lines += [f"            {line}" for line in check]
        lines += ["        except Exception:", "            _slow_record(rec)", "            continue",
                  "        if rid in seen:", "            _slow_item(v, sid)", "            continue",
                  f"        {register[0]}", "        ids.setdefault(sid, rid)", "        items.append((v, rid, sid))"]
    else:
        lines += ["        except Exception:", "            _slow_record(rec)", "            continue",
                  "        c = v"]
        indent = "        "
        for _, var, x in loops:
            lines.append(f"{indent}for {x} in {var}:")
            indent += "    "
        names = ", ".join(f"{name!r}: {x}" for name, _, x in loops)
        lines += [f"{indent}v = {{**c, {names}}}", f"{indent}try:", f"{indent}    get = v.get",
                  f"{indent}    rid = {id_src}"]
        lines += [f"{indent}    {line}" for line in check]
        lines += [f"{indent}except Exception:", f"{indent}    _slow_item(v, sid)", f"{indent}    continue",
                  f"{indent}if rid in seen:", f"{indent}    _slow_item(v, sid)", f"{indent}    continue",
                  f"{indent}{register[0]}", f"{indent}items.append((v, rid, sid))"]
    lines.append("    return filtered")
    fn: Callable[[list[dict[str, Any]]], int] = build("\n".join(lines), ns, "identify")
    return fn


class _Redo(Exception):
    """The fast path leaves this record to the generic code (which reports it properly)."""
