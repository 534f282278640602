"""Screens 1 and 2: the tenant list and the tenant's "Anbindungen > SCALARA" page.

The token form posts to ``save_token``, which calls the same ``ops.connection.connect`` as the
CLI's ``connect`` on a background job: the request waits until the token is checked and stored
(or refused), then redirects; a first save's initial import goes on and the page shows its
progress (reloading itself once a second, no script needed) until it ends.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from engine.errors import AuthError, CasaviSyncError
from engine.ops import connection, overview
from engine.web.app import Req, page, render

MESSAGES = ("msg_activated", "msg_deactivated", "msg_replaced", "msg_import", "msg_disconnected",
            "msg_run_started", "msg_not_connected", "msg_acknowledged")


def message(r: Req) -> str | None:
    key = r.request.query_params.get("msg")
    return r.t(key) if key in MESSAGES else None


def holder_text(r: Req, holder: Any, key: str = "busy_by") -> str:
    return r.t(key, purpose=holder.purpose, pid=holder.pid, host=holder.hostname, since=r_local(r, holder.started_at))


def r_local(r: Req, stamp: str | None) -> str:
    from engine.web.i18n import local_time

    return local_time(stamp, r.dep.schedule.zone, r.lang)


def tenants(r: Req) -> Response:
    store = r.dep.store()
    now = dt.datetime.now(dt.UTC)
    query = (r.request.query_params.get("q") or "").strip().lower()
    rows = []
    for t in store.list_tenants():
        if r.user.tenant is not None and t.name != r.user.tenant:
            continue
        if query and query not in t.name.lower():
            continue
        rows.append(overview.tenant_status(store, t, r.dep.schedule, now))
    return render(r, "tenants.html", rows=rows, q=query, message=message(r))


def scalara(r: Req, *, error: str | None = None, status: int = 200) -> Response:
    assert r.tenant is not None
    store = r.dep.store()
    t = store.tenant(r.tenant)
    conn = store.get_connection(r.tenant)
    job = r.dep.jobs.current(r.tenant)
    holder = store.lock_holder(r.tenant)
    foreign = holder if holder is not None and (job is None or job.finished) else None
    snap = job.snapshot() if job else None
    refresh = bool((snap and not snap["finished"]) or foreign)
    note = message(r)
    if r.request.query_params.get("msg") == "msg_import" and snap and snap["finished"]:
        note = r.t("import_done")  # the page reloaded itself until the import ended
    return render(r, "scalara.html", status, tn=t, conn=conn, job=snap, refresh=refresh, error=error,
                  foreign=holder_text(r, foreign, "lock_held_elsewhere") if foreign else None, message=note)


def _to(r: Req, where: str, msg: str | None = None) -> RedirectResponse:
    return RedirectResponse(f"/tenants/{r.tenant}/{where}" + (f"?msg={msg}" if msg else ""), status_code=303)


def activate(r: Req) -> Response:
    connection.activate(r.ctx())
    return _to(r, "scalara", "msg_activated")


def deactivate(r: Req) -> Response:
    connection.deactivate(r.ctx())
    return _to(r, "scalara", "msg_deactivated")


def save_token(r: Req) -> Response:
    """Check and store the token through ``ops.connection.connect``; a first save imports in the background."""
    token = r.form.get("token", "").strip()
    if not token:
        return scalara(r, error=r.t("token_empty"), status=400)
    saved_event = threading.Event()
    box: dict[str, Any] = {}
    ctx = r.ctx(shared=False)  # the job runs on its own thread with its own store

    def work(job: Any) -> Any:
        def on_saved(saved: connection.TokenSaved) -> None:
            box["saved"] = saved
            saved_event.set()

        try:
            done = connection.connect(ctx, token, on_saved=on_saved, progress=job.progress,
                                      should_stop=job.should_stop)
        except BaseException as exc:
            if not saved_event.is_set():
                box["error"] = exc
                saved_event.set()
                return None  # refused: no run, the job is forgotten
            raise
        return done.run

    try:
        r.dep.jobs.start(r.tenant or "", "initial", r.actor, work)
    except CasaviSyncError as exc:
        return scalara(r, error=str(exc), status=409)
    saved_event.wait(timeout=120)
    error = box.get("error")
    if isinstance(error, AuthError):
        return scalara(r, error=r.t("token_refused"), status=400)
    if isinstance(error, CasaviSyncError):
        return scalara(r, error=str(error), status=400)
    if error is not None or "saved" not in box:
        return scalara(r, error=r.t("internal"), status=500)
    return _to(r, "scalara", "msg_import" if box["saved"].first_save else "msg_replaced")


def disconnect_confirm(r: Req) -> Response:
    return render(r, "disconnect.html")


def disconnect(r: Req) -> Response:
    removed = connection.disconnect(r.ctx())
    return _to(r, "scalara", "msg_disconnected" if removed else "msg_not_connected")


def routes() -> list[Route]:
    from engine.web import views_notice, views_runs

    return [
        Route("/tenants", page(tenants)),
        Route("/tenants/{tenant}/scalara", page(scalara)),
        Route("/tenants/{tenant}/activate", page(activate, "activate"), methods=["POST"]),
        Route("/tenants/{tenant}/deactivate", page(deactivate, "activate"), methods=["POST"]),
        Route("/tenants/{tenant}/token", page(save_token, "connect"), methods=["POST"]),
        Route("/tenants/{tenant}/disconnect", page(disconnect_confirm, "connect")),
        Route("/tenants/{tenant}/disconnect", page(disconnect, "connect"), methods=["POST"]),
        *views_runs.routes(),
        *views_notice.routes(),
    ]
