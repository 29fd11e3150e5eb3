from datetime import UTC, datetime

import pytest

from billing.windows import Window, WindowError, iso_week, parse_window

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # a Wednesday


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("today", utc(2026, 11, 25), NOW),
        ("yesterday", utc(2026, 11, 24), utc(2026, 11, 25)),
        ("week", utc(2026, 11, 23), NOW),  # ISO weeks start on Monday the 23rd
        ("lastweek", utc(2026, 11, 16), utc(2026, 11, 23)),
        ("month", utc(2026, 11, 1), NOW),
        ("lastmonth", utc(2026, 10, 1), utc(2026, 11, 1)),
        ("7d", utc(2026, 11, 18, 15, 30), NOW),
        ("24h", utc(2026, 11, 24, 15, 30), NOW),
        ("30m", utc(2026, 11, 25, 15), NOW),
        ("2026-W47", utc(2026, 11, 16), utc(2026, 11, 23)),
        ("2026-11-01T00:00:00Z,2026-11-02T12:00:00Z", utc(2026, 11, 1), utc(2026, 11, 2, 12)),
        ("1764547200,1764633600", utc(2025, 12, 1), utc(2025, 12, 2)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_parse_window(text: str, start: datetime, end: datetime) -> None:
    w = parse_window(text, NOW)
    assert (w.start, w.end) == (start, end)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("fortnight", "unknown window"),
        ("0d", "out of range"),
        ("2026-11-02T00:00:00Z,2026-11-01T00:00:00Z", "after its start"),
        ("2026-11-01T00:00:00,2026-11-02T00:00:00Z", "timezone"),
        ("2026-W60", "no ISO week"),
        ("yesterday,today", "RFC 3339"),
    ],
)
def test_parse_window_errors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(WindowError, match=fragment):
        parse_window(text, NOW)


def test_hour_alignment_and_hours() -> None:
    w = Window(utc(2026, 11, 25, 10, 15), utc(2026, 11, 25, 12, 1)).hour_aligned()
    assert (w.start, w.end) == (utc(2026, 11, 25, 10), utc(2026, 11, 25, 13))
    assert len(w.hours()) == 3
    assert iso_week(2026, 1).start == utc(2025, 12, 29)
