"""The agent's write-ahead buffer on disk: append-only segment files, drained in order.

Every record (one JSON line: ``{"k": kind, "b": body}``) is appended to the newest segment
``seg-<n>.jsonl`` and fsync'd before ``append`` returns; ``cursor.json`` (replaced
atomically) says how far the API has acknowledged. Bounds: ``max_bytes`` and, optionally,
``max_records`` of unacknowledged data; over a bound the OLDEST segments are dropped whole
(a warning with the count; ``dropped`` adds them up). A torn last line (a kill -9 during a
write) is cut off when the spool is opened. Thread-safe: the tick thread appends, the
shipping thread reads and acknowledges.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.agent.holdings import write_atomic

log = logging.getLogger(__name__)
SEGMENT_PREFIX = "seg-"


@dataclass(frozen=True)
class Record:
    """One spooled record and the position just after it (segment number, byte offset)."""

    kind: str
    body: Any
    segment: int
    end: int
    size: int


def _name(n: int) -> str:
    return f"{SEGMENT_PREFIX}{n:012d}.jsonl"


def _cut_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        log.warning("spool %s: cut a torn last record (%d bytes)", path.name, len(data) - keep)
        with path.open("r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())


class Spool:
    """A bounded, durable FIFO of JSON records in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        max_records: int | None = None,
        segment_bytes: int | None = None,
    ) -> None:
        """Open (or create) the spool; cuts a torn tail. Raises: OSError."""
        self.dir = directory
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.segment_bytes = segment_bytes or max(4096, min(1 << 20, max_bytes // 16))
        self.dropped = 0
        self.lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cursor_path = self.dir / "cursor.json"
        self.segments: dict[int, tuple[int, int]] = {}  # n -> (bytes, records)
        for p in sorted(self.dir.glob(f"{SEGMENT_PREFIX}*.jsonl")):
            n = int(p.stem.removeprefix(SEGMENT_PREFIX))
            self.segments[n] = (0, 0)
        if self.segments:
            _cut_torn_tail(self.dir / _name(max(self.segments)))
        for n in self.segments:
            data = (self.dir / _name(n)).read_bytes()
            self.segments[n] = (len(data), data.count(b"\n"))
        self.cursor = self._read_cursor()

    def _read_cursor(self) -> tuple[int, int]:
        first = min(self.segments, default=0)
        try:
            raw = json.loads(self._cursor_path.read_text())
            seg, off = int(raw["segment"]), int(raw["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return (first, 0)
        return (seg, off) if seg >= first else (first, 0)

    # -- depth --------------------------------------------------------------------------------
    def _pending_records(self, n: int) -> int:
        records = self.segments[n][1]
        seg, off = self.cursor
        if n < seg:
            return 0
        if n > seg or off == 0:
            return records
        with (self.dir / _name(n)).open("rb") as f:
            f.seek(off)
            return f.read().count(b"\n")

    def depth(self) -> tuple[int, int]:
        """(records, bytes) not yet acknowledged."""
        with self.lock:
            return self._depth()

    def _depth(self) -> tuple[int, int]:
        seg, off = self.cursor
        nbytes = sum(s for n, (s, _) in self.segments.items() if n >= seg) - (
            off if seg in self.segments else 0
        )
        records = sum(self._pending_records(n) for n in self.segments if n >= seg)
        return records, max(0, nbytes)

    # -- write --------------------------------------------------------------------------------
    def append(self, kind: str, body: Any) -> None:
        """Append one record durably (fsync), then enforce the bounds."""
        line = (json.dumps({"k": kind, "b": body}, separators=(",", ":")) + "\n").encode()
        with self.lock:
            n = max(self.segments, default=self.cursor[0])
            size, records = self.segments.get(n, (0, 0))
            if size and size + len(line) > self.segment_bytes:
                n, size, records = n + 1, 0, 0
            path = self.dir / _name(n)
            new = not path.exists()
            with path.open("ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if new:
                fd = os.open(self.dir, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.segments[n] = (size + len(line), records + 1)
            self._enforce_bounds()

    def _over(self) -> bool:
        records, nbytes = self._depth()
        too_many = self.max_records is not None and records > self.max_records
        return nbytes > self.max_bytes or too_many

    def _enforce_bounds(self) -> None:
        lost = 0
        while self._over() and len(self.segments) > 1:
            oldest = min(self.segments)
            lost += self._pending_records(oldest)
            (self.dir / _name(oldest)).unlink(missing_ok=True)
            del self.segments[oldest]
            if self.cursor[0] <= oldest:
                self._set_cursor((min(self.segments), 0))
        if lost:
            self.dropped += lost
            log.warning(
                "agent spool over its bound (%d bytes / %s records): dropped the %d oldest "
                "record(s), %d dropped so far",
                self.max_bytes,
                self.max_records,
                lost,
                self.dropped,
            )

    # -- read and acknowledge -------------------------------------------------------------------
    def peek(self, limit: int) -> list[Record]:
        """Up to ``limit`` unacknowledged records, oldest first (a bad line is skipped)."""
        out: list[Record] = []
        with self.lock:
            seg, off = self.cursor
            for n in sorted(k for k in self.segments if k >= seg):
                with (self.dir / _name(n)).open("rb") as f:
                    f.seek(off if n == seg else 0)
                    pos = f.tell()
                    for line in f:
                        pos += len(line)
                        try:
                            raw = json.loads(line)
                            out.append(Record(raw["k"], raw["b"], n, pos, len(line)))
                        except (ValueError, KeyError, TypeError):
                            log.warning("spool %s: an unreadable record", _name(n))
                            out.append(Record("bad", None, n, pos, len(line)))
                        if len(out) >= limit:
                            return out
        return out

    def ack(self, record: Record) -> None:
        """Acknowledge everything up to and including ``record``; drop finished segments."""
        with self.lock:
            newest = max(self.segments, default=record.segment)
            for n in [k for k in self.segments if k < record.segment]:
                (self.dir / _name(n)).unlink(missing_ok=True)
                del self.segments[n]
            size = self.segments.get(record.segment, (0, 0))[0]
            if record.end >= size and record.segment < newest:
                (self.dir / _name(record.segment)).unlink(missing_ok=True)
                del self.segments[record.segment]
                self._set_cursor((record.segment + 1, 0))
            else:
                self._set_cursor((record.segment, record.end))

    def count_dropped(self, n: int) -> None:
        """Add ``n`` records that were given up on (unreadable, or refused by the API)."""
        with self.lock:
            self.dropped += n

    def _set_cursor(self, cursor: tuple[int, int]) -> None:
        self.cursor = cursor
        body = json.dumps({"segment": cursor[0], "offset": cursor[1]}).encode()
        write_atomic(self._cursor_path, body)
