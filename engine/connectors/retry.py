"""Retries, backoff and client-side rate limiting shared by both connectors.

Both APIs throttle per token (429 + ``Retry-After``) and have transient 502/503/504s. The sync
writes with a pool of threads, so three things matter:

* every request first takes a slot from one shared token bucket (``RateLimiter``), so a pool of 8
  writers stays under the contract's rate instead of provoking 429s;
* a transient failure is retried with exponential backoff and full jitter (threads that failed
  together do not retry together), and a 429's ``Retry-After`` (seconds or HTTP date, capped)
  wins over the computed backoff;
* after a 429 the limiter is *paused* for everyone until the server's deadline: one throttled
  thread must not leave seven others hammering a server that already said "slow down".

``sleep`` and ``clock`` are injectable so tests neither sleep nor depend on timing; ``clock``
returns POSIX seconds (``time.time``) because Retry-After dates and token expiry are wall-clock.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx

from engine.connectors.config import RateLimit, RetryPolicy, Timeouts
from engine.errors import NetworkError

Sleep = Callable[[float], None]
Clock = Callable[[], float]
T = TypeVar("T")

log = logging.getLogger(__name__)

_EPSILON = 1e-6                                # seconds; shorter waits are rounding noise


class TransientResponse(Exception):
    """Raised by a response parser when an answer is unusable but probably transient.

    A malformed JSON body or an unexpected envelope is retried like a 5xx (the sandbox's fault knob
    produces exactly this); when retries run out it becomes a NetworkError with this text.
    """


class Stats:
    """Thread-safe request counters of one client (requests, reads, writes, retries, throttled ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + amount

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def __repr__(self) -> str:
        return f"Stats({self.snapshot()})"


class RateLimiter:
    """A thread-safe token bucket (as GCRA: one "theoretical arrival time", no timer thread).

    ``acquire`` reserves the next free slot under the lock and sleeps outside it, so waiting threads
    are served in order, each ``1/rate`` apart, after an initial ``burst``. ``pause_until`` pushes
    every later slot past a deadline and drops the saved-up burst, so after a 429 all threads resume
    at the sustained rate.
    """

    def __init__(self, rate_per_s: float, burst: int, *, clock: Clock = time.time,
                 sleep: Sleep = time.sleep) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self._interval = 1.0 / rate_per_s
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat: float | None = None          # theoretical arrival time of the next request

    def reserve(self) -> float:
        """Reserve the next slot; return the clock time at which the caller may send."""
        with self._lock:
            now = self._clock()
            tat = now if self._tat is None else max(self._tat, now)
            send_at = tat - self._tolerance
            if send_at - now < _EPSILON:           # float residue of adding intervals up
                send_at = now
            self._tat = tat + self._interval
            return send_at

    def acquire(self) -> float:
        """Wait for a slot; return the seconds waited (0.0 when a token was free)."""
        wait = self.reserve() - self._clock()
        if wait >= _EPSILON:
            self._sleep(wait)
            return wait
        return 0.0

    def pause_until(self, deadline: float) -> None:
        """No request may go before ``deadline``; afterwards requests go at the sustained rate."""
        with self._lock:
            floor = deadline + self._tolerance
            self._tat = floor if self._tat is None else max(self._tat, floor)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:                      # HTTP dates are GMT by definition
        return None
    return max(0.0, when.timestamp() - now)


class Retrier:
    """Runs one logical request with rate limiting and retries; shared by all threads of a client."""

    def __init__(self, service: str, policy: RetryPolicy, limiter: RateLimiter, stats: Stats, *,
                 sleep: Sleep = time.sleep, clock: Clock = time.time,
                 rng: Callable[[], float] = random.random, base_url: str = "") -> None:
        self.service = service
        self.base_url = _public_url(base_url)  # for messages: where the requests went
        self.policy = policy
        self.limiter = limiter
        self.stats = stats
        self._sleep = sleep
        self._clock = clock
        self._rng = rng

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1``: base * 2^(attempt-1), capped, with optional jitter."""
        ceiling = min(self.policy.max_delay_s, self.policy.base_delay_s * 2.0 ** (attempt - 1))
        return ceiling * self._rng() if self.policy.jitter == "full" else ceiling

    def run(self, method: str, path: str, send: Callable[[], httpx.Response],
            parse: Callable[[httpx.Response], T]) -> T:
        """Send until ``parse`` accepts the answer; raise NetworkError when attempts run out.

        ``path`` is only for messages (never a URL with credentials). ``parse`` may raise
        ``TransientResponse`` to ask for a retry, or any engine error to stop.
        """
        last = "no attempt made"
        attempts = self.policy.max_attempts
        for attempt in range(1, attempts + 1):
            waited = self.limiter.acquire()
            if waited > 0:
                self.stats.incr("limiter_wait_ms", round(waited * 1000))
            self.stats.incr("requests")
            throttled_for: float | None = None
            try:
                response = send()
            except httpx.TimeoutException as exc:
                last = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__})"
            else:
                status = response.status_code
                if status in self.policy.retry_statuses:
                    last = f"HTTP {status}"
                    if status == 429:
                        self.stats.incr("throttled")
                        told = parse_retry_after(response.headers.get("retry-after"), self._clock())
                        if told:  # 0 (or a date we already passed: clocks differ) -> the backoff
                            throttled_for = min(told, self.policy.retry_after_cap_s)
                else:
                    try:
                        return parse(response)
                    except TransientResponse as exc:
                        last = f"HTTP {status}, {exc}"
            if attempt == attempts:
                break
            delay = throttled_for if throttled_for is not None else self.backoff(attempt)
            if last.startswith("HTTP 429"):
                self.limiter.pause_until(self._clock() + delay)
            self.stats.incr("retries")
            log.info("%s %s %s: %s; retry %d/%d in %.2f s", self.service, method, path, last,
                        attempt, attempts - 1, delay)
            if delay > 0:
                self._sleep(delay)
        where = f"{self.base_url}{path if path.startswith('/') else '/' + path}" if self.base_url else path
        if last == "HTTP 429":  # it answered, so it is reachable: it kept throttling us
            raise NetworkError(f"{self.service}: {method} {where} failed after {attempts} attempt(s); last: {last} "
                               f"(rate limited). {self.service} kept throttling the requests; run again later.")
        if self.base_url:
            hint = (f"Check that {self.service} is reachable at {self.base_url} and that this is its base URL "
                    f"(connector config, or CASAVI_SYNC_{self.service.upper()}_URL), then run again.")
        else:
            hint = "Check that the service is reachable and the base URL is right, then run again."
        raise NetworkError(f"{self.service}: {method} {where} failed after {attempts} attempt(s); last: {last}. "
                           + hint)


def _public_url(url: str) -> str:
    """``url`` without user info or query (never a credential in a message), no trailing slash."""
    if not url:
        return ""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return ""
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None)).rstrip("/")


class _SideConfig(Protocol):
    """The parts of ScalaraConfig / CasaviConfig that pacing and timeouts need."""

    @property
    def rate_limit(self) -> RateLimit: ...
    @property
    def retry(self) -> RetryPolicy: ...
    @property
    def timeouts(self) -> Timeouts: ...


def pacing(service: str, cfg: _SideConfig, *, sleep: Sleep, clock: Clock,
           rng: Callable[[], float] | None) -> tuple[Stats, RateLimiter, Retrier]:
    """One client's counters, rate limiter and retrier, from its side of the connector config."""
    stats = Stats()
    limiter = RateLimiter(cfg.rate_limit.rate_per_s, cfg.rate_limit.burst, clock=clock, sleep=sleep)
    extra: dict[str, Any] = {"rng": rng} if rng is not None else {}
    base_url = str(getattr(cfg, "base_url", "") or "")
    return stats, limiter, Retrier(service, cfg.retry, limiter, stats, sleep=sleep, clock=clock, base_url=base_url,
                                   **extra)


def http_timeout(cfg: _SideConfig) -> httpx.Timeout:
    t = cfg.timeouts
    return httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.write_s, pool=t.pool_s)
