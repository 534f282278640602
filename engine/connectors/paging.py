"""A page walk must make progress, or it stops.

A server may answer every page with a fresh next cursor (or link) and no records, or with the
same records again: no cursor repeats, so a loop check does not see it, and only ``max_pages``
(100,000) would end the run, hours later, holding the tenant's lock. A walk makes progress when a
page brings at least one record it has not seen; ``max_idle_pages`` pages in a row without any is
a server fault: NetworkError (the run aborts, exit 3).
"""

from __future__ import annotations

from typing import Any

from engine.errors import NetworkError


class ProgressGuard:
    def __init__(self, service: str, what: str, max_idle: int) -> None:
        self.service, self.what, self.max_idle = service, what, max_idle
        self.idle = 0
        self.seen: set[str] = set()

    def page(self, items: list[Any]) -> None:
        """Count one page that has a next one; raise when too many in a row brought nothing new."""
        new = False
        for item in items:
            key = repr(item.get("id")) if isinstance(item, dict) else repr(item)[:200]
            if key not in self.seen:
                self.seen.add(key)
                new = True
        self.idle = 0 if new else self.idle + 1
        if self.idle >= self.max_idle:
            raise NetworkError(f"{self.service}: GET {self.what} made no progress: {self.idle} pages in a row "
                               "brought no record not seen before, yet each named a next page; stopped. "
                               "The service's pagination is broken; try again later or ask its operator.")
