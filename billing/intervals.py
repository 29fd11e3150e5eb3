"""Time-exact interval arithmetic for many devices at once (pure numpy, integer nanoseconds).

Each device's timeline is cut at every start and end of any interval on it (and at bucket
boundaries inside the cut intervals) into elementary segments. An interval then covers a
contiguous run of its device's segments, so "which intervals cover this stretch of time" is an
index range, and overlaps, unions and intersections are sums over segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

I64 = npt.NDArray[np.int64]
# Offset keys (device x span + t - t0) are used below this; rank keys above it.
OFFSET_KEY_LIMIT = 2**62


def to_ns(values: pd.Series | pd.DatetimeIndex) -> I64:
    """Aware or UTC datetimes as int64 nanoseconds since the epoch (no NaT allowed)."""
    ts = pd.to_datetime(values, utc=True)
    if isinstance(ts, pd.DatetimeIndex):
        return np.asarray(ts.as_unit("ns").asi8, dtype=np.int64)
    return np.asarray(ts.dt.as_unit("ns").astype("int64").to_numpy(), dtype=np.int64)


def bucket_cuts(device: I64, start: I64, end: I64, step: int) -> tuple[I64, I64]:
    """(device, t) of every multiple of ``step`` strictly inside each [start, end)."""
    first = (start // step + 1) * step
    last = ((end - 1) // step) * step
    count = np.maximum(0, (last - first) // step + 1)
    if not count.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    item = np.repeat(np.arange(len(start)), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return device[item], first[item] + offset * step


@dataclass(frozen=True)
class Timeline:
    """Boundaries sorted by (device, t); segment i is [t[i], t[i+1]) when both are one device.

    Details: ``key`` = device x span + (t - t0) when that fits in int64, else device x
    len(times) + rank of t among the distinct ``times``; either way one sorted int64 array
    orders (device, t) pairs and ``searchsorted`` finds a boundary exactly.
    """

    device: I64
    t: I64
    key: I64
    times: I64  # distinct times (rank keys) or [t0, span] (offset keys)
    ranked: bool

    def _key(self, device: I64, t: I64) -> I64:
        if self.ranked:
            return np.asarray(device * len(self.times) + np.searchsorted(self.times, t), np.int64)
        return np.asarray(device * self.times[1] + (t - self.times[0]), np.int64)

    @property
    def size(self) -> int:
        """Number of boundaries (segment indexes run over the same range)."""
        return len(self.t)

    def seconds(self) -> npt.NDArray[np.float64]:
        """Length of each segment in seconds (0 for a device's last boundary)."""
        dt = np.zeros(self.size, dtype=np.float64)
        same = self.device[1:] == self.device[:-1]
        dt[:-1] = np.where(same, (self.t[1:] - self.t[:-1]) / 1e9, 0.0)
        return dt

    def locate(self, device: I64, t: I64) -> I64:
        """Index of each boundary (device, t); every pair must be a boundary."""
        return np.asarray(np.searchsorted(self.key, self._key(device, t)), np.int64)

    def expand(self, device: I64, start: I64, end: I64) -> tuple[I64, I64]:
        """(segment, interval) index pairs: every segment each [start, end) covers.

        Returns pairs grouped by interval in input order, segments ascending within one.
        """
        lo, hi = self.locate(device, start), self.locate(device, end)
        count = np.maximum(hi - lo, 0)
        item = np.repeat(np.arange(len(lo)), count)
        offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        return np.repeat(lo, count) + offset, item


def build_timeline(device: I64, t: I64) -> Timeline:
    """The timeline whose boundaries are the distinct (device, t) points given."""
    if not len(t):
        empty = np.empty(0, np.int64)
        return Timeline(empty, empty, empty, np.array([0, 1], np.int64), ranked=False)
    t0, span = int(t.min()), int(t.max() - t.min()) + 1
    if (int(device.max()) + 1) * span < OFFSET_KEY_LIMIT:
        key = np.unique(device * span + (t - t0))
        return Timeline(key // span, key % span + t0, key, np.array([t0, span]), ranked=False)
    times = np.unique(t)
    key = np.unique(device * len(times) + np.searchsorted(times, t))
    n = len(times)
    return Timeline(key // n, times[key % n], key, times, ranked=True)


def first_per_segment(seg: I64, values: I64, size: int, missing: int = -1) -> I64:
    """For each segment, the value of its first pair in ``seg`` order of appearance."""
    out = np.full(size, missing, dtype=np.int64)
    uniq, first = np.unique(seg, return_index=True)
    out[uniq] = values[first]
    return out
