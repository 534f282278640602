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
