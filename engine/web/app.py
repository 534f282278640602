"""The console's application: the deployment it serves, request handling, login and logout.

Routes are thin: ``page`` resolves the user (session cookie or trusted proxy header), checks the
CSRF token of a POST and the user's right on the tenant in the path, then calls a synchronous
view on a worker thread with a ``Req``; views call ``engine.ops`` and render a template.
Expected errors become a page with one line; anything else is logged and shown as an internal
error without details.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from engine.errors import AuthError, CasaviSyncError, ConfigError
from engine.ops import Context, users
from engine.paths import WEB_STATIC, WEB_TEMPLATES
from engine.web import i18n, security
from engine.web.jobs import JobBoard

log = logging.getLogger("casavi_sync.web")


class Forbidden(Exception):
    pass


class NotFound(Exception):
    pass


@dataclass
class Deployment:
    """What one console process serves: a state file, its config and mappings, a schedule."""

    ctx: Context
    schedule: Any
    trusted_header: str | None = None
    trusted_proxies: frozenset[str] = frozenset()
    jobs: JobBoard = field(default_factory=JobBoard)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def store(self) -> Any:
        """This thread's long-lived store (a SQLite connection must stay on its thread)."""
        store = getattr(self._local, "store", None)
        if store is None or store.closed:
            store = self._local.store = self.ctx.open_store()
        return store

    def context(self, tenant: str | None = None, actor: str = "web", *, shared: bool = True) -> Context:
        return dataclasses.replace(self.ctx, tenant=tenant or self.ctx.tenant, actor=actor,
                                   shared_store=self.store() if shared else None)


@dataclass
class Req:
    request: Request
    form: dict[str, str]
    user: Any
    csrf: str
    lang: str
    dep: Deployment
    tenant: str | None = None

    @property
    def actor(self) -> str:
        return f"web:{self.user.name}"

    def ctx(self, *, shared: bool = True) -> Context:
        """The ops context of this request's tenant, acting as this user."""
        return self.dep.context(self.tenant, self.actor, shared=shared)

    def t(self, key: str, **values: Any) -> str:
        return i18n.translate(self.lang, key, **values)

    def may(self, permission: str, tenant: str | None = None) -> bool:
        return users.may(self.user, permission, tenant if tenant is not None else self.tenant)


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(WEB_TEMPLATES), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    return env


ENV = templates()


def render(r: Req | None, name: str, status: int = 200, *, lang: str = "de", csrf: str = "",
           **values: Any) -> HTMLResponse:
    lang = r.lang if r else lang
    zone = r.dep.schedule.zone if r else dt.UTC
    html = ENV.get_template(name).render(
        t=lambda key, **kw: i18n.translate(lang, key, **kw), lang=lang, user=r.user if r else None,
        csrf=r.csrf if r else csrf, tenant=r.tenant if r else None, may=r.may if r else (lambda *a: False),
        local=lambda stamp: i18n.local_time(stamp, zone, lang), num=lambda v: i18n.number(v, lang),
        term=lambda group, value: i18n.term(lang, group, value),
        path=r.request.url.path if r else "/", **values)
    return HTMLResponse(html, status_code=status)


def lang_of(request: Request) -> str:
    lang = request.cookies.get("lang", "de")
    return lang if lang in i18n.LANGUAGES else "de"


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _session_user(dep: Deployment, request: Request) -> tuple[Any, str] | None:
    if dep.trusted_header and client_of(request) in dep.trusted_proxies:
        name = request.headers.get(dep.trusted_header)
        if name:
            user = dep.store().get_user(name.strip())
            if user is not None:
                return user, _proxy_csrf(dep, request, user.name)
    sid = request.cookies.get(security.SESSION_COOKIE)
    if not sid:
        return None
    session = dep.store().get_session(sid)
    return (session.user, session.csrf) if session else None


def _proxy_csrf(dep: Deployment, request: Request, name: str) -> str:
    """Behind a trusted proxy there is no session: the CSRF token is an HMAC of a per-process key."""
    import hashlib
    import hmac

    key = getattr(dep, "_proxy_key", None)
    if key is None:
        key = security.new_token().encode()
        dep._proxy_key = key  # type: ignore[attr-defined]
    return hmac.new(key, name.encode(), hashlib.sha256).hexdigest()


View = Callable[[Req], Response]


def page(view: View, permission: str = "view") -> Callable[[Request], Awaitable[Response]]:
    """The async endpoint around a synchronous view: auth, CSRF, tenant rights, errors."""

    async def endpoint(request: Request) -> Response:
        form: dict[str, str] = {}
        if request.method == "POST":
            data = await request.form()
            form = {k: v for k, v in data.items() if isinstance(v, str)}
        return await run_in_threadpool(_handle, view, permission, request, form)

    return endpoint


def _handle(view: View, permission: str, request: Request, form: dict[str, str]) -> Response:
    dep: Deployment = request.app.state.dep
    lang = lang_of(request)
    try:
        found = _session_user(dep, request)
        if found is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        user, csrf = found
        r = Req(request, form, user, csrf, lang, dep, request.path_params.get("tenant"))
        if request.method == "POST" and not security.same(form.get("csrf"), csrf):
            return render(r, "error.html", 403, message=r.t("csrf"))
        if r.tenant is not None:
            if user.tenant is not None and user.tenant != r.tenant:
                raise NotFound()  # a customer admin does not learn which other tenants exist
            if dep.store().get_tenant(r.tenant) is None:
                raise NotFound()
        if not r.may(permission):
            raise Forbidden()
        return view(r)
    except NotFound:
        return render(None, "error.html", 404, lang=lang, message=i18n.translate(lang, "not_found"))
    except Forbidden:
        return render(None, "error.html", 403, lang=lang, message=i18n.translate(lang, "forbidden"))
    except CasaviSyncError as exc:
        return render(None, "error.html", 400, lang=lang, message=str(exc))
    except Exception:
        log.exception("console request %s %s failed", request.method, request.url.path)
        return render(None, "error.html", 500, lang=lang, message=i18n.translate(lang, "internal"))


# -- login, logout, language -------------------------------------------------------------------------

def _safe_next(target: str | None) -> str:
    """Only paths on this site (no scheme, no //host): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/tenants"
    return target


async def login(request: Request) -> Response:
    return await run_in_threadpool(_login, request, dict((await request.form()).items())
                                   if request.method == "POST" else {})


def _login(request: Request, form: dict[str, Any]) -> Response:
    dep: Deployment = request.app.state.dep
    lang = lang_of(request)
    secure = security.cookie_secure(request.url.scheme, request.url.hostname)
    nxt = _safe_next(str(form.get("next") or request.query_params.get("next") or ""))
    error = None
    if request.method == "POST":
        if not security.same(str(form.get("csrf") or ""), request.cookies.get(security.LOGIN_COOKIE)):
            error = i18n.translate(lang, "csrf")
        else:
            try:
                user = users.authenticate(dep.context(actor="web"), str(form.get("user") or "")[:64],
                                          str(form.get("password") or ""), client_of(request))
            except AuthError as exc:
                error = i18n.translate(lang, "throttled" if "too many" in str(exc) else "wrong_login")
            else:
                sid, csrf = security.new_token(), security.new_token()
                dep.store().create_session(sid, user.name, csrf, dt.timedelta(hours=security.SESSION_HOURS))
                done = RedirectResponse(nxt, status_code=303)
                done.set_cookie(security.SESSION_COOKIE, sid, max_age=int(security.SESSION_HOURS * 3600),
                                    httponly=True, samesite="strict", secure=secure, path="/")
                done.delete_cookie(security.LOGIN_COOKIE, path="/login")
                return done
    token = security.new_token()
    response = render(None, "login.html", 400 if error else 200, lang=lang, csrf=token, error=error, next=nxt)
    response.set_cookie(security.LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure,
                        path="/login")
    return response


def _logout(r: Req) -> Response:
    sid = r.request.cookies.get(security.SESSION_COOKIE)
    if sid:
        r.dep.store().delete_session(sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


async def language(request: Request) -> Response:
    code = request.path_params["code"]
    response = RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    if code in i18n.LANGUAGES:
        response.set_cookie("lang", code, max_age=365 * 86400, samesite="lax", httponly=True,
                            secure=security.cookie_secure(request.url.scheme, request.url.hostname))
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/tenants", status_code=303)


def create_app(dep: Deployment) -> Any:
    """The ASGI application (security headers around Starlette)."""
    from engine.web import views

    routes = [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", page(_logout), methods=["POST"]),
        Route("/lang/{code}", language),
        Mount("/static", StaticFiles(directory=WEB_STATIC), name="static"),
        *views.routes(),
    ]
    app = Starlette(routes=routes)
    app.state.dep = dep
    if isinstance(dep.ctx.state_path, Path) and not dep.ctx.state_path.exists():
        raise ConfigError(f"no state file at {dep.ctx.state_path}; register a tenant first (casavi-sync tenant add)")
    return security.SecurityHeaders(app)
