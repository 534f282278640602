"""Operator output: progress on a terminal, plain lines elsewhere, JSON logs on request, --quiet.

Everything the CLI prints goes through a ``Console`` so that ``--quiet`` and ``--log-format json``
hold everywhere. No secret ever reaches it: callers pass fingerprints, never tokens.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import time
import weakref
from collections.abc import Mapping
from typing import Any, TextIO

import click

_CONSOLES: weakref.WeakSet[Console] = weakref.WeakSet()


class Console:
    def __init__(self, *, quiet: bool = False, log_format: str = "text", stream: TextIO | None = None,
                 plain_progress: bool = True) -> None:
        self.quiet = quiet
        self.plain_progress = plain_progress  # False: progress only as a bar on a terminal (the demo)
        self.log_format = log_format
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and log_format == "text"
        self._last_line = ""
        self._last_emit = 0.0
        self._last_key: tuple[str, str] | None = None
        self._bar_key: tuple[str, str] | None = None
        self._bar_start = 0.0
        self._bar_end = time.monotonic()  # when the phase before the next one ended (at first: now)
        self._bar_state: tuple[str, str, int, int, float | None, str] | None = None
        _CONSOLES.add(self)

    # -- messages -------------------------------------------------------------------------------
    def info(self, message: str, **fields: Any) -> None:
        if self.quiet:
            return
        self._log("info", message, fields)

    def warn(self, message: str, **fields: Any) -> None:
        self._log("warning", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log("error", message, fields)

    def _log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self._clear()
        if self.log_format == "json":
            rec = {"ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                   "level": level, "msg": message, **fields}
            click.echo(json.dumps(rec, ensure_ascii=False, default=str), file=self.stream)
        else:
            prefix = "" if level == "info" else f"{level}: "
            click.echo(prefix + message, file=self.stream)

    # -- progress -------------------------------------------------------------------------------
    def progress(self, phase: str, kind: str, done: int, total: int,
                 detail: Mapping[str, Any] | None = None) -> None:
        """Progress callback for the engine: (phase, kind, done, total[, detail]); total 0 = unknown
        (SCALARA's pages carry no total: the phase's last call, done == total, gives the real one).
        ``detail`` (while writing) counts complete properties and names the current one.

        On a terminal: one bar per phase and kind with count, rate and ETA, redrawn in place; it
        ends with a newline when the phase is done or the next phase starts, and ``finish`` ends
        an open one, so no other output ever lands on a half-drawn bar line. Elsewhere: a plain
        line when a phase starts and ends, at most one every 5 s between; JSON events with
        ``--log-format json``.
        """
        if self.quiet:
            return
        now = time.monotonic()
        key = (phase, kind)
        if key != self._bar_key:
            # a phase starts when the one before it ended (its first call comes after a page is
            # read); the first one when the console was made or last finished
            start = self._bar_end
            self._end_bar()
            self._bar_key, self._bar_start, self._bar_state = key, start, None
        finished = bool(total) and done >= total
        rate, eta = _rate_eta(done, total, now - self._bar_start)
        if finished:
            self._bar_end = now  # the next phase starts here
        props = _properties_text(detail)
        self._bar_state = (phase, kind, done, total, rate, props)
        if self.tty:
            if now - self._last_emit < 0.1 and not finished:
                return
            self._draw(_bar_line(phase, kind, done, total, rate, eta) + props)
            self._last_emit = now
            if finished:
                self._end_bar()
            return
        # not a terminal: a line when a phase starts or finishes, else at most every 5 s
        if not self.plain_progress:
            return
        if self.log_format != "json" and not finished and (key != self._last_key or now - self._last_emit < 5):
            if key != self._last_key:  # plain lines: the end of each phase, and every 5 s of a long one
                self._last_key, self._last_emit = key, now
            return
        if key != self._last_key or finished or now - self._last_emit >= 5:
            if self.log_format == "json":
                fields: dict[str, Any] = {"phase": phase, "kind": kind, "done": done,
                                          "total": total or None, "finished": finished,
                                          "ratePerS": round(rate, 1) if rate is not None else None,
                                          "etaS": round(eta, 1) if eta is not None else None}
                if detail and detail.get("properties"):
                    fields["properties"] = detail["properties"]
                self._log("info", "progress", fields)
            else:
                text = f"{phase} {kind}: {done}" + (f"/{total}" if total else "")
                if finished:
                    text += " done" + (f" ({_rate_text(rate)})" if rate is not None else "")
                elif rate is not None:
                    text += f" ({_rate_text(rate)}" + (f", ETA {_eta_text(eta)})" if eta is not None else ")")
                click.echo(text + props, file=self.stream)
            self._last_key = key
            self._last_emit = now

    def finish(self) -> None:
        """End an open progress bar (its last state stays on screen) before other output follows."""
        self._end_bar()
        self._bar_key = self._last_key = None
        self._bar_end = time.monotonic()

    def _draw(self, line: str) -> None:
        width = shutil.get_terminal_size((100, 24)).columns - 1
        line = line[:width] if width > 20 else line
        self.stream.write("\r" + line.ljust(len(self._last_line)))
        self.stream.flush()
        self._last_line = line

    def _end_bar(self) -> None:
        """The current bar's final state, then a newline (terminal only; plain lines need nothing)."""
        if self._bar_state is not None and not (self._bar_state[3] and self._bar_state[2] >= self._bar_state[3]):
            self._bar_end = time.monotonic()  # an unfinished phase ends now
        if self.tty and self._bar_state is not None:
            phase, kind, done, total, rate, props = self._bar_state
            self._draw(_bar_line(phase, kind, done, total or done, rate, None, final=True) + props)
            self.stream.write("\n")
            self.stream.flush()
            self._last_line = ""
        self._bar_state = None

    def _clear(self, newline: bool = False) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n" if newline else "\r" + " " * len(self._last_line) + "\r")
            self.stream.flush()
            self._last_line = ""
            self._last_emit = 0.0  # redraw the bar at the next call


def finish_all() -> None:
    """End the open progress bars of every console (before an error message is printed)."""
    for console in list(_CONSOLES):
        console.finish()


def _rate_eta(done: int, total: int, elapsed: float) -> tuple[float | None, float | None]:
    if elapsed <= 0.001 or done <= 0:
        return None, None
    rate = done / elapsed
    eta = (total - done) / rate if total and done < total else None
    return rate, eta


def _rate_text(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"


def _eta_text(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _bar_line(phase: str, kind: str, count: int, total: int, rate: float | None, eta: float | None, *,
              final: bool = False) -> str:
    """``write     units             [############------------]   120/240  85/s  ETA 0:02``."""
    head = f"{phase:<9} {kind:<17} "
    speed = f"  {_rate_text(rate)}" if rate is not None else ""
    if total:
        width = 24
        filled = min(width, int(width * count / total))
        bar = "#" * filled + "-" * (width - filled)
        tail = "  done" if final or count >= total else (f"  ETA {_eta_text(eta)}" if eta is not None else "")
        return f"{head}[{bar}] {count:>5}/{total}{speed}{tail}"
    return f"{head}{count:>5} records{speed}" + ("  done" if final else "")


def _properties_text(detail: Mapping[str, Any] | None) -> str:
    """", properties 12/200 (current: Musterstraße 5)" -- or "" when the run has no properties."""
    props = (detail or {}).get("properties") or {}
    if not props.get("total"):
        return ""
    current = props.get("current") or {}
    name = current.get("name") or current.get("id")
    return f", properties {props['done']}/{props['total']}" + (f" (current: {name})" if name else "")
