"""In-process token buckets: exact within one worker process (use Redis for several)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from billing.enforcement.domain import Bucket, BucketSpec, take


class LocalBuckets:
    """BucketBackend in a dict behind a lock (one API worker)."""

    name = "local"

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(
        self, specs: Sequence[BucketSpec], reserve: float, now: datetime
    ) -> tuple[bool, BucketSpec | None, float | None]:
        """Draw from every spec or from none (see domain.take)."""
        with self._lock:
            after: dict[str, Bucket] = {}
            for s in specs:
                ok, b, retry = take(
                    after.get(s.key, self._buckets.get(s.key)),
                    capacity=s.capacity,
                    rate_per_s=s.rate_per_s,
                    cost=s.cost,
                    reserve=reserve if s.reason.startswith("rate_limited") else 0.0,
                    now=now,
                )
                if not ok:
                    return False, s, retry
                after[s.key] = b
            self._buckets.update(after)
        return True, None, None

    def levels(self, keys: Sequence[str], now: datetime) -> dict[str, float]:
        """Levels as last stored (refill not applied)."""
        with self._lock:
            return {k: self._buckets[k].level for k in keys if k in self._buckets}

    def known(self) -> list[str]:
        """Every bucket key seen."""
        with self._lock:
            return list(self._buckets)
