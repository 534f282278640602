"""The sandbox HTTP layer: real sockets through httpx, every fault knob, counters, bad requests."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from engine.errors import ConfigError
from engine.sandbox.app import Request, Response
from engine.sandbox.faults import FaultConfig, FaultState
from engine.sandbox.http import MAX_BODY_BYTES, ServerHandle, serve


class StubApp:
    """A tiny App: lists, writes, a crash and a control path."""

    name = "stub"

    def handle(self, request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("a bug in the app")
        if request.path.startswith("/sandbox/"):
            return Response(200, {"control": True})
        if request.method == "GET":
            return Response(200, {"items": [{"id": i, "name": "Müller"} for i in range(20)], "path": request.path})
        if request.method in ("PUT", "POST", "DELETE"):
            return Response(200 if request.body != b"bad" else 400, {"ok": True})
        return Response(405, {"error": "method_not_allowed", "message": "no"})

    def resource_of(self, request: Request) -> str:
        parts = [p for p in request.path.split("/") if p]
        return parts[0] if parts else "root"


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    with serve(StubApp()) as handle:
        yield handle


@pytest.fixture
def client(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


def test_keep_alive_reuses_one_connection(server: ServerHandle, client: httpx.Client) -> None:
    for _ in range(25):
        response = client.get("/items")
        assert response.status_code == 200
        assert response.http_version == "HTTP/1.1"
        assert int(response.headers["content-length"]) == len(response.content)
    assert server.counters.connections() == 1
    assert server.counters.requests("GET", "items") == 25


def test_counters_and_writes(server: ServerHandle, client: httpx.Client) -> None:
    client.get("/items")
    client.put("/items/1", content=b"{}")
    client.put("/items/2", content=b"bad")
    client.post("/sandbox/reset")
    assert server.counters.writes() == 2                 # the control path is no write
    assert server.counters.successful_writes() == 1
    assert server.counters.by_status() == {200: 3, 400: 1}
    assert server.counters.by_resource()[("PUT", "items")] == 2
    server.counters.reset()
    assert server.counters.requests() == 0 and server.counters.writes() == 0


def test_app_exception_is_a_500_json_and_logged(server: ServerHandle, client: httpx.Client) -> None:
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert len(server.errors) == 1 and "a bug in the app" in server.errors[0]
    assert client.get("/items").status_code == 200       # the connection survived


def test_oversized_body_gets_413_and_the_connection_stays_usable(server: ServerHandle,
                                                                client: httpx.Client) -> None:
    response = client.put("/items/1", content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert client.get("/items").status_code == 200
    assert server.counters.writes() == 0


def test_chunked_body_is_refused_with_json(client: httpx.Client) -> None:
    response = client.put("/items/1", content=iter([b"a", b"b"]))
    assert response.status_code == 411
    assert response.json()["error"] == "length_required"


def test_garbage_request_line_gets_a_json_400(server: ServerHandle) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400")
    assert b"application/json" in head and body.startswith(b'{"error":"http_400"')


def test_unsupported_method_gets_json(client: httpx.Client) -> None:
    response = client.request("OPTIONS", "/items")
    assert response.status_code == 501
    assert response.json()["error"] == "http_501"


def test_rate_limit_429_with_retry_after_seconds(server: ServerHandle, client: httpx.Client) -> None:
    server.set_faults(FaultConfig(rate_limit_per_s=0.5, burst=2))
    statuses = [client.get("/items").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.get("/items")
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["error"] == "rate_limited"
    # another credential has its own bucket; control paths are never limited
    assert client.get("/items", headers={"Authorization": "Bearer other"}).status_code == 200
    assert client.post("/sandbox/x").status_code == 200


def test_rate_limit_retry_after_as_http_date(server: ServerHandle, client: httpx.Client) -> None:
    server.set_faults(FaultConfig(rate_limit_per_s=0.5, burst=1, retry_after_http_date_ratio=1.0))
    assert client.get("/items", headers={"token": "t"}).status_code == 200
    limited = client.get("/items", headers={"token": "t"})
    assert limited.status_code == 429
    when = parsedate_to_datetime(limited.headers["retry-after"])
    ahead = (when - dt.datetime.now(dt.UTC)).total_seconds()
    assert 1 <= ahead <= 5


def test_token_bucket_refills_over_time() -> None:
    now = [100.0]
    state = FaultState(FaultConfig(rate_limit_per_s=2, burst=2), monotonic=lambda: now[0])
    assert [state.decide("a").kind for _ in range(3)] == ["pass", "pass", "rate_limited"]
    now[0] += 0.5                                        # one token back at 2/s
    assert [state.decide("a").kind for _ in range(2)] == ["pass", "rate_limited"]
    assert state.decide("b").kind == "pass"


def _statuses(server: ServerHandle, client: httpx.Client, config: FaultConfig, n: int = 40) -> list[int]:
    server.set_faults(config)
    return [client.get("/items").status_code for _ in range(n)]


def test_502_503_are_deterministic_by_seed(server: ServerHandle, client: httpx.Client) -> None:
    config = FaultConfig(error_rate_502=0.2, error_rate_503=0.2, seed=42)
    first = _statuses(server, client, config)
    assert first == _statuses(server, client, config)
    assert {200, 502, 503} <= set(first)
    other = _statuses(server, client, config.with_changes(seed=43))
    assert other != first
    assert client.get("/items").status_code in (200, 502, 503)


def test_injected_errors_are_json_and_not_writes(server: ServerHandle, client: httpx.Client) -> None:
    server.set_faults(FaultConfig(error_rate_503=1.0))
    response = client.put("/items/1", content=b"{}")
    assert response.status_code == 503 and response.json()["error"] == "service_unavailable"
    assert server.counters.writes() == 0 and server.counters.status(503) == 1


@pytest.mark.slow
def test_slow_response_outlasts_a_client_timeout_and_stop_is_fast() -> None:
    handle = serve(StubApp(), faults=FaultConfig(slow_response_ratio=1.0, slow_response_s=30))
    try:
        with httpx.Client(base_url=handle.url, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
            c.get("/items")
        assert httpx.post(handle.url + "/sandbox/x", timeout=2).status_code == 200
    finally:
        started = time.monotonic()
        handle.stop()
        assert time.monotonic() - started < 2.5


def test_latency_is_added(server: ServerHandle, client: httpx.Client) -> None:
    server.set_faults(FaultConfig(latency_ms=120))
    started = time.monotonic()
    client.get("/items")
    assert time.monotonic() - started >= 0.12


def test_dropped_connection_is_a_transport_error(server: ServerHandle, client: httpx.Client) -> None:
    server.set_faults(FaultConfig(drop_connection_ratio=1.0))
    with pytest.raises(httpx.TransportError):
        client.get("/items")
    server.set_faults(None)
    assert client.get("/items").status_code == 200       # a fresh connection works


def test_malformed_json_is_a_truncated_200(server: ServerHandle, client: httpx.Client) -> None:
    server.set_faults(FaultConfig(malformed_json_ratio=1.0))
    response = client.get("/items")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    with pytest.raises(ValueError):
        response.json()


def test_outage_after_n_writes_until_cleared(server: ServerHandle, client: httpx.Client) -> None:
    server.set_faults(FaultConfig(outage_after_writes=2))
    assert client.put("/items/1", content=b"bad").status_code == 400   # failed writes don't count
    assert client.put("/items/1", content=b"{}").status_code == 200
    assert client.put("/items/2", content=b"{}").status_code == 200
    down = client.get("/items")
    assert down.status_code == 503 and down.headers["retry-after"] == "5"
    assert client.put("/items/3", content=b"{}").status_code == 503
    assert client.get("/sandbox/status").status_code == 200            # control stays up
    server.clear_outage()
    assert client.get("/items").status_code == 200


def test_faults_change_mid_run(server: ServerHandle, client: httpx.Client) -> None:
    assert all(client.get("/items").status_code == 200 for _ in range(5))
    server.set_faults(FaultConfig(rate_limit_per_s=0.1, burst=1))
    assert [client.get("/items").status_code for _ in range(3)] == [200, 429, 429]
    server.set_faults(None)
    assert client.get("/items").status_code == 200


@pytest.mark.parametrize("changes", [
    {"error_rate_502": 1.5}, {"drop_connection_ratio": -0.1}, {"latency_ms": -1},
    {"rate_limit_per_s": 0}, {"burst": 0}, {"outage_after_writes": -1},
])
def test_fault_config_rejects_nonsense(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        FaultConfig(**changes)  # type: ignore[arg-type]


def test_contract_defaults() -> None:
    assert FaultConfig.contract_defaults("scalara") == FaultConfig(rate_limit_per_s=10, burst=20)
    assert FaultConfig.contract_defaults("casavi") == FaultConfig(rate_limit_per_s=20, burst=40)
    with pytest.raises(ConfigError, match="known: casavi, scalara"):
        FaultConfig.contract_defaults("erp")
    assert FaultConfig() == FaultConfig(seed=0)          # all off by default
