"""Time windows in OpenCost's grammar, resolved against an explicit ``now`` (no hidden clock).

Accepted: ``today``, ``yesterday``, ``week`` (this ISO week so far), ``lastweek``, ``month``,
``lastmonth``, a duration ending now (``30m``, ``24h``, ``7d``, ``2w``), an ISO week
(``2026-W47``), and a pair ``start,end`` of RFC 3339 times or unix seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^(\d+)([mhdw])$")
_ISO_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_SPAN = timedelta(days=3660)
# Windows must lie in [EARLIEST, LATEST) so hour arithmetic around them cannot overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 1, tzinfo=UTC)


class WindowError(ValueError):
    """A window string that does not parse or is empty/reversed."""


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise WindowError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise WindowError("window end must be after its start")

    @property
    def seconds(self) -> float:
        """Length of the window in seconds."""
        return (self.end - self.start).total_seconds()

    def hour_aligned(self) -> Window:
        """The smallest window of whole hours that covers this one."""
        return self.aligned(3600)

    def aligned(self, resolution_s: int) -> Window:
        """The smallest window of whole ``resolution_s`` buckets (epoch-aligned) covering this."""
        start = floor_to(self.start, resolution_s)
        end = floor_to(self.end, resolution_s)
        if end < self.end:
            end += timedelta(seconds=resolution_s)
        return Window(start, end)

    def hours(self) -> list[datetime]:
        """Start of every whole hour in the hour-aligned window."""
        aligned = self.hour_aligned()
        n = int(aligned.seconds // 3600)
        return [aligned.start + timedelta(hours=i) for i in range(n)]


def floor_hour(ts: datetime) -> datetime:
    """``ts`` truncated to the hour."""
    return ts.replace(minute=0, second=0, microsecond=0)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def floor_to(ts: datetime, resolution_s: int) -> datetime:
    """``ts`` (aware) truncated to a multiple of ``resolution_s`` since the Unix epoch (UTC).

    Details: integer microseconds, so no float rounding moves a bucket boundary.
    """
    us = (ts - _EPOCH) // _US
    return _EPOCH + (us - us % (resolution_s * 1_000_000)) * _US


def _midnight(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def parse_instant(text: str) -> datetime:
    """An RFC 3339 time (with a zone) or unix seconds as aware UTC; raises WindowError."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise WindowError(f"not an RFC 3339 time or unix seconds: {text!r}") from exc
    if ts.tzinfo is None:
        raise WindowError(f"time needs a timezone (e.g. Z): {text!r}")
    try:
        return ts.astimezone(UTC)
    except OverflowError as exc:
        raise WindowError(f"time out of range (years 1..9999 in UTC): {text!r}") from exc


def iso_week(year: int, week: int) -> Window:
    """The ISO week ``year-Wweek`` as a window (Monday 00:00 UTC to the next Monday)."""
    try:
        start = datetime.fromisocalendar(year, week, 1).replace(tzinfo=UTC)
        return Window(start, start + timedelta(days=7))
    except (ValueError, OverflowError) as exc:
        raise WindowError(f"no ISO week {year}-W{week:02d}") from exc


def parse_window(text: str, now: datetime) -> Window:
    """Resolve a window string against ``now`` (aware UTC).

    Raises: WindowError with a message that names what was wrong (also for a window outside
    1970-01-01 .. 9999-12-01).
    """
    w = _parse_window(text, now)
    if w.start < EARLIEST or w.end > LATEST:
        raise WindowError(f"window outside {EARLIEST:%Y-%m-%d} .. {LATEST:%Y-%m-%d}: {text!r}")
    return w


def _parse_window(text: str, now: datetime) -> Window:
    if now.tzinfo is None:
        raise WindowError("now must be timezone-aware")
    now = now.astimezone(UTC)
    key = text.strip().lower()
    today = _midnight(now)
    week_start = today - timedelta(days=today.weekday())
    month_start = today.replace(day=1)
    named = {
        "today": (today, now),
        "yesterday": (today - timedelta(days=1), today),
        "week": (week_start, now),
        "lastweek": (week_start - timedelta(days=7), week_start),
        "month": (month_start, now),
        "lastmonth": ((month_start - timedelta(days=1)).replace(day=1), month_start),
    }
    if key in named:
        start, end = named[key]
        if end <= start:  # e.g. "today" at exactly 00:00: an empty window would hide nothing
            end = start + timedelta(seconds=1)
        return Window(start, end)
    if m := _DURATION.match(key):
        n = int(m.group(1)) if len(m.group(1)) <= 8 else 10**8  # 10**8 of any unit is too long
        span = timedelta(**{_UNITS[m.group(2)]: n})
        if span <= timedelta(0) or span > MAX_SPAN:
            raise WindowError(f"duration out of range (1 minute .. 10 years): {text!r}")
        return Window(now - span, now)
    if m := _ISO_WEEK.match(text.strip().upper()):
        return iso_week(int(m.group(1)), int(m.group(2)))
    if "," in text:
        a, b = text.split(",", 1)
        start, end = parse_instant(a), parse_instant(b)
        if end - start > MAX_SPAN:
            raise WindowError(f"window longer than 10 years: {text!r}")
        return Window(start, end)
    raise WindowError(
        f"unknown window {text!r}: use today, yesterday, week, lastweek, month, lastmonth, "
        "7d/24h/30m, 2026-W47, or start,end in RFC 3339"
    )
