"""The budget job: sweep of usage the hook missed, alerts (log + webhook, once), kill budgets,
drift; the APScheduler wiring; budget_burn for the dashboard."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.enforcement import budget_burn, budget_job
from billing.enforcement.config import EnforcementConfig
from billing.enforcement.jobs import Sweeper, evaluate_budgets
from billing.enforcement.models import BudgetAction, KillScope, Period
from billing.enforcement.schemas import BudgetCreate
from billing.enforcement.service import Enforcer
from billing.enforcement.store import list_kill_switches, set_budget
from billing.ingest import ingest_usage
from billing.runner.runner import JobRunner, TickOutcome
from billing.runner.runs import list_runs
from billing.schemas import USAGE_EVENT
from tests.enforcement.conftest import NOW, Clock, FakeScaler, usage


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}/hook", got
    srv.shutdown()


def _budget(engine: Engine, name: str, **kw: Any) -> None:
    spec = BudgetCreate(period=Period.daily, **kw)
    set_budget(engine, name=name, spec=spec, actor="test", now=NOW)


def _ingest(engine: Engine, *events: dict[str, object]) -> None:
    ingest_usage(engine, [USAGE_EVENT.validate_python(e) for e in events])


def test_sweep_alerts_once_and_no_drift(
    engine: Engine, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, got = webhook
    cfg = EnforcementConfig(alert_webhook_url=url)  # type: ignore[arg-type]
    _budget(engine, "acme", customer="acme", limit_usd=0.01, soft_ratio=0.5)
    enf = Enforcer(engine, cfg, clock=Clock())
    # usage stored without the API (no hook): 4000 out tokens x 1.5 µUSD = 6000 µUSD = 60 %
    _ingest(engine, usage("u1", 0, 4000))
    sweeper = Sweeper()
    report = evaluate_budgets(enf, NOW + timedelta(minutes=1), sweeper)
    assert (report.swept, report.charged, report.alerts, report.max_drift_micros) == (1, 1, 1, 0)
    assert [(a["level"], a["budget"], a["spent_usd"]) for a in got] == [("soft", "acme", 0.006)]
    # run again: nothing new is charged and the alert is not repeated
    report = evaluate_budgets(enf, NOW + timedelta(minutes=2), sweeper)
    assert (report.charged, report.alerts) == (0, 0)
    _ingest(engine, usage("u2", 0, 4000))  # 12000 µUSD: past the hard line
    report = evaluate_budgets(enf, NOW + timedelta(minutes=3), sweeper)
    assert report.alerts == 1 and [a["level"] for a in got] == ["soft", "hard"]
    (burn,) = budget_burn(engine, cfg, NOW + timedelta(minutes=3))
    assert (burn.spent_micros, burn.status, burn.drift_micros) == (12_000, "hard", 0)
    assert burn.public().soft_usd == pytest.approx(0.005)


def test_job_trips_kill_budget_and_scales(engine: Engine) -> None:
    scaler = FakeScaler()
    _budget(engine, "cap", model="llama-70b", limit_tokens=1000, action=BudgetAction.kill)
    enf = Enforcer(engine, EnforcementConfig(), clock=Clock(), scaler=scaler)
    _ingest(engine, usage("u1", 600, 600))
    report = evaluate_budgets(enf, NOW, Sweeper())
    assert report.killed == ["model:llama-70b"]
    (ks,) = list_kill_switches(engine)
    assert (ks.scope, ks.target, ks.actor, ks.previous_replicas) == (
        KillScope.model,
        "llama-70b",
        "budget:cap",
        3,
    )
    assert scaler.replicas["llama-70b"] == 0
    assert evaluate_budgets(enf, NOW, Sweeper()).killed == []  # already active


def test_budget_burn_periods(engine: Engine) -> None:
    _budget(engine, "d", customer="acme", limit_usd=1)
    set_budget(
        engine,
        name="w",
        spec=BudgetCreate(period=Period.weekly, limit_tokens=10_000),
        actor="t",
        now=NOW,
    )
    yesterday = (NOW - timedelta(days=1)).isoformat()
    _ingest(engine, usage("a", 1000, 0), usage("b", 1000, 0, time=yesterday, customer="x"))
    burns = {b.budget.name: b for b in budget_burn(engine, EnforcementConfig(), NOW)}
    assert burns["d"].spent_tokens == 1000  # today, acme only
    assert burns["w"].spent_tokens == 2000  # this week (Monday on), every customer
    assert burns["w"].ratio == pytest.approx(0.2)
    assert burns["d"].period_end - burns["d"].period_start == timedelta(days=1)


def test_budget_job_runs_once_per_slot_through_the_runner(engine: Engine) -> None:
    cfg = BillingConfig(enforcement=EnforcementConfig(evaluate_interval_s=3600))
    clock = Clock()
    enf = Enforcer(engine, cfg.enforcement, clock=clock)
    spec = budget_job(lambda: enf, cfg)
    assert spec.name == "billing.enforcement.budgets"
    runner = JobRunner(engine, clock=clock, worker_id="w1")
    assert runner.tick(spec) is TickOutcome.ran
    assert runner.tick(spec) is TickOutcome.done  # same hour slot: not again
    (run,) = list_runs(engine)
    assert (run.job, run.outcome, run.worker_id) == (spec.name, "ok", "w1")
    assert run.detail is not None and run.detail.startswith("JobReport(expired=0")


def test_only_drift_that_outlives_a_run_is_a_warning(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A late event the sweeper will never re-read keeps 'price' counters off: warned on the 2nd
    run ('cost' counters are reconciled to the database on every run instead)."""
    _budget(engine, "acme", customer="acme", limit_usd=1.0, basis="price")
    enf = Enforcer(engine, EnforcementConfig(), clock=Clock())
    sweeper = Sweeper(overlap_s=0, watermark=NOW + timedelta(minutes=30))
    # stored without the hook and older than the sweeper's overlap: nobody settles it
    _ingest(engine, usage("late", 0, 4000))
    with caplog.at_level("DEBUG", logger="billing.enforcement.jobs"):
        first = evaluate_budgets(enf, NOW + timedelta(minutes=31), sweeper)
        warned_first = [r for r in caplog.records if r.levelname == "WARNING"]
        second = evaluate_budgets(enf, NOW + timedelta(minutes=32), sweeper)
    assert first.max_drift_micros == second.max_drift_micros == 6000  # counters lag truth
    assert warned_first == []
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "budgets: acme" in warned[0]
