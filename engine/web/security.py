"""Who is asking, and may they: sessions, CSRF, the trusted proxy header, security headers.

- A session is a random 32-byte id in an HttpOnly, SameSite=Strict cookie (Secure unless the
  console is reached over plain HTTP on loopback, for a developer's own machine); the state file
  keeps only its SHA-256, its user and its CSRF token. Sessions end after ``SESSION_HOURS``.
- Every POST carries the session's CSRF token in a hidden field (compared in constant time); the
  login form, which has no session yet, uses a double-submit cookie.
- With ``trusted_header`` set (e.g. ``X-Remote-User``), a request from one of ``trusted_proxies``
  carrying that header is the named console user; the header from anyone else is ignored.
- Every response gets a CSP without inline script (frame-ancestors 'none'), nosniff, no referrer,
  and ``Cache-Control: no-store`` so pages never sit in a shared cache or the back-forward history.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

SESSION_COOKIE = "casavi_session"
LOGIN_COOKIE = "casavi_login"
SESSION_HOURS = 8.0

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class SecurityHeaders:
    """Pure ASGI middleware (no per-request task overhead) adding ``HEADERS`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_secure(scheme: str, host: str | None) -> bool:
    """Secure cookies everywhere except plain HTTP on loopback (a browser would drop them there)."""
    return scheme == "https" or not is_loopback(host)
