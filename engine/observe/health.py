"""Liveness and readiness, for systemd watchdogs, load balancers and Kubernetes probes.

* **Liveness** answers "is the process loop still ticking?": the loop calls :meth:`Health.tick`
  every pass; when the last tick is older than ``max_tick_age_s`` the process is stuck and should
  be restarted. A process without a loop (the console) counts as live while it answers.
* **Readiness** answers "can this process do its job now?": every named check runs (state store
  reachable, mappings and connector config valid, the secrets key decrypts the stored secrets);
  a check passes by returning and fails by raising. The answer lists each check with ``ok`` or its
  one-line reason - never a secret, since the reasons are the engine's own operator messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Check = Callable[[], None]


@dataclass
class Health:
    checks: Mapping[str, Check] = field(default_factory=dict)
    max_tick_age_s: float | None = None  # None: no loop to watch
    clock: Callable[[], float] = time.monotonic
    _last_tick: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self) -> None:
        with self._lock:
            self._last_tick = self.clock()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        if self.max_tick_age_s is None:
            return True, {"status": "ok"}
        with self._lock:
            last = self._last_tick
        if last is None:
            return False, {"status": "starting", "detail": "the loop has not ticked yet"}
        age = self.clock() - last
        if age > self.max_tick_age_s:
            return False, {"status": "stuck", "detail": f"the loop last ticked {age:.0f} s ago "
                           f"(limit {self.max_tick_age_s:.0f} s)", "lastTickAgeS": round(age, 1)}
        return True, {"status": "ok", "lastTickAgeS": round(age, 1)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        results: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                check()
            except Exception as exc:
                results[name] = _one_line(exc)
            else:
                results[name] = "ok"
        ready = all(v == "ok" for v in results.values())
        return ready, {"status": "ok" if ready else "not ready", "checks": results}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
