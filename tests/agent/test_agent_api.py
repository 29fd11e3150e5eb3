"""The real agent on simulated node edges against the real API (uvicorn) and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.models import Allocation, GpuProcessSample, GpuSample, table_of
from scheduler.agent.simnode import SimNodes, start_sim_nodes
from tests.agent.apiserver import ApiServer, ingest_key
from tests.agent.fixture_node import Expected, fixture_fleet
from tests.scheduler.conftest import T0, Clock

pytestmark = pytest.mark.slow


def rows(engine: Engine) -> list[dict[str, object]]:
    t = table_of(Allocation)
    with engine.connect() as c:
        return [dict(r) for r in c.execute(select(t).order_by(t.c.id)).mappings()]


def count(engine: Engine, model: type) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table_of(model))).scalar_one())


@pytest.fixture
def api(engine: Engine) -> Iterator[ApiServer]:
    with ApiServer(engine) as server:
        yield server


def nodes_for(api: ApiServer, clock: Clock, workdir: Path) -> tuple[SimNodes, list[Expected]]:
    fleet, expected = fixture_fleet(clock)
    return start_sim_nodes(fleet, api.url, ingest_key(api.engine), workdir, clock=clock), expected


def test_observed_allocations_match_the_fixture(
    api: ApiServer, clock: Clock, short_dir: Path
) -> None:
    nodes, expected = nodes_for(api, clock, short_dir)
    try:
        for _ in range(3):
            nodes.tick(clock())
            clock.tick(10)
    finally:
        nodes.stop()
    got = {
        (r["node"], r["device_uuid"], r["pod"]): (
            r["gpu_uuid"], r["namespace"], r["pod_uid"], r["model"], r["mode"],
            pytest.approx(r["fraction"]), r["start"], r["end"], r["source"], r["observer"],
        )
        for r in rows(api.engine)
    }  # fmt: skip
    assert got == {
        (e.node, e.device_uuid, e.pod): (
            e.gpu_uuid, e.namespace, e.pod_uid, e.model, e.mode, e.fraction,
            T0,  # aware UTC on both backends (billing.utc.UTCDateTime)
            None, "observed", f"agent/{e.node}",
        )
        for e in expected
    }  # fmt: skip
    # 3 ticks x (gpu-mix: 3 GPUs + 3 MIG devices; gpu-ts: 1 GPU) samples
    assert count(api.engine, GpuSample) == 3 * 7
    assert count(api.engine, GpuProcessSample) == 3 * len(expected)
    t = table_of(GpuProcessSample)
    with api.engine.connect() as c:
        by_pid = dict(c.execute(select(t.c.pid, t.c.model).distinct()).all())
    assert by_pid == {e.pid: e.model for e in expected}  # pid -> /proc cgroup -> pod -> label


def test_a_pod_that_ends_closes_its_allocation_and_restarts_continue(
    api: ApiServer, clock: Clock, short_dir: Path
) -> None:
    nodes, expected = nodes_for(api, clock, short_dir)
    fleet = nodes.edges[0].fleet
    try:
        nodes.tick(clock())
        gone = next(e for e in expected if e.mode == "gpu")
        fleet.stop(gone.pid)
        t1 = clock.tick(10)
        nodes.tick(t1)
    finally:
        nodes.stop()
    closed = [r for r in rows(api.engine) if r["end"] is not None]
    assert [(r["pod"], r["end"].replace(tzinfo=None)) for r in closed] == [  # type: ignore[union-attr]
        (gone.pod, t1.replace(tzinfo=None))
    ]
    before = rows(api.engine)
    # a restart with the state file: the open ones are re-posted (unchanged), nothing new
    clock.tick(10)
    again = start_sim_nodes(fleet, api.url, ingest_key(api.engine), short_dir, clock=clock)
    try:
        again.tick(clock())
    finally:
        again.stop()
    assert rows(api.engine) == before
    # the state files lost: each agent continues its open allocations from GET /v1/allocations
    for p in short_dir.glob("*/spool/holdings.json"):
        p.unlink()
    fleet.stop(next(e for e in expected if e.model == "mixtral-8x7b" and e.node == "gpu-ts").pid)
    t3 = clock.tick(10)
    third = start_sim_nodes(fleet, api.url, ingest_key(api.engine), short_dir, clock=clock)
    try:
        third.tick(t3)
    finally:
        third.stop()
    after = rows(api.engine)
    assert len(after) == len(before)  # no second allocation for a holding that went on
    newly_closed = [r for r in after if r["end"] is not None and r not in before]
    assert [r["model"] for r in newly_closed] == ["mixtral-8x7b"]


def test_api_down_spools_and_drains_later(engine: Engine, clock: Clock, short_dir: Path) -> None:
    server = ApiServer(engine)  # not started: connection refused
    fleet, expected = fixture_fleet(clock)
    nodes = start_sim_nodes(fleet, server.url, ingest_key(engine), short_dir, clock=clock)
    try:
        for _ in range(5):
            nodes.tick(clock())
            clock.tick(10)
        depth = [a.spool.depth()[0] for a in nodes.agents]
        assert all(d >= 5 for d in depth) and count(engine, GpuSample) == 0
        assert all(a.health()[1]["last_ship_error"] for a in nodes.agents)
        server.start()
        nodes.tick(clock())
    finally:
        nodes.stop()
        server.stop()
    assert count(engine, GpuSample) == 6 * 7  # 5 spooled rounds + 1, each once
    assert len(rows(engine)) == len(expected)
    assert all(a.spool.depth() == (0, 0) for a in nodes.agents)


def test_health_reports_ticks_and_spool_depth(
    api: ApiServer, clock: Clock, short_dir: Path
) -> None:
    nodes, _ = nodes_for(api, clock, short_dir)
    try:
        agent = nodes.agents[0]
        code, body = agent.health()
        assert code == 200 and body["ticks"] == 0 and body["last_tick"] is None
        nodes.tick(clock())
        code, body = agent.health()
        assert code == 200 and body["ticks"] == 1 and body["last_tick"] == T0.isoformat()
        assert body["spool_records"] == 0 and body["open_holdings"] == 6
        clock.tick(3 * agent.config.interval_s + 31)
        assert agent.health()[0] == 503  # no tick for too long
    finally:
        nodes.stop()


def test_serve_agent_answers_healthz_over_http(api: ApiServer, short_dir: Path) -> None:
    import threading
    import time
    from datetime import UTC, datetime

    import httpx

    from scheduler.agent.node import serve_agent
    from tests.agent.apiserver import free_port

    fleet, _ = fixture_fleet(lambda: datetime.now(UTC))
    nodes = start_sim_nodes(fleet, api.url, ingest_key(api.engine), short_dir, interval_s=0.2)
    agent = nodes.agents[0]
    port = free_port()
    agent.config = agent.config.model_copy(update={"health_port": port, "health_host": "127.0.0.1"})
    stop = threading.Event()
    t = threading.Thread(target=serve_agent, args=(agent, stop), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        body: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                body = r.json()
                if r.status_code == 200 and int(body["ticks"]) >= 2:  # type: ignore[call-overload]
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert body["node"] == "gpu-mix" and int(body["ticks"]) >= 2  # type: ignore[call-overload]
        assert {"last_tick", "spool_records", "spool_bytes", "spool_dropped"} <= set(body)
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    finally:
        stop.set()
        t.join(30)
        nodes.stop()
    assert not t.is_alive()
