"""Calendar windows in a time zone: the start (epoch ms) of the window holding an instant.

A budget's spend belongs to one window; when the window of a new request differs from the one
stored, the stored spend is of a past window and counts as zero. Windows follow the local
calendar of ``time_zone`` (a "day" in Europe/Berlin starts at local midnight, and a day with a
DST change is 23 or 25 hours long).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window_start_ms(window: str, time_zone: str, at_ms: int) -> int:
    """Epoch ms of the start of the ``window`` (minute/hour/day/month) containing ``at_ms``."""
    if window == "minute":
        return at_ms - at_ms % 60_000
    zone = _zone(time_zone)
    local = datetime.fromtimestamp(at_ms / 1000, zone)
    if window == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
    elif window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif window == "month":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown window {window!r}")
    # replace() keeps the fold/offset of ``local``; re-resolve the wall time in the zone
    start = datetime(start.year, start.month, start.day, start.hour, tzinfo=zone)
    return int(start.timestamp() * 1000)


def window_end_ms(window: str, time_zone: str, start_ms: int) -> int:
    """Epoch ms where the window starting at ``start_ms`` ends (the next one starts)."""
    if window == "minute":
        return start_ms + 60_000
    zone = _zone(time_zone)
    start = datetime.fromtimestamp(start_ms / 1000, zone)
    if window == "hour":
        return start_ms + 3_600_000
    if window == "day":
        nxt = (start + timedelta(days=1, hours=12)).replace(hour=0)
    else:
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        nxt = start.replace(year=year, month=month, day=1)
    nxt = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return int(nxt.timestamp() * 1000)


def window_label(window: str, time_zone: str, start_ms: int) -> str:
    """A readable name of a window, e.g. ``day 2026-12-04 (Europe/Berlin)``."""
    start = datetime.fromtimestamp(start_ms / 1000, _zone(time_zone))
    fmt = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}[window]
    return f"{window} {start.strftime(fmt)} ({time_zone})"
