"""The words of `casavi-sync demo`: what SCALARA and casavi are, what each step proves, and why the
records the sandbox breaks on purpose are an edge case handled, not a demo failure.

Pure text: functions take the sandbox's data and run reports and return lines; demo_cmd prints them.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.sync.report import problem_line, run_summary

WIDTH = 100

INTRO = (
    "SCALARA is the software German property managers keep their master data in: properties, units, "
    "owners, tenants, and who sits on which advisory board. casavi is the portal in which those managers "
    "talk to the owners, tenants, boards and service providers. casavi-sync copies that master data one "
    "way, from SCALARA into casavi, every night. Here both sides are local stand-ins (the sandbox) with "
    "generated data; nothing leaves this machine."
)

STEPS: dict[int, tuple[str, str]] = {
    1: ("casavi activates the SCALARA interface for the customer account",
        "casavi-sync serves many casavi customer accounts (tenants); nothing syncs until casavi's team has "
        "activated the interface for one."),
    2: ("an admin generates a token in SCALARA",
        "this token is all the property manager hands over; casavi-sync stores it and only ever shows a "
        "fingerprint of it."),
    3: ("the token is saved, which runs the initial import at once",
        "everything SCALARA holds arrives in casavi in one run, in dependency order (a property before its "
        "units, a unit and its owners before the contract between them)."),
    4: ("the next day, SCALARA data changes",
        "a property manager's ordinary day: an owner moves to a new e-mail address, a tenancy is "
        "given notice, a parking space is added."),
    5: ("`casavi-sync plan` shows what the next run would do, writing nothing",
        "exactly these changes are found, field by field, and everything else is recognised as unchanged "
        "before anything is written."),
    6: ("the scheduled nightly run carries the changes over",
        "`casavi-sync serve` runs every tenant once a day (04:00 Europe/Berlin plus a fixed per-tenant "
        "offset); here its scheduler takes one look at the clock at a moment this tenant's slot has passed, "
        "and starts the run itself."),
    7: ("a run with no changes in SCALARA makes no write calls",
        "casavi-sync remembers a hash of every record it wrote and sends only what changed."),
}

# Planted edge cases (engine/sandbox/generator.py, docs/sandbox-data.md) that casavi must not get.
BROKEN_CASES = {
    "dangling_building": "a cellar whose building was deleted in SCALARA",
    "deleted_building": "a building deleted in SCALARA",
}

_DEPENDS = re.compile(r"depends on failed (\w+) (\S+) \(")


def para(text: str, indent: str = "   ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent)


def step(number: int) -> list[str]:
    title, proves = STEPS[number]
    return ["", f"{number}. {title}", *para("Why it matters: " + proves)]


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The run summary without its failure lines (the demo explains those once, see ``failures``)
    and without the mapping set's path (always the shipped one here: noise in the story)."""
    lines = [line for line in run_summary({**report, "failureStates": None})  # the plain failure lines
             if not line.startswith(("  failed: ", "  ... and ", "  mappings ", "    why: "))]
    return ["   " + line.strip() if i == 0 else "   " + line for i, line in enumerate(lines)]


def problems(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(report.get("mapErrors") or []) + list(report.get("writeFailures") or [])


def _source(p: Mapping[str, Any]) -> tuple[str, str]:
    """(SCALARA resource, id) of a map error or write failure (the two name them differently)."""
    src = p.get("source") or {"resource": p.get("resource"), "id": p.get("sourceId")}
    return str(src.get("resource") or "?"), str(src.get("id") or "")


def _key(p: Mapping[str, Any]) -> tuple[str, str]:
    return (str(p.get("kind") or ""), str(p.get("id") or p.get("targetId") or _source(p)[1]))


def problem_keys(report: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {_key(p) for p in problems(report)}


def failures(report: Mapping[str, Any], edge_cases: Mapping[str, Sequence[str]],
             known: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Explain the run's failed records once: planted broken data, what depends on it, anything else.

    ``known``: failures already explained in an earlier step; they get one line, not their story again.
    """
    found = problems(report)
    if not found:
        return []
    known = set(known)
    fresh = [p for p in found if _key(p) not in known]
    if not fresh:
        return para(f"({len(found)} records held back again: the same planted broken data as in step 3, "
                    "reported by every run until it is fixed in SCALARA.)")
    case_of = {sid: name for name, ids in edge_cases.items() for sid in ids}
    failed_sources = {_source(p)[1] for p in found}
    planted, dependent, other = [], [], []
    for p in fresh:
        case = case_of.get(_source(p)[1])
        reason = str((p.get("error") or p).get("reason") or "")
        dep = _DEPENDS.search(reason)
        if case:
            planted.append((p, case))
        elif dep and dep.group(2) in failed_sources:
            dependent.append((p, dep.group(1), dep.group(2)))
        else:
            other.append(p)
    lines: list[str] = []
    if planted or dependent:
        n = len(planted) + len(dependent)
        lines += para(
            f"{n} record{'s were' if n != 1 else ' was'} held back on purpose. The generated data plants every "
            "edge case of the interface, including broken data that casavi must not get. casavi-sync reports "
            "each broken record with its reason, holds back what depends on it, and carries over everything "
            "else: an edge case handled, not a demo failure.")
        for p, case in planted:
            lines.append("     - " + problem_line(p))
            what = BROKEN_CASES.get(case, "planted edge case")
            lines.append(f"       planted on purpose: {what} (edge case '{case}', docs/sandbox-data.md)")
        for p, kind, sid in dependent:
            resource, source_id = _source(p)
            target = p.get("id") or p.get("targetId")
            lines.append(f"     - {p.get('kind')}{' ' + str(target) if target else ''} (SCALARA {resource} "
                         f"{source_id}): depends on the failed {kind} {sid} above")
    if other:
        lines += para(f"{len(other)} record(s) failed that the sandbox did not break on purpose; "
                      "this is unexpected, please report it:")
        lines += ["     - " + problem_line(p) for p in other]
    return lines


def plan_table(prepared: Any) -> list[str]:
    """The plan's count table, guard lines and verdict (its errors and coverage are told elsewhere)."""
    from engine.sync.report import plan_summary

    lines = plan_summary(prepared)
    table = lines[:1 + len(prepared.plan.kinds)]
    return ["   " + line for line in table + [x for x in lines if x.startswith("guard: ")] + lines[-1:]]


def change_lines(prepared: Any, limit: int = 6) -> list[str]:
    """The plan's first actions, with the changed fields of each update."""
    from engine.sync.plan import change_text

    lines = []
    for a in prepared.plan.actions[:limit]:
        diff = ", ".join(change_text(c) for c in a.diff()[:3])
        lines.append(f"     {a.action} {a.kind} {a.ref_id}" + (f"  ({diff})" if diff and a.action == "update" else ""))
    if len(prepared.plan.actions) > limit:
        lines.append(f"     ... and {len(prepared.plan.actions) - limit} more")
    return lines
