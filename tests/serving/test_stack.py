"""The serve stack in-process: API + jobs + dashboard answer, then shut down cleanly."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.engine import Engine

from billing.apikeys import create_key
from billing.models import ApiRole
from costctl.serve import Stack, run
from costctl.settings import Settings
from tests.dashboard.ledger import CONV, build_ledger
from tests.utils.factories import T0

pytestmark = pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")


def settings() -> Settings:
    s = Settings()
    billing = s.billing.model_copy(update={"rollup_interval_s": 1})
    return s.model_copy(update={"api_port": 0, "dashboard_port": 0, "billing": billing})


def test_stack_serves_and_stops(engine: Engine) -> None:
    build_ledger(engine)
    now = T0 + timedelta(hours=3)
    key = create_key(engine, name="a", role=ApiRole.admin, customer=None, now=now)
    stack = Stack(settings(), engine, clock=lambda: datetime.now(UTC))
    stack.start()
    try:
        with httpx.Client(base_url=stack.api_url, timeout=10) as api:
            assert api.get("/healthz").json() == {"status": "ok"}
            assert api.get("/readyz").status_code == 200
            r = api.get(
                "/v1/costs",
                params={"window": "2026-11-23T00:00:00Z,2026-11-23T03:00:00Z", "group_by": ""},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 200
            deadline = time.monotonic() + 20
            jobs: dict[str, object] = {}
            while time.monotonic() < deadline:
                jobs = api.get("/healthz/jobs").json()["jobs"]
                if all(
                    (jobs.get(j) or {}).get("last", {}).get("outcome") == "ok"  # type: ignore[union-attr]
                    for j in ("billing.rollup", "billing.enforcement.budgets")
                ):
                    break
                time.sleep(0.2)
            assert set(jobs) >= {
                "billing.rollup",
                "billing.enforcement.budgets",
                "dashboard.weekly_export",
            }
            assert jobs["billing.rollup"]["last"]["outcome"] == "ok"  # type: ignore[index]
            assert jobs["billing.rollup"]["schedule"] == "every 1 s"  # type: ignore[index]
            weekly = jobs["dashboard.weekly_export"]
            assert weekly["schedule"] == "weekly mon 06:00 UTC"  # type: ignore[index]
            slot = datetime.fromisoformat(weekly["slot"])  # type: ignore[index]
            assert slot.weekday() == 0 and (slot.hour, slot.minute) == (6, 0)
            assert timedelta(0) <= datetime.now(UTC) - slot < timedelta(days=7)
        with httpx.Client(base_url=stack.dashboard_url, timeout=10) as dash:
            assert dash.get("/healthz").status_code == 200
            assert dash.get("/").status_code == 302  # to /login
            login = dash.post("/login", data={"key": key})
            assert login.status_code == 302 and login.headers["location"] == "/"
            page = dash.get("/")
            assert page.status_code == 200 and "_dash-renderer" in page.text
            bad = httpx.post(f"{stack.dashboard_url}/login", data={"key": "cc_00000000_nope"})
            assert bad.status_code == 401
    finally:
        stack.stop()
    assert not any(t.is_alive() for t in stack._threads)
    assert not stack.worker.scheduler.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.api_url}/healthz", timeout=2)
    stack.stop()  # idempotent


def test_run_stops_on_event(engine: Engine) -> None:
    stack = Stack(settings(), engine, clock=lambda: datetime.now(UTC))
    stop = threading.Event()
    seen: list[int] = []

    def started(s: Stack) -> None:
        seen.append(httpx.get(f"{s.api_url}/healthz", timeout=5).status_code)
        stop.set()

    run(stack, duration=30, stop=stop, on_started=started, on_stopping=lambda: seen.append(0))
    assert seen == [200, 0]
    assert not stack.worker.scheduler.running


class RecordingScaler:
    """A DeploymentScaler that remembers calls (the real one is tested over the fake k8s API)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.replicas = {"llama-3-70b": 3}

    def scale_model(self, model: str, replicas: int) -> int:
        self.calls.append((model, replicas))
        before, self.replicas[model] = self.replicas.get(model, 0), replicas
        return before


def test_serve_hands_the_scaler_to_the_kill_switch(engine: Engine) -> None:
    scaler = RecordingScaler()
    now = datetime.now(UTC)
    key = create_key(engine, name="a", role=ApiRole.admin, customer=None, now=now)
    stack = Stack(settings(), engine, clock=lambda: datetime.now(UTC), scaler=scaler)
    stack.start()
    try:
        h = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=stack.api_url, timeout=10, headers=h) as api:
            body = {"scope": "model", "target": "llama-3-70b", "reason": "runaway"}
            assert api.post("/v1/killswitches", json=body).status_code == 201
            assert scaler.calls == [("llama-3-70b", 0)]
            r = api.post("/v1/killswitches/model/llama-3-70b/revive", json={"reason": "fixed"})
            assert r.status_code == 200
            assert scaler.calls[-1] == ("llama-3-70b", 3)
    finally:
        stack.stop()
