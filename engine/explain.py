"""Why does casavi show what it shows? The trace of one SCALARA record through the mappings.

A consultant asked "why does unit WE 03 have no address?" or "why was this contact not sent?"
needs the whole path of one record: the rules that read it, what each lookup matched, the filter,
the for_each expansion, every field with its expression and value, value-map hits and misses,
how each reference was resolved, the payload, what the state store last wrote and what the next
run will do. :func:`explain_record` builds that as one JSON-able document; :func:`render_text`
turns it into lines for a terminal.

How, without slowing the normal run: the real run (``map_records`` over all records) stays
untouched and gives the truth (outputs, errors, data protection, the SCALARA id -> reference id
tables on ``MapResult.identities``). Then the rules that read the record are evaluated once more
for this record only, field by field, with the same compiled ``Expr`` objects (``expr.fn``) and
plans, and every intermediate value is written down. The decision comes from
:func:`engine.sync.plan.build_plan` on this record's outputs and state rows, so it is the
planner's own logic, not a copy.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.compile import (
    ConstField,
    ExprField,
    FieldPlan,
    MappingPlan,
    MappingSet,
    ObjectField,
    RefField,
    RulePlan,
    ValueMapField,
    code_text,
)
from engine.errors import RecordError
from engine.expr import Expr, describe_error, is_truthy
from engine.functions import RUN_DATE
from engine.interpret import MapResult, map_records, singular
from engine.sync.plan import Desired, Known, build_plan, change_text
from engine.text import clip
from engine.timefmt import human_time

__all__ = ["explain_record", "render_text"]

StateRows = Callable[[str, str], list[Any]]  # (resource, SCALARA id) -> state rows with that source
StateOf = Callable[[str, str], Any]          # (kind, reference id) -> state row or None


def _live(records: Iterable[Any]) -> list[dict[str, Any]]:
    live = [r for r in records if isinstance(r, dict) and r.get("deleted") is not True
            and isinstance(r.get("id"), str | int) and r["id"] != ""]
    return sorted(live, key=lambda r: str(r["id"]))


def _eval(expr: Expr, ctx: Any) -> tuple[Any, str | None]:
    try:
        return expr.fn(ctx), None
    except Exception as exc:  # a function rejecting a value: part of the explanation
        return None, describe_error(exc)


class _Tracer:
    """Re-evaluates the rules reading one record and writes down every step."""

    def __init__(self, mset: MappingSet, records: Mapping[str, Iterable[Any]], result: MapResult) -> None:
        self.mset, self.records, self.result = mset, records, result
        self.live: dict[str, list[dict[str, Any]]] = {}

    def source(self, resource: str) -> list[dict[str, Any]]:
        if resource not in self.live:
            self.live[resource] = _live(self.records.get(resource) or ())
        return self.live[resource]

    def rule(self, plan: MappingPlan, rule: RulePlan, record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"mapping": plan.name, "rule": rule.name, "target": plan.target, "lookups": []}
        ctx = dict(record)
        for lk in rule.lookups:
            key, err = _eval(lk.key, ctx)
            matches = [] if err or key is None or isinstance(key, list | dict) else \
                [r for r in self.source(lk.resource) if r.get(lk.match) == key
                 and isinstance(r.get(lk.match), str | int | float | bool)]
            entry = {"name": lk.name, "resource": lk.resource, "key": lk.key.source, "keyValue": key,
                     "match": lk.match, "many": lk.many, "required": lk.required,
                     "matched": [str(r["id"]) for r in matches]}
            out["lookups"].append(entry)
            if err:
                entry["error"] = err
                out["stopped"] = f"lookup '{lk.name}': {err}"
                return out
            if lk.many:
                ctx[lk.name] = matches
            elif matches:
                ctx[lk.name] = matches[0]
            elif lk.required:
                out["stopped"] = (f"no {singular(lk.resource)} with {lk.match} {clip(json.dumps(key))} "
                                  f"(lookup '{lk.name}' is required)")
                return out
            else:
                ctx[lk.name] = None
        if rule.filter is not None:
            value, err = _eval(rule.filter, ctx)
            out["filter"] = {"expr": rule.filter.source, "value": value, "kept": not err and is_truthy(value)}
            if err:
                out["filter"]["error"] = err
            if not out["filter"]["kept"]:
                out["stopped"] = "filtered out" if not err else f"filter: {err}"
                return out
        contexts = self._expand(rule, ctx, out)
        out["items"] = [self._item(plan, rule, c, loop) for c, loop in contexts]
        return out

    def _expand(self, rule: RulePlan, ctx: dict[str, Any], out: dict[str, Any]
                ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        combos: list[tuple[dict[str, Any], dict[str, Any]]] = [(ctx, {})]
        out["for_each"] = []
        for lp in rule.for_each:
            values, err = _eval(lp.source, ctx)
            out["for_each"].append({"name": lp.name, "in": lp.source.source, "values": values})
            if err or not isinstance(values, list):
                out["stopped"] = f"for_each '{lp.name}': " + (err or f"`{lp.source.source}` gave "
                                                               f"{json.dumps(values)}, not a list")
                if values is None and not err:
                    out["stopped"] = f"for_each '{lp.name}': `{lp.source.source}` is null, nothing to expand"
                return []
            combos = [({**c, lp.name: v}, {**names, lp.name: v}) for c, names in combos for v in values]
        if rule.for_each and not combos:
            out["stopped"] = "for_each gave no combination (an empty list)"
        return combos

    def _item(self, plan: MappingPlan, rule: RulePlan, ctx: dict[str, Any], loop: dict[str, Any]) -> dict[str, Any]:
        rid, err = _eval(rule.id, ctx)
        item: dict[str, Any] = {"loop": loop, "id": {"expr": rule.id.source, "value": rid}}
        if err:
            item["id"]["error"] = err
        item["fields"] = [self.field(plan, f, ctx) for f in rule.fields]
        return item

    def field(self, plan: MappingPlan, f: FieldPlan, ctx: dict[str, Any]) -> dict[str, Any]:
        if isinstance(f, ExprField):
            value, err = _eval(f.expr, ctx)
            return _with_error({"field": f.name, "form": "expr", "expr": f.expr.source, "value": value}, err)
        if isinstance(f, ConstField):
            return {"field": f.name, "form": "const", "value": f.value}
        if isinstance(f, ObjectField):
            inner = [self.field(plan, sub, ctx) for sub in f.fields]
            return {"field": f.name, "form": "object", "fields": inner,
                    "value": {t["field"]: t.get("value") for t in inner}}
        if isinstance(f, RefField):
            return self._ref(f, ctx)
        return self._map(f, ctx)

    def _map(self, f: ValueMapField, ctx: dict[str, Any]) -> dict[str, Any]:
        code, err = _eval(f.code, ctx)
        out: dict[str, Any] = {"field": f.name, "form": "map", "expr": f.code.source, "code": code}
        if err:
            return _with_error(out, err)
        text = code if code is None or type(code) is str else code_text(code)
        if text is not None and text in f.values:
            entry, used = f.values[text], f"values[{text}]"
        elif f.has_default:
            entry, used = f.default, "default (no entry for this code)"
        else:
            out.update(hit=False, used=f"on_missing: {f.on_missing}", value=None)
            return out
        out.update(hit=text is not None and text in f.values, used=used)
        if isinstance(entry, Expr):
            value, verr = _eval(entry, ctx)
            out.update(entryExpr=entry.source, value=value)
            return _with_error(out, verr)
        out["value"] = entry
        return out

    def _ref(self, f: RefField, ctx: dict[str, Any]) -> dict[str, Any]:
        sid, err = _eval(f.source, ctx)
        out: dict[str, Any] = {"field": f.name, "form": "ref", "mapping": f.mapping, "from": f.source.source,
                               "sourceId": sid, "onMissing": f.on_missing}
        if err:
            return _with_error(out, err)
        key = sid if sid is None or type(sid) is str else code_text(sid)
        table = self.result.identities.get(f.mapping, {})
        failed = self.result.failed.get(f.mapping, {})
        other = singular(next((r.source for r in self.mset.mappings[f.mapping].rules if not r.for_each), "record"))
        if key is not None and key in table:
            out.update(value=table[key], resolved=f"{other} {key} -> {table[key]}")
        elif key is not None and key in failed:
            out.update(value=None, resolved=f"{other} {key} failed in the {f.mapping} mapping: {failed[key]}")
        else:
            why = "is null" if key is None else f"{other} {key} was not produced by the {f.mapping} mapping"
            consequence = {"null": "null is sent", "skip": "the record is skipped"}.get(f.on_missing,
                                                                                        "per-record error")
            out.update(value=None, resolved=f"{why}; on_missing: {f.on_missing} -> {consequence}")
        return out


def _with_error(entry: dict[str, Any], err: str | None) -> dict[str, Any]:
    if err:
        entry["error"] = err
    return entry


def _close_ids(resource: str, wanted: str, records: Iterable[Any]) -> str:
    ids = [str(r["id"]) for r in records if isinstance(r, dict) and r.get("id") is not None]
    close = difflib.get_close_matches(wanted, ids, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def explain_record(mset: MappingSet, records: Mapping[str, Iterable[Any]], resource: str, source_id: str, *,
                   run_date: dt.date | None = None, state_of: StateOf | None = None,
                   state_rows: StateRows | None = None, result: MapResult | None = None) -> dict[str, Any]:
    """The explanation of one SCALARA record as a JSON-able document.

    ``records`` are all SCALARA records (the run needs them for lookups, references and data
    protection). ``state_of``/``state_rows`` read the state store (omit them offline). A record
    that does not exist raises ``RecordError`` with a one-line reason (and a close id, if any).
    """
    raw = [r for r in records.get(resource) or () if isinstance(r, dict) and str(r.get("id")) == source_id]
    if not raw:
        raise RecordError(f"no {resource} record with id {source_id} in SCALARA"
                          + _close_ids(resource, source_id, records.get(resource) or ()),
                          source_id=source_id, resource=resource)
    record = raw[0]
    if result is None:
        result = map_records(mset, records, run_date=run_date)
    tracer = _Tracer(mset, records, result)
    doc: dict[str, Any] = {"resource": resource, "id": source_id, "record": record,
                           "deleted": record.get("deleted") is True, "rules": [], "lookedUpBy": []}
    token = RUN_DATE.set(run_date)
    try:
        if not doc["deleted"]:
            for name in mset.order:
                plan = mset.mappings[name]
                for rule in plan.rules:
                    if rule.source == resource:
                        doc["rules"].append(tracer.rule(plan, rule, record))
            doc["lookedUpBy"] = _looked_up_by(mset, tracer, resource, record)
    finally:
        RUN_DATE.reset(token)
    _outcomes(doc, mset, result, resource, source_id)
    _decisions(doc, mset, resource, source_id, state_of, state_rows)
    return doc


def _looked_up_by(mset: MappingSet, tracer: _Tracer, resource: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rules that join this record into their own records (a building into its units)."""
    out: list[dict[str, Any]] = []
    for name in mset.order:
        for rule in mset.mappings[name].rules:
            for lk in rule.lookups:
                if lk.resource != resource:
                    continue
                value = record.get(lk.match)
                hits = [str(r["id"]) for r in tracer.source(rule.source) if value is not None
                        and _eval(lk.key, r)[0] == value]
                if hits:
                    out.append({"mapping": name, "rule": rule.name, "lookup": lk.name, "source": rule.source,
                                "records": hits[:20], "count": len(hits)})
    return out


def _outcomes(doc: dict[str, Any], mset: MappingSet, result: MapResult, resource: str, sid: str) -> None:
    outputs = [o for kind in result.outputs.values() for o in kind.values()
               if o.source_resource == resource and o.source_id == sid]
    produced = {(o.kind, o.ref_id) for o in outputs}
    doc["outputs"] = []
    for o in outputs:
        referrers = [f"{other.kind}/{other.ref_id}" for kind in result.outputs.values() for other in kind.values()
                     if (o.kind, o.ref_id) in other.depends_on]
        doc["outputs"].append({"kind": o.kind, "id": o.ref_id, "mapping": o.mapping, "rule": o.rule,
                               "payload": o.payload, "dependsOn": [f"{k}/{r}" for k, r in o.depends_on],
                               "referencedBy": referrers[:10], "referencedByCount": len(referrers)})
    doc["errors"] = [e.as_dict() | {"mapping": (e.details or {}).get("mapping")} for e in result.errors
                     if e.resource == resource and e.source_id == sid]
    everything = {(o.kind, o.ref_id): o for kind in result.outputs.values() for o in kind.values()}
    for trace in doc["rules"]:
        plan = mset.mappings[trace["mapping"]]
        merges = {r.name for r in plan.rules if r.merge is not None}
        for item in trace.get("items", []):
            rid = item["id"].get("value")
            final = everything.get((plan.target, rid))
            if trace.get("rule") in merges and final is not None and final.rule == trace.get("rule") and (
                    final.source_id != sid or _values_of(item.get("fields")) != final.payload):
                item["outcome"] = (f"merged into {plan.target}/{rid} with the other records of rule "
                                   f"{final.rule} that share its reference id (on_duplicate_id)")
                if final.source_id != sid:
                    doc["outputs"].append({"kind": final.kind, "id": final.ref_id, "mapping": final.mapping,
                                           "rule": final.rule, "payload": final.payload, "mergedFrom": True,
                                           "dependsOn": [f"{k}/{r}" for k, r in final.depends_on],
                                           "referencedBy": [], "referencedByCount": 0})
            elif (plan.target, rid) in produced:
                item["outcome"] = "produced"
            elif any(e.get("targetId") == rid or e.get("mapping") == plan.name for e in doc["errors"]):
                item["outcome"] = "error"
            elif plan.only_if_referenced_by and rid in result.identities.get(plan.name, {}).values():
                item["outcome"] = ("dropped (data protection): no sent record of "
                                   f"{', '.join(plan.only_if_referenced_by)} refers to it")
            else:
                item["outcome"] = "not produced (skipped: on_missing: skip)"


def _decisions(doc: dict[str, Any], mset: MappingSet, resource: str, sid: str, state_of: StateOf | None,
               state_rows: StateRows | None) -> None:
    """Ask the planner what the next run does with this record's casavi counterparts."""
    if state_of is None:
        return
    known: dict[tuple[str, str], Known] = {}
    for out in doc["outputs"]:
        state = state_of(out["kind"], out["id"])
        if state is not None:
            known[(out["kind"], out["id"])] = state
    for row in state_rows(resource, sid) if state_rows is not None else []:
        known.setdefault((row.kind, row.ref_id), row)
    desired = [Desired(o["kind"], o["id"], o["payload"], resource, sid) for o in doc["outputs"]]
    kinds = sorted({m.target for m in mset.mappings.values()})
    errored = [(resource, sid)] if doc["errors"] else []
    plan = build_plan(desired, known, kinds=kinds, errored_sources=errored, allow_archive=True)
    actions = {(a.kind, a.ref_id): a for a in [*plan.actions, *plan.adopt]}
    doc["state"] = []
    for (kind, ref_id), state in sorted(known.items()):
        doc["state"].append({"kind": kind, "id": ref_id, "status": state.status, "payloadHash": state.payload_hash,
                             "payload": state.payload, "updatedAt": getattr(state, "updated_at", None),
                             "error": getattr(state, "error", None)})
    decisions = []
    for out in doc["outputs"]:
        action = actions.get((out["kind"], out["id"]))
        decisions.append({"kind": out["kind"], "id": out["id"],
                          "action": action.action if action else "unchanged",
                          "reason": action.reason if action else "the same payload was written before",
                          "diff": action.diff() if action and action.action != "create" else []})
    for (kind, ref_id), _ in sorted(known.items()):
        if any(d["kind"] == kind and d["id"] == ref_id for d in decisions):
            continue
        action = actions.get((kind, ref_id))
        if action is not None:
            decisions.append({"kind": kind, "id": ref_id, "action": action.action, "reason": action.reason,
                              "diff": []})
        elif errored:
            decisions.append({"kind": kind, "id": ref_id, "action": "error",
                              "reason": "the SCALARA record failed to map; casavi keeps its last copy", "diff": []})
        else:
            decisions.append({"kind": kind, "id": ref_id, "action": "unchanged",
                              "reason": f"already {known[(kind, ref_id)].status}", "diff": []})
    if not decisions and doc["errors"]:
        decisions.append({"kind": None, "id": None, "action": "error", "reason": doc["errors"][0]["reason"],
                          "diff": []})
    doc["decisions"] = decisions


def _j(value: Any) -> str:
    """A value as JSON, whole: explain never shortens what it shows."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _field_lines(trace: dict[str, Any], indent: str) -> list[str]:
    form, name = trace["form"], trace["field"]
    err = f"  ERROR: {trace['error']}" if trace.get("error") else ""
    if form == "object":
        lines = [f"{indent}{name}: (object)"]
        for sub in trace["fields"]:
            lines.extend(_field_lines(sub, indent + "  "))
        return lines
    if form == "const":
        return [f"{indent}{name} = const {_j(trace['value'])}"]
    if form == "expr":
        return [f"{indent}{name} = `{trace['expr']}` -> {_j(trace.get('value'))}{err}"]
    if form == "map":
        head = f"{indent}{name} = map `{trace['expr']}` code {_j(trace.get('code'))}"
        if err:
            return [head + err]
        hit = "hit" if trace.get("hit") else "MISS"
        via = f" `{trace['entryExpr']}`" if trace.get("entryExpr") else ""
        return [f"{head} -> {hit}: {trace.get('used')}{via} -> {_j(trace.get('value'))}"]
    head = f"{indent}{name} = ref {trace['mapping']} from `{trace['from']}` ({_j(trace.get('sourceId'))})"
    return [f"{head}{err}" if err else f"{head}: {trace.get('resolved')}"]


def render_text(doc: dict[str, Any]) -> list[str]:
    """Lines for a terminal, in the order the engine works: source, rules, payloads, state, decision."""
    lines = [f"SCALARA {doc['resource']} {doc['id']}" + (" (deleted in SCALARA)" if doc["deleted"] else "")]
    lines.extend(f"  {k}: {_j(v)}" for k, v in doc["record"].items())
    if not doc["rules"] and not doc["deleted"]:
        lines.append(f"no mapping rule reads {doc['resource']} directly")
    for user in doc["lookedUpBy"]:
        more = f" (+{user['count'] - len(user['records'])} more)" if user["count"] > len(user["records"]) else ""
        lines.append(f"joined by {user['mapping']}.{user['rule']} (lookup '{user['lookup']}') into "
                     f"{user['source']} {', '.join(user['records'])}{more}")
    for rule in doc["rules"]:
        lines.append(f"rule {rule['mapping']}.{rule['rule']} -> casavi {rule['target']}")
        for lk in rule["lookups"]:
            found = ", ".join(lk["matched"]) if lk["matched"] else "no match"
            many = " (many)" if lk["many"] else ""
            lines.append(f"  lookup {lk['name']}{many}: {lk['resource']} with {lk['match']} = `{lk['key']}` "
                         f"({_j(lk['keyValue'])}) -> {found}")
        if "filter" in rule:
            f = rule["filter"]
            lines.append(f"  filter `{f['expr']}` -> {_j(f['value'])}: {'kept' if f['kept'] else 'filtered out'}")
        for loop in rule.get("for_each", []):
            lines.append(f"  for_each {loop['name']} in `{loop['in']}` -> {_j(loop['values'])}")
        if rule.get("stopped"):
            lines.append(f"  stopped: {rule['stopped']}")
        for item in rule.get("items", []):
            loop = ", ".join(f"{k}={v}" for k, v in item["loop"].items())
            ident = item["id"]
            lines.append(f"  item{' ' + loop if loop else ''}: id `{ident['expr']}` -> {_j(ident.get('value'))}"
                         + (f"  ERROR: {ident['error']}" if ident.get("error") else ""))
            for trace in item["fields"]:
                lines.extend(_field_lines(trace, "    "))
            lines.append(f"    -> {item.get('outcome', '?')}")
    for err in doc["errors"]:
        lines.append(f"error: {err['reason']}")
    for out in doc["outputs"]:
        lines.append(f"casavi {out['kind']}/{out['id']}: {_j(out['payload'])}")
        if out["referencedBy"]:
            more = out["referencedByCount"] - len(out["referencedBy"])
            lines.append(f"  referenced by {', '.join(out['referencedBy'])}" + (f" (+{more} more)" if more else ""))
    for state in doc.get("state", []):
        lines.append(f"state {state['kind']}/{state['id']}: {state['status']}, hash "
                     f"{(state['payloadHash'] or '-')[:12]}, updated {human_time(state['updatedAt'])}"
                     + (f", error: {state['error']}" if state.get("error") else ""))
    for d in doc.get("decisions", []):
        target = f"{d['kind']}/{d['id']}" if d["kind"] else "this record"
        lines.append(f"next run: {d['action']} {target} ({d['reason']})")
        lines.extend(f"  {change_text(c)}" for c in d.get("diff", []))
        if d["action"] == "update" and not d.get("diff"):
            lines.append("  (no field differs from the last payload written)")
    if "decisions" not in doc:
        lines.append("(no state store consulted: offline explanation)")
    return lines


def _values_of(fields: Any) -> Any:
    """The traced field values as a payload (nested objects included)."""
    if not isinstance(fields, list):
        return None
    return {f["field"]: _values_of(f.get("fields")) if f.get("form") == "object" else f.get("value") for f in fields}
