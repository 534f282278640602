"""Prometheus metrics, in the text format, from the official ``prometheus_client`` library.

Two sources, on purpose:

* **Counters of this process** (:class:`RunMetrics`), fed by the run reports this process
  produces: runs by tenant/outcome/trigger, run duration, records written and failed by kind and
  action, API calls/retries/429s and rate-limiter waiting per service. Prometheus sums them
  across the processes of a fleet.
* **Facts of the state store** (:class:`StateCollector`), read at scrape time (cached a
  second): the last clean and the last run per tenant, the outcome and failure counts (new,
  known, acknowledged) of each tenant's last run, and how many tenants are due but not started.
  Read from the store, they are right after a restart and the same from every process.

Label cardinality stays bounded: tenants, kinds, actions, outcomes, services - never a record id.
The metric names are documented in docs/observability.md, with example alert rules.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.files import read_report
from engine.observe.webhook import all_failures, new_failures
from engine.schedule import Schedule

PREFIX = "casavi_sync"
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, float("inf"))
_API_RESULTS = {"requests": "request", "retries": "retry", "throttled": "throttled_429"}


class RunMetrics:
    """The counters of one process, fed by :meth:`observe_run` with each finished run's report."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.runs = Counter(f"{PREFIX}_runs", "Finished runs by tenant, outcome and trigger.",
                            ("tenant", "outcome", "trigger"), registry=registry)
        self.duration = Histogram(f"{PREFIX}_run_duration_seconds", "Run duration by trigger and outcome.",
                                  ("trigger", "outcome"), buckets=DURATION_BUCKETS, registry=registry)
        self.records = Counter(f"{PREFIX}_records", "Records handled by runs, by casavi kind and action "
                               "(create, update, restore, archive, unchanged).", ("kind", "action"),
                               registry=registry)
        self.failed = Counter(f"{PREFIX}_record_failures", "Records that failed, by kind and stage (map: "
                              "the SCALARA record could not be mapped; write: casavi refused it).",
                              ("kind", "stage"), registry=registry)
        self.guard = Counter(f"{PREFIX}_guard_holds", "Kinds whose archives the mass-archive guard held, "
                             "by tenant.", ("tenant",), registry=registry)
        self.api = Counter(f"{PREFIX}_api_calls", "API calls by service and result (request: every HTTP "
                           "request sent; retry: a repeated attempt; throttled_429: answered 429).",
                           ("service", "result"), registry=registry)
        self.limiter_wait = Counter(f"{PREFIX}_rate_limiter_wait_seconds", "Seconds spent waiting for the "
                                    "client-side rate limiter, by service.", ("service",), registry=registry)

    def observe_run(self, report: Mapping[str, Any]) -> None:
        tenant = str(report.get("tenant") or "")
        outcome = str(report.get("outcome") or "unknown")
        trigger = str(report.get("trigger") or "unknown")
        self.runs.labels(tenant, outcome, trigger).inc()
        duration = report.get("durationS")
        if isinstance(duration, int | float) and duration >= 0:
            self.duration.labels(trigger, outcome).observe(float(duration))
        counts = report.get("counts") or {}
        for kind, row in counts.items():
            for action, n in (row or {}).items():
                if action.startswith("planned_") or action == "map_errors" or not isinstance(n, int) or n <= 0:
                    continue
                if action in ("failed", "error", "skipped"):
                    continue
                self.records.labels(kind, action).inc(n)
        for row in report.get("mapErrors") or []:
            self.failed.labels(str(row.get("kind") or "unknown"), "map").inc()
        for row in report.get("writeFailures") or []:
            self.failed.labels(str(row.get("kind") or "unknown"), "write").inc()
        if report.get("guard"):
            self.guard.labels(tenant).inc(len(report["guard"]))
        for service, stats in (report.get("calls") or {}).items():
            if not isinstance(stats, Mapping):
                continue
            for key, result in _API_RESULTS.items():
                n = stats.get(key)
                if isinstance(n, int) and n > 0:
                    self.api.labels(service, result).inc(n)
            waited = stats.get("limiter_wait_ms")
            if isinstance(waited, int) and waited > 0:
                self.limiter_wait.labels(service).inc(waited / 1000.0)


StoreOpener = Callable[[], AbstractContextManager[Any]]


class StateCollector(Collector):
    """Per-tenant facts read from the state store at scrape time, cached for ``ttl_s`` seconds."""

    def __init__(self, open_store: StoreOpener, schedule: Schedule | None = None, *, ttl_s: float = 1.0,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.open_store = open_store
        self.schedule = schedule
        self.ttl_s = ttl_s
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None
        # (tenant, last run id, run id before it) -> new/known counts; reports never change once written
        self._failure_cache: dict[tuple[str, int, int | None], dict[str, int]] = {}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.ttl_s:
                self._cached = (time.monotonic(), self._read())
            yield from self._cached[1]

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_state_store_up", "1 when the state store could be read at the "
                               "last scrape.")
        last_clean = GaugeMetricFamily(f"{PREFIX}_last_clean_run_timestamp_seconds", "When the tenant's last "
                                       "clean run finished (Unix time).", labels=["tenant"])
        last_run = GaugeMetricFamily(f"{PREFIX}_last_run_timestamp_seconds", "When the tenant's last run "
                                     "finished (Unix time), labelled with its outcome.",
                                     labels=["tenant", "outcome"])
        failures = GaugeMetricFamily(f"{PREFIX}_last_run_failures", "Failed records of the tenant's last "
                                     "finished run, by state (new, known, acknowledged).",
                                     labels=["tenant", "state"])
        connected = GaugeMetricFamily(f"{PREFIX}_tenant_connected", "1 when the tenant is activated and has "
                                      "a SCALARA token.", labels=["tenant"])
        running = GaugeMetricFamily(f"{PREFIX}_runs_in_progress", "Runs holding a tenant's run lock now.")
        behind = GaugeMetricFamily(f"{PREFIX}_tenants_behind_schedule", "Connected tenants whose daily "
                                   "slot has passed but whose run has not started.")
        try:
            n_running = n_behind = 0
            now = self.clock()
            with self.open_store() as store:
                for tenant in store.list_tenants():
                    name = tenant.name
                    is_connected = bool(tenant.activated and store.get_connection(name) is not None)
                    connected.add_metric([name], 1.0 if is_connected else 0.0)
                    if store.lock_holder(name) is not None:
                        n_running += 1
                    elif is_connected and self.schedule is not None and \
                            self.schedule.due(name, store.last_scheduled_day(name), now) is not None:
                        n_behind += 1
                    self._tenant_runs(store, name, last_clean, last_run, failures)
            running.add_metric([], n_running)
            behind.add_metric([], n_behind)
            up.add_metric([], 1.0)
            return [up, last_clean, last_run, failures, connected, running, behind]
        except Exception:  # the store is unreachable: say so, as a metric an alert can watch
            up.add_metric([], 0.0)
            return [up]

    def _tenant_runs(self, store: Any, name: str, last_clean: GaugeMetricFamily, last_run: GaugeMetricFamily,
                     failures: GaugeMetricFamily) -> None:
        finished = [r for r in store.runs(name, limit=50) if r.finished_at]
        if not finished:
            return
        latest = finished[0]
        last_run.add_metric([name, latest.outcome], _unix(latest.finished_at))
        clean = next((r for r in finished if r.outcome == "clean"), None)
        if clean is not None:
            last_clean.add_metric([name], _unix(clean.finished_at))
        if isinstance(latest.counts, Mapping) and "_failures" in latest.counts:
            summary = failure_summary(latest.counts)  # the run's own classification (engine.sync.failures)
        else:
            summary = self._failures_from_reports(name, latest, finished[1] if len(finished) > 1 else None)
        for state, n in summary.items():
            failures.add_metric([name, state], float(n))


    def _failures_from_reports(self, name: str, latest: Any, previous: Any) -> dict[str, int]:
        """new/known counts of a run stored before runs classified their failures (no ``_failures``
        in its counts), from its report and the report of the run before it, as the webhook decides
        news: a failure is known when the run before had it too."""
        key = (name, int(latest.id), int(previous.id) if previous is not None else None)
        found = self._failure_cache.get(key)
        if found is None:
            report = read_report(latest.report_path)
            out = {"new": 0, "known": 0, "acknowledged": 0}
            if report is not None:
                before = read_report(previous.report_path) if previous is not None else None
                total = len(all_failures(report))
                out["new"] = len(new_failures(report, before))
                out["known"] = max(0, total - out["new"])
            if len(self._failure_cache) > 4096:
                self._failure_cache.clear()
            found = self._failure_cache[key] = out
        return dict(found)


def failure_summary(counts: Mapping[str, Any]) -> dict[str, int]:
    """new/known/acknowledged failure counts of a run, from its stored counts (zeros when unknown)."""
    found = counts.get("_failures") if isinstance(counts, Mapping) else None
    out = {"new": 0, "known": 0, "acknowledged": 0}
    if isinstance(found, Mapping):
        for key in out:
            value = found.get(key)
            if isinstance(value, int):
                out[key] = value
    return out


def _unix(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def build_registry(open_store: StoreOpener | None = None, schedule: Schedule | None = None, *,
                   state_ttl_s: float = 1.0) -> tuple[CollectorRegistry, RunMetrics]:
    """A fresh registry with this process's counters, and the state collector when a store is given."""
    registry = CollectorRegistry(auto_describe=True)
    metrics = RunMetrics(registry)
    if open_store is not None:
        registry.register(StateCollector(open_store, schedule, ttl_s=state_ttl_s))
    return registry, metrics
