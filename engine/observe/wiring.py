"""One process's observability, switched on by its face (serve, worker, web, run) in one call.

::

    with Observability(ObserveConfig(metrics_address="127.0.0.1:9464", webhook_url=..., webhook_secret=...),
                       open_store, schedule=schedule, checks={"state store": ..., "mappings": ...},
                       loop_tick_s=30) as obs:
        server.heartbeat = obs.health.tick
        server.serve_forever()

Entering registers the run listeners (metrics, alerts) and starts the HTTP endpoint; leaving
removes them, delivers queued alerts (bounded wait) and stops the endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.files import read_report
from engine.observe.health import Check, Health
from engine.observe.hooks import add_listener
from engine.observe.metrics import StoreOpener, build_registry
from engine.observe.server import DEFAULT_METRICS_PATH, ObserveServer, parse_address
from engine.observe.webhook import Alerter, WebhookSender
from engine.schedule import Schedule


@dataclass(frozen=True)
class ObserveConfig:
    metrics_address: str | None = None     # HOST:PORT; None: no endpoint
    metrics_path: str = DEFAULT_METRICS_PATH
    webhook_url: str | None = None
    webhook_secret: str | None = None


def previous_report_reader(open_store: StoreOpener) -> Callable[[str, int], Mapping[str, Any] | None]:
    """(tenant, run id) -> the report of that tenant's finished run before it (or None)."""

    def previous(tenant: str, run_id: int) -> Mapping[str, Any] | None:
        with open_store() as store:
            runs = [r for r in store.runs(tenant, limit=50) if r.id < run_id and r.finished_at]
        if not runs:
            return None
        run = max(runs, key=lambda r: r.id)
        return read_report(run.report_path) or {"runId": run.id, "tenant": tenant, "outcome": run.outcome}

    return previous


class Observability:
    def __init__(self, config: ObserveConfig, open_store: StoreOpener | None, *,
                 schedule: Schedule | None = None, checks: Mapping[str, Check] | None = None,
                 loop_tick_s: float | None = None, state_ttl_s: float = 1.0) -> None:
        self.config = config
        self.registry, self.metrics = build_registry(open_store, schedule, state_ttl_s=state_ttl_s)
        # a loop that misses three passes (and at least a minute) is stuck
        max_age = None if loop_tick_s is None else max(60.0, 3 * loop_tick_s)
        self.health = Health(dict(checks or {}), max_tick_age_s=max_age)
        self.sender: WebhookSender | None = None
        if config.webhook_url:
            self.sender = WebhookSender(config.webhook_url, config.webhook_secret or "")
        self._open_store = open_store
        self._server: ObserveServer | None = None
        self._address = parse_address(config.metrics_address) if config.metrics_address else None
        self._removers: list[Callable[[], None]] = []

    @property
    def url(self) -> str | None:
        return self._server.url if self._server is not None else None

    def endpoints(self) -> str | None:
        """Where to scrape and probe, for the start-up line (None without an endpoint)."""
        if self.url is None:
            return None
        return (f"metrics at {self.url}{self.config.metrics_path}, health at {self.url}/healthz and "
                f"{self.url}/readyz")

    def __enter__(self) -> Observability:
        self._removers.append(add_listener(self.metrics.observe_run))
        if self.sender is not None and self._open_store is not None:
            alerter = Alerter(self.sender.start(), previous_report_reader(self._open_store))
            self._removers.append(add_listener(alerter.on_run))
        if self._address is not None:
            self._server = ObserveServer(self._address, self.registry, self.health, self.config.metrics_path)
            self._server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
        if self.sender is not None:
            self.sender.close()
        if self._server is not None:
            self._server.close()
            self._server = None
