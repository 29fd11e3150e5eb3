"""API down, agent kill -9'd mid-spool, restarted, API back: every sample arrives once.

The agent runs as a real subprocess (tests/agent/agent_proc.py) on the fixture nodes with a
50 ms interval; the spool bound (64 MiB) holds everything produced, so nothing may be lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.models import Allocation, GpuProcessSample, GpuSample, table_of
from scheduler.agent.ship import Shipper
from scheduler.agent.spool import Spool
from tests.agent.apiserver import ApiServer, ingest_key

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def produced(log: Path) -> list[list[list[object]]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("]")]


def agent(workdir: Path, url: str, key: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent.agent_proc", str(workdir), url, key, str(log)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _utc(ts: datetime) -> str:
    from datetime import UTC

    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def stored(engine: Engine) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    s, p = table_of(GpuSample).c, table_of(GpuProcessSample).c
    with engine.connect() as c:
        samples = {(g, _utc(t)) for g, t in c.execute(select(s.gpu_uuid, s.ts))}
        procs = {
            (d, _utc(t), str(pid)) for d, t, pid in c.execute(select(p.device_uuid, p.ts, p.pid))
        }
    return samples, procs


def norm(keys: list[list[object]]) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    samples, procs = set(), set()
    for k in keys:
        ts = _utc(datetime.fromisoformat(str(k[1])))
        if len(k) == 2:
            samples.add((str(k[0]), ts))
        else:
            procs.add((str(k[0]), ts, str(k[2])))
    return samples, procs


def test_kill_9_mid_spool_loses_and_doubles_nothing(engine: Engine, short_dir: Path) -> None:
    server = ApiServer(engine)  # chosen port, not listening yet: the API is down
    key = ingest_key(engine)
    log = short_dir / "produced.jsonl"
    first = agent(short_dir / "w", server.url, key, log)
    try:
        wait_for("the first agent to spool 20 rounds", lambda: len(produced(log)) >= 20)
        first.send_signal(signal.SIGKILL)  # mid-spool: it appends every 50 ms
        first.wait(30)
    finally:
        first.kill()
    killed_at = len(produced(log))
    spooled = sum(
        Spool(d / "spool" / "spool", max_bytes=64 << 20).depth()[0]
        for d in (short_dir / "w").iterdir()
    )
    assert spooled >= killed_at  # every logged round is on disk (plus allocations)
    second = agent(short_dir / "w", server.url, key, log)
    try:
        wait_for("the restarted agent to spool", lambda: len(produced(log)) >= killed_at + 20)
        server.start()  # the API comes back
        wait_for(
            "everything produced so far to arrive",
            lambda: (
                norm([k for r in produced(log)[: killed_at + 20] for k in r])[0]
                <= stored(engine)[0]
            ),
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, second.stderr.read() if second.stderr else ""
        # what the stopped agent had not shipped yet is still spooled: drain it as it would
        for node_dir in (short_dir / "w").iterdir():
            spool = Spool(node_dir / "spool" / "spool", max_bytes=64 << 20)
            Shipper(httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}),
                    spool).drain()  # fmt: skip
            assert spool.depth() == (0, 0)
    finally:
        second.kill()
        server.stop()
    want_samples, want_procs = norm([k for r in produced(log) for k in r])
    got_samples, got_procs = stored(engine)
    assert want_samples <= got_samples and want_procs <= got_procs  # nothing lost
    # rows beyond the log: only the round being logged when kill -9 hit (one per node at most)
    extra = {ts for _, ts in got_samples - want_samples}
    assert len(extra) <= 2, extra
    # (gpu_uuid, ts) and (device_uuid, ts, pid) are unique in the store: resends after the
    # kill were absorbed as duplicates, not stored twice and not refused
    with engine.connect() as c:
        allocs = c.execute(select(table_of(Allocation))).mappings().all()
    assert len(allocs) == 8 and all(a["end"] is None for a in allocs)  # one per holding
