"""`costctl bench dashboard`: first render of the dashboard over a ledger built from N events.

Build (not timed): N requests over ``--days`` days (tokens drawn from the Azure conv trace,
model/customer by billing.replay's mix, a diurnal load curve), a fleet of 8 GPUs (one split
into two MIG slices) sampled every 60 s and stored in gpu_sample, allocations, two budgets;
each day attributed by ``billing.attribution.attribute`` and written with
``billing.ledger.write_attribution``. Timed: the dashboard's one callback answered over HTTP
by the real Dash/Flask app (fresh engine, so the first query pays the connection), for
several windows; then ``render_page`` alone. Baseline in the same run: the naive per-event
read (SELECT every usage event of the window, group in pandas) on ``--baseline-events``
stored events, extrapolated linearly to N (labelled as such).
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.attribution import attribute
from billing.config import BillingConfig
from billing.db import init_db, make_engine
from billing.enforcement.models import Period
from billing.enforcement.schemas import BudgetCreate
from billing.enforcement.store import set_budget
from billing.ingest import bulk_insert_ignore, ingest_usage_rows
from billing.ledger import metered_cents, replace_device_hours, write_attribution
from billing.models import Allocation, GpuProcessSample, GpuSample, UsageEvent, table_of
from billing.pricebook import prices_at, read_price_book, store_prices
from billing.replay import CUSTOMERS, MODEL_MIX, read_azure_trace, zipf_weights
from billing.windows import Window
from costctl.bench.common import AZURE_CONV, emit, timer
from costctl.context import fail
from costctl.dashboard_role import default_panels
from costctl.settings import Settings
from dashboard.app import create_dash_app
from dashboard.auth import Viewer
from dashboard.callbacks import Selection, render_page

T0 = datetime(2026, 10, 26, tzinfo=UTC)  # a Monday
GPUS = (
    [("A100-80GB", "on-demand")] * 4
    + [("H100-80GB", "on-demand")] * 2
    + [("H100-80GB", "spot")] * 2
)
# model, gpu index, MIG device suffix or None, fraction
ALLOC = [
    ("llama-3-70b", 4, None, 1.0),
    ("llama-3-70b", 5, None, 1.0),
    ("llama-3-8b", 0, "mig-3g", 3 / 7),
    ("mistral-7b", 0, "mig-4g", 4 / 7),
    ("mixtral-8x7b", 6, None, 1.0),
    ("llama-3-8b", 1, None, 0.5),
]
REQUEST_TYPES = ["chat", "summarize", "code-gen"]


def make_usage(n: int, days: int, seed: int = 7) -> pd.DataFrame:
    """``n`` requests over ``days`` days, busier by day (sin curve), sorted by time."""
    trace = read_azure_trace(AZURE_CONV)
    rng = np.random.Generator(np.random.PCG64(seed))
    span = days * 86400
    u = rng.uniform(0, span, int(n * 1.6))
    keep = rng.uniform(0, 1, len(u)) < 0.6 + 0.4 * np.sin((u % 86400) / 86400 * 2 * np.pi)
    ts = np.sort(u[keep][:n])
    if len(ts) < n:
        ts = np.sort(np.concatenate([ts, rng.uniform(0, span, n - len(ts))]))
    pick = rng.integers(0, len(trace), n)
    models = list(MODEL_MIX)

    def cat(codes: np.ndarray, names: list[str]) -> pd.Categorical[str]:
        return pd.Categorical.from_codes(codes, categories=pd.Index(names))  # type: ignore[call-overload,no-any-return]

    return pd.DataFrame(
        {
            "ts": (pd.Timestamp(T0) + pd.to_timedelta(ts, "s")).floor("us"),
            "model": cat(rng.choice(len(models), n, p=list(MODEL_MIX.values())), models),
            "customer": cat(
                rng.choice(len(CUSTOMERS), n, p=zipf_weights(len(CUSTOMERS))), list(CUSTOMERS)
            ),
            "request_type": cat(rng.choice(3, n, p=[0.7, 0.2, 0.1]), REQUEST_TYPES),
            "input_tokens": trace["input_tokens"].to_numpy()[pick],
            "output_tokens": trace["output_tokens"].to_numpy()[pick],
        }
    )


def make_fleet(days: int, interval_s: float = 60.0) -> dict[str, pd.DataFrame]:
    """GPU and MIG-slice samples, process samples and allocations over ``days`` days."""
    n = int(days * 86400 / interval_s)
    ts = pd.Timestamp(T0) + pd.to_timedelta(np.arange(n) * interval_s, "s")
    rng = np.random.default_rng(1)
    diurnal = 0.6 + 0.4 * np.sin((np.arange(n) * interval_s % 86400) / 86400 * 2 * np.pi)
    devices: list[tuple[str, str | None, str, str, str | None]] = []
    for i, (gpu_type, pc) in enumerate(GPUS):
        devices.append((f"GPU-{i}", None, gpu_type, pc, None))
    devices += [("GPU-0/mig-3g", "GPU-0", "A100-80GB", "on-demand", "3g.40gb")]
    devices += [("GPU-0/mig-4g", "GPU-0", "A100-80GB", "on-demand", "4g.40gb")]
    samples = pd.concat(
        [
            pd.DataFrame(
                {
                    "ts": ts,
                    "node": "node-b" if uuid.startswith("GPU-0") else "node-a",
                    "gpu_uuid": uuid,
                    "parent_uuid": parent,
                    "gpu_index": int(uuid.split("/")[0].removeprefix("GPU-")),
                    "gpu_type": gpu_type,
                    "pricing_class": pc,
                    "mig_profile": profile,
                    "sm_util": np.clip(rng.normal(55, 15, n) * diurnal, 0, 100),
                    "interval_s": interval_s,
                }
            )
            for uuid, parent, gpu_type, pc, profile in devices
        ],
        ignore_index=True,
    )
    processes = pd.concat(
        [
            pd.DataFrame(
                {
                    "ts": ts,
                    "gpu_uuid": f"GPU-{g}",
                    "model": m,
                    "sm_util": rng.uniform(20, 90, n) * f * diurnal,
                    "interval_s": interval_s,
                }
            )
            for m, g, _d, f in ALLOC
        ],
        ignore_index=True,
    )
    allocations = pd.DataFrame(
        {
            "model": [m for m, _, _, _ in ALLOC],
            "gpu_uuid": [f"GPU-{g}" for _, g, _, _ in ALLOC],
            "device_uuid": [f"GPU-{g}/{d}" if d else None for _, g, d, _ in ALLOC],
            "fraction": [f for _, _, _, f in ALLOC],
            "start": pd.Timestamp(T0),
            "end": pd.NaT,
        }
    )
    allocations["end"] = pd.to_datetime(allocations["end"], utc=True)
    return {"samples": samples, "processes": processes, "allocations": allocations}


def build(engine: Engine, usage: pd.DataFrame, fleet: dict[str, pd.DataFrame], days: int) -> None:
    """Store samples and allocations, attribute day by day, write the ledger, add budgets."""
    config = BillingConfig()
    store_prices(engine, read_price_book(config.price_book_path), T0 - timedelta(days=1))
    s = fleet["samples"]
    cols = list(s.columns)
    rows = [(t.to_pydatetime(), *r) for t, *r in s.itertuples(index=False)]
    with engine.begin() as conn:
        # every NOT NULL column is given: INSERT OR IGNORE would silently skip the row
        if bulk_insert_ignore(conn, table_of(GpuSample), cols, rows) != len(rows):
            fail("GPU samples were not all stored", code=1)
        a = fleet["allocations"]
        conn.execute(
            table_of(Allocation).insert(),
            [
                {
                    "model": r.model,
                    "node": "node-b" if r.gpu_uuid == "GPU-0" else "node-a",
                    "gpu_uuid": r.gpu_uuid,
                    "device_uuid": r.device_uuid,
                    "mode": "mig" if r.device_uuid else "gpu",
                    "fraction": r.fraction,
                    "start": T0,
                    "end": None,
                }
                for r in a.itertuples(index=False)
            ],
        )
    p = fleet["processes"]
    last_day = p[p["ts"] >= pd.Timestamp(T0 + timedelta(days=days - 1))]
    pids = {m: 1000 + i for i, m in enumerate(sorted(set(last_day["model"])))}
    proc_rows = [
        (ts.to_pydatetime(), g, g, pids[m], m, float(u), 20000.0, float(iv))
        for ts, g, m, u, iv in zip(
            last_day["ts"],
            last_day["gpu_uuid"],
            last_day["model"],
            last_day["sm_util"],
            last_day["interval_s"],
            strict=True,
        )
    ]
    pcols = [
        "ts",
        "device_uuid",
        "gpu_uuid",
        "pid",
        "model",
        "sm_util",
        "mem_used_mib",
        "interval_s",
    ]
    with engine.begin() as conn:
        bulk_insert_ignore(conn, table_of(GpuProcessSample), pcols, proc_rows)
    prices = prices_at(engine, T0 + timedelta(days=days))
    physical = s[s["parent_uuid"].isna()]
    day_ns = np.int64(86400 * 10**9)
    day_of = (usage["ts"] - pd.Timestamp(T0)).to_numpy().astype("int64") // day_ns
    bounds = np.searchsorted(day_of, np.arange(days + 1))
    for d in range(days):
        w = Window(T0 + timedelta(days=d), T0 + timedelta(days=d + 1))
        start, end = pd.Timestamp(w.start), pd.Timestamp(w.end)
        result = attribute(
            samples=physical[(physical["ts"] >= start) & (physical["ts"] < end)],
            processes=fleet["processes"][
                (fleet["processes"]["ts"] >= start) & (fleet["processes"]["ts"] < end)
            ],
            allocations=fleet["allocations"],
            usage=usage.iloc[bounds[d] : bounds[d + 1]],
            prices=prices,
            window=w,
            weights=config.weights,
        )
        write_attribution(engine, w, result, computed_at=w.end)
        with engine.begin() as conn:  # what the rollup job writes beside the ledger
            replace_device_hours(conn, w)
    for name, spec in {
        "acme-monthly": BudgetCreate(customer="acme", period=Period.monthly, limit_usd=2000.0),
        "all-weekly": BudgetCreate(period=Period.weekly, limit_usd=5000.0),
    }.items():
        set_budget(engine, name=name, spec=spec, actor="bench", now=T0)


def store_events(engine: Engine, usage: pd.DataFrame) -> None:
    """Store raw usage events (for the per-event baseline)."""
    rows = [
        ("bench", f"e{i}", ts.to_pydatetime(), m, c, r, int(a), int(b), None, "ok", None)
        for i, (ts, m, c, r, a, b) in enumerate(
            zip(
                usage["ts"],
                usage["model"],
                usage["customer"],
                usage["request_type"],
                usage["input_tokens"],
                usage["output_tokens"],
                strict=True,
            )
        )
    ]
    for i in range(0, len(rows), 50_000):
        ingest_usage_rows(engine, rows[i : i + 50_000])


def naive_render(engine: Engine, window: Window) -> int:
    """Baseline: every usage event of the window read into pandas and grouped per event."""
    u = table_of(UsageEvent).c
    with engine.connect() as conn:
        df = pd.read_sql(
            select(
                u.ts, u.model, u.customer, u.request_type, u.input_tokens, u.output_tokens
            ).where(u.ts >= window.start, u.ts < window.end),
            conn,
        )
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df["hour"] = df["ts"].dt.floor("h")
    g = df.groupby(["hour", "model", "customer", "request_type"])[
        ["input_tokens", "output_tokens"]
    ].agg(["sum", "count"])
    return len(df) + len(g)


def callback_payload(deps: list[dict[str, Any]], window: str) -> dict[str, Any]:
    """The JSON the browser posts on first load for the page's one callback."""
    cb = deps[0]
    values = {"f-window": window, "f-top-n": 5}
    return {
        "output": cb["output"],
        "outputs": [
            {"id": o.split(".")[0], "property": o.split(".")[1]}
            for o in cb["output"].strip(".").split("...")
        ],
        "inputs": [
            {"id": i["id"], "property": i["property"], "value": values.get(i["id"])}
            for i in cb["inputs"]
        ],
        "changedPropIds": [],
        "state": [],
    }


def time_http(url: str, now: datetime, windows: list[str]) -> dict[str, float]:
    """Seconds for layout + the first callback per window, each on a fresh engine and app."""
    out: dict[str, float] = {}
    for window in windows:
        engine = make_engine(url)
        app = create_dash_app(
            engine, clock=lambda: now, require_auth=False, panels=default_panels(engine, Settings())
        )
        client = app.server.test_client()
        t = time.perf_counter()
        assert client.get("/").status_code == 200
        client.get("/_dash-layout")
        deps = client.get("/_dash-dependencies").get_json()
        r = client.post("/_dash-update-component", json=callback_payload(deps, window))
        out[window] = time.perf_counter() - t
        if r.status_code != 200:
            fail(f"callback answered {r.status_code}: {r.get_data(as_text=True)[:300]}", code=1)
        body = json.loads(r.get_data())
        figs = [v["figure"] for k, v in body["response"].items() if k.startswith("g-")]
        empty = [
            k for k, v in body["response"].items() if k.startswith("g-") and not v["figure"]["data"]
        ]
        if not figs or empty:
            fail(f"first render has empty charts: {empty}", code=1)
        engine.dispose()
    return out


def register(bench_app: typer.Typer) -> None:
    """Add `bench dashboard`."""

    @bench_app.command("dashboard")
    def dashboard_cmd(
        events: Annotated[int, typer.Option(min=1000)] = 10_000_000,
        days: Annotated[int, typer.Option(min=1, max=90)] = 30,
        baseline_events: Annotated[int, typer.Option(min=0)] = 1_000_000,
        database_url: Annotated[str | None, typer.Option(help="default: temp SQLite")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Time the dashboard's first render over a ledger built from N events."""
        if not AZURE_CONV.exists():
            fail(f"Azure trace not found at {AZURE_CONV} (set COSTCTL_SHARED_DIR)")
        url = database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
        engine = make_engine(url)
        init_db(engine)
        t: dict[str, float] = {}
        with timer(t, "build_s"):
            usage = make_usage(events, days)
            fleet = make_fleet(days)
            build(engine, usage, fleet, days)
        now = T0 + timedelta(days=days)
        windows = ["24h", "7d", f"{days}d"]
        http = time_http(url, now, windows)
        with timer(t, "render_s"):
            out, _w = render_page(
                engine,
                Selection(window=f"{days}d"),
                Viewer("bench", "admin"),
                now,
                default_panels(engine, Settings()),
            )
        whole = Window(T0, now)
        base: dict[str, Any] = {}
        if baseline_events:
            sub = usage.iloc[:baseline_events]
            with timer(t, "baseline_store_s"):
                store_events(engine, sub)
            span = Window(T0, sub["ts"].iloc[-1].to_pydatetime() + timedelta(seconds=1))
            with timer(t, "baseline_s"):
                naive_render(engine, span)
            base = {
                "baseline": "per-event read of the window's usage events + pandas groupby",
                "baseline_events": baseline_events,
                "baseline_s": round(t["baseline_s"], 3),
                "baseline_extrapolated_s_for_all_events": round(
                    t["baseline_s"] * events / baseline_events, 1
                ),
            }
        ledger_rows = out.rows
        emit(
            {
                "bench": "dashboard",
                "backend": engine.dialect.name,
                "events": events,
                "days": days,
                "ledger_rows_in_window": ledger_rows,
                "gpu_samples": len(fleet["samples"]),
                "first_render_s": {k: round(v, 3) for k, v in http.items()},
                "render_page_s": round(t["render_s"], 3),
                "metered_usd": metered_cents(engine, whole) / 100,
                "ledger_usd": round(out.kpis.cost_usd, 2),
                "build_s": round(t["build_s"], 1),
                **base,
                "speedup_vs_baseline": round(
                    t["baseline_s"] * events / baseline_events / http[f"{days}d"], 1
                )
                if baseline_events
                else None,
            },
            as_json,
        )
