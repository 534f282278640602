"""The one way a person reads a time: local wall time with its zone, to the second.

Everything a person reads (status, history, report, tenant list, serve's log lines, the demo)
shows times as ``2026-12-02 04:15:49 CET`` in the deployment's zone: the schedule's time zone
(``--timezone`` / ``CASAVI_SYNC_SCHEDULE_ZONE``, default Europe/Berlin), the zone the operators
think in. Files for machines (run reports, ``--format json``, ``--log-format json``) keep ISO 8601
in UTC with ``Z``.
"""

from __future__ import annotations

import datetime as dt

HUMAN_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def parse_stamp(stamp: str | dt.datetime | None) -> dt.datetime | None:
    """An ISO 8601 stamp (``...Z`` or with an offset) as an aware datetime; None if empty or not one."""
    if stamp is None or stamp == "":
        return None
    if isinstance(stamp, dt.datetime):
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def machine_time(moment: dt.datetime) -> str:
    """For machines: ISO 8601 in UTC with ``Z``, milliseconds (as the state store's stamps)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human_time(stamp: str | dt.datetime | None, zone: dt.tzinfo | None = None) -> str:
    """``2026-12-02 04:15:49 CET`` (``zone``: default the schedule's default zone); "-" when unknown."""
    moment = parse_stamp(stamp)
    if moment is None:
        return "-"
    if zone is None:
        from engine.schedule import DEFAULT_ZONE, load_zone

        zone = load_zone(DEFAULT_ZONE)
    return f"{moment.astimezone(zone):{HUMAN_FORMAT}}"
