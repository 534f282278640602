"""The customer's data-quality notice in the console: the same items as `casavi-sync notice`, new ones
marked, downloads as text and HTML, scoped to the user's tenant, every SCALARA text escaped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.observe.notice import render_text
from engine.ops import Context
from engine.ops.notice import tenant_notice
from tests.web_helpers import Console, console, csrf_of, wait_job


@pytest.fixture
def c(tmp_path: Path) -> Iterator[Console]:
    with console(tmp_path) as made:
        yield made


@pytest.mark.slow
def test_notice_page_and_downloads(c: Console) -> None:
    client = c.client("team")
    r = client.get("/tenants/hv-nord/notice")
    assert r.status_code == 200 and "no finished run" in r.text  # before the first import: says why
    page = client.get("/tenants/hv-nord/scalara")
    r = client.post("/tenants/hv-nord/token", data={"csrf": csrf_of(page.text), "token": c.token})
    assert r.status_code == 303
    wait_job(c, "hv-nord")
    doc = tenant_notice(Context(c.tmp / "state.db", "hv-nord", config_path=c.tmp / "connectors.yaml", env={}))
    assert doc.items, "the generated tenant has records SCALARA data keeps from transferring"
    r = client.get("/tenants/hv-nord/notice")
    assert r.status_code == 200
    for item in doc.items:
        assert item.fix.replace(">", "&gt;") in r.text
    assert r.text.count("<strong>NEU</strong>") == doc.new_count == len(doc.items)
    text = client.get("/tenants/hv-nord/notice.txt")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "attachment" in text.headers["content-disposition"]
    assert text.text == render_text(doc, zone=c.dep.schedule.zone)
    html = client.get("/tenants/hv-nord/notice.html")
    assert html.status_code == 200 and "<table>" in html.text
    pdf = client.get("/tenants/hv-nord/notice.pdf")  # no such download: not the text under another name
    assert pdf.status_code == 404 and "attachment" not in pdf.headers.get("content-disposition", "")
    # a customer admin of another tenant does not even learn that this page exists
    assert c.client("kunde").get("/tenants/hv-nord/notice").status_code == 404
    assert client.get("/tenants/hv-nord/notice").status_code == 200
    for body in (r.text, text.text, html.text):
        for secret in c.secrets():
            assert secret not in body


def test_notice_page_needs_login(c: Console) -> None:
    r = c.client().get("/tenants/default/notice")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_notice_download_of_an_unknown_format_is_not_found(c: Console) -> None:
    client = c.client("team")
    for fmt in ("pdf", "exe", "TXT"):
        r = client.get(f"/tenants/default/notice.{fmt}")
        assert r.status_code == 404, fmt
        assert "attachment" not in r.headers.get("content-disposition", "")
