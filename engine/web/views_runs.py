"""Screens 3 to 5 and the audit log: runs and their reports, explain, plan and "run now", mappings.

"Run now" and "allow archive and run again" start ``ops.runs.start_run`` on a background job and
are refused, naming the holder, while another run holds the tenant's lock. Explain shows the very
trace ``casavi-sync explain`` prints.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from engine.errors import CasaviSyncError, RecordError
from engine.ops import overview, records, runs
from engine.web.app import NotFound, Req, page, render
from engine.web.views import holder_text, message

PLAN_LIMIT = 200  # changes shown per kind


def run_list(r: Req, *, error: str | None = None, status: int = 200) -> Response:
    assert r.tenant is not None
    store = r.dep.store()
    history = [overview.run_doc(x) for x in store.runs(r.tenant, limit=50)]
    job = r.dep.jobs.current(r.tenant)
    snap = job.snapshot() if job else None
    return render(r, "runs.html", status, runs=history, job=snap, refresh=bool(snap and not snap["finished"]),
                  error=error, message=message(r))


def run_report(r: Req) -> Response:
    run_id = int(r.request.path_params["run_id"])
    try:
        run, report = overview.load_report(r.ctx(), run_id)
    except CasaviSyncError:
        raise NotFound() from None
    failed = overview.failed_records(report) if report else []
    counts = report.get("counts", {}) if report else run.counts
    columns = sorted({k for row in counts.values() for k in row}, key=_column_order)
    return render(r, "run.html", run=overview.run_doc(run), report=report, failed=failed, counts=counts,
                  columns=columns)


def _column_order(name: str) -> tuple[int, str]:
    order = ("planned_create", "planned_update", "planned_restore", "planned_archive", "create", "update",
             "restore", "archive", "unchanged", "failed", "skipped", "map_errors")
    return (order.index(name) if name in order else len(order), name)


def _start(r: Req, trigger: str, **options: Any) -> Response:
    holder = r.dep.store().lock_holder(r.tenant or "")
    if holder is not None:
        return run_list(r, error=holder_text(r, holder), status=409)
    ctx = r.ctx(shared=False)

    def work(job: Any) -> Any:
        return runs.start_run(ctx, trigger=trigger, progress=job.progress, should_stop=job.should_stop, **options)

    try:
        r.dep.jobs.start(r.tenant or "", trigger, r.actor, work)
    except CasaviSyncError as exc:
        return run_list(r, error=str(exc), status=409)
    return RedirectResponse(f"/tenants/{r.tenant}/runs?msg=msg_run_started", status_code=303)


def run_now(r: Req) -> Response:
    return _start(r, "manual")


def allow_archive(r: Req) -> Response:
    run_id = int(r.request.path_params["run_id"])
    r.dep.store().audit(r.actor, "archive.allowed", r.tenant, afterRun=run_id)
    return _start(r, "manual", allow_archive=True)


def explain(r: Req) -> Response:
    resource, sid = r.request.path_params["resource"], r.request.path_params["sid"]
    from engine.catalog import scalara_resources
    from engine.explain import render_text

    if resource not in scalara_resources():
        raise NotFound()
    try:
        doc = records.explain_live(r.ctx(), resource, sid)
    except RecordError as exc:
        return render(r, "explain.html", 404, resource=resource, sid=sid, lines=None, error=exc.reason)
    return render(r, "explain.html", resource=resource, sid=sid, lines=render_text(doc), error=None)


def plan(r: Req) -> Response:
    from engine.sync.report import plan_document

    holder = r.dep.store().lock_holder(r.tenant or "")
    prepared = runs.plan(r.ctx())
    doc = plan_document(prepared, details=True)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for change in doc.get("changes", []):
        by_kind.setdefault(change["kind"], []).append(change)
    return render(r, "plan.html", doc=doc, by_kind=by_kind, limit=PLAN_LIMIT,
                  busy=holder_text(r, holder) if holder else None, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def mappings(r: Req) -> Response:
    from engine.coverage import unmapped_codes

    health = overview.mapping_health(r.ctx())
    return render(r, "mappings.html", health=health, codes=unmapped_codes(health["coverage"]))


def failures(r: Req) -> Response:
    from engine.ops.failures import failure_list

    rows = failure_list(r.dep.store(), r.tenant or "")
    return render(r, "failures.html", rows=rows, message=message(r))


def acknowledge(r: Req) -> Response:
    from engine.ops.failures import acknowledge as ack

    kind, ident = r.form.get("kind") or None, r.form.get("id") or None
    if kind is None or ident is None:
        raise NotFound()
    ack(r.ctx(), kind, ident, r.form.get("note"))
    return RedirectResponse(f"/tenants/{r.tenant}/failures?msg=msg_acknowledged", status_code=303)


def _audit_entries(r: Req, limit: int | None) -> list[Any]:
    return list(r.dep.store().audit_log(tenant=r.user.tenant, limit=limit))


def audit(r: Req) -> Response:
    return render(r, "audit.html", entries=_audit_entries(r, 500), dumps=_dumps)


def audit_export(r: Req) -> Response:
    entries = [e.as_dict() for e in _audit_entries(r, None)]
    if r.request.url.path.endswith(".json"):
        return Response(json.dumps(entries, ensure_ascii=False, indent=1), media_type="application/json",
                        headers={"content-disposition": 'attachment; filename="audit.json"'})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "action", "tenant", "detail"])
    for e in entries:
        writer.writerow([e["id"], e["at"], e["actor"], e["action"], e["tenant"] or "", _dumps(e["detail"])])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": 'attachment; filename="audit.csv"'})


def routes() -> list[Route]:
    return [
        Route("/tenants/{tenant}/runs", page(run_list)),
        Route("/tenants/{tenant}/runs/{run_id:int}", page(run_report)),
        Route("/tenants/{tenant}/runs/{run_id:int}/allow-archive", page(allow_archive, "run"), methods=["POST"]),
        Route("/tenants/{tenant}/run", page(run_now, "run"), methods=["POST"]),
        Route("/tenants/{tenant}/explain/{resource}/{sid}", page(explain)),
        Route("/tenants/{tenant}/plan", page(plan)),
        Route("/tenants/{tenant}/mappings", page(mappings)),
        Route("/tenants/{tenant}/failures", page(failures)),
        Route("/tenants/{tenant}/failures/acknowledge", page(acknowledge, "run"), methods=["POST"]),
        Route("/audit", page(audit, "audit")),
        Route("/audit.csv", page(audit_export, "audit")),
        Route("/audit.json", page(audit_export, "audit")),
    ]
