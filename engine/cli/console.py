"""Operator output: progress on a terminal, plain lines elsewhere, JSON logs on request, --quiet.

Everything the CLI prints goes through a ``Console`` so that ``--quiet`` and ``--log-format json``
hold everywhere. No secret ever reaches it: callers pass fingerprints, never tokens.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import click


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
        """Progress callback for the engine: (phase, kind, done, total[, detail]); total 0 = unknown.
        ``detail`` (while writing) counts complete properties and names the current one."""
        if self.quiet:
            return
        now = time.monotonic()
        key = (phase, kind)
        finished = total and done >= total
        props = _properties_text(detail)
        if self.tty:
            if now - self._last_emit < 0.1 and not finished:
                return
            if total:
                width = 24
                filled = int(width * done / total)
                bar = "#" * filled + "-" * (width - filled)
                line = f"{phase:<9} {kind:<17} [{bar}] {done}/{total}"
            else:
                line = f"{phase:<9} {kind:<17} {done} records"
            line += props
            self.stream.write("\r" + line.ljust(len(self._last_line)))
            self.stream.flush()
            self._last_line = line
            self._last_emit = now
            if finished:
                self._clear(newline=True)
            return
        # not a terminal: a line when a phase starts or finishes, else at most every 5 s
        if not self.plain_progress:
            return
        if key != self._last_key or finished or now - self._last_emit >= 5:
            if self.log_format == "json":
                fields: dict[str, Any] = {"phase": phase, "kind": kind, "done": done, "total": total}
                if detail and detail.get("properties"):
                    fields["properties"] = detail["properties"]
                self._log("info", "progress", fields)
            else:
                click.echo(f"{phase} {kind}: {done}" + (f"/{total}" if total else "") + props, file=self.stream)
            self._last_key = key
            self._last_emit = now

    def _clear(self, newline: bool = False) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n" if newline else "\r" + " " * len(self._last_line) + "\r")
            self.stream.flush()
            self._last_line = ""


def _properties_text(detail: Mapping[str, Any] | None) -> str:
    """", properties 12/200 (current: Musterstraße 5)" -- or "" when the run has no properties."""
    props = (detail or {}).get("properties") or {}
    if not props.get("total"):
        return ""
    current = props.get("current") or {}
    name = current.get("name") or current.get("id")
    return f", properties {props['done']}/{props['total']}" + (f" (current: {name})" if name else "")
