"""The data-quality notice: for the property manager, in German, what to fix in SCALARA.

The person who can fix "unit WE 03 has no building" is the property manager, in SCALARA - not the
operator who reads run reports. From a run's report this module builds one item per SCALARA
record that could not be transferred because of its data: who it is ("Einheit WE 03
(Lindenstraße 12)"), what is wrong and where in SCALARA to fix it. Records that failed only
because another record failed are counted under that record, not listed again. Problems that are
not the customer's (an unmapped code, an engine matter) are only counted.

Every text comes from the catalog (``engine/catalog/notice.de.yaml``); this module only picks.
Items that the previous run did not have are marked new (or, when the report classifies its
failures as new/known, that classification is used).

The names come from the run itself: while the SCALARA records are still in memory, the sync keeps
for each failed record just the few fields the catalog's subject templates name
(:func:`subject_facts`), so the notice needs no second read of SCALARA.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.catalog import notice_catalog

MAX_FACT_CHARS = 120
MAX_SUBJECTS = 5000
WIDTH = 100  # the plain-text notice is meant for e-mail
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")
_PARENTS = {"property": "properties", "unit": "units", "building": "buildings"}


# ----------------------------------------------------------------------------- facts (at run time)

def _template_fields(catalog: Mapping[str, Any]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for resource, template in (catalog.get("subjects") or {}).items():
        wanted[resource] = set(_PLACEHOLDER.findall(str(template)))
    return wanted


def subject_facts(records: Mapping[str, list[dict[str, Any]]], errored: Iterable[tuple[str, str]],
                  language: str = "de", *,
                  fetch: Callable[[str, str], dict[str, Any] | None] | None = None) -> dict[str, dict[str, str]]:
    """``"resource/id" -> {placeholder: text}`` for the errored records (bounded in count and size).

    ``fetch(resource, id)``: a record not in ``records`` -- a run that maps part of a tenant (a
    chunk, a targeted day) names a failed unit's property from the snapshot, as a whole run does."""
    catalog = notice_catalog(language)
    wanted = _template_fields(catalog)
    indexes: dict[str, dict[str, dict[str, Any]]] = {}

    def by_id(resource: str) -> dict[str, dict[str, Any]]:
        if resource not in indexes:
            indexes[resource] = {str(r.get("id")): r for r in records.get(resource) or () if isinstance(r, dict)}
        return indexes[resource]

    def find(resource: str, rid: str) -> dict[str, Any] | None:
        got = by_id(resource).get(rid)
        if got is None and fetch is not None:
            got = fetch(resource, rid)
            if got is not None:
                indexes[resource][rid] = got
        return got

    out: dict[str, dict[str, str]] = {}
    for resource, sid in errored:
        if len(out) >= MAX_SUBJECTS:
            break
        rec = find(resource, str(sid))
        if rec is None:
            continue
        names = wanted.get(resource) or wanted.get("*") or set()
        facts: dict[str, str] = {}
        for name in names:
            value = _resolve(rec, name, find)
            if value is not None:
                facts[name] = value
        out[f"{resource}/{sid}"] = facts
    return out


def payload_facts(failed: Iterable[Any], actions: Iterable[Any], language: str = "de") -> dict[str, dict[str, str]]:
    """Names of records casavi refused, from the payloads sent (keyed like :func:`subject_facts`)."""
    catalog = notice_catalog(language)
    templates = catalog.get("casavi_subjects") or {}
    failed_keys = {(o.kind, o.ref_id): o for o in failed}
    out: dict[str, dict[str, str]] = {}
    for a in actions:
        o = failed_keys.get((a.kind, a.ref_id))
        if o is None or not a.payload or len(out) >= MAX_SUBJECTS:
            continue
        names = set(_PLACEHOLDER.findall(str(templates.get(a.kind) or "")))
        facts = {n: t for n in names if (t := _text(a.payload.get(n))) is not None}
        facts["_casavi"] = a.kind
        key = f"{o.source_resource}/{o.source_id}" if o.source_resource and o.source_id else f"{a.kind}/{a.ref_id}"
        out[key] = facts
    return out


def _resolve(rec: dict[str, Any], name: str, find: Any) -> str | None:
    head, _, rest = name.partition(".")
    if not rest:
        return _text(rec.get(head))
    parent = _parent(rec, head, find)
    return _text(parent.get(rest)) if parent is not None else None


def _parent(rec: dict[str, Any], head: str, find: Any) -> dict[str, Any] | None:
    resource = _PARENTS.get(head)
    if resource is None:
        return None
    pid = rec.get(f"{head}Id")
    if isinstance(pid, str):
        found: dict[str, Any] | None = find(resource, pid)
        return found
    if head == "property":  # an ownership knows its unit, the unit its property
        unit = _parent(rec, "unit", find)
        if unit is not None:
            return _parent(unit, "property", find)
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_FACT_CHARS else text[: MAX_FACT_CHARS - 1] + "…"


# ----------------------------------------------------------------------------- the notice

@dataclass(frozen=True)
class NoticeItem:
    key: str              # resource/id (or kind/reference id for casavi refusals): stable across runs
    subject: str
    text: str
    fix: str
    new: bool
    dependents: dict[str, int] = field(default_factory=dict)  # casavi kind -> count


@dataclass(frozen=True)
class Notice:
    tenant: str
    run_id: int | None
    generated_at: str
    items: tuple[NoticeItem, ...]
    technical: int

    @property
    def new_count(self) -> int:
        return sum(1 for i in self.items if i.new)

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "runId": self.run_id, "generatedAt": self.generated_at,
                "technical": self.technical, "new": self.new_count,
                "items": [{"key": i.key, "subject": i.subject, "problem": i.text, "fix": i.fix, "new": i.new,
                           "dependents": i.dependents} for i in self.items]}


def _problem(catalog: Mapping[str, Any], code: str, keys: Iterable[str]) -> Mapping[str, Any] | None:
    table = (catalog.get("problems") or {}).get(code)
    if not isinstance(table, Mapping):
        return None
    for key in (*keys, "*"):
        if key in table:
            found: Mapping[str, Any] = table[key]
            return found
    return None


def _fill(template: str, values: Mapping[str, Any]) -> str:
    """Placeholders filled (missing ones empty), empty brackets and doubled spaces removed."""
    text = _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1)) or ""), template)
    text = re.sub(r"\(\s*\)", "", text)
    return " ".join(text.split())


def _subject(catalog: Mapping[str, Any], resource: str, sid: str, facts: Mapping[str, str]) -> str:
    subjects = catalog.get("subjects") or {}
    template = str(subjects.get(resource) or subjects.get("*") or "{id}")
    if facts.get("_casavi"):
        template = str((catalog.get("casavi_subjects") or {}).get(facts["_casavi"]) or template)
    values: dict[str, Any] = {"id": sid, **facts}
    if resource == "property-roles" and "role" in facts:
        values["role"] = (catalog.get("roles") or {}).get(facts["role"], facts["role"])
    text = _fill(template, values)
    return text or f"{resource} {sid}"


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _map_item(catalog: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """(key, resource, code-specific text, fix) of a map error, or None when it is technical."""
    problem = _obj(row.get("problem"))
    code = str(problem.get("code") or row.get("code") or "record_failed")
    if code in (catalog.get("technical_codes") or ()):
        return None
    resource = str(row.get("resource") or "")
    detail = problem.get("lookup") or problem.get("target") or row.get("field") or ""
    if code == "required_empty":
        detail = row.get("field") or ""
        keys = [f"{row.get('kind')}.{detail}", f"{resource}.{detail}"]
    else:
        keys = [f"{resource}.{detail}"]
    found = _problem(catalog, code, keys)
    if found is None:
        return None
    values = {"field": row.get("field") or "", "target": problem.get("target") or ""}
    return (f"{resource}/{row.get('sourceId')}", resource, _fill(str(found.get("text", "")), values),
            _fill(str(found.get("fix", "")), values))


def _write_item(catalog: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    error = _obj(row.get("error"))
    status = error.get("status")
    kind = str(row.get("kind") or "")
    field_name = str(error.get("field") or "")
    codes = [str(e.get("code")) for e in error.get("casaviErrors") or () if isinstance(e, Mapping)]
    if status == 400:
        found = _problem(catalog, "write_400", [f"{kind}.{field_name}"])
    elif status == 409 and "duplicate_contact" in (*codes, str(error.get("reason") or "").split(":")[0]):
        found = _problem(catalog, "write_409_duplicate_contact", [kind])
    else:
        return None
    if found is None:
        return None
    source = _obj(row.get("source"))
    resource = str(source.get("resource") or "")
    sid = source.get("id")
    key = f"{resource}/{sid}" if resource and sid else f"{kind}/{row.get('id')}"
    values = {"field": field_name}
    return key, resource, _fill(str(found.get("text", "")), values), _fill(str(found.get("fix", "")), values)


def _previous_keys(previous: Mapping[str, Any] | None, catalog: Mapping[str, Any]) -> set[str] | None:
    if previous is None:
        return None
    keys = {found[0] for row in previous.get("mapErrors") or () if (found := _map_item(catalog, row))}
    keys |= {found[0] for row in previous.get("writeFailures") or () if (found := _write_item(catalog, row))}
    return keys


def _source_key(row: Mapping[str, Any]) -> str:
    source = _obj(row.get("source"))
    resource = row.get("resource") or source.get("resource")
    sid = row.get("sourceId") or source.get("id")
    return f"{resource}/{sid}" if resource and sid else f"{row.get('kind')}/{row.get('id') or row.get('targetId')}"


class _Details:
    """The detailed rows (problem codes, casavi's answers) and subject facts of the newest report
    that has them. A run that did not map a record again (nothing changed, or a refused record not
    re-sent) carries its failure over without those details; an earlier report still has them."""

    def __init__(self, reports: Iterable[Mapping[str, Any]]) -> None:
        self.map_rows: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.write_rows: dict[str, Mapping[str, Any]] = {}
        self.subjects: dict[str, Mapping[str, str]] = {}
        for report in reports:  # newest first: the first seen wins
            for row in report.get("mapErrors") or ():
                if isinstance(row, Mapping) and row.get("problem"):
                    self.map_rows.setdefault((_source_key(row), str(row.get("targetId") or row.get("kind"))), row)
            for row in report.get("writeFailures") or ():
                if isinstance(row, Mapping) and row.get("error"):
                    self.write_rows.setdefault(_source_key(row), row)
            for key, facts in (report.get("subjects") or {}).items():
                self.subjects.setdefault(key, facts)

    def map_row(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        if row.get("problem"):
            return row
        found = self.map_rows.get((_source_key(row), str(row.get("targetId") or row.get("kind"))))
        if found is None:  # the same record under another casavi id: any detailed row of it
            found = next((r for (k, _), r in self.map_rows.items() if k == _source_key(row)), None)
        return found or row

    def write_row(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        if row.get("error"):
            return row
        found = self.write_rows.get(_source_key(row))
        if found is not None:
            return found
        # a failure-tracking entry of a refused record: status, field and reason are enough
        return {"kind": row.get("kind"), "id": row.get("id"), "source": row.get("source"),
                "error": {"status": row.get("status"), "field": row.get("field"), "reason": row.get("reason")}}


Failure = tuple[str, Mapping[str, Any], "str | None"]  # stage, row, state (new/known/acknowledged)


def _current_failures(report: Mapping[str, Any]) -> tuple[list[Failure], bool]:
    """(stage, row, state) of every failure the run ended with, and whether states are known.

    With the failure tracking (``failureStates``) that is its new, known and acknowledged lists
    (a record not re-sent is still a failure); without it, the run's map errors and refusals."""
    states = report.get("failureStates")
    if isinstance(states, Mapping) and any(isinstance(states.get(k), list) for k in ("new", "known")):
        rows: list[Failure] = [(str(r.get("stage") or "map"), r, state)
                for state in ("new", "known", "acknowledged") for r in states.get(state) or ()
                if isinstance(r, Mapping)]
        return rows, True
    plain: list[Failure] = [("map", r, None) for r in report.get("mapErrors") or () if isinstance(r, Mapping)]
    plain += [("write", r, None) for r in report.get("writeFailures") or () if isinstance(r, Mapping)]
    return plain, False


def build_notice(report: Mapping[str, Any], previous: Mapping[str, Any] | None = None,
                 language: str = "de", earlier: Iterable[Mapping[str, Any]] = ()) -> Notice:
    """The notice of one run's report.

    ``previous`` (the run before) decides what is new when the report has no failure states;
    ``earlier`` (older reports, newest first) supplies details of failures carried over."""
    catalog = notice_catalog(language)
    details = _Details([report, *([previous] if previous else []), *earlier])
    before = _previous_keys(previous, catalog)
    failures, tracked = _current_failures(report)
    resolved: list[Failure] = [
        (stage, details.map_row(row) if stage == "map" else details.write_row(row), state)
        for stage, row, state in failures]
    dependents: dict[str, dict[str, int]] = {}
    for stage, row, _ in resolved:
        problem = _obj(row.get("problem"))
        if stage == "map" and problem.get("code") == "depends_on_failed":
            cause = f"{problem.get('target')}/{problem.get('targetId')}"
            kinds = dependents.setdefault(cause, {})
            kinds[str(row.get("kind"))] = kinds.get(str(row.get("kind")), 0) + 1
    items: dict[str, NoticeItem] = {}
    technical = 0
    for stage, row, state in resolved:
        found = (_map_item if stage == "map" else _write_item)(catalog, row)
        if found is None:
            if _obj(row.get("problem")).get("code") != "depends_on_failed":
                technical += 1
            continue
        key, resource, text, fix = found
        if key in items:
            continue
        sid = key.split("/", 1)[1]
        is_new = state == "new" if tracked else (before is None or key not in before)
        items[key] = NoticeItem(key, _subject(catalog, resource, sid, details.subjects.get(key) or {}), text, fix,
                                is_new, dependents.get(key, {}))
    ordered = sorted(items.values(), key=lambda i: (not i.new, i.subject.casefold(), i.key))
    run_id = report.get("runId")
    return Notice(str(report.get("tenant") or ""), run_id if isinstance(run_id, int) else None,
                  str(report.get("startedAt") or ""), tuple(ordered), technical)


# ----------------------------------------------------------------------------- rendering

# German names of the zone abbreviations a German reader expects (as the console shows them)
_ZONE_NAMES = {"de": {"CET": "MEZ", "CEST": "MESZ"}}


def _when(stamp: str, zone: dt.tzinfo | None, language: str = "de") -> str:
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if zone is not None:
        moment = moment.astimezone(zone)
    name = moment.strftime("%Z")
    name = _ZONE_NAMES.get(language, {}).get(name, name)
    return f"{moment:%d.%m.%Y %H:%M} {name}".strip()


def _dependents_line(catalog: Mapping[str, Any], item: NoticeItem) -> str | None:
    if not item.dependents:
        return None
    names = catalog.get("kinds") or {}
    kinds = ", ".join(f"{n} {names.get(k, k)}" for k, n in sorted(item.dependents.items()))
    return str(catalog["dependents"]).format(count=sum(item.dependents.values()), kinds=kinds)


def render_text(notice: Notice, language: str = "de", zone: dt.tzinfo | None = None) -> str:
    catalog = notice_catalog(language)
    lines = [str(catalog["title"]), "=" * len(str(catalog["title"])), ""]
    lines.append(str(catalog["generated"]).format(when=_when(notice.generated_at, zone, language), run=notice.run_id or "–"))
    lines.append("")
    if not notice.items:
        lines.append(str(catalog["empty"]))
    else:
        lines.append(textwrap.fill(" ".join(str(catalog["intro"]).split()), WIDTH))
        lines.append("")
        for item in notice.items:
            marker = f"[{catalog['new_marker']}] " if item.new else ""
            lines.append(textwrap.fill(f"- {marker}{item.subject}: {item.text} — {item.fix}", WIDTH,
                                       subsequent_indent="  ", break_on_hyphens=False))
            extra = _dependents_line(catalog, item)
            if extra:
                lines.append(textwrap.fill(extra, WIDTH, initial_indent="  ", subsequent_indent="  "))
    if notice.technical:
        lines += ["", textwrap.fill(" ".join(str(catalog["technical"]).format(count=notice.technical).split()),
                                    WIDTH)]
    return "\n".join(lines) + "\n"


def render_html(notice: Notice, language: str = "de", zone: dt.tzinfo | None = None) -> str:
    """A self-contained HTML fragment-free page; every SCALARA text is escaped."""
    catalog = notice_catalog(language)
    e = html.escape
    parts = [f'<!DOCTYPE html>\n<html lang="{e(language)}"><head><meta charset="utf-8">',
             f"<title>{e(str(catalog['title']))}</title></head><body>",
             f"<h1>{e(str(catalog['title']))}</h1>",
             f"<p>{e(str(catalog['generated']).format(when=_when(notice.generated_at, zone, language), run=notice.run_id or '–'))}</p>"]
    if not notice.items:
        parts.append(f"<p>{e(str(catalog['empty']))}</p>")
    else:
        parts.append(f"<p>{e(' '.join(str(catalog['intro']).split()))}</p>")
        parts.append(f"<table><thead><tr><th></th><th>{e(str(catalog.get('what_label', '')))}</th>"
                     f"<th>{e(str(catalog.get('fix_label', '')))}</th></tr></thead><tbody>")
        for item in notice.items:
            marker = f'<strong class="new">{e(str(catalog["new_marker"]))}</strong> ' if item.new else ""
            extra = _dependents_line(catalog, item)
            extra_html = f"<br><small>{e(extra)}</small>" if extra else ""
            parts.append(f"<tr><td>{marker}{e(item.subject)}</td><td>{e(item.text)}{extra_html}</td>"
                         f"<td>{e(item.fix)}</td></tr>")
        parts.append("</tbody></table>")
    if notice.technical:
        parts.append(f"<p>{e(' '.join(str(catalog['technical']).format(count=notice.technical).split()))}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
