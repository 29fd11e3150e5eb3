"""When a job's slots fall. Pure: ``slot_at(now)`` is the latest slot start at or before now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Every:
    """A slot every ``seconds``, aligned to the Unix epoch (so every worker agrees)."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError("Every.seconds must be > 0")

    @property
    def period_s(self) -> float:
        """Seconds between two slots."""
        return self.seconds

    def slot_at(self, now: datetime) -> datetime:
        """The slot holding ``now``. Details: floor((now - epoch) / seconds) x seconds."""
        elapsed = (now - _EPOCH).total_seconds()
        return _EPOCH + timedelta(seconds=(elapsed // self.seconds) * self.seconds)

    def describe(self) -> str:
        """Human text for listings."""
        return f"every {self.seconds:g} s"


@dataclass(frozen=True)
class Weekly:
    """A slot each week on ``day_of_week`` at ``hour:minute`` UTC."""

    day_of_week: str
    hour: int
    minute: int

    def __post_init__(self) -> None:
        if self.day_of_week not in _DAYS:
            raise ValueError(f"Weekly.day_of_week must be one of {_DAYS}")
        if not (0 <= self.hour <= 23 and 0 <= self.minute <= 59):
            raise ValueError("Weekly.hour/minute out of range")

    @property
    def period_s(self) -> float:
        """Seconds between two slots."""
        return 7 * 86400.0

    def slot_at(self, now: datetime) -> datetime:
        """The latest weekly fire time at or before ``now``."""
        now = now.astimezone(UTC)
        day = now.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        fire = day - timedelta(days=(now.weekday() - _DAYS.index(self.day_of_week)) % 7)
        return fire if fire <= now else fire - timedelta(days=7)

    def describe(self) -> str:
        """Human text for listings."""
        return f"weekly {self.day_of_week} {self.hour:02d}:{self.minute:02d} UTC"


Schedule = Every | Weekly
