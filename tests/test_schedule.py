"""The daily schedule: slots on normal and DST days, due/next_run, downtime, jitter over a year."""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections import Counter

import pytest

from engine.errors import ConfigError
from engine.schedule import (
    Schedule,
    due,
    jitter_offset,
    load_zone,
    next_run,
    parse_time_of_day,
    resolve_local,
)

BERLIN = load_zone("Europe/Berlin")
SPRING, FALL = dt.date(2026, 3, 29), dt.date(2026, 10, 25)


def berlin(text: str) -> dt.datetime:
    """A Berlin wall time; ``+1``/``+2`` suffix picks the offset where it matters."""
    if text.endswith(("+01:00", "+02:00")):
        return dt.datetime.fromisoformat(text)
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def sched(at: str = "04:00", jitter: int = 0) -> Schedule:
    return Schedule.from_strings(at, "Europe/Berlin", jitter)


# -- resolving wall times ---------------------------------------------------------------------

RESOLVE = [
    # (day, time, expected instant as Berlin wall time with offset)
    ("2026-05-04", "04:00", "2026-05-04T04:00:00+02:00"),   # summer, CEST
    ("2026-01-15", "04:00", "2026-01-15T04:00:00+01:00"),   # winter, CET
    ("2026-03-29", "04:00", "2026-03-29T04:00:00+02:00"),   # spring forward: 04:00 unaffected
    ("2026-03-29", "02:30", "2026-03-29T03:00:00+02:00"),   # nonexistent -> the jump (03:00 CEST)
    ("2026-03-29", "02:00", "2026-03-29T03:00:00+02:00"),   # start of the gap
    ("2026-03-29", "01:59", "2026-03-29T01:59:00+01:00"),   # just before the gap
    ("2026-03-29", "03:00", "2026-03-29T03:00:00+02:00"),   # first valid wall time
    ("2026-10-25", "04:00", "2026-10-25T04:00:00+01:00"),   # fall back: 04:00 unaffected
    ("2026-10-25", "02:30", "2026-10-25T02:30:00+02:00"),   # ambiguous -> first occurrence (CEST)
    ("2026-10-25", "02:00", "2026-10-25T02:00:00+02:00"),
    ("2026-10-25", "03:00", "2026-10-25T03:00:00+01:00"),   # after the repeat
    ("2026-12-31", "23:59", "2026-12-31T23:59:00+01:00"),
    ("2026-06-01", "00:00", "2026-06-01T00:00:00+02:00"),
]


@pytest.mark.parametrize(("day", "at", "expected"), RESOLVE)
def test_resolve_local(day: str, at: str, expected: str) -> None:
    got = resolve_local(dt.date.fromisoformat(day), parse_time_of_day(at), BERLIN)
    assert got == dt.datetime.fromisoformat(expected)
    assert got.tzinfo == dt.UTC


# -- due --------------------------------------------------------------------------------------

DUE = [
    # (at, last scheduled day, now in Berlin, expected due day or None)
    ("04:00", None, "2026-05-04T03:59", None),              # never ran: no catch-up for yesterday
    ("04:00", None, "2026-05-04T04:00", "2026-05-04"),      # never ran: today's slot
    ("04:00", None, "2026-05-04T18:00", "2026-05-04"),      # never ran: today's slot has passed, at once
    ("04:00", "2026-05-03", "2026-05-04T03:59", None),
    ("04:00", "2026-05-03", "2026-05-04T04:00", "2026-05-04"),
    ("04:00", "2026-05-04", "2026-05-04T04:01", None),      # today's already started
    ("04:00", "2026-05-04", "2026-05-04T23:59", None),
    ("04:00", "2026-05-04", "2026-05-05T04:00", "2026-05-05"),
    ("04:00", "2026-05-02", "2026-05-04T03:00", "2026-05-03"),  # down at yesterday's slot: catch up once
    ("04:00", "2026-04-20", "2026-05-04T12:00", "2026-05-04"),  # two weeks down: ONE run, for the latest day
    ("04:00", "2026-05-09", "2026-05-04T12:00", None),      # clock went back: nothing
    # DST, 04:00
    ("04:00", "2026-03-28", "2026-03-29T03:59", None),
    ("04:00", "2026-03-28", "2026-03-29T04:00", "2026-03-29"),
    ("04:00", "2026-10-24", "2026-10-25T03:59", None),
    ("04:00", "2026-10-24", "2026-10-25T04:00", "2026-10-25"),
    # DST, 02:30: spring -> 03:00 CEST; fall -> the first 02:30 (CEST)
    ("02:30", "2026-03-28", "2026-03-29T01:59+01:00", None),
    ("02:30", "2026-03-28", "2026-03-29T03:00+02:00", "2026-03-29"),
    ("02:30", "2026-03-29", "2026-03-29T03:30+02:00", None),
    ("02:30", "2026-10-24", "2026-10-25T02:29+02:00", None),
    ("02:30", "2026-10-24", "2026-10-25T02:30+02:00", "2026-10-25"),
    ("02:30", "2026-10-25", "2026-10-25T02:30+01:00", None),  # the second 02:30 is no second run
    ("02:30", "2026-10-25", "2026-10-25T02:45+01:00", None),
]


@pytest.mark.parametrize(("at", "last", "now", "expected"), DUE)
def test_due(at: str, last: str | None, now: str, expected: str | None) -> None:
    s = sched(at)
    last_day = dt.date.fromisoformat(last) if last else None
    moment = berlin(now)
    got = s.due("acme", last_day, moment)
    assert got == (dt.date.fromisoformat(expected) if expected else None)
    # next_run agrees with due: at or before now exactly when something is due
    assert (s.next_run("acme", last_day, moment) <= moment) == (got is not None)


NEXT = [
    ("04:00", "2026-05-04", "2026-05-04T05:00", "2026-05-05T04:00:00+02:00"),
    ("04:00", "2026-05-03", "2026-05-04T03:00", "2026-05-04T04:00:00+02:00"),
    ("04:00", "2026-03-28", "2026-03-28T12:00", "2026-03-29T04:00:00+02:00"),
    ("02:30", "2026-03-28", "2026-03-28T12:00", "2026-03-29T03:00:00+02:00"),
    ("02:30", "2026-10-24", "2026-10-24T12:00", "2026-10-25T02:30:00+02:00"),
    ("02:30", "2026-10-25", "2026-10-25T02:31+02:00", "2026-10-26T02:30:00+01:00"),
    ("04:00", "2026-05-01", "2026-05-04T12:00", "2026-05-04T04:00:00+02:00"),  # overdue: the missed slot
]


@pytest.mark.parametrize(("at", "last", "now", "expected"), NEXT)
def test_next_run(at: str, last: str, now: str, expected: str) -> None:
    got = sched(at).next_run("acme", dt.date.fromisoformat(last), berlin(now))
    assert got == dt.datetime.fromisoformat(expected)


def test_module_functions_use_the_default_schedule() -> None:
    now = berlin("2026-05-04T12:00")
    offset = jitter_offset("acme", dt.timedelta(minutes=30))
    assert due("acme", dt.date(2026, 5, 4), now) is None
    assert due("acme", dt.date(2026, 5, 3), now) == dt.date(2026, 5, 4)
    assert next_run("acme", dt.date(2026, 5, 4), now) == berlin("2026-05-05T04:00") + offset


def test_a_week_of_downtime_catches_up_with_one_run() -> None:
    s = sched("04:00", 30)
    last = dt.date(2026, 3, 24)
    back = berlin("2026-03-31T10:17")       # a week later, across the spring change
    runs = []
    now = back
    for _ in range(60 * 24):                # keep ticking for a day after the restart
        day = s.due("acme", last, now)
        if day is not None:
            runs.append((now, day))
            last = day
        now += dt.timedelta(minutes=1)
    assert runs[0] == (back, dt.date(2026, 3, 31))
    assert [d for _, d in runs] == [dt.date(2026, 3, 31), dt.date(2026, 4, 1)]
    assert runs[1][0] >= s.slot("acme", dt.date(2026, 4, 1))


# -- jitter -------------------------------------------------------------------------------------

def test_jitter_is_deterministic_bounded_and_spread() -> None:
    window = dt.timedelta(minutes=30)
    names = [f"tenant-{i:02d}" for i in range(50)]
    offsets = [jitter_offset(n, window) for n in names]
    assert offsets == [jitter_offset(n, window) for n in names]      # a restart never moves a slot
    assert all(dt.timedelta(0) <= o < window for o in offsets)
    assert len(set(offsets)) >= 45
    minutes = Counter(int(o.total_seconds() // 300) for o in offsets)  # 6 buckets of 5 minutes
    assert len(minutes) == 6 and max(minutes.values()) <= 20
    assert jitter_offset("anything", dt.timedelta(0)) == dt.timedelta(0)


def _simulate(schedule: Schedule, names: list[str], start: dt.datetime, days: int) -> dict[str, list[dt.datetime]]:
    """Step a fake clock minute by minute; start each tenant whenever due (as serve does)."""
    last: dict[str, dt.date | None] = {n: None for n in names}
    runs: dict[str, list[dt.datetime]] = {n: [] for n in names}
    # serve asks due() for every tenant at every tick; to keep the year fast, a heap of next_run
    # instants decides who is asked - and a few tenants are asked every single minute below.
    heap = [(schedule.next_run(n, None, start), n) for n in names]
    heapq.heapify(heap)
    now = start
    for _ in range(days * 24 * 60):
        while heap and heap[0][0] <= now:
            _, n = heapq.heappop(heap)
            day = schedule.due(n, last[n], now)
            assert day is not None
            runs[n].append(now)
            last[n] = day
            assert schedule.due(n, day, now) is None
            heapq.heappush(heap, (schedule.next_run(n, day, now), n))
        now += dt.timedelta(minutes=1)
    return runs


def _per_local_day(runs: list[dt.datetime], zone: dt.tzinfo) -> Counter[dt.date]:
    return Counter(r.astimezone(zone).date() for r in runs)


@pytest.mark.slow
def test_a_year_of_fifty_tenants_runs_each_exactly_once_per_local_day() -> None:
    s = sched("04:00", 30)
    names = [f"tenant-{i:02d}" for i in range(50)]
    start = berlin("2026-01-01T00:00")
    runs = _simulate(s, names, start, 366)
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(366)]
    for n in names:
        per_day = _per_local_day(runs[n], BERLIN)
        assert sorted(per_day) == days, n
        assert set(per_day.values()) == {1}, n
        for r in runs[n]:                   # always inside the window, in local time, DST or not
            local = r.astimezone(BERLIN)
            assert dt.time(4, 0) <= local.time() < dt.time(4, 31), (n, local)
    # the tenants spread over the window: first and last start at least 20 minutes apart
    firsts = sorted(runs[n][0] for n in names)
    assert firsts[-1] - firsts[0] >= dt.timedelta(minutes=20)


@pytest.mark.slow
@pytest.mark.parametrize(("at", "jitter"), [("04:00", 30), ("02:30", 30), ("02:30", 0), ("23:50", 20)])
def test_every_minute_of_a_year_for_one_tenant(at: str, jitter: int) -> None:
    """The literal loop: due() asked every minute of 2026 (both DST changes), one run per local day."""
    s = sched(at, jitter)
    name = "acme"
    last: dt.date | None = dt.date(2025, 12, 31)
    now = berlin("2026-01-01T00:00")
    runs: list[dt.datetime] = []
    scheduled: list[dt.date] = []
    step = dt.timedelta(minutes=1)
    for i in range(365 * 24 * 60):
        day = s.due(name, last, now)
        if i % 97 == 0:
            assert (s.next_run(name, last, now) <= now) == (day is not None)
        if day is not None:
            runs.append(now)
            scheduled.append(day)
            last = day
        now += step
    assert scheduled == [dt.date(2026, 1, 1) + dt.timedelta(days=k) for k in range(len(scheduled))]
    per_day = _per_local_day(runs, BERLIN)
    assert set(per_day.values()) == {1}
    assert len(scheduled) >= 364
    spring = [r.astimezone(BERLIN) for r in runs if r.astimezone(BERLIN).date() == SPRING]
    fall = [r.astimezone(BERLIN) for r in runs if r.astimezone(BERLIN).date() == FALL]
    offset = jitter_offset(name, dt.timedelta(minutes=jitter))
    assert len(spring) == 1 and len(fall) == 1
    if at == "02:30":                       # the run starts in the first minute on or after the slot
        # the wall time 02:30 + jitter: inside the spring gap it is the jump (03:00 CEST), after it
        # that wall time in CEST; in the fall, its first occurrence (CEST)
        wall = dt.datetime(2026, 3, 29, 2, 30) + offset
        spring_slot = (dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC) if wall < dt.datetime(2026, 3, 29, 3, 0)
                       else wall.replace(tzinfo=dt.UTC) - dt.timedelta(hours=2))
        fall_slot = dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC) + offset     # first 02:30 + jitter
        assert spring_slot <= spring[0] < spring_slot + step
        assert fall_slot <= fall[0] < fall_slot + step


# -- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize(("at", "zone", "jitter", "message"), [
    ("4 Uhr", "Europe/Berlin", 30, "expected HH:MM"),
    ("24:00", "Europe/Berlin", 30, "expected HH:MM"),
    ("04:00", "Europe/Atlantis", 30, "unknown time zone 'Europe/Atlantis'"),
    ("04:00", "../etc/passwd", 30, "unknown time zone"),
    ("04:00", "Europe/Berlin", -5, "between 0 and 720 minutes"),
    ("04:00", "Europe/Berlin", 721, "between 0 and 720 minutes"),
])
def test_bad_configuration_is_a_config_error(at: str, zone: str, jitter: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Schedule.from_strings(at, zone, jitter)


def test_describe_and_defaults() -> None:
    s = Schedule()
    assert s.at == dt.time(4, 0) and s.zone.key == "Europe/Berlin" and s.jitter == dt.timedelta(minutes=30)
    assert s.describe() == "daily at 04:00 Europe/Berlin, spread over 30 min"
    assert parse_time_of_day(" 7:05 ") == dt.time(7, 5)
    with pytest.raises(ValueError, match="timezone-aware"):
        s.due("acme", None, dt.datetime(2026, 5, 4, 4, 0))


# -- issue 9, item 15: slots past midnight, first days, DST: by simulation --------------------------

ZONES = ["Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe"]
WINDOWS = [dt.date(2026, 3, 22), dt.date(2026, 10, 18),    # Berlin's changes (New York's fall)
           dt.date(2026, 3, 2), dt.date(2026, 4, 1), dt.date(2026, 9, 1)]  # New York, Santiago, Lord Howe


def _serve(schedule: Schedule, tenant: str, start: dt.datetime, days: int,
           tick: dt.timedelta) -> list[tuple[dt.datetime, dt.date]]:
    """What serve does: a tick every ``tick``, a tenant never run before (last day None) started
    whenever due, its last day recorded when the run starts."""
    last: dt.date | None = None
    runs: list[tuple[dt.datetime, dt.date]] = []
    now = start
    end = start + dt.timedelta(days=days)
    while now < end:
        if last is None:                     # first sight, stored (as serve and the fleet do)
            last = schedule.first_last_day(tenant, now)
        day = schedule.due(tenant, last, now)
        if day is not None:
            runs.append((now, day))
            last = day
        now += tick
    return runs


def _check(schedule: Schedule, tenant: str, start: dt.datetime, runs: list[tuple[dt.datetime, dt.date]],
           tick: dt.timedelta, days: int) -> None:
    zone = schedule.zone
    where = (schedule.at, schedule.jitter, zone.key, tenant, start)
    assert len(runs) >= days - 2, where                                  # it runs at all
    scheduled = [d for _, d in runs]
    assert scheduled == [scheduled[0] + dt.timedelta(days=k) for k in range(len(runs))], where
    for when, day in runs:
        slot = schedule.slot(tenant, day)
        assert slot <= when < max(slot, start) + tick, (where, when, day)  # on time (or at once)
    # once per local day: the slots' local dates are consecutive dates, the first one the start's
    dates = [schedule.slot(tenant, d).astimezone(zone).date() for d in scheduled]
    first = start.astimezone(zone).date()
    assert dates == [first + dt.timedelta(days=k) for k in range(len(dates))], where


def _one(at: str, jitter: int, zone: str, tenant: str, start_utc: dt.datetime, days: int = 14) -> None:
    s = Schedule.from_strings(at, zone, jitter)
    tick = dt.timedelta(minutes=10)
    _check(s, tenant, start_utc, _serve(s, tenant, start_utc, days, tick), tick, days)


def test_a_slot_past_midnight_runs_every_day_from_the_first() -> None:
    """--at 23:45 with 30 minutes of jitter: a tenant whose offset passes 00:00 was never due."""
    s = Schedule.from_strings("23:45", "Europe/Berlin", 30)
    late = next(f"t{i}" for i in range(100) if s.offset(f"t{i}") > dt.timedelta(minutes=15))
    now = berlin("2026-05-04T12:00")
    assert s.due(late, None, now) == dt.date(2026, 5, 3)              # today's slot (00:0x) passed: at once
    assert s.due(late, dt.date(2026, 5, 3), now) is None
    tonight = s.next_run(late, dt.date(2026, 5, 3), now)
    assert tonight.astimezone(BERLIN).date() == dt.date(2026, 5, 5)   # just after midnight
    assert s.due(late, dt.date(2026, 5, 3), tonight) == dt.date(2026, 5, 4)
    morning = berlin("2026-05-04T00:01")                               # connected before today's slot
    assert s.due(late, None, morning) is None
    assert s.due(late, s.first_last_day(late, morning), s.slot(late, dt.date(2026, 5, 3))) == dt.date(2026, 5, 3)
    _one("23:45", 30, "Europe/Berlin", late, now.astimezone(dt.UTC))


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Santiago"])
def test_first_days_and_midnight_by_simulation(zone: str) -> None:
    rng = random.Random(zone)
    for at in ("23:45", "00:00", "23:59"):
        for tenant in ("acme", "hausverwaltung-nord", "t7"):
            start = dt.datetime(2026, 4, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randrange(3 * 24 * 60))
            _one(at, 30, zone, tenant, start, days=10)


@pytest.mark.slow
def test_every_tenant_runs_once_per_local_day_over_dst_weeks() -> None:
    """Many zones, times, jitters, tenant names and first moments, over the weeks of DST changes
    (Santiago changes at midnight, Lord Howe by 30 minutes)."""
    rng = random.Random(15)
    for zone in ZONES:
        for at in ("23:45", "23:59", "00:00", "00:10", "02:30", "04:00", "12:00", "21:30"):
            for jitter in (0, 30, 90, 720):
                for window in WINDOWS:
                    tenant = f"tenant-{rng.randrange(10_000)}"
                    start = (dt.datetime.combine(window, dt.time(0), dt.UTC)
                             + dt.timedelta(minutes=rng.randrange(2 * 24 * 60)))
                    _one(at, jitter, zone, tenant, start, days=16)


@pytest.mark.parametrize(("at", "last", "ended", "expected"), [
    ("04:00", None, "2026-05-04T11:00", "2026-05-04"),          # after today's slot: it is today's run
    ("04:00", None, "2026-05-04T03:00", None),                  # before it: the 04:00 run still comes
    ("10:30", None, "2026-05-04T10:45", "2026-05-04"),          # the slot fell within the import
    ("04:00", "2026-05-04", "2026-05-04T11:00", None),          # today already run by the schedule
    ("23:50", None, "2026-05-05T00:10", None),                  # yesterday counts as done anyway
])
def test_an_initial_import_counts_as_the_day_whose_slot_passed(at: str, last: str | None, ended: str,
                                                              expected: str | None) -> None:
    s = sched(at)
    last_day = dt.date.fromisoformat(last) if last else None
    got = s.after_initial_import("acme", last_day, berlin(ended))
    assert got == (dt.date.fromisoformat(expected) if expected else None)
    recorded = got or last_day
    assert s.due("acme", recorded, berlin(ended)) is None        # not run again at once
