"""The SCALARA export API client (read-only source of the sync).

One class, one httpx client, an injectable transport (tests plug ``httpx.MockTransport`` in, the
sandbox its own app; production and tests run the same code). Every name of the API (paths, query
parameters, envelope keys, the auth header) comes from ``ConnectorConfig.scalara``: SCALARA has not
published its export API, so none of it is hard-coded here.

    with ScalaraClient(load_connector_config(), token) as scalara:
        scalara.check_token()                          # check a token before saving it
        for page in scalara.iter_pages("units", updated_since="2025-01-01T00:00:00Z"):
            ...

Errors: a wrong or revoked token -> ``AuthError`` telling the admin where to generate a new one;
retries exhausted, malformed answers -> ``NetworkError``; parameters the server rejects ->
``ConfigError`` (the names or values come from configuration). The token never appears in
messages, logs or ``repr``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from engine.connectors.config import ConnectorConfig, ScalaraConfig
from engine.connectors.jsonsafe import decode, flag_records, suspect_page
from engine.connectors.paging import ProgressGuard
from engine.connectors.retry import Clock, Sleep, TransientResponse, http_timeout, pacing
from engine.errors import AuthError, ConfigError, NetworkError, OperatorError

log = logging.getLogger(__name__)

SERVICE = "SCALARA"
MAX_CURSOR_RESTARTS = 2  # a walk whose cursor SCALARA refuses (400) starts again from the first page
TOKEN_REJECTED = (
    "SCALARA rejected the token (wrong or revoked). An admin generates a new one in SCALARA: "
    "Systemeinstellungen -> Externe Anbindungen -> casavi -> Generieren; then save it with "
    "`casavi-sync connect`."
)


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON body; an undecodable one is transient (truncated, garbled, nested too deeply).
    Records in it may still hold values JSON cannot carry: pages are checked by ``ScalaraClient``."""
    return decode(response.content)[0]


class ScalaraClient:
    """Reads SCALARA resources page by page; thread-safe (httpx.Client is, and Stats is locked)."""

    def __init__(self, config: ConnectorConfig, token: str, *,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Sleep = time.sleep, clock: Clock = time.time,
                 rng: Callable[[], float] | None = None) -> None:
        self.config: ScalaraConfig = config.scalara
        cfg = self.config
        self.stats, self.limiter, self._retrier = pacing(SERVICE, cfg, sleep=sleep, clock=clock, rng=rng)
        timeout = http_timeout(cfg)
        auth_value = f"{cfg.auth_scheme} {token}" if cfg.auth_scheme else token
        self._http = httpx.Client(base_url=cfg.base_url, transport=transport, timeout=timeout,
                                  headers={cfg.auth_header: auth_value}, follow_redirects=False)

    def __repr__(self) -> str:
        return f"ScalaraClient(base_url={self.config.base_url!r})"

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ScalaraClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- public API -------------------------------------------------------------------------

    def check_token(self) -> dict[str, Any] | None:
        """Prove the token works before it is saved; return the account, if SCALARA tells it.

        The proof is a call the contract has: the first page of the first configured resource
        with a page size of 1. An account endpoint (``me_path``) is not in the contract: it is asked
        only when configured, and its absence or failure is not an error (None: account unknown).
        """
        cfg = self.config
        self._page(self._resource_path(next(iter(cfg.resources))), {cfg.page_size_param: "1"})
        if not cfg.me_path:
            return None
        try:
            body = self._get(cfg.me_path, None, allow_404=True)
        except OperatorError as exc:
            log.info("%s: the account endpoint %s did not answer usefully (%s); account unknown",
                     SERVICE, cfg.me_path, type(exc).__name__)
            return None
        return body if isinstance(body, dict) else None

    def iter_pages(self, resource: str, *, updated_since: str | None = None,
                   include_deleted: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's records (cursor pagination); tombstones pass through unchanged.

        A small state machine: state = the cursor; start without one, stop when the envelope's
        next cursor is null. A cursor seen twice, ``max_idle_pages`` pages in a row with only records
        seen before, ``max_empty_pages`` empty ones in a row (the contract allows empty pages with a
        next cursor), or more pages than ``max_pages`` is a server fault -> NetworkError rather than an
        endless run.
        """
        cfg = self.config
        path = self._resource_path(resource)
        params: dict[str, str] = {cfg.page_size_param: str(cfg.page_size)}
        if updated_since is not None:
            params[cfg.updated_since_param] = updated_since
        if include_deleted:
            params[cfg.include_deleted_param] = cfg.true_value
        cursor: str | None = None
        seen: set[str] = set()
        progress = ProgressGuard(SERVICE, path, cfg.max_idle_pages, cfg.max_empty_pages)
        yielded: set[str] = set()          # ids handed out so far (for a restart)
        skip: frozenset[str] = frozenset()   # after a restart: ids handed out before it
        restarts = 0
        for _ in range(cfg.max_pages):
            query = dict(params)
            if cursor is not None:
                query[cfg.cursor_param] = cursor
            try:
                items, cursor = self._page(path, query)
            except ConfigError as exc:
                if cursor is None or restarts >= MAX_CURSOR_RESTARTS:
                    raise
                # The contract gives a cursor no lifetime; one refused in the middle of a walk
                # (expired while requests were retried) is no configuration problem. Order is
                # stable by id, so a new walk from the start, skipping what was handed out
                # already, yields exactly the rest.
                restarts += 1
                log.info("%s GET %s: the cursor was refused (%s); reading again from the first page, "
                         "skipping %d records already read", SERVICE, path, exc, len(yielded))
                cursor, seen, skip = None, set(), frozenset(yielded)
                progress = ProgressGuard(SERVICE, path, cfg.max_idle_pages, cfg.max_empty_pages)
                continue
            self.stats.incr("pages")
            fresh = [i for i in items if _id_key(i) not in skip] if skip else items
            yielded.update(_id_key(i) for i in fresh)
            yield fresh
            if cursor is None:
                return
            progress.page(items)                # re-read records are progress of a new walk
            if cursor in seen:
                raise NetworkError(f"{SERVICE}: GET {path} returned a cursor it returned before "
                                   "(pagination loop); stopped")
            seen.add(cursor)
        raise NetworkError(f"{SERVICE}: GET {path} did not end after {cfg.max_pages} pages; stopped")

    def fetch_all(self, resource: str, *, updated_since: str | None = None,
                  include_deleted: bool = False) -> list[dict[str, Any]]:
        """All records of a resource (every page, in the server's stable order)."""
        records: list[dict[str, Any]] = []
        for page in self.iter_pages(resource, updated_since=updated_since, include_deleted=include_deleted):
            records.extend(page)
        return records

    def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """One record by id; None when SCALARA does not know it (404)."""
        path = self.config.record_path.format(path=self._resource_path(resource),
                                              id=quote(record_id, safe=""))
        body = self._get(path, None, allow_404=True)
        if body is None:
            return None
        if not isinstance(body, dict):
            raise NetworkError(f"{SERVICE}: GET {path} answered with no JSON object")
        return body

    def is_tombstone(self, record: dict[str, Any]) -> bool:
        """True for the stand-in of a deleted record (``include_deleted=True`` lists them)."""
        return record.get(self.config.tombstone_flag_field) is True

    # -- internals --------------------------------------------------------------------------

    def _resource_path(self, resource: str) -> str:
        try:
            return self.config.resources[resource]
        except KeyError:
            known = ", ".join(sorted(self.config.resources))
            raise ConfigError(f"unknown SCALARA resource {resource!r}; configured: {known}") from None

    def _page(self, path: str, query: dict[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        cfg = self.config

        def envelope(response: httpx.Response) -> tuple[list[dict[str, Any]], str | None]:
            if not 200 <= response.status_code < 300:
                self._checked(response, path, allow_404=False)          # raises the right error
            body, suspect = decode(response.content)
            items = body.get(cfg.items_key) if isinstance(body, dict) else None
            cursor = body.get(cfg.next_cursor_key) if isinstance(body, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise TransientResponse(f"unexpected envelope (no list under {cfg.items_key!r})")
            if cursor is not None and (not isinstance(cursor, str) or not cursor):
                raise TransientResponse(f"unexpected envelope ({cfg.next_cursor_key!r} is not a string)")
            if suspect_page(response.content, suspect, len(items)):
                items = flag_records(items)     # values JSON cannot carry, absurd nesting: per-record errors
            return items, cursor

        self.stats.incr("reads")
        return self._retrier.run("GET", path, lambda: self._http.get(path, params=query), envelope)

    def _get(self, path: str, query: dict[str, str] | None, *, allow_404: bool) -> Any:
        self.stats.incr("reads")
        return self._retrier.run("GET", path, lambda: self._http.get(path, params=query),
                                 lambda r: self._checked(r, path, allow_404=allow_404))

    def _checked(self, response: httpx.Response, path: str, *, allow_404: bool) -> Any:
        """Turn an answer into its JSON body or the right engine error."""
        status = response.status_code
        if 200 <= status < 300:
            return json_body(response)
        code, message = self._error_of(response)
        if status == 401:
            said = "" if code in ("", self.config.rejected_token_code) else f" (SCALARA said: {code})"
            raise AuthError(TOKEN_REJECTED + said)
        if status == 403:
            raise AuthError(f"SCALARA refused access to {path} (403 {code or 'forbidden'}). "
                            "The casavi link may be switched off for this account; an admin checks "
                            "Systemeinstellungen -> Externe Anbindungen -> casavi.")
        if status == 404 and allow_404:
            return None
        if status == 400:
            raise ConfigError(f"SCALARA rejected the request GET {path} (400 {code}): {message}. "
                              "Check the SCALARA parameter names and values in the connector config.")
        raise NetworkError(f"{SERVICE}: GET {path} answered HTTP {status} {code}: {message}".rstrip(": "))

    def _error_of(self, response: httpx.Response) -> tuple[str, str]:
        """(code, message) of an error answer, whatever shape it has; short and token-free."""
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            return "", ""
        if not isinstance(body, dict):
            return "", ""
        code = body.get(self.config.error_code_key)
        message = body.get(self.config.error_message_key)
        return (str(code) if code is not None else "", str(message)[:300] if message is not None else "")


def _id_key(item: Any) -> str:
    """How a walk recognises a record it handed out already (as ProgressGuard does)."""
    return repr(item.get("id")) if isinstance(item, dict) else repr(item)[:200]
