"""Run and plan reports: one JSON document per run, and the short human summary the CLI prints."""

from __future__ import annotations

import datetime as dt
import re
import shlex
from typing import TYPE_CHECKING, Any

from engine.coverage import render_coverage
from engine.sync.plan import ARCHIVE, CREATE, RESTORE, UNCHANGED, UPDATE, Plan
from engine.text import clip

if TYPE_CHECKING:
    from engine.errors import OperatorError
    from engine.sync.apply import ApplyResult
    from engine.sync.failures import FailureSummary
    from engine.sync.runner import Prepared

COLUMNS = (CREATE, UPDATE, RESTORE, ARCHIVE, UNCHANGED, "error")


def plan_document(prepared: Prepared, *, details: bool = False) -> dict[str, Any]:
    plan = prepared.plan
    doc: dict[str, Any] = {
        "pendingChanges": plan.pending_changes,
        "reconciled": prepared.reconciled,
        "counts": plan.counts(),
        "extracted": prepared.extracted,
        "extraction": prepared.extraction.as_dict() if prepared.extraction else None,
        "guard": [g.as_dict() for g in plan.guard_trips],
        "errors": plan.errors,
        "held": [{"kind": a.kind, "id": a.ref_id, "reason": a.reason} for a in plan.held],
        "coverage": prepared.coverage,
    }
    if details:
        doc["changes"] = [
            {"kind": a.kind, "id": a.ref_id, "action": a.action, "reason": a.reason,
             "source": {"resource": a.source_resource, "id": a.source_id},
             "diff": a.diff() if a.action != ARCHIVE else []}
            for a in plan.actions
        ]
        doc["heldArchives"] = [{"kind": a.kind, "id": a.ref_id} for a in plan.held_archives]
    return doc


def _merged_counts(plan: Plan | None, result: ApplyResult | None) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    if plan is not None:
        for kind, row in plan.counts().items():
            counts[kind] = {"planned_" + k: v for k, v in row.items() if k not in (UNCHANGED, "error")}
            counts[kind][UNCHANGED] = row.get(UNCHANGED, 0)
            counts[kind]["map_errors"] = row.get("error", 0)
    if result is not None:
        for kind, row in result.counts().items():
            counts.setdefault(kind, {}).update(row)
    return counts


def build_report(*, run_id: int, tenant: str, trigger: str, started: dt.datetime, duration_s: float,
                 outcome: str, prepared: Prepared | None, result: ApplyResult | None,
                 error: OperatorError | None, calls: dict[str, Any] | None,
                 failures: FailureSummary | None = None) -> dict[str, Any]:
    plan = prepared.plan if prepared else None
    write_failures = [o.as_dict() for o in result.failed] if result else []
    return {
        "runId": run_id,
        "tenant": tenant,
        "trigger": trigger,
        "startedAt": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "durationS": round(duration_s, 3),
        "outcome": outcome,
        "error": clip(str(error), 2000) if error else None,
        "reconciled": prepared.reconciled if prepared else False,
        "extracted": prepared.extracted if prepared else {},
        "extraction": prepared.extraction.as_dict() if prepared and prepared.extraction else None,
        "counts": _merged_counts(plan, result),
        "guard": [g.as_dict() for g in plan.guard_trips] if plan else [],
        "mapErrors": plan.errors if plan else [],
        "writeFailures": write_failures,
        "timings": prepared.timings if prepared else {},
        "coverage": prepared.coverage if prepared else {},
        "calls": calls or {},
        "properties": property_completion(result, started),
        "subjects": _subjects(prepared, result),
        # new / known / acknowledged failures (engine.sync.failures); mapErrors and writeFailures
        # above list this run's failures as they happened, this says which of them are news.
        "failureStates": failures.as_dict() if failures is not None else None,
        "held": [{"kind": a.kind, "id": a.ref_id, "reason": a.reason,
                  "source": {"resource": a.source_resource, "id": a.source_id}} for a in plan.held] if plan else [],
    }


def property_completion(result: ApplyResult | None, started: dt.datetime) -> dict[str, Any]:
    """When each property the run wrote to became complete (all its records settled), in the order
    they did, and the first / median / 90th percentile of those times (seconds since the start)."""
    if result is None:
        return {}
    rows = [p.as_dict(started) for p in result.properties_done]
    times = sorted(r["afterS"] for r in rows)

    def quantile(q: float) -> float | None:
        return times[min(len(times) - 1, int(q * len(times)))] if times else None

    return {"writeOrder": result.write_order, "total": result.properties_total, "complete": len(rows),
            "firstCompleteS": times[0] if times else None, "medianCompleteS": quantile(0.5),
            "p90CompleteS": quantile(0.9), "completed": rows}


def _subjects(prepared: Prepared | None, result: ApplyResult | None) -> dict[str, Any]:
    """Names of the failed records (for the customer's notice): SCALARA facts, then casavi payloads."""
    from engine.observe.notice import payload_facts

    subjects: dict[str, Any] = dict(prepared.subjects) if prepared else {}
    if prepared is not None and result is not None and result.failed:
        for key, facts in payload_facts(result.failed, prepared.plan.actions).items():
            subjects.setdefault(key, facts)
    return subjects


_DEPENDS_ON = re.compile(r"^(.*depends on failed \S+ (\S+)) \((.*)\)$")


def problem_line(p: dict[str, Any], shown: set[str] | None = None) -> str:
    """One line per failed record: what it is in casavi and SCALARA, and why (without repeating ids).

    ``shown``: SCALARA ids whose failure is already on a line above; a record that failed because
    of one of them says so without repeating that record's explanation. The id of this record is
    added to it.
    """
    err = p.get("error") or p
    src = p.get("source") or {"resource": p.get("resource"), "id": p.get("sourceId")}
    reason = str(err.get("reason") or "")
    target = p.get("targetId") or p.get("id")
    if str(target or "").startswith("scalara:"):   # the state's placeholder id of a record never mapped
        target = None
    where = f"{p.get('kind') or '?'} {target}" if target else str(p.get("kind") or "?")
    source = f"SCALARA {src.get('resource')} {src.get('id')}"
    if src.get("id") and reason.split(":", 1)[0].endswith(str(src.get("id"))):
        reason = reason.split(":", 1)[1].strip()  # the reason already starts with "<record> <id>:"
    if shown is not None:
        dep = _DEPENDS_ON.match(reason)
        if dep and dep.group(2) in shown:
            reason = f"{dep.group(1)} (above)"
        if src.get("id"):
            shown.add(str(src.get("id")))
    return f"{where} ({source}): {reason}"


def explain_command(p: dict[str, Any]) -> str | None:
    """``casavi-sync explain <resource> <id>`` for a failed record's SCALARA source, or None.

    People copy ids from these lines; ``explain`` takes the SCALARA resource and id, not the casavi
    reference id, so the line hands them the command itself."""
    src = p.get("source") or {"resource": p.get("resource"), "id": p.get("sourceId")}
    resource, source_id = src.get("resource"), src.get("id")
    if not resource or not source_id:
        return None
    return f"casavi-sync explain {shlex.quote(str(resource))} {shlex.quote(str(source_id))}"


def _with_explain(line: str, p: dict[str, Any], indent: str, explained: set[str] | None = None) -> list[str]:
    """The failure line and, once per SCALARA record (two contracts of one ownership share it), the
    explain command for it."""
    command = explain_command(p)
    if command is None or (explained is not None and command in explained):
        return [line]
    if explained is not None:
        explained.add(command)
    return [line, f"{indent}why: {command}"]


def plan_summary(prepared: Prepared) -> list[str]:
    plan = prepared.plan
    counts = plan.counts()
    lines = [f"{'kind':<18}" + "".join(f"{c:>11}" for c in COLUMNS)]
    for kind in plan.kinds:
        row = counts.get(kind, {})
        lines.append(f"{kind:<18}" + "".join(f"{row.get(c, 0):>11}" for c in COLUMNS))
    for g in plan.guard_trips:
        lines.append(f"guard: {g.kind}: {g.reason}; {g.advice()}")
    shown: set[str] = set()
    for e in plan.errors[:20]:
        lines.append("error: " + problem_line(e, shown))
    if len(plan.errors) > 20:
        lines.append(f"... and {len(plan.errors) - 20} more errors (see --format json)")
    if plan.held:
        lines.append(f"held: {len(plan.held)} record(s) casavi refused before, unchanged since: not sent "
                     f"(casavi-sync failures; run --retry-failed sends them)")
    lines.extend(render_coverage(prepared.coverage, min_share=0.5))
    ex = prepared.extraction
    if ex is not None:
        if ex.mode == "full":
            lines.append(f"read all of SCALARA: {ex.reason}" if ex.reason else "read all of SCALARA")
        else:
            lines.append(f"read what changed in SCALARA since {ex.since}: {sum(ex.changed.values())} changed, "
                         f"{sum(ex.deleted.values())} deleted" + ("; nothing to map" if ex.skipped else ""))
            if ex.targeted:
                lines.append(targeted_line(ex.targeted))
        lines.extend(f"warning: {w}" for w in ex.warnings)
    lines.append("changes pending" if plan.pending_changes else "casavi is up to date")
    return lines


def targeted_line(how: dict[str, Any]) -> str:
    """How an incremental day mapped: only what its changes touch, or the whole tenant and why."""
    if how.get("mode") == "targeted":
        return f"mapped only the {how.get('closure')} SCALARA record(s) the changes touch"
    return f"mapped the whole tenant: {how.get('reason')}"


def run_summary(report: dict[str, Any]) -> list[str]:
    lines = [f"run {report['runId']} ({report['trigger']}) for tenant '{report['tenant']}': "
             f"{report['outcome']} in {report['durationS']:.1f} s"]
    if report.get("error"):
        lines.append(f"aborted: {report['error']}")
    used = report.get("mappings")
    if used:
        lines.append(f"  mappings          {used['path']} ({used['origin']}, content {used['contentHash'][:12]})")
    extraction = report.get("extraction") or {}
    if extraction.get("mode") == "full" and extraction.get("reason"):
        lines.append(f"  read all of SCALARA: {extraction['reason']}")
    elif extraction.get("targeted"):
        lines.append("  " + targeted_line(extraction["targeted"]))
    for warning in extraction.get("warnings") or []:
        lines.append(f"  warning: {warning}")
    for kind, row in report["counts"].items():
        parts = [f"{k} {v}" for k, v in row.items() if v and not k.startswith("planned_")]
        lines.append(f"  {kind:<17} " + (", ".join(parts) if parts else "nothing to do"))
    props = report.get("properties") or {}
    if props.get("total"):
        line = f"  properties        {props['complete']} of {props['total']} complete"
        if props.get("firstCompleteS") is not None:
            line += (f"; the first after {props['firstCompleteS']:.1f} s, half of them after "
                     f"{props['medianCompleteS']:.1f} s")
        lines.append(line)
    for g in report["guard"]:
        advice = ("rerun with --allow-archive to archive anyway" if g.get("overridable", True)
                  else "fix the data in SCALARA; --allow-archive does not lift this")
        lines.append(f"  guard: {g['kind']}: {g['reason']}; {advice}")
    failures = report.get("failureStates")
    if failures:
        lines.extend(failure_lines(failures))
        return lines
    problems = report["mapErrors"] + report["writeFailures"]
    shown: set[str] = set()
    explained: set[str] = set()
    for p in problems[:10]:
        lines.extend(_with_explain("  failed: " + problem_line(p, shown), p, "    ", explained))
    if len(problems) > 10:
        lines.append(f"  ... and {len(problems) - 10} more (see the report)")
    return lines


def failure_lines(failures: dict[str, Any], limit: int = 10) -> list[str]:
    """New failures first, then known ones (since which run, how often), then acknowledged ones."""
    counts = failures.get("counts") or {}
    if not any(counts.get(k) for k in ("new", "known", "acknowledged")):
        return []
    lines = [f"  failures          {counts.get('new', 0)} new, {counts.get('known', 0)} known, "
             f"{counts.get('acknowledged', 0)} acknowledged (casavi-sync failures lists them; "
             f"casavi-sync ack acknowledges one)"]
    shown = 0
    explained: set[str] = set()
    for state in ("new", "known", "acknowledged"):
        for f in failures.get(state) or []:
            if shown == limit:
                rest = sum(len(failures.get(k) or []) for k in ("new", "known", "acknowledged")) - limit
                lines.append(f"  ... and {rest} more (see the report)")
                return lines
            lines.extend(_with_explain(f"  {failure_label(f)}: {problem_line(f)}", f, "    ", explained))
            shown += 1
    return lines


def failure_label(f: dict[str, Any]) -> str:
    if f["state"] == "new":
        return "new"
    since = f"since run {f['sinceRun']}, {f['occurrences']}x" + (", not sent again" if f.get("held") else "")
    if f["state"] == "known":
        return f"known ({since})"
    note = (f.get("acknowledged") or {}).get("note")
    return f"acknowledged ({since}{': ' + note if note else ''})"
