"""The one seam between the sync and whoever observes it: listeners of finished runs.

The sync calls :func:`run_finished` with the finished run's report (the same document that is
written as JSON). Listeners are registered by the process faces (``serve``, ``worker``, ``web``)
when they start metrics or alerts. A listener that raises is logged and ignored: observing a run
must never change its outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[Mapping[str, Any]], None]

_lock = threading.Lock()
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Register ``listener``; returns a function that removes it again."""
    with _lock:
        _listeners.append(listener)

    def remove() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove


def run_finished(report: Mapping[str, Any]) -> None:
    """Tell every listener about a finished run (called once per run by the sync)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(report)
        except Exception:  # an observer's bug must not fail the run it observes
            log.exception("run listener %r failed", listener)
