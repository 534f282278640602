"""Retry-After parsing, the token bucket (single- and multi-threaded) and backoff with jitter."""

from __future__ import annotations

import email.utils
import threading

import httpx
import pytest
from test_connectors_fakes import FakeClock

from engine.connectors import RateLimiter, Retrier, Stats, TransientResponse, parse_retry_after
from engine.connectors.config import RetryPolicy
from engine.errors import NetworkError

NOW = 1_750_000_000.0


@pytest.mark.parametrize(("header", "expected"), [
    ("7", 7.0),
    ("0", 0.0),
    ("2.5", 2.5),
    ("-3", 0.0),
    (email.utils.formatdate(NOW + 42, usegmt=True), 42.0),
    (email.utils.formatdate(NOW - 42, usegmt=True), 0.0),
    ("soon", None),
    (None, None),
])
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_bucket_allows_burst_then_paces_at_rate() -> None:
    clock = FakeClock(start=1000.0)        # small numbers: exact float arithmetic
    limiter = RateLimiter(10, 20, clock=clock, sleep=clock.sleep)
    start = clock()
    waits = [limiter.acquire() for _ in range(50)]
    assert waits[:20] == [0.0] * 20
    assert all(w == pytest.approx(0.1) for w in waits[20:])
    assert clock() - start == pytest.approx(3.0)


def test_bucket_refills_while_idle() -> None:
    clock = FakeClock(start=1000.0)        # small numbers: exact float arithmetic
    limiter = RateLimiter(10, 5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    clock.advance(0.3)                     # three tokens back
    assert [limiter.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]


def test_bucket_is_thread_safe_and_fair() -> None:
    """8 threads reserve 200 slots at one frozen instant: no slot twice, never above the rate."""
    clock = FakeClock(start=1000.0)        # small numbers: exact float arithmetic
    rate, burst = 20.0, 5
    limiter = RateLimiter(rate, burst, clock=clock, sleep=clock.sleep)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            at = limiter.reserve()
            with lock:
                slots.append(at)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    start = clock()
    assert len(slots) == 200
    for k, at in enumerate(slots):
        assert at >= start + max(0, k - burst + 1) / rate - 1e-9
    assert slots[-1] == pytest.approx(start + (200 - burst) / rate)


def test_pause_holds_everyone_then_resumes_at_rate_without_burst() -> None:
    clock = FakeClock(start=1000.0)        # small numbers: exact float arithmetic
    limiter = RateLimiter(10, 20, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.pause_until(clock() + 5)
    t0 = clock()
    limiter.acquire()
    assert clock() - t0 == pytest.approx(5.0)
    assert limiter.acquire() == pytest.approx(0.1)       # no saved-up burst after a 429


def _retrier(clock: FakeClock, jitter: str = "none", attempts: int = 5,
             rng: float = 0.5) -> tuple[Retrier, Stats]:
    policy = RetryPolicy(max_attempts=attempts, base_delay_s=0.5, max_delay_s=3, retry_after_cap_s=10,
                         jitter=jitter, retry_statuses=frozenset({429, 502, 503, 504}))
    stats = Stats()
    limiter = RateLimiter(1000, 1000, clock=clock, sleep=clock.sleep)
    return Retrier("svc", policy, limiter, stats, sleep=clock.sleep, clock=clock, rng=lambda: rng), stats


def _responses(*statuses: int | type[Exception]) -> object:
    queue = list(statuses)
    request = httpx.Request("GET", "https://x.example/things")

    def send() -> httpx.Response:
        item = queue.pop(0)
        if isinstance(item, int):
            return httpx.Response(item, json={"ok": item}, request=request)
        raise item("boom", request=request)  # type: ignore[call-arg]

    return send


def test_backoff_doubles_and_is_capped() -> None:
    clock = FakeClock()
    retrier, stats = _retrier(clock)
    with pytest.raises(NetworkError) as info:
        retrier.run("GET", "/things", _responses(503, 502, 504, 503, 503), lambda r: r)  # type: ignore[arg-type]
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0]
    assert stats["retries"] == 4 and stats["requests"] == 5
    assert str(info.value).startswith("svc: GET /things failed after 5 attempt(s); last: HTTP 503")


def test_full_jitter_draws_within_backoff() -> None:
    clock = FakeClock()
    retrier, _ = _retrier(clock, jitter="full", rng=0.25)
    result = retrier.run("GET", "/t", _responses(503, 503, 200), lambda r: r.status_code)  # type: ignore[arg-type]
    assert result == 200
    assert clock.sleeps == [0.125, 0.25]


def test_transport_errors_and_transient_bodies_are_retried() -> None:
    clock = FakeClock()
    retrier, stats = _retrier(clock)
    calls = {"n": 0}

    def parse(response: httpx.Response) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientResponse("malformed JSON body")
        return "ok"

    send = _responses(httpx.ConnectError, httpx.ReadTimeout, 200, 200)
    assert retrier.run("GET", "/t", send, parse) == "ok"  # type: ignore[arg-type]
    assert stats["retries"] == 3


def test_non_retryable_status_goes_to_the_parser_once() -> None:
    clock = FakeClock()
    retrier, stats = _retrier(clock)
    assert retrier.run("GET", "/t", _responses(404), lambda r: r.status_code) == 404  # type: ignore[arg-type]
    assert stats["retries"] == 0 and clock.sleeps == []


def test_unreachable_service_names_the_url_it_tried_without_credentials() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=2, base_delay_s=0.5, max_delay_s=3, retry_after_cap_s=10,
                         jitter="none", retry_statuses=frozenset({502}))
    limiter = RateLimiter(1000, 1000, clock=clock, sleep=clock.sleep)
    retrier = Retrier("casavi", policy, limiter, Stats(), sleep=clock.sleep, clock=clock,
                      base_url="https://user:pw@casavi.internal:8443/api/?x=1")

    def send() -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(NetworkError) as info:
        retrier.run("POST", "/v2/authenticate", send, lambda r: r)
    message = str(info.value)
    assert "POST https://casavi.internal:8443/api/v2/authenticate failed after 2 attempt(s)" in message
    assert "reachable at https://casavi.internal:8443/api " in message and "CASAVI_SYNC_CASAVI_URL" in message
    assert "pw" not in message and "user" not in message and "x=1" not in message


def test_a_429_storm_that_outlasts_the_retries_says_throttled_not_unreachable() -> None:
    # found against an independent casavi: 100 answers 429 in a row ended the run with "Check that
    # casavi is reachable at ... and that this is its base URL", which sends an operator the wrong way.
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=3, retry_after_cap_s=10,
                         jitter="none", retry_statuses=frozenset({429, 503}))
    limiter = RateLimiter(1000, 1000, clock=clock, sleep=clock.sleep)
    retrier = Retrier("casavi", policy, limiter, Stats(), sleep=clock.sleep, clock=clock,
                      base_url="https://casavi.internal")

    with pytest.raises(NetworkError) as info:
        retrier.run("PUT", "/v2/units/u-1", lambda: httpx.Response(429, headers={"Retry-After": "2"}), lambda r: r)
    message = str(info.value)
    assert message.startswith("casavi: PUT https://casavi.internal/v2/units/u-1 failed after 3 attempt(s); "
                              "last: HTTP 429 (rate limited)")
    assert "throttl" in message and "reachable" not in message
    assert clock.sleeps == [2.0, 2.0]


def test_a_retry_after_date_already_past_waits_the_backoff_not_nothing() -> None:
    # A server whose clock is a few seconds behind ours names a moment we have already passed
    # (HTTP dates have whole seconds); "Retry-After: 0" likewise. Waiting nothing burned every
    # attempt within milliseconds and aborted the run on a server that asked for a short pause.
    clock = FakeClock()
    retrier, stats = _retrier(clock, attempts=4)
    past = email.utils.formatdate(clock() - 5, usegmt=True)
    request = httpx.Request("PUT", "https://x.example/v2/units/u-1")
    answers = [httpx.Response(429, headers={"Retry-After": past}, request=request),
               httpx.Response(429, headers={"Retry-After": "0"}, request=request),
               httpx.Response(200, json={}, request=request)]
    assert retrier.run("PUT", "/v2/units/u-1", lambda: answers.pop(0), lambda r: r.status_code) == 200
    assert clock.sleeps == [0.5, 1.0]                # the backoff, as without a Retry-After
    assert stats["throttled"] == 2
