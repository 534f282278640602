"""Observability over real HTTP on loopback: metrics scraped during and after a sandbox run (parsed
with the Prometheus parser), liveness/readiness, and signed webhook alerts with retries."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from engine.cli import main
from engine.observe.health import Health
from engine.observe.server import ObserveServer, parse_address
from engine.observe.webhook import SIGNATURE_HEADER, events_for, verify_signature
from engine.observe.wiring import Observability, ObserveConfig
from engine.state import StateStore
from tests.conftest import World, make_world


@pytest.fixture
def slow_world(tmp_path: Path) -> Iterator[World]:
    from engine.sandbox import FaultConfig

    # casavi answers in 5 ms, so the import lasts long enough to scrape in the middle of it
    yield from make_world(tmp_path, properties=2, casavi_faults=FaultConfig(latency_ms=5))


def opener(world: World) -> Any:
    return lambda: StateStore.open(world.tmp / "state.db")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.mark.slow
def test_metrics_scraped_during_and_after_a_run(slow_world: World) -> None:
    world = slow_world
    config = ObserveConfig(metrics_address="127.0.0.1:0")
    during: list[str] = []
    with Observability(config, opener(world), state_ttl_s=0) as obs:
        assert obs.url is not None
        done = threading.Event()

        def scrape() -> None:
            while not done.is_set():
                status, body = get(f"{obs.url}/metrics")
                assert status == 200
                during.append(body)
                time.sleep(0.05)

        t = threading.Thread(target=scrape)
        t.start()
        try:
            report = world.run().report
        finally:
            done.set()
            t.join()
        status, after = get(f"{obs.url}/metrics")
    assert status == 200
    mid = [samples(b) for b in during]
    # at some moment of the run the tenant's lock was held and the endpoint said so
    assert any(value(m, "casavi_sync_runs_in_progress") == 1 for m in mid)
    found = samples(after)
    assert value(found, "casavi_sync_state_store_up") == 1
    assert value(found, "casavi_sync_runs_total", tenant="default", outcome=report["outcome"],
                 trigger="manual") == 1
    for kind, row in report["counts"].items():
        if row.get("create"):
            assert value(found, "casavi_sync_records_total", kind=kind, action="create") == row["create"]
    calls = report["calls"]["casavi"]
    assert value(found, "casavi_sync_api_calls_total", service="casavi", result="request") == calls["requests"]
    n_map = len(report["mapErrors"])
    assert n_map > 0  # the generated data is deliberately broken in places
    assert sum(v for (name, labels), v in found.items()
               if name == "casavi_sync_record_failures_total" and ("stage", "map") in labels) == n_map
    assert value(found, "casavi_sync_last_run_timestamp_seconds", tenant="default", outcome=report["outcome"])
    assert value(found, "casavi_sync_tenant_connected", tenant="default") == 1
    # bounded cardinality: no label value is a record id
    ids = {str(r.get("sourceId")) for r in report["mapErrors"]}
    assert not any(v in ids for (_, labels), _v in found.items() for _k, v in labels)


def test_last_run_failures_are_new_then_known(world: World) -> None:
    """The gauge the shipped CasaviSyncNewFailures alert watches: a run's failures are new when the
    run before did not have them, known when it did (it read 0 for both before)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from engine.observe.metrics import StateCollector

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        registry = CollectorRegistry()
        registry.register(StateCollector(opener(world), ttl_s=0))
        return samples(generate_latest(registry).decode("utf-8"))

    first = world.run().report
    n = len(first["mapErrors"]) + len(first["writeFailures"])
    assert n > 0  # the generated data is deliberately broken in places
    found = scrape()
    assert value(found, "casavi_sync_last_run_failures", tenant="default", state="new") == n
    assert value(found, "casavi_sync_last_run_failures", tenant="default", state="known") == 0
    world.run()
    found = scrape()
    assert value(found, "casavi_sync_last_run_failures", tenant="default", state="new") == 0
    assert value(found, "casavi_sync_last_run_failures", tenant="default", state="known") == n
    ack = CliRunner().invoke(main, ["ack", "--all", "--state", str(world.tmp / "state.db"), "--note", "known"])
    assert ack.exit_code == 0, ack.output
    world.run()
    found = scrape()
    assert value(found, "casavi_sync_last_run_failures", tenant="default", state="known") == 0
    assert value(found, "casavi_sync_last_run_failures", tenant="default", state="acknowledged") == n


def test_health_and_readiness_over_http() -> None:
    now = [100.0]
    failing = {"on": True}

    def mappings() -> None:
        if failing["on"]:
            raise RuntimeError("mappings/units.yaml:3:5: unknown function 'uper'")

    health = Health({"mappings": mappings, "state store": lambda: None}, max_tick_age_s=60, clock=lambda: now[0])
    from prometheus_client import CollectorRegistry

    with ObserveServer(("127.0.0.1", 0), CollectorRegistry(), health) as srv:
        status, body = get(f"{srv.url}/healthz")
        assert status == 503 and json.loads(body)["status"] == "starting"
        health.tick()
        assert get(f"{srv.url}/healthz")[0] == 200
        now[0] += 61
        status, body = get(f"{srv.url}/healthz")
        assert status == 503 and json.loads(body)["status"] == "stuck"
        status, body = get(f"{srv.url}/readyz")
        doc = json.loads(body)
        assert status == 503 and doc["checks"]["state store"] == "ok"
        assert "unknown function 'uper'" in doc["checks"]["mappings"]
        failing["on"] = False
        assert get(f"{srv.url}/readyz")[0] == 200
        assert get(f"{srv.url}/nothing")[0] == 404


def test_bad_metrics_address_is_a_clear_error() -> None:
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_address("localhost:http")
    assert parse_address(":9464") == ("127.0.0.1", 9464)


# -- webhook ----------------------------------------------------------------------------------------

class Receiver:
    """A webhook receiver on loopback: answers ``fail_first`` requests with 503, then 204."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(owner.requests) <= owner.fail_first
                self.send_response(503 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook?token=abc"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        """Payloads accepted (204), each verified against its signature."""
        out = []
        for i, (headers, body) in enumerate(self.requests):
            assert verify_signature("s3cret-signing", headers[SIGNATURE_HEADER.lower()], body)
            if i >= self.fail_first:
                out.append(json.loads(body))
        return out


@contextlib.contextmanager
def alerting(world: World, receiver: Receiver) -> Iterator[Observability]:
    obs = Observability(ObserveConfig(webhook_url=receiver.url, webhook_secret="s3cret-signing"), opener(world))
    assert obs.sender is not None
    obs.sender.base_delay_s = 0.01
    with obs:
        yield obs


@pytest.mark.slow
def test_webhook_signed_retried_news_only_and_without_secrets(world: World) -> None:
    receiver = Receiver(fail_first=2)
    try:
        with alerting(world, receiver) as obs:
            first = world.run().report
        assert obs.sender is not None and obs.sender.dropped == []
        assert first["mapErrors"], "the generated data is deliberately broken in places"
        # two 503s, then accepted: three attempts of one delivery, each signed
        attempts = {h["x-casavi-sync-delivery"] for h, _ in receiver.requests}
        assert len(receiver.requests) == 3 and len(attempts) == 1
        (event,) = receiver.delivered()
        assert event["event"] == "failures.new" and event["tenant"] == "default"
        assert event["count"] == len(first["mapErrors"]) + len(first["writeFailures"])

        # the same failures again: known, not news; nothing is sent
        with alerting(world, receiver):
            world.run()
        assert len(receiver.requests) == 3

        # a revoked token aborts the run: that is news, with the reason
        world.sandbox.generate_scalara_token()
        with alerting(world, receiver):
            aborted = world.run().report
        assert aborted["outcome"] == "aborted"
        events = [e["event"] for e in receiver.delivered()]
        assert events == ["failures.new", "run.aborted"]
        body = b"".join(b for _, b in receiver.requests).decode("utf-8")
        for secret in (world.token, world.sandbox.casavi_key, world.sandbox.casavi_secret, "s3cret-signing"):
            assert secret not in body
    finally:
        receiver.close()


def test_signature_rejects_tampering_and_replays() -> None:
    from engine.observe.webhook import sign

    body = b'{"event": "run.aborted"}'
    header = sign("k", body, 1_000_000)
    assert verify_signature("k", header, body, now=1_000_010)
    assert not verify_signature("k", header, body + b" ", now=1_000_010)
    assert not verify_signature("other", header, body, now=1_000_010)
    assert not verify_signature("k", header, body, now=1_000_000 + 301)
    assert not verify_signature("k", "garbage", body)


def test_events_guard_recovery_and_acknowledged_failures() -> None:
    base = {"tenant": "t", "runId": 7, "trigger": "schedule", "mapErrors": [], "writeFailures": []}
    held = {**base, "outcome": "partial", "guard": [{"kind": "units", "reason": "would archive 40%"}]}
    assert [e["event"] for e in events_for(held, {"outcome": "clean"})] == ["guard.held"]
    clean = {**base, "outcome": "clean", "guard": []}
    assert [e["event"] for e in events_for(clean, {"outcome": "aborted"})] == ["tenant.recovered"]
    assert events_for(clean, {"outcome": "clean"}) == []
    failing = {**base, "outcome": "partial", "mapErrors": [{"kind": "units", "resource": "units", "sourceId": "u1"}]}
    assert [e["event"] for e in events_for(failing, None)] == ["failures.new"]
    # when the failure tracking classified them (known, acknowledged), only its "new" ones are news
    tracked = {**failing, "failureStates": {"new": [], "known": failing["mapErrors"]}}
    assert events_for(tracked, None) == []


# -- the endpoints of the real processes ------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 20) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _process(world: World, *args: str) -> Any:
    import os
    import subprocess
    import sys

    env = {**os.environ, "CASAVI_SYNC_SCALARA_URL": world.sandbox.scalara_url,
           "CASAVI_SYNC_CASAVI_URL": world.sandbox.casavi_url, "PYTHONUNBUFFERED": "1"}
    env.pop("CASAVI_SYNC_STATE", None)
    cmd = [sys.executable, "-c", "from engine.cli import main; main()", *args, "--state", str(world.tmp / "state.db"),
           "--config", str(world.tmp / "connectors.yaml")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)


def _stop(proc: Any) -> tuple[str, str]:
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except Exception:
        proc.kill()
        out, err = proc.communicate()
    return out, err


@pytest.mark.slow
def test_serve_exposes_metrics_health_and_readiness(world: World) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    now = dt.datetime.now(ZoneInfo("Europe/Berlin")) - dt.timedelta(minutes=1)
    world.store.set_last_scheduled_day("default", now.date() - dt.timedelta(days=2))
    port = free_port()
    proc = _process(world, "serve", "--at", f"{now:%H:%M}", "--jitter", "0", "--tick", "0.2",
                    "--metrics-address", f"127.0.0.1:{port}", "--log-format", "json")
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(f"{base}/readyz")[0] == 200
        deadline = time.monotonic() + 30
        runs = None
        while time.monotonic() < deadline:
            found = samples(get(f"{base}/metrics")[1])
            runs = {labels: v for (name, labels), v in found.items() if name == "casavi_sync_runs_total"}
            if runs:
                break
            time.sleep(0.2)
        assert runs, "the scheduled run never showed up in the metrics"
        ((labels, count),) = runs.items()
        assert dict(labels)["trigger"] == "schedule" and count == 1
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "serve.metrics" in err and world.token not in out + err


@pytest.mark.slow
def test_web_console_exposes_readiness(world: World) -> None:
    port, metrics = free_port(), free_port()
    proc = _process(world, "web", "--port", str(port), "--metrics-address", f"127.0.0.1:{metrics}")
    try:
        status, body = wait_for(f"http://127.0.0.1:{metrics}/readyz")
        assert status == 200, body
        checks = json.loads(body)["checks"]
        assert set(checks) == {"state store", "secrets key", "mappings", "connector config"}
        assert get(f"http://127.0.0.1:{metrics}/healthz")[0] == 200
        assert "casavi_sync_state_store_up 1.0" in get(f"http://127.0.0.1:{metrics}/metrics")[1]
    finally:
        _out, err = _stop(proc)
    assert "Traceback" not in err


@pytest.mark.slow
def test_acknowledged_failures_do_not_fire_and_are_counted_as_such(world: World) -> None:
    from engine.ops import Context
    from engine.ops.failures import acknowledge

    receiver = Receiver()
    try:
        with alerting(world, receiver):
            first = world.run().report
        assert [e["event"] for e in receiver.delivered()] == ["failures.new"]
        ctx = Context(world.tmp / "state.db", "default", config_path=world.tmp / "connectors.yaml", env={})
        assert acknowledge(ctx, None, None, "the building is being re-entered in SCALARA") > 0
        with alerting(world, receiver), Observability(ObserveConfig("127.0.0.1:0"), opener(world),
                                                      state_ttl_s=0) as obs:
            second = world.run().report
            found = samples(get(f"{obs.url}/metrics")[1])
        # acknowledged failures are not news; a run whose only failures are acknowledged is clean,
        # and that the tenant is clean again after a partial run is news
        assert second["outcome"] == "clean"
        assert [e["event"] for e in receiver.delivered()] == ["failures.new", "tenant.recovered"]
        counts = second["failureStates"]["counts"]
        assert counts["new"] == 0 and counts["acknowledged"] == len(first["failureStates"]["new"]) > 0
        for state in ("new", "known", "acknowledged"):
            assert value(found, "casavi_sync_last_run_failures", tenant="default", state=state) == counts[state]
    finally:
        receiver.close()



@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/livez", "/metrics?x=1", "metrics"])
def test_a_metrics_path_that_hides_a_probe_or_never_matches_is_refused(path: str) -> None:
    """--metrics-path /healthz served the metrics on the liveness path: the probe always passed."""
    from engine.cli.observe_cmd import observe_config
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="--metrics-path"):
        observe_config({"metrics_address": "127.0.0.1:0", "metrics_path": path})
    assert observe_config({"metrics_address": "127.0.0.1:0", "metrics_path": "/m"}).metrics_path == "/m"


def test_run_summary_names_each_explain_command_once() -> None:
    from engine.sync.report import run_summary

    row = {"stage": "map", "kind": "contracts", "resource": "ownerships", "sourceId": "o-1", "reason": "x"}
    report = {"runId": 1, "trigger": "manual", "tenant": "t", "outcome": "partial", "durationS": 0.1,
              "counts": {}, "guard": [], "mapErrors": [{**row, "targetId": "own-1"}, {**row, "targetId": "own-2"}],
              "writeFailures": []}
    lines = run_summary(report)
    assert sum("failed:" in line for line in lines) == 2
    assert [line.strip() for line in lines if "why:" in line] == ["why: casavi-sync explain ownerships o-1"]
