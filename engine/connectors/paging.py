"""A page walk must make progress, or it stops.

A server may answer every page with a fresh next cursor (or link) and no records, or with the
same records again: no cursor repeats, so a loop check does not see it, and only ``max_pages``
(100,000) would end the run, hours later, holding the tenant's lock. A walk makes progress when a
page brings at least one record it has not seen; ``max_idle_pages`` pages in a row without any is
a server fault: NetworkError (the run aborts, exit 3).

Empty pages are counted apart, against ``max_empty``: SCALARA's contract allows a page without
records that still names a next cursor (a server that pages through a table by id and filters each
page by ``updatedSince`` answers an incremental read with long runs of them), so only many more
of them in a row than any real table gives are a fault.
"""

from __future__ import annotations

from typing import Any

from engine.errors import NetworkError


class ProgressGuard:
    def __init__(self, service: str, what: str, max_idle: int, max_empty: int | None = None) -> None:
        self.service, self.what, self.max_idle = service, what, max_idle
        self.max_empty = max_idle if max_empty is None else max_empty
        self.idle = 0   # pages in a row that repeated records only
        self.empty = 0  # pages in a row without any record
        self.seen: set[str] = set()

    def page(self, items: list[Any]) -> None:
        """Count one page that has a next one; raise when too many in a row brought nothing new."""
        new = False
        for item in items:
            key = repr(item.get("id")) if isinstance(item, dict) else repr(item)[:200]
            if key not in self.seen:
                self.seen.add(key)
                new = True
        if new:
            self.idle = self.empty = 0
        elif items:
            self.idle += 1
        else:
            self.empty += 1
        if self.idle >= self.max_idle or self.empty >= self.max_empty:
            n = self.idle if self.idle >= self.max_idle else self.empty
            raise NetworkError(f"{self.service}: GET {self.what} made no progress: {n} pages in a row "
                               "brought no record not seen before, yet each named a next page; stopped. "
                               "The service's pagination is broken; try again later or ask its operator.")
