"""Console pages rendered straight from their templates: no raw engine words or None on a German page."""

from __future__ import annotations

from engine.web import i18n
from engine.web.app import render


def test_plan_page_omits_a_missing_casavi_id() -> None:
    doc = {"counts": {"units": {"error": 1}}, "pendingChanges": 0, "guard": [],
           "errors": [{"kind": "units", "targetId": None, "resource": "units", "sourceId": "u-7",
                       "reason": "no property"}]}
    html = render(None, "plan.html", doc=doc, by_kind={}, limit=10, busy=None, dumps=str).body.decode()
    assert "units None" not in html and "<li>units (SCALARA units u-7): no property" in html


def test_both_languages_have_the_same_words() -> None:
    assert set(i18n.DE) == set(i18n.EN)


def _run_page(lang: str) -> str:
    run = {"runId": 3, "trigger": "manual", "startedAt": "2026-12-02T10:00:00Z", "outcome": "partial",
           "durationS": 0.1, "error": None}
    counts = {"units": {"planned_create": 2, "create": 1, "failed": 1, "map_errors": 0}}
    columns = ["planned_create", "create", "failed", "map_errors"]
    return str(render(None, "run.html", lang=lang, run=run, report=None, failed=[], counts=counts,
                      columns=columns).body.decode())


def test_run_page_translates_count_columns_and_outcome() -> None:
    de = _run_page("de")
    assert "Ergebnis: <strong id=\"run-outcome\">teilweise</strong>" in de
    for raw in ("planned_create", "map_errors", ">partial<", ">failed<", ">create<"):
        assert raw not in de, raw
    assert "geplant: anlegen" in de and "angelegt" in de and "fehlgeschlagen" in de
    en = _run_page("en")
    assert ">partial<" in en and "planned create" in en and "planned_create" not in en


def test_unknown_engine_words_show_as_they_are() -> None:
    assert i18n.term("de", "outcome", "something-new") == "something-new"
    assert i18n.term("de", "outcome", None) == "–"


def test_plan_columns_say_what_would_happen_not_what_happened() -> None:
    doc = {"counts": {"units": {"create": 2}}, "pendingChanges": 2, "guard": [], "errors": []}
    html = render(None, "plan.html", doc=doc, by_kind={}, limit=10, busy=None, dumps=str).body.decode()
    assert "<th>geplant: anlegen</th>" in html and "<th>angelegt</th>" not in html
    assert "<th>create</th>" not in html


def test_progress_names_the_phases_in_the_page_language() -> None:
    step = {"phase": "extract", "kind": "units", "done": 5, "total": 10, "rate": 50.0, "eta": 0.1}
    job = {"tenant": "t", "trigger": "manual", "finished": False, "outcome": None, "runId": None, "error": None,
           "steps": [step], "current": step, "properties": None, "elapsed": 0.1}
    html = render(None, "runs.html", runs=[], job=job, refresh=True, error=None, message=None).body.decode()
    assert "Lesen aus SCALARA" in html and ">extract<" not in html
