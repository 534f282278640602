"""Mapping coverage: which SCALARA codes the value maps do not know, and which fields stay empty.

A mapping can run "green" and still lose information: SCALARA starts sending a new unit type
(``GARDEN``) that the ``usage`` value map does not list, so every such unit silently falls back
to ``default``; or a field comes out null for 90 % of the records because the expression reads a
misspelt or unfilled SCALARA field. Neither is an error, so neither shows in the error list. This
module turns one run's :class:`~engine.interpret.MapResult` into a small report::

    from engine.coverage import compute_coverage, render_coverage, unmapped_codes

    cov = compute_coverage(mset, result)
    cov["unmappedCodes"]   # [{"mapping": "units", "rule": "unit", "field": "usage", "code": "GARDEN",
                           #   "count": 3, "outcome": "error"}, ...]
    cov["emptyFields"]     # {"units": {"produced": 120, "fields": {"customFields.mea": {"empty": 40,
                           #   "share": 0.333}, ...}}, ...}
    print("\\n".join(render_coverage(cov)))

The miss counts come from the interpreter (it counts only on its miss path, so a normal run pays
nothing); the empty shares are computed here from the produced payloads, one pass per mapping.
A null code (the SCALARA field is empty) is listed with ``"code": null`` but is not an *unknown*
code: :func:`unmapped_codes` leaves it out, which is what ``plan --fail-on-unmapped-codes`` uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.compile import (
    ConstField,
    FieldPlan,
    MappingPlan,
    MappingSet,
    ObjectField,
    ValueMapField,
)
from engine.interpret import MapResult, read_path
from engine.text import clip, quote

__all__ = ["compute_coverage", "is_empty", "merge_coverage", "render_coverage", "unmapped_codes"]


def is_empty(value: Any) -> bool:
    """null, "", [] and {} count as empty (what a casavi user sees as a blank field)."""
    return value is None or value == "" or value == [] or value == {}


def _leaves(fields: tuple[FieldPlan, ...], prefix: str = "") -> Iterator[tuple[tuple[str, ...], FieldPlan]]:
    """(path, plan) of every leaf field; nested objects are walked, not reported themselves."""
    for f in fields:
        path = f"{prefix}{f.name}"
        if isinstance(f, ObjectField):
            yield from _leaves(f.fields, path + ".")
        else:
            yield tuple(path.split(".")), f


def _value_maps(fields: tuple[FieldPlan, ...], prefix: str = "") -> Iterator[tuple[str, ValueMapField]]:
    for f in fields:
        if isinstance(f, ObjectField):
            yield from _value_maps(f.fields, f"{prefix}{f.name}.")
        elif isinstance(f, ValueMapField):
            yield f"{prefix}{f.name}", f


def _outcome(vmap: ValueMapField | None) -> str:
    if vmap is None:
        return "default"
    if vmap.has_default:
        return "default"
    return vmap.on_missing or "error"


def _empty_fields(plan: MappingPlan, result: MapResult) -> dict[str, Any]:
    leaves: dict[str, tuple[str, ...]] = {}
    constant: set[str] = set()
    for rule in plan.rules:
        for path, f in _leaves(rule.fields):
            dotted = ".".join(path)
            leaves.setdefault(dotted, path)
            if isinstance(f, ConstField):
                constant.add(dotted)
    outputs = [o for o in result.outputs.get(plan.target, {}).values() if o.mapping == plan.name]
    counts = dict.fromkeys(leaves, 0)
    for output in outputs:
        payload = output.payload
        for dotted, path in leaves.items():
            value = payload.get(path[0]) if len(path) == 1 else read_path(payload, path)
            if value is None or value == "" or value == [] or value == {}:
                counts[dotted] += 1
    produced = len(outputs)
    fields = {
        dotted: {"empty": n, "share": round(n / produced, 4) if produced else 0.0,
                 **({"constant": True} if dotted in constant else {})}
        for dotted, n in counts.items()
    }
    return {"produced": produced, "fields": fields}


def compute_coverage(mset: MappingSet, result: MapResult) -> dict[str, Any]:
    """Unknown value-map codes (with counts) and the empty share of every target field.

    Only the mappings present in ``result.stats`` are reported (a run with ``only=`` reports
    those). ``outcome`` says what happened to the records with that code: ``default`` (the
    value map's default was sent), ``skip`` (dropped quietly) or ``error`` (per-record error).
    """
    value_maps: dict[tuple[str, str, str], ValueMapField] = {}
    for name in mset.order:
        for rule in mset.mappings[name].rules:
            for dotted, vmap in _value_maps(rule.fields):
                value_maps[(name, rule.name, dotted)] = vmap
    codes = [
        {"mapping": mapping, "rule": rule, "field": dotted, "code": code if code is None else clip(code), "count": count,
         "outcome": _outcome(value_maps.get((mapping, rule, dotted)))}
        for (mapping, rule, dotted, code), count in result.misses.items()
    ]
    codes.sort(key=lambda c: (str(c["mapping"]), str(c["rule"]), str(c["field"]), c["code"] is None,
                              -int(c["count"] or 0), str(c["code"])))
    empty = {name: _empty_fields(mset.mappings[name], result)
             for name in mset.order if name in result.stats}
    return {"unmappedCodes": codes, "emptyFields": empty}


def merge_coverage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two coverage reports of disjoint records as one (a run mapped in chunks, engine.sync.chunked)."""
    if not a:
        return b
    codes: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in (*a.get("unmappedCodes", []), *b.get("unmappedCodes", [])):
        key = (c["mapping"], c["rule"], c["field"], c["code"], c["outcome"])
        if key in codes:
            codes[key]["count"] += c["count"]
        else:
            codes[key] = dict(c)
    merged = sorted(codes.values(), key=lambda c: (str(c["mapping"]), str(c["rule"]), str(c["field"]),
                                                    c["code"] is None, -int(c["count"] or 0), str(c["code"])))
    empty: dict[str, Any] = {}
    for name in dict.fromkeys([*a.get("emptyFields", {}), *b.get("emptyFields", {})]):
        x, y = a.get("emptyFields", {}).get(name), b.get("emptyFields", {}).get(name)
        if x is None or y is None:
            empty[name] = x if y is None else y
            continue
        produced = x["produced"] + y["produced"]
        fields: dict[str, Any] = {}
        for dotted in dict.fromkeys([*x["fields"], *y["fields"]]):
            fx, fy = x["fields"].get(dotted, {}), y["fields"].get(dotted, {})
            n = fx.get("empty", 0) + fy.get("empty", 0)
            fields[dotted] = {"empty": n, "share": round(n / produced, 4) if produced else 0.0,
                              **({"constant": True} if fx.get("constant") or fy.get("constant") else {})}
        empty[name] = {"produced": produced, "fields": fields}
    return {"unmappedCodes": merged, "emptyFields": empty}


def unmapped_codes(coverage: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of ``unmappedCodes`` with a real code (null codes are empty SCALARA fields)."""
    return [c for c in coverage.get("unmappedCodes", []) if c.get("code") is not None]


def render_coverage(coverage: dict[str, Any], *, min_share: float = 0.0, limit: int = 30) -> list[str]:
    """Text lines for people: unknown codes first (they lose information), then empty fields.

    Fields that are always empty because the mapping sends a constant null are left out; so are
    fields whose empty share is at or below ``min_share``.
    """
    lines: list[str] = []
    codes = coverage.get("unmappedCodes", [])
    if codes:
        lines.append("value maps: codes without an entry")
        for c in codes[:limit]:
            shown = "null (empty in SCALARA)" if c["code"] is None else quote(c["code"])
            what = {"default": "default sent", "skip": "records skipped",
                    "error": "records failed"}.get(c["outcome"], c["outcome"])
            lines.append(f"  {c['mapping']}.{c['rule']} {c['field']}: {shown} x{c['count']} ({what})")
        if len(codes) > limit:
            lines.append(f"  ... and {len(codes) - limit} more")
    else:
        lines.append("value maps: every code seen has an entry")
    rows: list[str] = []
    for mapping, data in coverage.get("emptyFields", {}).items():
        produced = data.get("produced", 0)
        if not produced:
            continue
        for dotted, info in sorted(data["fields"].items(), key=lambda kv: (-kv[1]["share"], kv[0])):
            if info.get("constant") or info["share"] <= min_share:
                continue
            rows.append(f"  {mapping}: {dotted} empty in {info['share']:.0%} ({info['empty']} of {produced})")
    if rows:
        lines.append("empty fields (share of produced records)")
        lines.extend(rows[:limit])
        if len(rows) > limit:
            lines.append(f"  ... and {len(rows) - limit} more")
    return lines
