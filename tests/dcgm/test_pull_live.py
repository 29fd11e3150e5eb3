"""A real Prometheus scraping the fixture dcgm-exporter every second while pods move.

Timeline (one module-wide run, ~15 s): the H100 goes from llama-70b-0 to mistral-0, then the
A100's 4g instance goes idle. Two pulls (one between the changes, one after) store samples and
holdings; the holdings' boundaries are checked against the scrape at which Prometheus first
saw each change, and against the moment the test made it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.models import Allocation, GpuProcessSample, GpuSample, table_of
from scheduler.config import SchedulerConfig
from scheduler.dcgm.convert import mig_device_id
from scheduler.dcgm.pull import (
    PullResult,
    dcgm_pull_job,
    pull_once,
    read_cursor,
    static_models,
    write_cursor,
)
from scheduler.promclient import PromClient, PrometheusError
from tests.conftest import need_service
from tests.dcgm.conftest import A100, H100, MODELS, T4, fleet
from tests.utils.dcgm_exporter import Exporter, Pod, serve
from tests.utils.prometheus import prometheus_problem, run_prometheus

pytestmark = pytest.mark.slow


@dataclass
class Live:
    """The run: Prometheus' URL, the exporter and the wall-clock times of the changes."""

    url: str
    exporter: Exporter
    changed_h100: float
    changed_gi2: float
    done: float


def _wait_scrapes(ex: Exporter, n: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(ex.scrapes) < n:
        assert time.monotonic() < deadline, f"only {len(ex.scrapes)} scrapes"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    need_service(prometheus_problem())
    with (
        serve(fleet()) as ex,
        run_prometheus(tmp_path_factory.mktemp("prom"), [ex.target]) as url,
    ):
        _wait_scrapes(ex, 4)
        with ex.change() as s:
            s.hold(H100, None, Pod("ml", "mistral-0"))
            changed_h100 = time.time()
        _wait_scrapes(ex, len(ex.scrapes) + 3)
        with ex.change() as s:
            s.hold(A100, 2)  # idle
            changed_gi2 = time.time()
        _wait_scrapes(ex, len(ex.scrapes) + 3)
        yield Live(url, ex, changed_h100, changed_gi2, time.time())


def _raw_first(prom: PromClient, at: float, selector: str) -> float:
    """Prometheus' timestamp of the first scraped sample of a series (the scrape time)."""
    (s,) = prom.query(f"DCGM_FI_DEV_FB_USED{{{selector}}}[2m]", _dt(at))
    return s.points[0][0]


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _rows(engine: Engine, model: Any, order: tuple[str, ...]) -> list[dict[str, Any]]:
    t = table_of(model)
    with engine.connect() as conn:
        rows = conn.execute(select(t).order_by(*(t.c[c] for c in order))).mappings().all()
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def _utc(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def test_pull_stores_samples_and_holdings_that_follow_the_pods(live: Live, engine: Engine) -> None:
    prom = PromClient(live.url)
    first_scrape = _raw_first(prom, live.done, f'UUID="{T4}",pod="embed-0"')
    start = math.ceil(first_scrape) + 1  # every device has a reading from here on
    mid = math.floor(live.changed_gi2)
    cfg = SchedulerConfig(
        prometheus_url=live.url,
        prometheus_step_s=1,
        prometheus_lag_s=0,
        dcgm_backfill_s=mid - start,
    )
    model_of = static_models(MODELS)
    one = pull_once(engine, cfg, prom, _dt(live.changed_gi2), model_of)
    two = pull_once(engine, cfg, prom, _dt(live.done), model_of)
    end = math.floor(live.done)
    assert (one.start, one.end, two.start, two.end) == (_dt(start), _dt(mid), _dt(mid), _dt(end))
    assert read_cursor(engine) == _dt(end)
    assert one.unresolved == two.unresolved == set()
    steps = end - start

    # Samples: H100, the two MIG instances, the A100 made from them, the T4 at every step.
    samples = _rows(engine, GpuSample, ("gpu_uuid", "ts"))
    mig1, mig2 = mig_device_id(A100, 1), mig_device_id(A100, 2)
    by_device: dict[str, list[dict[str, Any]]] = {}
    for r in samples:
        by_device.setdefault(r["gpu_uuid"], []).append(r)
    assert {k: len(v) for k, v in by_device.items()} == {
        d: steps for d in (H100, A100, T4, mig1, mig2)
    }

    def util(device: str) -> set[float]:
        return {round(r["sm_util"], 6) for r in by_device[device]}

    # GR_ENGINE_ACTIVE x 100; the A100: 30 % x 3/7 + 60 % x 4/7
    assert (util(H100), util(mig1), util(mig2), util(T4)) == ({70.0}, {30.0}, {60.0}, {40.0})
    assert util(A100) == {round(30 * 3 / 7 + 60 * 4 / 7, 6)}
    assert {(r["parent_uuid"], r["mig_profile"]) for r in by_device[mig2]} == {(A100, "4g.40gb")}
    assert {(r["gpu_type"], r["interval_s"], r["node"]) for r in samples} == {
        ("H100-80GB", 1.0, "node-a"),
        ("A100-80GB", 1.0, "node-a"),
        ("T4", 1.0, "node-a"),
    }

    # Holdings: the boundaries are the first grid step at or after the scrape that saw a change.
    h100_switch = math.ceil(_raw_first(prom, live.done, 'pod="mistral-0"'))
    gi2_idle = math.ceil(_raw_first(prom, live.done, f'UUID="{A100}",GPU_I_ID="2",pod=""'))
    assert live.changed_h100 < h100_switch <= live.changed_h100 + 2.5
    assert live.changed_gi2 < gi2_idle <= live.changed_gi2 + 2.5
    got = [
        (
            a["device_uuid"],
            a["pod"],
            a["model"],
            a["mode"],
            round(a["fraction"], 6),
            _utc(a["start"]),
            _utc(a["end"]),
        )
        for a in _rows(engine, Allocation, ("device_uuid", "pod"))
    ]
    assert got == [
        (H100, "llama-70b-0", "llama-3-70b", "gpu", 1.0, _dt(start), _dt(h100_switch)),
        (H100, "mistral-0", "mistral-7b", "gpu", 1.0, _dt(h100_switch), None),
        (T4, "embed-0", "mistral-7b", "timeslice", 0.5, _dt(start), None),
        (T4, "embed-1", "llama-3-8b", "timeslice", 0.5, _dt(start), None),
        (mig1, "llama-8b-0", "llama-3-8b", "mig", round(3 / 7, 6), _dt(start), None),
        (mig2, "mixtral-0", "mixtral-8x7b", "mig", round(4 / 7, 6), _dt(start), _dt(gi2_idle)),
    ]
    procs = _rows(engine, GpuProcessSample, ("device_uuid", "ts"))
    counts: dict[str, int] = {}
    for p in procs:
        counts[p["device_uuid"]] = counts.get(p["device_uuid"], 0) + 1
    # pod rows: one holder only (not the shared T4), and none once the 4g instance is idle
    assert counts == {H100: steps, mig1: steps, mig2: gi2_idle - start}


def test_pulling_the_same_range_again_stores_nothing_new(live: Live, engine: Engine) -> None:
    prom = PromClient(live.url)
    start = math.ceil(_raw_first(prom, live.done, f'UUID="{T4}",pod="embed-0"')) + 1
    cfg = SchedulerConfig(prometheus_url=live.url, prometheus_step_s=1, prometheus_lag_s=0)
    model_of = static_models(MODELS)
    write_cursor(engine, _dt(start), _dt(start))
    first = pull_once(engine, cfg, prom, _dt(live.done), model_of)
    before = [_rows(engine, m, o) for m, o in _TABLES]
    write_cursor(engine, _dt(start), _dt(start))
    again = pull_once(engine, cfg, prom, _dt(live.done), model_of)
    assert first.samples_inserted > 0 and first.allocations_inserted == 6
    assert (again.samples_inserted, again.allocations_inserted) == (0, 0)
    assert again.samples_duplicate == first.samples_inserted
    assert [_rows(engine, m, o) for m, o in _TABLES] == before


_TABLES = (
    (GpuSample, ("gpu_uuid", "ts")),
    (GpuProcessSample, ("device_uuid", "ts")),
    (Allocation, ("device_uuid", "pod", "start")),
)


def test_the_worker_job_pulls_from_the_cursor(live: Live, engine: Engine) -> None:
    assert dcgm_pull_job(engine, SchedulerConfig(), static_models(MODELS)) is None
    cfg = SchedulerConfig(
        prometheus_url=live.url, prometheus_step_s=1, prometheus_lag_s=0, dcgm_pull_interval_s=30
    )
    job = dcgm_pull_job(engine, cfg, static_models(MODELS))
    assert job is not None and (job.name, job.schedule.period_s) == ("scheduler.dcgm_pull", 30)
    end = math.floor(live.done)
    write_cursor(engine, _dt(end - 3), _dt(end - 3))
    result = job.run(_dt(live.done))
    assert isinstance(result, PullResult)
    # 5 sample rows a step, pod rows for the H100 and the 3g instance, and for the 4g one
    # until it went idle
    gi2_idle = math.ceil(_raw_first(PromClient(live.url), live.done, 'GPU_I_ID="2",pod=""'))
    gi2_rows = max(0, min(end, gi2_idle) - (end - 3))
    assert (result.steps, result.samples_inserted) == (3, 3 * 5 + 3 * 2 + gi2_rows)
    assert str(result).startswith(
        f"dcgm pull [{_dt(end - 3)}, {_dt(end)}): 3 steps, {result.samples_inserted} rows new"
    )
    again = job.run(_dt(live.done))  # caught up: nothing to read
    assert str(again).startswith(f"dcgm pull [{_dt(end)}, {_dt(end)}): 0 steps, 0 rows new")


def test_prometheus_errors_are_one_exception(live: Live, tmp_path: Path) -> None:
    with pytest.raises(PrometheusError, match="bad_data"):
        PromClient(live.url).query("sum(", _dt(live.done))
    with pytest.raises(PrometheusError, match="not JSON"):
        PromClient(f"http://{live.exporter.target}").query("up", _dt(live.done))
    with socket_closed() as port, pytest.raises(PrometheusError, match="ConnectError"):
        PromClient(f"http://127.0.0.1:{port}", timeout_s=2).query("up", _dt(live.done))


def socket_closed() -> Any:
    """A port on 127.0.0.1 that nothing listens on (bound, never listening)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def cm() -> Iterator[int]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            yield s.getsockname()[1]

    return cm()
