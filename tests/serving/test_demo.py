"""`costctl demo` as a newcomer runs it: a subprocess on a fresh SQLite file, checked over
HTTP while it runs, stopped with SIGTERM, and its ledger read afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from billing.db import make_engine
from billing.models import LedgerEntry, LedgerHour, UsageEvent, table_of
from tests.dashboard.ledger import CONV

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}"),
]
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
        }.items():
            if m := re.match(pattern, line):
                found[name] = m.group(1)
    return found


def test_demo_runs_costs_flow_and_stops_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {**os.environ, "COSTCTL_BILLING__EXPORT__DIR": str(tmp_path / "exports")}
    proc = subprocess.Popen(
        [
            str(COSTCTL),
            "demo",
            "--duration",
            "120",
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--db",
            str(db),
            "--speed",
            "120",
            "--trace",
            str(CONV),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        b = read_banner(proc)
        assert set(b) == {"api", "dashboard", "admin", "tenant"}, b
        admin = {"Authorization": f"Bearer {b['admin']}"}
        tenant = {"Authorization": f"Bearer {b['tenant']}"}
        with httpx.Client(base_url=b["api"], timeout=10) as api:
            assert api.get("/healthz").status_code == 200
            assert api.get("/readyz").json()["database"] == "sqlite"
            requests = billed = 0
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and (requests == 0 or billed == 0):
                time.sleep(1)
                r = api.get("/v1/costs", params={"window": "1h", "group_by": "kind"}, headers=admin)
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
            jobs = api.get("/healthz/jobs").json()
            assert jobs["jobs"]["billing.rollup"]["last"]["outcome"] == "ok"
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
    assert re.search(r"replayed (\d+) events", out)
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
