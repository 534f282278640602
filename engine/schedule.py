"""When a tenant's daily run is due: pure calendar arithmetic, no I/O, no clock of its own.

Every activated and connected tenant gets exactly one scheduled run per *local* day, at the
configured time of day (default 04:00 Europe/Berlin) plus a per-tenant jitter, so that fifty
tenants served by one process do not all hit SCALARA and casavi in the same second.

    schedule = Schedule(at=dt.time(4, 0), zone="Europe/Berlin", jitter=dt.timedelta(minutes=30))
    day = schedule.due("acme", store.last_scheduled_day("acme"), now)   # None, or the day to run
    when = schedule.next_run("acme", store.last_scheduled_day("acme"), now)

The rules, and why:

* **Slot.** A tenant's slot for local day D is its wall time - the configured time of day plus
  the tenant's jitter offset, on D, or on D+1 when the two pass midnight (23:45 + 20 min = 00:05
  of D+1) - resolved in the zone. Adding the offset to the wall time (not to the instant) keeps
  every slot on the same side of midnight, so each local date has exactly one slot, whatever DST
  does. Wall times that do not exist (spring forward: 02:30 on 2026-03-29 in Berlin) resolve to
  the first valid instant after them (03:00 CEST); wall times that exist twice (fall back: 02:30
  on 2026-10-25) resolve to the first occurrence (CEST). So a DST change day still has exactly
  one slot, and 04:00 is never affected in Berlin.
* **Jitter** is a fixed offset in ``[0, jitter)`` derived from a hash of the tenant's name: the
  tenants spread over the window, and a restart never moves a tenant's slot. The offset is the
  same every day, and days are at least 23 hours apart, so a slot never reaches the next day's
  slot; the window is capped at 12 hours.
* **Due.** The run for day D is due once ``now`` has passed D's slot and the store's
  ``last_scheduled_day`` is before D. Only the *latest* passed slot counts: after a week of
  downtime the tenant catches up with ONE run (for the latest missed day), not seven. A tenant
  the scheduler has never run (``last_scheduled_day`` None: just connected, and ``connect`` ran
  its initial import) counts as done up to the day before the slot that falls on today's date:
  its first scheduled run is that slot, at once if it has passed - never a catch-up run for
  yesterday right before today's. (For a slot past midnight, the slot falling on today's date is
  the one of yesterday's day: counting "done up to yesterday" there meant never being due.)
* **First sight.** The loops that start runs (``serve``, the fleet's scheduler) store
  ``first_last_day`` for a tenant the first time they see it never run, so its first day is
  fixed at that moment, not re-read from the clock at every tick.
* **Initial import.** ``connect``'s initial import counts as the scheduled run of the latest day
  whose slot passed before it ended (``after_initial_import``), so a tenant connected after its
  slot is not synced again at once.
* **Done when started.** The caller records D as the last scheduled day when it *starts* the run,
  not when the run ends: a run that crashes mid-way is not repeated at every tick or restart
  (the next day's run picks up what it missed; an operator can always ``run`` by hand).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import ConfigError

DEFAULT_AT = dt.time(4, 0)
DEFAULT_ZONE = "Europe/Berlin"
DEFAULT_JITTER = dt.timedelta(minutes=30)
MAX_JITTER = dt.timedelta(hours=12)

_UTC = dt.UTC
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_time_of_day(text: str) -> dt.time:
    """``"04:00"`` -> ``time(4, 0)``; a ConfigError that shows the expected form otherwise."""
    m = _HHMM.match(text.strip())
    if not m:
        raise ConfigError(f"schedule time {text!r} is not a time of day; expected HH:MM (24 h), e.g. 04:00")
    return dt.time(int(m.group(1)), int(m.group(2)))


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; a ConfigError naming the fix when it is unknown or tz data is missing."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin (if that one "
                          "fails too, this machine lacks time zone data: install the 'tzdata' package)") from None


def jitter_offset(tenant: str, window: dt.timedelta) -> dt.timedelta:
    """The tenant's fixed offset in ``[0, window)``, whole seconds, from a hash of its name."""
    seconds = int(window.total_seconds())
    if seconds <= 0:
        return dt.timedelta(0)
    digest = hashlib.sha256(tenant.encode("utf-8")).digest()
    return dt.timedelta(seconds=int.from_bytes(digest[:8], "big") % seconds)


def resolve_local(day: dt.date, at: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant of wall time ``at`` on ``day`` in ``zone``.

    Ambiguous (the hour repeated when clocks fall back): the first occurrence. Nonexistent (the
    hour skipped when clocks spring forward): the first valid instant after it, i.e. the moment
    the clocks jump.
    """
    wall = dt.datetime.combine(day, at)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # exists; for an ambiguous time fold=0 is the first occurrence
    # In a gap: fold=0 reads the wall time with the offset before the jump (lands after the gap),
    # fold=1 with the offset after it (lands before the gap). The jump lies between the two.
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(_UTC)
    hi = first
    if lo > hi:
        lo, hi = hi, lo
    # smallest whole second whose local wall time is at or after ``wall``
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if dt.datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wall:
            hi_s = mid
        else:
            lo_s = mid + 1
    return dt.datetime.fromtimestamp(hi_s, _UTC)


@dataclass(frozen=True)
class Schedule:
    """Time of day, zone and jitter window of the daily run; see the module docstring for the rules."""

    at: dt.time = DEFAULT_AT
    zone: ZoneInfo = field(default_factory=lambda: load_zone(DEFAULT_ZONE))
    jitter: dt.timedelta = DEFAULT_JITTER
    _slots: dict[tuple[str, dt.date], dt.datetime] = field(default_factory=dict, init=False, repr=False,
                                                          compare=False)

    def __post_init__(self) -> None:
        if self.jitter < dt.timedelta(0) or self.jitter > MAX_JITTER:
            raise ConfigError(f"the jitter window must be between 0 and {int(MAX_JITTER.total_seconds() // 60)} "
                              f"minutes, got {int(self.jitter.total_seconds() // 60)}")

    @classmethod
    def from_strings(cls, at: str = "04:00", zone: str = DEFAULT_ZONE, jitter_minutes: float = 30) -> Schedule:
        """Build from operator input (CLI options, environment); ConfigError on a bad value."""
        return cls(parse_time_of_day(at), load_zone(zone), dt.timedelta(minutes=jitter_minutes))

    def describe(self) -> str:
        return f"daily at {self.at:%H:%M} {self.zone.key}, spread over {int(self.jitter.total_seconds() // 60)} min"

    # -- slots ----------------------------------------------------------------------------------
    def offset(self, tenant: str) -> dt.timedelta:
        return jitter_offset(tenant, self.jitter)

    def wall(self, tenant: str, day: dt.date) -> dt.datetime:
        """The tenant's wall time for ``day``: the time of day plus its offset, on ``day`` or, when
        the two pass midnight, on the next day (naive local time)."""
        return dt.datetime.combine(day, self.at) + self.offset(tenant)

    def slot(self, tenant: str, day: dt.date) -> dt.datetime:
        """The UTC instant of ``tenant``'s run for local ``day`` (cached: the serve loop asks often)."""
        key = (tenant, day)
        found = self._slots.get(key)
        if found is None:
            if len(self._slots) > 10_000:
                self._slots.clear()
            wall = self.wall(tenant, day)
            found = self._slots[key] = resolve_local(wall.date(), wall.time(), self.zone)
        return found

    def local_day(self, now: dt.datetime) -> dt.date:
        return _aware(now).astimezone(self.zone).date()

    def latest_passed_day(self, tenant: str, now: dt.datetime) -> dt.date:
        """The latest local day whose slot is at or before ``now``."""
        now = _aware(now)
        day = self.local_day(now)
        # A slot never lies before its own local day, and at most ~36 h after its start (time of
        # day < 24 h, jitter <= 12 h), so at most two steps back are ever needed.
        while self.slot(tenant, day) > now:
            day -= dt.timedelta(days=1)
        return day

    def _last(self, tenant: str, last_day: dt.date | None, now: dt.datetime) -> dt.date:
        """``last_day``, or for a tenant never run: done up to the day before the one whose slot
        falls on today's date (with a slot past midnight, that is yesterday's day)."""
        if last_day is not None:
            return last_day
        today = self.local_day(now)
        shift = self.wall(tenant, today).date() - today          # 0 or 1 day
        return today - shift - dt.timedelta(days=1)

    def first_last_day(self, tenant: str, now: dt.datetime) -> dt.date:
        """What a tenant never run before counts as done at ``now`` (see ``due``). A loop that
        starts runs stores it the first time it sees the tenant: computed again at every tick, it
        would move with the date, and a slot just before midnight that the tick after it finds on
        the next date would never run."""
        return self._last(tenant, None, now)

    def after_initial_import(self, tenant: str, last_day: dt.date | None, now: dt.datetime) -> dt.date | None:
        """The day an initial import that ended at ``now`` counts as run for, or None.

        Its slot passed before or during the import, so the import *is* that day's run: without
        this, a tenant connected at 11:00 was "due now" and ``serve`` synced it again at once."""
        day = self.latest_passed_day(tenant, now)
        return day if day > self._last(tenant, last_day, now) else None

    # -- the two questions the serve loop and `status` ask ----------------------------------------
    def due(self, tenant: str, last_day: dt.date | None, now: dt.datetime) -> dt.date | None:
        """The local day whose run is due at ``now``, or None."""
        day = self.latest_passed_day(tenant, now)
        last_day = self._last(tenant, last_day, now)
        if last_day >= day:
            return None
        return day

    def next_run(self, tenant: str, last_day: dt.date | None, now: dt.datetime) -> dt.datetime:
        """When the tenant's next run is due (UTC). At or before ``now`` exactly when ``due`` says so:
        then it is the slot of the overdue day, which the serve loop starts at its next tick."""
        latest = self.latest_passed_day(tenant, now)
        last_day = self._last(tenant, last_day, now)
        if last_day < latest:
            return self.slot(tenant, latest)
        return self.slot(tenant, max(last_day, latest) + dt.timedelta(days=1))


def _aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("the schedule needs timezone-aware datetimes")
    return moment


_DEFAULT: Schedule | None = None

AT_ENV, ZONE_ENV, JITTER_ENV = "CASAVI_SYNC_SCHEDULE_AT", "CASAVI_SYNC_SCHEDULE_ZONE", "CASAVI_SYNC_SCHEDULE_JITTER"


def schedule_from_env(env: Mapping[str, str]) -> Schedule:
    """The schedule ``serve`` reads from the environment (the default one where a value is bad: serve
    refuses those at its start)."""
    try:
        return Schedule.from_strings(env.get(AT_ENV) or "04:00", env.get(ZONE_ENV) or DEFAULT_ZONE,
                                     float(env.get(JITTER_ENV) or 30))
    except (ConfigError, ValueError):
        return default_schedule()


def default_schedule() -> Schedule:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Schedule()
    return _DEFAULT


def due(tenant: str, last_day: dt.date | None, now: dt.datetime, schedule: Schedule | None = None) -> dt.date | None:
    """The local day whose run is due now, or None (see ``Schedule.due``)."""
    return (schedule or default_schedule()).due(tenant, last_day, now)


def next_run(tenant: str, last_scheduled_day: dt.date | None, now: dt.datetime,
             schedule: Schedule | None = None) -> dt.datetime:
    """When the tenant's next run is due (see ``Schedule.next_run``)."""
    return (schedule or default_schedule()).next_run(tenant, last_scheduled_day, now)
