"""Done-when, Prometheus side: an hour of the fixture fleet through Prometheus gives the ledger.

An hour of dcgm-exporter history (the fixture exporter's own lines, timestamped every 10 s) is
backfilled into a real Prometheus with promtool; ``pull_once`` reads it, usage events are
ingested, ``billing.ledger.rollup`` attributes the hour. The ledger is compared with
``billing.attribution.attribute`` run on the scenario's ground truth (who held what, when):

- with the inputs DCGM can know, every ledger row is equal to the cent;
- against the NVML agent's inputs (per-process utilisation on the time-sliced T4 as well),
  every model's total is equal and rows differ only in the attributed/idle split of the T4's
  holders: the documented difference (DCGM cannot split a shared GPU's utilisation by pod).

Backfilled history carries no staleness markers, so this Prometheus runs with a lookback of
one step less a second (a series ends when its pod leaves, as a live scrape's staleness
marker would say).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.attribution import attribute
from billing.config import DEFAULT_PRICE_BOOK, BillingConfig
from billing.ingest import ingest_usage
from billing.ledger import rollup
from billing.models import LedgerEntry, LedgerHour, table_of
from billing.pricebook import read_price_book, store_prices
from billing.schemas import UsageEventIn
from billing.windows import Window, floor_hour
from scheduler.config import SchedulerConfig
from scheduler.dcgm import pull
from scheduler.dcgm.pull import pull_once, static_models
from scheduler.promclient import PromClient
from tests.conftest import need_service
from tests.dcgm.conftest import A100, H100, MODELS, T4, fleet
from tests.utils.dcgm_exporter import Pod, Scenario, openmetrics
from tests.utils.prometheus import backfill, prometheus_problem, run_prometheus

pytestmark = pytest.mark.slow

STEP = 10
# A recent past hour: inside Prometheus' retention, before its (empty) head block.
HOUR = floor_hour(datetime.now(UTC)) - timedelta(hours=3)
WINDOW = Window(HOUR, HOUR + timedelta(hours=1))
H100_SWITCH = 25 * 60  # llama-70b-0 -> mistral-0 (seconds into the hour)
GI2_SWITCH = 40 * 60  # mixtral-0 -> mixtral-1 (a restarted pod: same model, new name)
UTIL = {"H100": 0.7, "GI1": 0.3, "GI2": 0.6}


def state(offset: int) -> Scenario:
    """The fleet ``offset`` seconds into the hour."""
    s = fleet()
    if offset >= H100_SWITCH:
        s.hold(H100, None, Pod("ml", "mistral-0"))
    if offset >= GI2_SWITCH:
        s.hold(A100, 2, Pod("ml", "mixtral-1"))
    return s


@pytest.fixture(scope="module")
def prom_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    need_service(prometheus_problem())
    work = tmp_path_factory.mktemp("prom-hour")
    frames = [(HOUR.timestamp() + t, state(t)) for t in range(0, 3600 + STEP, STEP)]
    data = backfill(openmetrics(frames), work)
    args = [f"--query.lookback-delta={STEP - 1}s", "--storage.tsdb.retention.time=3650d"]
    with run_prometheus(work, data_dir=data, args=args) as url:
        yield url


def usage() -> list[UsageEventIn]:
    """120 requests: every model, three customers, two request types, spread over the hour."""
    models = sorted(set(MODELS.values()))
    customers, kinds = ("acme", "globex", "initech"), ("chat", "summarize")
    return [
        UsageEventIn(
            id=f"e{i}",
            source="test",
            time=HOUR + timedelta(seconds=30 * i + 7),
            model=models[i % len(models)],
            customer=customers[i % 3 if i % 7 else 0],
            request_type=kinds[(i // 4) % 2],
            input_tokens=200 + 37 * (i % 11),
            output_tokens=50 + 13 * (i % 5),
        )
        for i in range(120)
    ]


def truth(agent: bool) -> dict[str, pd.DataFrame]:
    """attribute()'s inputs from the scenario: who held what, when, and at what utilisation.

    ``agent``: the NVML agent's view, which also has per-process utilisation on the shared
    T4 (20 % of the GPU for each of its two pods); without it, what DCGM can know.
    """
    ts = [HOUR + timedelta(seconds=t) for t in range(0, 3600, STEP)]
    gpus = [(H100, "H100-80GB"), (A100, "A100-80GB"), (T4, "T4")]
    samples = pd.DataFrame(
        [(t, g, k, "on-demand", float(STEP)) for t in ts for g, k in gpus],
        columns=["ts", "gpu_uuid", "gpu_type", "pricing_class", "interval_s"],
    )
    end, switch = HOUR + timedelta(hours=1), timedelta(seconds=H100_SWITCH)
    gi2 = timedelta(seconds=GI2_SWITCH)
    alloc = [
        ("llama-3-70b", H100, 1.0, HOUR, HOUR + switch),
        ("mistral-7b", H100, 1.0, HOUR + switch, end),
        ("llama-3-8b", A100, 3 / 7, HOUR, end),
        ("mixtral-8x7b", A100, 4 / 7, HOUR, HOUR + gi2),
        ("mixtral-8x7b", A100, 4 / 7, HOUR + gi2, end),
        ("mistral-7b", T4, 0.5, HOUR, end),
        ("llama-3-8b", T4, 0.5, HOUR, end),
    ]
    procs = []
    for t in ts:
        h100 = "llama-3-70b" if t < HOUR + switch else "mistral-7b"
        procs += [
            (t, H100, h100, 100 * UTIL["H100"], float(STEP)),
            (t, A100, "llama-3-8b", 100 * UTIL["GI1"] * 3 / 7, float(STEP)),
            (t, A100, "mixtral-8x7b", 100 * UTIL["GI2"] * 4 / 7, float(STEP)),
        ]
        if agent:
            procs += [(t, T4, m, 20.0, float(STEP)) for m in ("mistral-7b", "llama-3-8b")]
    ev = pd.DataFrame(usage())
    return {
        "samples": samples,
        "processes": pd.DataFrame(
            procs, columns=["ts", "gpu_uuid", "model", "sm_util", "interval_s"]
        ),
        "allocations": pd.DataFrame(
            alloc, columns=["model", "gpu_uuid", "fraction", "start", "end"]
        ),
        "usage": ev.rename(columns={"time": "ts"})[
            ["ts", "model", "customer", "request_type", "input_tokens", "output_tokens"]
        ].assign(ts=lambda d: pd.to_datetime(d["ts"], utc=True)),
    }


def reference(agent: bool) -> pd.DataFrame:
    """The ledger rows billing.attribution makes from the scenario's ground truth."""
    frames = truth(agent)
    frames["samples"]["ts"] = pd.to_datetime(frames["samples"]["ts"], utc=True)
    frames["processes"]["ts"] = pd.to_datetime(frames["processes"]["ts"], utc=True)
    for c in ("start", "end"):
        frames["allocations"][c] = pd.to_datetime(frames["allocations"][c], utc=True)
    cfg = BillingConfig()
    out = attribute(
        **frames,
        prices=read_price_book(DEFAULT_PRICE_BOOK),
        window=WINDOW,
        weights=cfg.weights,
        idle_policy=cfg.idle_policy,
    )
    return out.rows


KEYS = ["model", "customer", "request_type", "kind"]


def ledger(engine: Engine) -> tuple[pd.DataFrame, int]:
    t, h = table_of(LedgerEntry), table_of(LedgerHour)
    with engine.connect() as conn:
        rows = pd.read_sql(select(t), conn)
        metered = conn.execute(select(h.c.metered_cost_cents)).scalars().all()
    return rows.sort_values(KEYS, ignore_index=True), int(sum(metered))


@pytest.mark.parametrize("chunk", [2000, 97], ids=["one-query", "chunks-of-97-steps"])
def test_an_hour_through_prometheus_gives_the_scenarios_ledger(
    prom_url: str, engine: Engine, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 97 steps a query: holdings run across chunk boundaries (the switches are at steps 150, 240)
    monkeypatch.setattr(pull, "MAX_STEPS", chunk)
    cfg = SchedulerConfig(
        prometheus_url=prom_url, prometheus_step_s=STEP, prometheus_lag_s=0, dcgm_backfill_s=3600
    )
    with PromClient(prom_url) as prom:
        pulled = pull_once(engine, cfg, prom, WINDOW.end, static_models(MODELS))
    assert (pulled.start, pulled.end, pulled.steps) == (WINDOW.start, WINDOW.end, 360)
    # 360 steps x (H100, A100, its two instances, T4); 7 holdings as the scenario says
    assert (pulled.samples_inserted, pulled.allocations_inserted) == (360 * 5 + 360 * 3, 7)
    ingest_usage(engine, usage())
    store_prices(engine, read_price_book(DEFAULT_PRICE_BOOK), HOUR - timedelta(days=1))
    result = rollup(engine, WINDOW, BillingConfig())
    rows, metered = ledger(engine)

    # H100 9.80 + A100-80GB 5.12 + T4 0.53 USD for the hour
    assert metered == result.metered_cost_cents == 1545
    held = rows[rows["kind"] != "unallocated"]["cost_cents"].sum()
    assert held >= 0.999 * metered and rows["cost_cents"].sum() == metered

    # what DCGM can know: the same ledger, row by row, to the cent
    ref = reference(agent=False).sort_values(KEYS, ignore_index=True)
    assert rows[[*KEYS, "cost_cents"]].to_dict("records") == ref[[*KEYS, "cost_cents"]].to_dict(
        "records"
    )
    assert rows["gpu_cost_usd"].tolist() == pytest.approx(ref["gpu_cost_usd"].tolist())

    # against the agent's view: every model's total is the same; rows differ only for the
    # T4's holders (attributed vs idle: DCGM has no per-pod utilisation on a shared GPU)
    agent = reference(agent=True)
    per_model = rows.groupby("model")["gpu_cost_usd"].sum()
    assert per_model.to_dict() == pytest.approx(
        agent.groupby("model")["gpu_cost_usd"].sum().to_dict()
    )
    exclusive = ["llama-3-70b", "mixtral-8x7b"]
    mine = rows[rows["model"].isin(exclusive)]
    theirs = agent[agent["model"].isin(exclusive)].sort_values(KEYS, ignore_index=True)
    assert mine[KEYS].to_dict("records") == theirs[KEYS].to_dict("records")
    assert mine["gpu_cost_usd"].tolist() == pytest.approx(theirs["gpu_cost_usd"].tolist())
    t4_idle = agent[(agent["kind"] == "idle") & agent["model"].isin(["mistral-7b", "llama-3-8b"])]
    assert t4_idle["gpu_cost_usd"].sum() > 0  # the agent splits idle off the T4 holdings
