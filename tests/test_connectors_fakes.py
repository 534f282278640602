"""Stateful fakes of both APIs for the connector tests, plugged in through httpx.MockTransport.

Deliberately small and independent of engine/sandbox: they speak the contract of
../shared/API.md as encoded in engine/connectors/default.yaml, and let a test queue faults
(status, headers, body, or an exception) in front of the normal answers.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.connectors import load_connector_config

SCALARA_TOKEN = "scl_" + "A1b2C3d4E5f6G7h8I9j0" * 2
CASAVI_KEY = "key-7f3a9c1e"
CASAVI_SECRET = "s3cr3t-Zz9-do-not-leak"


def config(env: dict[str, str] | None = None) -> Any:
    return load_connector_config(env=env or {})


class FakeClock:
    """POSIX-seconds clock; ``sleep`` advances it and records every delay (thread-safe)."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._lock = threading.Lock()
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


Fault = tuple[int, dict[str, str], Any] | BaseException


@dataclass
class Recorder:
    """What a fake saw: every request, and the faults still queued per predicate."""

    requests: list[httpx.Request] = field(default_factory=list)
    faults: list[tuple[Callable[[httpx.Request], bool], Fault]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, times: int, fault: Fault, when: Callable[[httpx.Request], bool] = lambda r: True) -> None:
        for _ in range(times):
            self.faults.append((when, fault))

    def take_fault(self, request: httpx.Request) -> httpx.Response | None:
        with self.lock:
            self.requests.append(request)
            index = next((i for i, (when, _) in enumerate(self.faults) if when(request)), None)
            if index is None:
                return None
            fault = self.faults.pop(index)[1]
        if isinstance(fault, BaseException):
            raise fault
        status, headers, body = fault
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, headers=headers, content=content)


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


SCALARA_RESOURCES = ("properties", "buildings", "units", "contacts", "ownerships", "usages", "property-roles")


class FakeScalara(Recorder):
    """Cursor-paginated SCALARA export API with one valid token; only the contract's paths
    (an account endpoint such as ``/me`` answers only when ``me`` is set)."""

    def __init__(self, records: dict[str, list[dict[str, Any]]] | None = None,
                 me: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.records = records or {}
        self.me = me
        self.loop_cursor = False
        self.endless: str | None = None          # "empty" | "same": a walk that never progresses

    def handler(self, request: httpx.Request) -> httpx.Response:
        fault = self.take_fault(request)
        if fault is not None:
            return fault
        if request.headers.get("authorization") != f"Bearer {SCALARA_TOKEN}":
            return _json(401, {"error": "invalid_token", "message": "token unknown or revoked"})
        parts = request.url.path.removeprefix("/export/v1/").split("/")
        if parts == ["me"] and self.me is not None:
            return _json(200, self.me)
        resource = parts[0]
        if resource not in SCALARA_RESOURCES:
            return _json(404, {"error": "not_found", "message": "no such resource"})
        rows = [r for r in self.records.get(resource, [])
                if request.url.params.get("includeDeleted") == "true" or not r.get("deleted")]
        if len(parts) == 2:
            found = [r for r in rows if r["id"] == parts[1]]
            return _json(200, found[0]) if found else _json(404, {"error": "not_found", "message": "-"})
        limit = int(request.url.params.get("limit", "100"))
        if not 1 <= limit <= 500:
            return _json(400, {"error": "invalid_parameter", "message": "limit out of range"})
        cursor = request.url.params.get("cursor", "0")
        start = int(cursor) if cursor.isdigit() else 0
        page = rows[start:start + limit]
        nxt = str(start + limit) if start + limit < len(rows) else None
        if self.loop_cursor:
            nxt = "0"
        if self.endless is not None:             # fresh cursors forever, nothing new behind them
            page = [] if self.endless == "empty" else rows[:limit]
            nxt = f"c{len(self.requests)}"
        return _json(200, {"items": page, "nextCursor": nxt})


class FakeCasavi(Recorder):
    """casavi v2: authenticate, token header, page/_links.next lists, upserts and rejections."""

    BASE = "https://api.mycasavi.com"

    def __init__(self, clock: Callable[[], float], *, lifetime_s: float = 3600, page_size: int = 2,
                 link_base: str | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.page_size = page_size
        self.link_base = link_base or self.BASE
        self.tokens: dict[str, float] = {}
        self.auth_calls = 0
        self.unauthorized = 0
        self.store: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in
                                                          ("properties", "units", "contacts", "contracts")}
        self.archived: set[tuple[str, str]] = set()
        self.responsibilities: dict[tuple[str, str], dict[str, Any]] = {}
        self.loop_links = False
        self.endless_links = False

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    def handler(self, request: httpx.Request) -> httpx.Response:
        fault = self.take_fault(request)
        if fault is not None:
            return fault
        path = request.url.path
        if path == "/v2/authenticate":
            body = json.loads(request.content)
            with self.lock:
                self.auth_calls += 1
                if body != {"key": CASAVI_KEY, "secret": CASAVI_SECRET}:
                    return _json(401, {"message": "invalid credentials"})
                token = f"tok-{self.auth_calls}"
                expires = self.clock() + self.lifetime_s
                self.tokens[token] = expires
            stamp = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat().replace("+00:00", "Z")
            return _json(200, {"token": token, "expiresAt": stamp})
        with self.lock:
            expiry = self.tokens.get(request.headers.get("token", ""))
            if expiry is None or self.clock() >= expiry:
                self.unauthorized += 1
                return _json(401, {"message": "token expired or unknown"})
        parts = path.removeprefix("/v2/").split("/")
        if len(parts) == 4 and parts[2] == "responsibilities":
            return self._responsibility(request, parts[1], parts[3])
        kind = parts[0]
        if request.method == "GET" and len(parts) == 1:
            return self._list(request, kind)
        ref = parts[1]
        if len(parts) == 3:
            key = (kind, ref)
            if ref not in self.store[kind]:
                return _json(404, {"error": "not_found", "message": "unknown record"})
            (self.archived.add if parts[2] == "archive" else self.archived.discard)(key)
            return _json(200, self.store[kind][ref])
        if request.method == "GET":
            rec = self.store[kind].get(ref)
            return _json(200, rec) if rec else _json(404, {"error": "not_found", "message": "-"})
        if request.method == "DELETE":
            if ref not in self.store[kind]:
                return _json(404, {"error": "not_found", "message": "-"})
            if (kind, ref) not in self.archived:
                return _json(409, {"code": "not_archived", "message": "archive the record first"})
            del self.store[kind][ref]
            return httpx.Response(204)
        return self._put(kind, ref, json.loads(request.content))

    def _put(self, kind: str, ref: str, body: dict[str, Any]) -> httpx.Response:
        if kind == "properties" and not body.get("name"):
            return _json(400, {"message": "validation failed", "errors": [{"field": "name", "code": "required"}]})
        if kind == "contracts" and body.get("contactId") not in self.store["contacts"]:
            return _json(422, {"message": f"contact {body.get('contactId')!r} does not exist",
                               "errors": [{"field": "contactId", "code": "unknown_reference"}]})
        if kind == "units" and len(self.store["units"]) >= 3 and ref not in self.store["units"]:
            return _json(409, {"error": "unit_quota_exceeded", "message": "unit quota of 3 reached"})
        with self.lock:
            created = ref not in self.store[kind]
            self.store[kind][ref] = {"id": ref, **body}
        return _json(201 if created else 200, self.store[kind][ref])

    def _responsibility(self, request: httpx.Request, prop: str, contact: str) -> httpx.Response:
        if request.method == "DELETE":
            gone = self.responsibilities.pop((prop, contact), None)
            return httpx.Response(204) if gone else _json(404, {"error": "not_found", "message": "-"})
        created = (prop, contact) not in self.responsibilities
        self.responsibilities[(prop, contact)] = json.loads(request.content)
        return _json(201 if created else 200, self.responsibilities[(prop, contact)])

    def _list(self, request: httpx.Request, kind: str) -> httpx.Response:
        rows = [r for ref, r in sorted(self.store[kind].items())
                if request.url.params.get("includeArchived") == "true" or (kind, ref) not in self.archived]
        page = int(request.url.params.get("page", "1"))
        chunk = rows[(page - 1) * self.page_size: page * self.page_size]
        more = page * self.page_size < len(rows)
        nxt_page = 1 if self.loop_links else page + 1
        extra = "&includeArchived=true" if request.url.params.get("includeArchived") == "true" else ""
        nxt = f"{self.link_base}/v2/{kind}?page={nxt_page}{extra}" if more else None
        if self.endless_links:                   # ever new pages, all empty
            chunk, nxt = [], f"{self.link_base}/v2/{kind}?page={page + 1}{extra}"
        return _json(200, {"list": chunk, "_links": {"next": nxt}})
