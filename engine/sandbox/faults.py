"""Fault knobs of the sandbox's HTTP layer: what can go wrong between the engine and an API.

The real services rate-limit, stall, drop connections and have outages; the engine's retry,
back-off and resume logic is only trustworthy if tests can provoke each of these on demand and
reproducibly. ``FaultConfig`` is the declarative, frozen description (everything off by default,
one seed for every random choice); ``FaultState`` is the live part the server consults per request
(token buckets, the write count of an outage, the seeded RNG).

Faults apply to API calls only; sandbox control paths (``/sandbox/...``) are never faulted, so a
test can always mint a token or mutate data in the middle of a 429 storm.

Time here is transport time (``time.monotonic`` / ``time.time``), not the business ``Clock``:
advancing the sandbox clock by a month must not refill rate-limit buckets or push a
``Retry-After`` date a month into the future.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Literal

from engine.errors import ConfigError

# The rate limits of API.md (both [assumed]): SCALARA 10 req/s burst 20, casavi 20 req/s burst 40.
CONTRACT_RATE_LIMITS: dict[str, tuple[float, int]] = {
    "scalara": (10.0, 20),
    "casavi": (20.0, 40),
}


@dataclass(frozen=True)
class FaultConfig:
    """What the server does wrong, and how often. All knobs are off by default.

    Ratios are probabilities in [0, 1] drawn per API request from one RNG seeded by ``seed``, so
    a sequential test sees the same faults on every run.
    """

    latency_ms: float = 0.0               # added to every API call
    latency_jitter_ms: float = 0.0        # plus uniform 0..jitter
    rate_limit_per_s: float | None = None  # token bucket per credential; None = unlimited
    burst: int = 1                        # bucket size
    retry_after_http_date_ratio: float = 0.0  # share of 429s whose Retry-After is an HTTP date
    error_rate_502: float = 0.0
    error_rate_503: float = 0.0
    slow_response_ratio: float = 0.0      # answer only after slow_response_s
    slow_response_s: float = 30.0
    drop_connection_ratio: float = 0.0    # close the socket without any answer
    malformed_json_ratio: float = 0.0     # 200 with a truncated JSON body
    outage_after_writes: int | None = None  # after N successful writes: 503 until cleared
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("retry_after_http_date_ratio", "error_rate_502", "error_rate_503",
                     "slow_response_ratio", "drop_connection_ratio", "malformed_json_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"fault knob {name} must be between 0 and 1, got {value}")
        for name in ("latency_ms", "latency_jitter_ms", "slow_response_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"fault knob {name} must not be negative")
        if self.rate_limit_per_s is not None and self.rate_limit_per_s <= 0:
            raise ConfigError("fault knob rate_limit_per_s must be positive (or None for no limit)")
        if self.burst < 1:
            raise ConfigError("fault knob burst must be at least 1")
        if self.outage_after_writes is not None and self.outage_after_writes < 0:
            raise ConfigError("fault knob outage_after_writes must not be negative")

    @classmethod
    def contract_defaults(cls, api: str) -> FaultConfig:
        """The rate limit API.md promises for ``api`` ("scalara" or "casavi"), nothing else."""
        if api not in CONTRACT_RATE_LIMITS:
            raise ConfigError(f"unknown api {api!r}; known: {', '.join(sorted(CONTRACT_RATE_LIMITS))}")
        rate, burst = CONTRACT_RATE_LIMITS[api]
        return cls(rate_limit_per_s=rate, burst=burst)

    def with_changes(self, **changes: object) -> FaultConfig:
        """A copy with some knobs changed (``dataclasses.replace`` with validation)."""
        return replace(self, **changes)  # type: ignore[arg-type]


Kind = Literal["pass", "rate_limited", "outage", "error_502", "error_503", "drop"]


@dataclass(frozen=True)
class Decision:
    """What the server does with one API request, decided before the App sees it."""

    kind: Kind = "pass"
    delay_s: float = 0.0                  # sleep before answering (latency and slow responses)
    retry_after: str | None = None        # header value for 429 / outage 503
    malformed: bool = False               # truncate a 200 JSON body


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class FaultState:
    """The live side of a FaultConfig: seeded RNG, token buckets, outage bookkeeping. Thread-safe."""

    config: FaultConfig = field(default_factory=FaultConfig)
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._reset_locked(self.config)

    def _reset_locked(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._buckets: dict[str, _Bucket] = {}
        self._successful_writes = 0
        self._outage = False

    def reconfigure(self, config: FaultConfig) -> None:
        """Swap the knobs at runtime; RNG, buckets and outage state start afresh."""
        with self._lock:
            self._reset_locked(config)

    def clear_outage(self) -> None:
        """End an outage; the write count restarts, so N more writes trigger the next one."""
        with self._lock:
            self._outage = False
            self._successful_writes = 0

    @property
    def in_outage(self) -> bool:
        with self._lock:
            return self._outage

    def decide(self, credential: str) -> Decision:
        """The fate of one API request from ``credential`` (its auth header, or "" if none)."""
        with self._lock:
            cfg = self.config
            # Draw a fixed number of values per request so that the sequence of decisions only
            # depends on the seed and the request order, never on which knobs are on.
            draws = [self._rng.random() for _ in range(7)]
            delay = cfg.latency_ms / 1000.0 + draws[0] * cfg.latency_jitter_ms / 1000.0
            if self._outage:
                return Decision("outage", delay, retry_after="5")
            if cfg.rate_limit_per_s is not None:
                wait = self._take_token(credential, cfg.rate_limit_per_s, cfg.burst)
                if wait > 0:
                    return Decision("rate_limited", delay,
                                    retry_after=self._retry_after(wait, draws[1]))
            if draws[2] < cfg.drop_connection_ratio:
                return Decision("drop", delay)
            if draws[3] < cfg.error_rate_502:
                return Decision("error_502", delay)
            if draws[4] < cfg.error_rate_503:
                return Decision("error_503", delay)
            if draws[5] < cfg.slow_response_ratio:
                delay += cfg.slow_response_s
            return Decision("pass", delay, malformed=draws[6] < cfg.malformed_json_ratio)

    def record_write(self, successful: bool) -> None:
        """Count a write the App answered; the Nth successful one starts the outage."""
        with self._lock:
            if not successful or self.config.outage_after_writes is None:
                return
            self._successful_writes += 1
            if self._successful_writes >= self.config.outage_after_writes:
                self._outage = True

    def _take_token(self, credential: str, rate: float, burst: int) -> float:
        """Seconds until a token is free (0 = one was taken now)."""
        now = self.monotonic()
        bucket = self._buckets.get(credential)
        if bucket is None:
            bucket = self._buckets[credential] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _retry_after(self, wait_s: float, draw: float) -> str:
        seconds = max(1, math.ceil(wait_s))
        if draw < self.config.retry_after_http_date_ratio:
            # HTTP dates have whole seconds: round up once more so the client never comes early.
            return formatdate(self.wall() + seconds + 1, usegmt=True)
        return str(seconds)
