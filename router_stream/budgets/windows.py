"""Budget windows: calendar windows in a time zone, or a rolling window of buckets.

Calendar: the start (epoch ms) of the window holding an instant.

A budget's spend belongs to one window; when the window of a new request differs from the one
stored, the stored spend is of a past window and counts as zero. Windows follow the local
calendar of ``time_zone`` (a "day" in Europe/Berlin starts at local midnight, and a day with a
DST change is 23 or 25 hours long).
"""

from __future__ import annotations

from dataclasses import dataclass
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


#: a rolling window is kept as this many buckets: spend leaves the window one bucket at a time
ROLLING_BUCKETS = 12


@dataclass(frozen=True, slots=True)
class Window:
    """A budget's window: ``kind`` minute/hour/day/month (calendar, in ``time_zone``) or rolling
    (``rolling_ms`` long, in :data:`ROLLING_BUCKETS` buckets). ``start`` is the current window's
    start (calendar) or the current bucket's start (rolling)."""

    kind: str
    time_zone: str = "UTC"
    rolling_ms: int = 0

    @property
    def rolling(self) -> bool:
        return self.kind == "rolling"

    @property
    def bucket_ms(self) -> int:
        return max(1, self.rolling_ms // ROLLING_BUCKETS)

    def start(self, at_ms: int) -> int:
        if self.rolling:
            return at_ms - at_ms % self.bucket_ms
        return window_start_ms(self.kind, self.time_zone, at_ms)

    def end(self, start: int) -> int:
        return start + self.bucket_ms if self.rolling else window_end_ms(self.kind, self.time_zone, start)

    def live(self, bucket_start: int, now_start: int) -> bool:
        """Rolling: whether spend in the bucket starting at ``bucket_start`` still counts when the
        current bucket starts at ``now_start`` (the last ``ROLLING_BUCKETS`` buckets count)."""
        return now_start - self.rolling_ms < bucket_start <= now_start

    def label(self, start: int) -> str:
        if self.rolling:
            return (
                f"rolling {self.rolling_ms / 1000:g}s ({ROLLING_BUCKETS} buckets of "
                f"{self.bucket_ms / 1000:g}s)"
            )
        return window_label(self.kind, self.time_zone, start)
