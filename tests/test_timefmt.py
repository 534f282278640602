"""One time format wherever a person reads a time: local wall time with its zone, to the second."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from engine.timefmt import human_time, parse_stamp


def test_stored_utc_stamps_read_in_the_schedule_zone() -> None:
    assert human_time("2026-12-02T03:15:49.123Z") == "2026-12-02 04:15:49 CET"          # default Europe/Berlin
    assert human_time("2026-07-01T02:00:00Z") == "2026-07-01 04:00:00 CEST"
    assert human_time(dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC), ZoneInfo("UTC")) == "2026-12-02 03:00:00 UTC"


def test_unknown_or_empty_stamps_show_a_dash() -> None:
    assert human_time(None) == "-" and human_time("") == "-" and human_time("yesterday") == "-"
    assert parse_stamp("2026-12-02T03:15:49+01:00") == dt.datetime(2026, 12, 2, 2, 15, 49, tzinfo=dt.UTC)


def test_serve_logs_the_next_run_in_the_same_format(tmp_path: Path) -> None:
    from engine.schedule import Schedule
    from engine.serve import ServeOptions, Server
    from engine.state import StateStore
    from tests.test_serve import FakeClock, FakeRunner, RecLog

    state = tmp_path / "state.db"
    with StateStore.open(state) as store:
        store.add_tenant("acme", "key-acme", "secret-acme")
        store.activate_tenant("acme")
        store.save_connection("acme", "scl_token_acme", "demo")
    log = RecLog()
    srv = Server(state, ServeOptions(Schedule.from_strings("04:00", "Europe/Berlin", 0), 1, 0.01), FakeRunner(), log,
                 clock=FakeClock("2026-12-02T03:00"))
    srv.request_stop()
    with srv:
        srv.serve_forever()
    lines = [message for _, message, fields in log.lines if fields.get("event") == "schedule.next"]
    assert lines == ["tenant 'acme': next run 2026-12-02 04:00:00 CET"]
