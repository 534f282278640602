"""The sandbox's clock: real time plus an offset that tests and the demo can advance."""

from __future__ import annotations

import datetime as dt
import threading


class Clock:
    """Thread-safe UTC clock; ``advance`` moves it forward (day-two scenarios, token expiry)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._lock = threading.Lock()
        base = start or dt.datetime.now(dt.UTC)
        self._offset = base - dt.datetime.now(dt.UTC)

    def now(self) -> dt.datetime:
        with self._lock:
            return dt.datetime.now(dt.UTC) + self._offset

    def today(self) -> dt.date:
        return self.now().date()

    def advance(self, *, days: float = 0, seconds: float = 0) -> None:
        with self._lock:
            self._offset += dt.timedelta(days=days, seconds=seconds)

    def timestamp(self) -> str:
        """ISO 8601 UTC with Z and milliseconds, as both APIs write timestamps."""
        return self.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
