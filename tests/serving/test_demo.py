"""`costctl demo` as a newcomer runs it: a subprocess on a fresh SQLite file, checked over
HTTP while it runs, stopped with SIGTERM, and its ledger read afterwards.

The first test runs it as a plain clone would: COSTCTL_SHARED_DIR is an empty folder and no
--trace, so the built-in synthetic workload runs; the unit economics are checked against the
first-principles figure (GPU $/h of each model's allocations / tokens per hour it serves)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from billing.config import BillingConfig
from billing.db import make_engine
from billing.enforcement.burn import budget_burn
from billing.models import LedgerEntry, LedgerHour, UsageEvent, table_of
from billing.replay import MODEL_MIX
from billing.synthetic import CONV as CONV_KIND
from billing.synthetic import DIURNAL_MEAN
from costctl.cli import app as cli_app
from costctl.commands import enforcement as enforcement_cmd
from dashboard.auth import Viewer
from dashboard.budgets import budget_status_frame, make_budget_panel
from tests.dashboard.ledger import CONV

# The demo fleet's $/h per model from its allocations (price book on-demand: A100-80GB 5.12,
# H100-80GB 9.80; an MPS share carries 1/replicas, replicas >= 2 by GPU feature discovery's
# label; a MIG slice carries slices/7; a whole GPU 1). 2 x 5.12 + 2 x 9.80 = 29.84 $/h.
FLEET_USD_PER_H = 29.84
MODEL_USD_PER_H = {
    "llama-3-70b": 0.5 * 5.12 + 9.80,  # MPS on A100 #0 + whole H100 #1
    "llama-3-8b": 0.5 * 5.12 + 3 / 7 * 9.80,  # MPS on A100 #1 + MIG 3g on H100 #0
    "mistral-7b": 4 / 7 * 9.80,  # two MIG 2g on H100 #0
    "mixtral-8x7b": 0.5 * 5.12,  # MPS on A100 #1
}
# Measured mean tokens per conv request (input 1154.7 + output 211.1, scripts/measure_trace.py).
CONV_TOKENS_PER_REQUEST = 1154.7 + 211.1


def expected_usd_per_1m(model: str) -> float:
    """GPU $/h of the model / tokens per hour it serves (trace rate x daily mean x mix)."""
    tokens_h = CONV_KIND.rate_per_s * 3600 * DIURNAL_MEAN * CONV_TOKENS_PER_REQUEST
    return MODEL_USD_PER_H[model] / (tokens_h * MODEL_MIX[model]) * 1e6


pytestmark = [pytest.mark.slow]
COSTCTL = Path(sys.executable).with_name("costctl")


def read_banner(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, str]:
    """Parse the demo's banner (URLs and keys) from its stdout."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline and "tenant" not in found:
        line = proc.stdout.readline()
        if not line:
            break
        for name, pattern in {
            "api": r"^\s+API\s+(\S+)",
            "dashboard": r"^\s+dashboard\s+(\S+)",
            "admin": r"^\s+admin key\s+(\S+)",
            "tenant": r"^\s+acme read key\s+(\S+)",
            "workload": r"^workload\s+(.+)$",
            "backfilled": r"^backfilled\s+(\d+) requests",
        }.items():
            if m := re.match(pattern, line):
                found[name] = m.group(1)
    return found


def start_demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """``costctl demo`` on ``tmp_path/demo.db`` with free ports, ../shared hidden."""
    empty = tmp_path / "no-shared"
    empty.mkdir()
    env = {
        **os.environ,
        "COSTCTL_BILLING__EXPORT__DIR": str(tmp_path / "exports"),
        "COSTCTL_SHARED_DIR": str(empty),
    }
    cmd = [str(COSTCTL), "demo", "--duration", "150", "--port", "0", "--dashboard-port", "0"]
    return subprocess.Popen(
        [*cmd, "--db", str(tmp_path / "demo.db"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def ledger_by_model(db: Path) -> dict[str, tuple[int, int]]:
    """(cost cents incl. idle, tokens) per model from the demo's ledger."""
    e = table_of(LedgerEntry).c
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        rows = c.execute(
            select(e.model, func.sum(e.cost_cents), func.sum(e.input_tokens + e.output_tokens))
            .where(e.model.in_(list(MODEL_USD_PER_H)))
            .group_by(e.model)
        ).all()
    engine.dispose()
    return {m: (int(cents), int(tokens)) for m, cents, tokens in rows}


def _same_spent_everywhere(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Done-when of issue 11: the demo's dashboard, `costctl status`, the burn API's
    ``budget_burn`` and the weekly export read the same spent per budget, basis named."""
    t = datetime.now(UTC)
    cfg = BillingConfig()
    engine = make_engine(f"sqlite:///{db}")
    burn = {
        x.budget.name: (round(x.spent_micros / 1e6, 2), x.budget.basis.value)
        for x in budget_burn(engine, cfg.enforcement, t, resolution_s=cfg.ledger_resolution_s)
    }
    assert set(burn) == {"acme-daily", "all-daily"}
    assert burn["acme-daily"][1] == "cost" and burn["all-daily"][1] == "price"
    assert burn["acme-daily"][0] > 0
    frame = budget_status_frame(engine, cfg.enforcement, t, cfg.ledger_resolution_s)
    export = {
        r["name"]: (round(float(r["spent_usd"]), 2), r["basis"]) for r in frame.to_dict("records")
    }
    assert export == burn
    fig = make_budget_panel(engine, cfg)(t, Viewer("admin", "admin"))
    lines = [tr for tr in fig.data if not tr.name.endswith(" projected")]
    panel = {tr.name.split(" ")[0]: round(float(tr.customdata[-1]), 2) for tr in lines}
    assert panel == {n: v[0] for n, v in burn.items()}
    engine.dispose()
    monkeypatch.setattr(enforcement_cmd, "now", lambda: t)
    monkeypatch.delenv("COSTCTL_REDIS_URL", raising=False)
    r = CliRunner().invoke(cli_app, ["--database-url", f"sqlite:///{db}", "status", "--json"])
    assert r.exit_code == 0, r.output
    status = {
        x["name"]: (round(x["spent_usd"], 2), x["basis"]) for x in json.loads(r.output)["budgets"]
    }
    assert status == burn


def test_demo_runs_costs_flow_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "demo.db"
    proc = start_demo(tmp_path, "--history", "1d")
    try:
        b = read_banner(proc, timeout=120)
        assert set(b) == {"api", "dashboard", "admin", "tenant", "workload", "backfilled"}, b
        assert b["workload"].startswith("synthetic-conv synthetic")
        assert int(b["backfilled"]) > 100_000  # a day at 5.53 req/s x 0.65 is ~310k
        admin = {"Authorization": f"Bearer {b['admin']}"}
        tenant = {"Authorization": f"Bearer {b['tenant']}"}
        with httpx.Client(base_url=b["api"], timeout=10) as api:
            assert api.get("/healthz").status_code == 200
            assert api.get("/readyz").json()["database"] == "sqlite"
            requests = billed = 0
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and (requests == 0 or billed == 0):
                time.sleep(1)
                r = api.get("/v1/costs", params={"window": "2d", "group_by": "kind"}, headers=admin)
                assert r.status_code == 200
                rows_by_kind = {row["kind"]: row for row in r.json()["rows"]}
                attributed = rows_by_kind.get("attributed", {})
                requests = attributed.get("requests", 0)
                billed = attributed.get("cost_cents", 0)
            assert requests > 0, "no usage reached the ledger within 90 s"
            assert billed > 0, "the simulated fleet's GPU cost never reached a tenant"
            mine = api.get(
                "/v1/costs", params={"window": "1h", "group_by": "customer"}, headers=tenant
            ).json()["rows"]
            assert {row["customer"] for row in mine} == {"acme"}
            # the newest rollup may be running right now: wait for one that has finished
            until = time.monotonic() + 60
            while True:
                last = api.get("/healthz/jobs").json()["jobs"]["billing.rollup"]["last"]
                if last["outcome"] != "running" or time.monotonic() > until:
                    break
                time.sleep(0.5)
            assert last["outcome"] == "ok"
            burn = api.get("/v1/budgets/burn", headers=admin)
            assert burn.status_code == 200 and {x["name"] for x in burn.json()} >= {"acme-daily"}
        with httpx.Client(base_url=b["dashboard"], timeout=10) as dash:
            assert dash.get("/healthz").status_code == 200
            assert dash.post("/login", data={"key": b["tenant"]}).status_code == 302
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert re.search(r"replayed (\d+) events live", out)
    assert "Traceback" not in err
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        rows = c.execute(select(func.count()).select_from(table_of(LedgerEntry))).scalar_one()
        events = c.execute(select(func.count()).select_from(table_of(UsageEvent))).scalar_one()
        ledger_cents = c.execute(select(func.sum(table_of(LedgerEntry).c.cost_cents))).scalar()
        metered = c.execute(select(func.sum(table_of(LedgerHour).c.metered_cost_cents))).scalar()
    engine.dispose()
    assert rows > 0 and events > 0
    assert metered and metered > 0
    assert ledger_cents == metered  # the demo's fleet cost is conserved to the cent
    # one clock: a full backfilled hour meters the whole fleet at its price (all GPUs held)
    hour = table_of(LedgerHour).c
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        full = c.execute(select(hour.metered_cost_usd).order_by(hour.hour).limit(4)).scalars()
        assert [round(x, 2) for x in list(full)[1:4]] == [FLEET_USD_PER_H] * 3
    engine.dispose()
    _same_spent_everywhere(db, monkeypatch)
    # unit economics from first principles: within 25% per model (measured: 2-4%)
    for model, (cents, tokens) in ledger_by_model(db).items():
        got = cents / 100 / tokens * 1e6
        want = expected_usd_per_1m(model)
        assert 0.75 * want <= got <= 1.25 * want, (model, got, want)
    assert 1.8 < expected_usd_per_1m("llama-3-70b") < 2.8  # the README's figures
    assert 0.7 < expected_usd_per_1m("mixtral-8x7b") < 1.2


@pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")
def test_demo_replays_the_real_trace_when_given(tmp_path: Path) -> None:
    proc = start_demo(tmp_path, "--history", "3h", "--trace", str(CONV))
    try:
        b = read_banner(proc, timeout=120)
        assert b.get("workload", "").startswith("conv trace"), b
        assert int(b["backfilled"]) > 10_000  # 3 h at 5.53 req/s x (0.30..1.0)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert set(ledger_by_model(tmp_path / "demo.db")) == set(MODEL_USD_PER_H)


def test_demo_rejects_a_bad_history(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(COSTCTL), "demo", "--history", "a week", "--db", str(tmp_path / "x.db")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "--history" in r.stderr and "Traceback" not in r.stderr
