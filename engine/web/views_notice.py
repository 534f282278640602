"""The customer's data-quality notice in the console (German, as the property manager gets it).

The same ``ops.notice`` call as ``casavi-sync notice``; the page lists the items (new ones marked)
and offers the notice as a text or HTML file to pass on. Every SCALARA text is escaped by the
template engine (the HTML download by the notice renderer).
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from engine.errors import StateError
from engine.observe.notice import render_html, render_text
from engine.ops.notice import tenant_notice
from engine.web.app import NotFound, Req, page, render


def notice(r: Req) -> Response:
    try:
        doc = tenant_notice(r.ctx())
    except StateError as exc:
        return render(r, "notice.html", notice=None, text=None, error=str(exc))
    text = render_text(doc, zone=r.dep.schedule.zone)
    return render(r, "notice.html", notice=doc, text=text, dependents=_dependents(doc))


def _dependents(doc: object) -> dict[str, int]:
    return {i.key: sum(i.dependents.values()) for i in getattr(doc, "items", ())}


def download(r: Req) -> Response:
    fmt = r.request.path_params["fmt"]
    if fmt not in ("txt", "html"):
        raise NotFound()  # notice.pdf and the like: no such download, not the text under another name
    try:
        doc = tenant_notice(r.ctx())
    except StateError as exc:
        return render(r, "notice.html", 404, notice=None, text=None, error=str(exc))
    zone = r.dep.schedule.zone
    name = f"datenhinweise-{r.tenant}-lauf-{doc.run_id}"
    if fmt == "html":
        body, media = render_html(doc, zone=zone), "text/html; charset=utf-8"
    else:
        body, media = render_text(doc, zone=zone), "text/plain; charset=utf-8"
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'})


def routes() -> list[Route]:
    return [
        Route("/tenants/{tenant}/notice", page(notice)),
        Route("/tenants/{tenant}/notice.{fmt:str}", page(download)),
    ]
