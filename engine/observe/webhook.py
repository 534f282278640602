"""Alerts on news: a signed JSON webhook when something changed that a person must know.

Events (one POST each), decided from a finished run's report and the tenant's previous run:

* ``run.aborted``       - the run aborted (auth, network, config, state); the one-line reason.
* ``failures.new``      - records failed that did not fail before (known and acknowledged ones
                          never fire again: yesterday's data problem is not news).
* ``guard.held``        - the mass-archive guard held archives back; an operator must decide.
* ``tenant.recovered``  - a clean run after a run that was not clean.

Signing, so the receiver knows the message is ours and fresh (the scheme Stripe and GitHub use)::

    X-Casavi-Sync-Signature: t=1764650000,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

:func:`verify_signature` is the receiver's side, with a tolerance against replays. Delivery runs on
a background thread: retried with exponential backoff on network errors, 408, 429 and 5xx; other
answers are final. A payload never holds a secret: it is built from the report's ids, counts and
reasons, and the webhook URL itself (which may carry a token) is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.errors import ConfigError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Casavi-Sync-Signature"
EVENT_HEADER = "X-Casavi-Sync-Event"
DELIVERY_HEADER = "X-Casavi-Sync-Delivery"
MAX_ITEMS = 50  # failed records listed in one alert; the report has all of them
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str | None, body: bytes, *, tolerance_s: float = 300,
                     now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        return False
    expected = sign(secret, body, stamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _failure_item(row: Mapping[str, Any]) -> dict[str, Any]:
    reason = str(row.get("reason") or "")
    return {"kind": row.get("kind"), "referenceId": row.get("targetId") or row.get("id"),
            "resource": row.get("resource"), "sourceId": row.get("sourceId"),
            "reason": reason if len(reason) <= 300 else reason[:299] + "…"}


def failure_key(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """What identifies a failing record across runs: its kind and its SCALARA or casavi id."""
    return (str(row.get("kind") or ""), str(row.get("resource") or ""),
            str(row.get("sourceId") or row.get("targetId") or row.get("id") or ""))


def all_failures(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(report.get("mapErrors") or []), *(report.get("writeFailures") or [])]


def new_failures(report: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The failures of ``report`` that are news.

    When the report classifies its failures (``failureStates``: known/acknowledged records listed by
    the failure tracking), those are left out; otherwise a failure is new when the previous run's
    report did not have it.
    """
    states = report.get("failureStates")
    if isinstance(states, Mapping) and isinstance(states.get("new"), list):
        return list(states["new"])
    before = {failure_key(r) for r in all_failures(previous)} if previous else set()
    return [r for r in all_failures(report) if failure_key(r) not in before]


def events_for(report: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The alert payloads one finished run gives (maybe none)."""
    base = {"tenant": report.get("tenant"), "runId": report.get("runId"), "trigger": report.get("trigger"),
            "outcome": report.get("outcome"), "startedAt": report.get("startedAt")}
    outcome = report.get("outcome")
    events: list[dict[str, Any]] = []
    if outcome == "aborted":
        events.append({"event": "run.aborted", **base,
                       "summary": f"run {report.get('runId')} of tenant '{report.get('tenant')}' aborted",
                       "reason": str(report.get("error") or "")[:500]})
    fresh = new_failures(report, previous) if outcome != "aborted" else []
    if fresh:
        events.append({"event": "failures.new", **base,
                       "summary": f"{len(fresh)} record(s) of tenant '{report.get('tenant')}' failed that did "
                                  "not fail before",
                       "count": len(fresh), "records": [_failure_item(r) for r in fresh[:MAX_ITEMS]]})
    guard = report.get("guard") or []
    if guard:
        events.append({"event": "guard.held", **base,
                       "summary": f"the mass-archive guard held archives of tenant '{report.get('tenant')}' back",
                       "holds": [dict(g) for g in guard]})
    previous_outcome = previous.get("outcome") if previous else None
    if outcome == "clean" and previous_outcome not in (None, "clean"):
        events.append({"event": "tenant.recovered", **base, "previousOutcome": previous_outcome,
                       "summary": f"tenant '{report.get('tenant')}' ran clean again after a run that ended "
                                  f"{previous_outcome}"})
    return events


@dataclass
class WebhookSender:
    """Posts signed alerts to one URL on a background thread, with retries and backoff."""

    url: str
    secret: str
    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float = 10.0
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    delivered: list[str] = field(default_factory=list)   # delivery ids, for status and tests
    dropped: list[str] = field(default_factory=list)
    _queue: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("the alert webhook URL must be an http(s) URL, e.g. https://alerts.example.org/hook")
        if not self.secret:
            raise ConfigError("the alert webhook needs a signing secret: set CASAVI_SYNC_ALERT_SECRET")
        self.target = f"{parts.scheme}://{parts.hostname}"  # for messages: never path or query (tokens)

    def start(self) -> WebhookSender:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="alert-webhook", daemon=True)
            self._thread.start()
        return self

    def send(self, payload: Mapping[str, Any]) -> None:
        self.start()
        self._queue.put(dict(payload))

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _work(self) -> None:
        with httpx.Client(timeout=self.timeout_s, transport=self.transport) as client:
            while True:
                payload = self._queue.get()
                if payload is None:
                    return
                self.deliver(client, payload)

    def deliver(self, client: httpx.Client, payload: dict[str, Any]) -> bool:
        delivery = str(uuid.uuid4())
        payload = {**payload, "deliveryId": delivery}
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            headers = {"Content-Type": "application/json", EVENT_HEADER: str(payload.get("event")),
                       DELIVERY_HEADER: delivery, SIGNATURE_HEADER: sign(self.secret, body, int(time.time()))}
            try:
                response = client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if response.status_code < 300:
                    self.delivered.append(delivery)
                    return True
                last = f"HTTP {response.status_code}"
                if response.status_code not in RETRY_STATUSES:
                    break
            if attempt < self.max_attempts:
                self.sleep(min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
        self.dropped.append(delivery)
        log.warning("alert %s to %s not delivered (%s)", payload.get("event"), self.target, last)
        return False


class Alerter:
    """The run listener: decides the events of each finished run and hands them to the sender."""

    def __init__(self, sender: WebhookSender, previous_report: Callable[[str, int], Mapping[str, Any] | None]):
        self.sender = sender
        self.previous_report = previous_report

    def on_run(self, report: Mapping[str, Any]) -> None:
        run_id = report.get("runId")
        previous = self.previous_report(str(report.get("tenant")), int(run_id)) if isinstance(run_id, int) else None
        for event in events_for(report, previous):
            self.sender.send(event)
