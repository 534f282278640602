"""Progress as a person sees it: bars on a terminal that never leave a half line under other
output, plain lines elsewhere, JSON events with real totals."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from engine.cli import console as console_mod
from engine.cli.console import Console, finish_all


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows: carriage returns overwrite the line, newlines end it."""
    lines: list[str] = []
    for line in raw.split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part):]
        lines.append(shown.rstrip())
    return lines


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(console_mod.time, "monotonic", lambda: now[0])
    return now


def _run_phases(con: Console, clock: list[float]) -> None:
    for n in (100, 200, 300):          # a resource read page by page: total unknown until it ends
        clock[0] += 1.0
        con.progress("extract", "contacts", n, 0)
    con.progress("extract", "contacts", 300, 300)
    for n in (50, 100, 150):           # writes: total known, half way after 2 s
        clock[0] += 1.0
        con.progress("write", "units", n, 300)


def test_terminal_bar_has_count_rate_and_eta_and_ends_its_line_before_other_output(clock: list[float]) -> None:
    stream = Tty()
    con = Console(stream=stream)
    _run_phases(con, clock)
    raw_open = stream.getvalue()
    assert not raw_open.endswith("\n")                      # the write bar is open, drawn in place
    open_line = screen(raw_open)[-1]
    assert "[############------------]   150/300" in open_line
    assert "50/s" in open_line and "ETA 0:03" in open_line
    con.finish()                                             # before the command prints its summary
    raw = stream.getvalue()
    assert raw.endswith("\n")
    shown = [line for line in screen(raw) if line]
    assert shown[0].startswith("extract   contacts          [########################]   300/300")
    assert shown[0].endswith("100/s  done")                 # 300 records in 3 s, the real total
    assert shown[1].startswith("write     units             [############------------]   150/300")
    assert len(shown) == 2                                   # one line per phase


def test_an_error_never_lands_on_a_half_drawn_bar(clock: list[float], capsys: pytest.CaptureFixture[str]) -> None:
    stream = Tty()
    con = Console(stream=stream)
    con.progress("write", "units", 10, 300)
    finish_all()                                             # what handle_errors does before "error: ..."
    assert stream.getvalue().endswith("\n")
    con.info("a message")                                    # messages clear the bar line, then print
    assert screen(stream.getvalue())[-2] == "a message"


def test_plain_lines_when_not_a_terminal(clock: list[float]) -> None:
    stream = io.StringIO()
    con = Console(stream=stream)
    _run_phases(con, clock)
    for n in range(160, 300, 10):                            # a long phase: a line every 5 s
        clock[0] += 1.0
        con.progress("write", "units", n, 300)
    con.progress("write", "units", 300, 300)
    con.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "extract contacts: 300/300 done (100/s)"
    assert lines[1].startswith("write units: ") and "ETA" in lines[1]
    assert lines[-1] == "write units: 300/300 done (18/s)"  # 300 in 17 s
    assert 3 <= len(lines) <= 6


def test_json_progress_has_real_totals(clock: list[float]) -> None:
    stream = io.StringIO()
    con = Console(stream=stream, log_format="json")
    _run_phases(con, clock)
    events: list[dict[str, Any]] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(e["msg"] == "progress" for e in events)
    done = [e for e in events if e["finished"]]
    assert done[0]["kind"] == "contacts" and done[0]["done"] == done[0]["total"] == 300
    assert done[0]["ratePerS"] == 100.0
    assert all(e["total"] is None for e in events if e["kind"] == "contacts" and not e["finished"])
    writes = [e for e in events if e["kind"] == "units"]
    assert writes and all(e["total"] == 300 for e in writes)


def test_quiet_shows_no_progress(clock: list[float]) -> None:
    stream = Tty()
    con = Console(stream=stream, quiet=True)
    _run_phases(con, clock)
    con.finish()
    assert stream.getvalue() == ""
