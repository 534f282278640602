"""The casavi API v2 client (target of the sync): reads, create-or-update writes, archive/restore.

casavi authenticates with a key/secret pair per customer account and then wants the short-lived
token in its own header on every call. This client hides that: it authenticates lazily, renews
the token shortly before ``expiresAt``, and on a 401 renews it once and repeats the call (only one
thread renews; the others wait and reuse the new token). Every API name (paths, header, envelope,
query parameters, error body keys) comes from ``ConnectorConfig.casavi``.

    client = CasaviClient(load_connector_config(), key, secret)
    for page in client.iter_pages("units", include_archived=True):
        ...
    client.put("units", "u-4711", {"propertyId": "p-1", "name": "WE 03"})   # -> WriteResult

The sync calls the write methods from a pool of ``write_concurrency`` threads: httpx.Client is
thread-safe, the token and the counters are guarded by locks, and one shared rate limiter paces
all threads. A record casavi refuses (400/404/409/422) raises ``CasaviRejected``, a RecordError the
sync reports before it goes on; a rejected key/secret raises ``AuthError``; an unreachable service
``NetworkError``. Key, secret and token never appear in messages, logs or ``repr``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from engine.connectors.config import CasaviConfig, ConnectorConfig
from engine.connectors.paging import ProgressGuard
from engine.connectors.retry import Clock, Sleep, TransientResponse, http_timeout, pacing
from engine.connectors.scalara import json_body
from engine.errors import AuthError, ConfigError, NetworkError, RecordError
from engine.text import bounded

log = logging.getLogger(__name__)

SERVICE = "casavi"
KEY_REJECTED = (
    "casavi rejected the API key/secret (wrong, deleted, or the token could not be renewed). "
    "A casavi admin creates a new pair under Administration > API-Zugangsdaten; save it with "
    "`casavi-sync tenant add TENANT` (it replaces the stored pair)."
)


@dataclass(frozen=True)
class WriteResult:
    status: int
    created: bool
    body: dict[str, Any]


@dataclass
class CasaviRejected(RecordError):
    """casavi refused one record (validation, unknown reference, quota, not archived ...).

    ``reason`` reads like ``unknown_reference on contactId: contact 'c-9' does not exist``;
    ``field`` is the first error's field; ``errors`` the full list casavi sent.
    """

    status: int = 0
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = super().as_dict()
        data["status"] = self.status
        data["casaviErrors"] = bounded(list(self.errors), items=20)   # casavi may echo the value it refused
        return data


class _Unauthorized(Exception):
    """Internal: a call answered 401; the caller renews the token once."""


class CasaviClient:
    """One casavi customer account; safe to share between writer threads."""

    def __init__(self, config: ConnectorConfig, key: str, secret: str, *,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Sleep = time.sleep, clock: Clock = time.time,
                 rng: Callable[[], float] | None = None) -> None:
        self.config: CasaviConfig = config.casavi
        cfg = self.config
        self._key = key
        self._secret = secret
        self._clock = clock
        self.stats, self.limiter, self._retrier = pacing(SERVICE, cfg, sleep=sleep, clock=clock, rng=rng)
        timeout = http_timeout(cfg)
        limits = httpx.Limits(max_connections=max(10, 2 * cfg.write_concurrency),
                              max_keepalive_connections=cfg.write_concurrency + 2)
        self._http = httpx.Client(base_url=cfg.base_url, transport=transport, timeout=timeout,
                                  limits=limits, follow_redirects=False)
        self._auth_lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0                   # clock time after which the token is renewed first
        self._generation = 0                   # bumps with every new token

    def __repr__(self) -> str:
        return f"CasaviClient(base_url={self.config.base_url!r})"

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CasaviClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self) -> None:
        """Get a fresh token now (also proves a key/secret pair before it is saved)."""
        with self._auth_lock:
            self._authenticate_locked()

    def _authenticate_locked(self) -> None:
        cfg = self.config
        credentials = {cfg.key_field: self._key, cfg.secret_field: self._secret}

        def parse(response: httpx.Response) -> tuple[str, Any]:
            status = response.status_code
            if status in (400, 401, 403):
                raise AuthError(KEY_REJECTED)
            if not 200 <= status < 300:
                raise NetworkError(f"{SERVICE}: {cfg.auth_method} {cfg.auth_path} answered HTTP {status}")
            body = json_body(response)
            token = body.get(cfg.token_field) if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise TransientResponse(f"answer without {cfg.token_field!r}")
            return token, body.get(cfg.expires_field)

        token, expires = self._retrier.run(
            cfg.auth_method, cfg.auth_path,
            lambda: self._http.request(cfg.auth_method, cfg.auth_path, json=credentials), parse)
        now = self._clock()
        expires_at = _timestamp(expires)
        lifetime = expires_at - now if expires_at is not None else cfg.default_lifetime_s
        if lifetime <= 0:
            # casavi just issued this token, so it is valid: our clock is ahead of casavi's. Trust
            # the default lifetime; a real expiry still ends in one 401 and one renewal.
            lifetime = cfg.default_lifetime_s
        margin = min(cfg.refresh_before_s, max(lifetime, 0.0) / 2)
        if self._token is not None:
            self.stats.incr("reauths")
        self._token = token
        self._renew_at = now + lifetime - margin
        self._generation += 1
        log.debug("%s: new token; renewed again in %.0f s", SERVICE, lifetime - margin)

    def _current_token(self) -> tuple[str, int]:
        with self._auth_lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._authenticate_locked()
            assert self._token is not None
            return self._token, self._generation

    def _renew_after_401(self, generation: int) -> None:
        with self._auth_lock:
            if self._generation == generation:      # nobody renewed since this token was used
                self._authenticate_locked()

    # -- reads ------------------------------------------------------------------------------

    def iter_pages(self, kind: str, *, include_archived: bool = False,
                   modified_after: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's records, following the envelope's next link until it is null.

        A next link seen before, ``max_idle_pages`` pages in a row without a new record, or more
        than ``max_pages`` pages, is a server fault -> NetworkError. A next link on another host is followed on the configured host only
        (the token is never sent elsewhere).

        With ``include_archived`` every record carries ``"archived": true|false``. The contract
        names no field that marks an archived record in a read; it only says that archived records
        are left out unless ``includeArchived`` is asked for. So the active records are listed
        first (ids only), and a record of the full listing that was not among them is archived.
        """
        if not include_archived:
            yield from self._walk(kind, include_archived=False, modified_after=modified_after)
            return
        active: set[str] = set()
        for page in self._walk(kind, include_archived=False, modified_after=modified_after):
            active.update(str(rec.get("id")) for rec in page if isinstance(rec, dict))
        for page in self._walk(kind, include_archived=True, modified_after=modified_after):
            yield [{**rec, "archived": str(rec.get("id")) not in active} if isinstance(rec, dict) else rec
                   for rec in page]

    def _walk(self, kind: str, *, include_archived: bool,
              modified_after: str | None) -> Iterator[list[dict[str, Any]]]:
        cfg = self.config
        url: str = self._kind_path(kind)
        params: dict[str, str] | None = {cfg.page_param: str(cfg.first_page)}
        assert params is not None
        if include_archived:
            params[cfg.include_archived_param] = cfg.true_value
        if modified_after is not None:
            params[cfg.modified_after_param] = modified_after
        seen: set[str] = set()
        progress = ProgressGuard(SERVICE, url, cfg.max_idle_pages)
        for _ in range(cfg.max_pages):
            self.stats.incr("reads")
            items, next_link = self._call("GET", url, params=params, parse=self._envelope)
            self.stats.incr("pages")
            yield items
            if next_link is None:
                return
            progress.page(items)
            url, params = self._follow(next_link), None
            if url in seen:
                raise NetworkError(f"{SERVICE}: GET {httpx.URL(url).path} links back to a page it "
                                   "returned before (pagination loop); stopped")
            seen.add(url)
        raise NetworkError(f"{SERVICE}: GET {self._kind_path(kind)} did not end after {cfg.max_pages} pages")

    def fetch_all(self, kind: str, *, include_archived: bool = False,
                  modified_after: str | None = None) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for page in self.iter_pages(kind, include_archived=include_archived, modified_after=modified_after):
            records.extend(page)
        return records

    def get(self, kind: str, ref_id: str) -> dict[str, Any] | None:
        """One record by reference id; None when casavi does not know it (404)."""
        endpoint = self.config.endpoints["get"]
        path = endpoint.render(kind_path=self._kind_path(kind), id=self._ref(ref_id, kind))

        def parse(response: httpx.Response) -> dict[str, Any] | None:
            if response.status_code == 404:
                return None
            self._raise_for_error(response, endpoint.method, path, kind, ref_id, rejectable=False)
            body = json_body(response)
            if not isinstance(body, dict):
                raise TransientResponse("answer is no JSON object")
            return body

        self.stats.incr("reads")
        result: dict[str, Any] | None = self._call(endpoint.method, path, parse=parse)
        return result

    # -- writes -----------------------------------------------------------------------------

    def put(self, kind: str, ref_id: str, payload: dict[str, Any]) -> WriteResult:
        """Create or update one record by reference id (201 created, 200 updated)."""
        path = self.config.endpoints["upsert"].render(kind_path=self._kind_path(kind),
                                                      id=self._ref(ref_id, kind))
        return self._write("upsert", path, kind, ref_id, payload)

    def put_responsibility(self, property_id: str, contact_id: str, payload: dict[str, Any]) -> WriteResult:
        target = f"{property_id}/{contact_id}"
        path = self.config.endpoints["responsibility_put"].render(
            property_id=self._ref(property_id, "responsibilities", target),
            contact_id=self._ref(contact_id, "responsibilities", target))
        return self._write("responsibility_put", path, "responsibilities", target, payload)

    def delete_responsibility(self, property_id: str, contact_id: str) -> WriteResult:
        """Remove a responsibility; one that is already gone gives WriteResult(status=404)."""
        target = f"{property_id}/{contact_id}"
        path = self.config.endpoints["responsibility_delete"].render(
            property_id=self._ref(property_id, "responsibilities", target),
            contact_id=self._ref(contact_id, "responsibilities", target))
        return self._write("responsibility_delete", path, "responsibilities", target, None, gone_ok=True)

    def archive(self, kind: str, ref_id: str) -> WriteResult:
        return self._record_action("archive", kind, ref_id)

    def restore(self, kind: str, ref_id: str) -> WriteResult:
        return self._record_action("restore", kind, ref_id)

    def delete(self, kind: str, ref_id: str) -> WriteResult:
        """Delete an archived record (casavi answers 409 for a live one); gone already -> 404 result."""
        return self._record_action("delete", kind, ref_id, gone_ok=True)

    def _record_action(self, name: str, kind: str, ref_id: str, *, gone_ok: bool = False) -> WriteResult:
        path = self.config.endpoints[name].render(kind_path=self._kind_path(kind), id=self._ref(ref_id, kind))
        return self._write(name, path, kind, ref_id, None, gone_ok=gone_ok)

    def _write(self, name: str, path: str, kind: str, target: str, payload: dict[str, Any] | None, *,
               gone_ok: bool = False) -> WriteResult:
        endpoint = self.config.endpoints[name]

        def parse(response: httpx.Response) -> WriteResult:
            status = response.status_code
            if status == 404 and gone_ok:
                return WriteResult(status, False, {})
            self._raise_for_error(response, endpoint.method, path, kind, target, rejectable=True)
            body = json_body(response) if response.content.strip() else {}
            return WriteResult(status, status == self.config.created_status,
                               body if isinstance(body, dict) else {})

        self.stats.incr("writes")
        result: WriteResult = self._call(endpoint.method, path, json=payload, parse=parse)
        return result

    # -- internals --------------------------------------------------------------------------

    def _call(self, method: str, url: str, *, parse: Callable[[httpx.Response], Any],
              params: dict[str, str] | None = None, json: Any = None) -> Any:
        """One logical call: token, rate limit, retries, and a renewal after each 401.

        The token is taken before every attempt, so a retry sequence longer than a token's life
        renews on the way instead of sending an expired token. A 401 means the token used is
        expired or revoked: it is renewed (unless another thread already did) and the call goes on.
        Only ``authenticate`` refusing the key/secret means the credentials are wrong; casavi
        refusing the tokens it just issued, again and again, is an AuthError of its own.
        """
        shown = httpx.URL(url).path
        header = self.config.token_header
        used = [0]                                  # generation of the token the last attempt sent

        def send() -> httpx.Response:
            token, used[0] = self._current_token()
            return self._http.request(method, url, params=params, json=json, headers={header: token})

        def parse_401(response: httpx.Response) -> Any:
            if response.status_code == 401:
                raise _Unauthorized
            return parse(response)

        limit = self._retrier.policy.max_attempts
        for _ in range(limit):
            try:
                return self._retrier.run(method, shown, send, parse_401)
            except _Unauthorized:
                log.info("%s: %s %s answered 401; renewing the token", SERVICE, method, shown)
            self._renew_after_401(used[0])          # AuthError(KEY_REJECTED) if the pair is refused
        raise AuthError(f"casavi accepted the API key/secret but refused the tokens it issued ({limit} in a row, "
                        f"{method} {shown}). Try again later; if it persists, a casavi admin checks the API "
                        "access under Administration > API-Zugangsdaten.")

    def _envelope(self, response: httpx.Response) -> tuple[list[dict[str, Any]], str | None]:
        cfg = self.config
        self._raise_for_error(response, "GET", response.request.url.path, None, None, rejectable=False)
        body = json_body(response)
        items = body.get(cfg.items_key) if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise TransientResponse(f"unexpected envelope (no list under {cfg.items_key!r})")
        assert isinstance(body, dict)
        if cfg.next_link[0] not in body:
            raise TransientResponse(f"unexpected envelope (no {cfg.next_link[0]!r})")
        node: Any = body
        for part in cfg.next_link:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and (not isinstance(node, str) or not node):
            raise TransientResponse("unexpected envelope (next link is not a string)")
        return items, node

    def _follow(self, link: str) -> str:
        """An absolute URL for a next link, always on the configured origin."""
        base = self._http.base_url
        target = base.join(link)
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            log.warning("%s: next link points at another host; following it on %s", SERVICE, base.host)
            target = base.copy_with(raw_path=target.raw_path)
        return str(target)

    def _raise_for_error(self, response: httpx.Response, method: str, path: str, kind: str | None,
                         target: str | None, *, rejectable: bool) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 403:
            raise AuthError(f"casavi refused {method} {path} (403): the API key lacks the rights for it. "
                            "A casavi admin checks the pair under Administration > API-Zugangsdaten.")
        if rejectable and status in self.config.rejected_statuses:
            raise self._rejection(response, kind, target)
        raise NetworkError(f"{SERVICE}: {method} {path} answered HTTP {status}{self._short_error(response)}")

    def _rejection(self, response: httpx.Response, kind: str | None, target: str | None) -> CasaviRejected:
        cfg = self.config
        try:
            body = json_body(response)
        except TransientResponse:
            body = None
        body = body if isinstance(body, dict) else {}
        message = str(body.get(cfg.error_message_key) or "").strip()
        raw_errors = body.get(cfg.errors_key)
        errors = [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
        field: str | None = None
        if errors:
            field = str(errors[0].get(cfg.error_field_key)) if errors[0].get(cfg.error_field_key) else None
            code = str(errors[0].get(cfg.error_code_key) or f"HTTP {response.status_code}")
            head = f"{code} on {field}" if field else code
        else:
            codes = [body[k] for k in cfg.top_error_code_keys if body.get(k)]
            head = str(codes[0]) if codes else f"HTTP {response.status_code}"
        reason = f"{head}: {message}" if message else head
        return CasaviRejected(reason=reason[:500], resource=kind, target_id=target, field=field,
                              details={"body": body}, status=response.status_code, errors=errors)

    def _short_error(self, response: httpx.Response) -> str:
        try:
            body = json_body(response)
        except TransientResponse:
            return ""
        if not isinstance(body, dict):
            return ""
        message = body.get(self.config.error_message_key)
        return f": {str(message)[:200]}" if message else ""

    def _kind_path(self, kind: str) -> str:
        try:
            return self.config.kinds[kind]
        except KeyError:
            known = ", ".join(sorted(self.config.kinds))
            raise ConfigError(f"unknown casavi kind {kind!r}; configured: {known}") from None

    def _ref(self, ref_id: str, kind: str, target: str | None = None) -> str:
        """A reference id, checked before it goes into a path (it is also the record's identity)."""
        if not isinstance(ref_id, str) or not self.config.reference_id_pattern.fullmatch(ref_id):
            raise CasaviRejected(reason=f"invalid reference id {ref_id!r} (allowed: "
                                 f"{self.config.reference_id_pattern.pattern})",
                                 resource=kind, target_id=target or str(ref_id), field="id")
        return quote(ref_id, safe="")


def _timestamp(value: Any) -> float | None:
    """POSIX seconds of an ISO 8601 timestamp (``Z`` or offset); None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
