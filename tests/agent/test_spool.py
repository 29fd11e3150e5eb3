"""The on-disk spool: order, durability across reopen, torn tails, bounds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from scheduler.agent.spool import Spool


def fill(s: Spool, n: int, start: int = 0, pad: int = 0) -> None:
    for i in range(start, start + n):
        s.append("samples", {"i": i, "pad": "x" * pad})


def drain(s: Spool, limit: int = 7) -> list[int]:
    got: list[int] = []
    while records := s.peek(limit):
        got += [r.body["i"] for r in records]
        s.ack(records[-1])
    return got


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=256)
    fill(s, 50)
    assert len(s.segments) > 5 and s.depth()[0] == 50
    assert drain(s) == list(range(50))
    assert s.depth() == (0, 0)
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 1  # acknowledged segments are gone


def test_a_reopened_spool_continues_after_the_last_ack(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=256)
    fill(s, 30)
    records = s.peek(12)
    s.ack(records[-1])
    s2 = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=256)  # as after a kill -9
    assert s2.depth()[0] == 18
    fill(s2, 5, start=30)
    assert drain(s2) == list(range(12, 35))


def test_a_torn_last_record_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    fill(s, 3)
    seg = max(tmp_path.glob("seg-*.jsonl"))
    with seg.open("ab") as f:
        f.write(b'{"k":"samples","b":{"i":3')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        s2 = Spool(tmp_path, max_bytes=1 << 20)
    assert "torn last record" in caplog.text
    fill(s2, 1, start=4)
    assert drain(s2) == [0, 1, 2, 4]


def test_over_the_byte_bound_the_oldest_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Spool(tmp_path, max_bytes=4096, segment_bytes=1024)
    with caplog.at_level(logging.WARNING):
        fill(s, 100, pad=60)  # ~90 bytes a record: ~9000 bytes offered
    records, nbytes = s.depth()
    assert nbytes <= 4096 and s.dropped > 0 and records + s.dropped == 100
    assert "dropped the" in caplog.text
    got = drain(s)
    assert got == list(range(100 - records, 100))  # the newest survive, in order


def test_record_count_bound(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20, max_records=20, segment_bytes=200)
    fill(s, 60)
    records, _ = s.depth()
    assert records <= 20 and records + s.dropped == 60
    assert drain(s)[-1] == 59


def test_an_unreadable_line_is_returned_as_bad(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    fill(s, 1)
    seg = max(tmp_path.glob("seg-*.jsonl"))
    with seg.open("ab") as f:
        f.write(b"not json\n")
    fill(s, 1, start=1)
    kinds = [r.kind for r in s.peek(10)]
    assert kinds == ["samples", "bad", "samples"]
