"""Fixtures of the enforcement tests: an API with the enforcement extension, a fake scaler."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from billing.api.app import create_app
from billing.api.deps import get_now
from billing.apikeys import create_key
from billing.config import BillingConfig
from billing.enforcement.api import make_extension
from billing.enforcement.backend import DeploymentScaler
from billing.enforcement.config import EnforcementConfig
from billing.models import ApiRole
from tests.utils.api import Api
from tests.utils.redis_server import RedisServer, private_redis

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday


@dataclass
class FakeScaler:
    """Implements DeploymentScaler in memory."""

    replicas: dict[str, int] = field(default_factory=lambda: {"llama-70b": 3})
    calls: list[tuple[str, int]] = field(default_factory=list)

    def scale_model(self, model: str, replicas: int) -> int:
        self.calls.append((model, replicas))
        before = self.replicas.get(model, 0)
        self.replicas[model] = replicas
        return before


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def make_enf_api(
    engine: Engine,
    *,
    redis_url: str | None = None,
    config: EnforcementConfig | None = None,
    scaler: DeploymentScaler | None = None,
    clock: Clock | None = None,
    billing: BillingConfig | None = None,
) -> tuple[Api, Clock]:
    clock = clock or Clock()
    app = create_app(
        engine=engine,
        config=(billing or BillingConfig()).model_copy(
            update={"enforcement": config or EnforcementConfig()}
        ),
        redis_url=redis_url,
        extensions=[make_extension(scaler=scaler, clock=clock, listen=False)],
    )
    app.dependency_overrides[get_now] = clock
    keys = {
        "admin": create_key(engine, name="ops", role=ApiRole.admin, customer=None, now=NOW),
        "ingest": create_key(engine, name="gw", role=ApiRole.ingest, customer=None, now=NOW),
        "read": create_key(engine, name="r", role=ApiRole.read, customer=None, now=NOW),
        "acme": create_key(engine, name="acme", role=ApiRole.read, customer="acme", now=NOW),
    }
    return Api(TestClient(app), keys), clock


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port that the test may kill and restart."""
    yield from private_redis(tmp_path)


@pytest.fixture
def scaler() -> FakeScaler:
    return FakeScaler()


@pytest.fixture
def api_clock(engine: Engine, scaler: FakeScaler) -> Iterator[tuple[Api, Clock]]:
    api, clock = make_enf_api(engine, scaler=scaler)
    yield api, clock
    api.client.close()


def authorize(api: Api, **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "customer": "acme",
        "model": "llama-70b",
        "request_type": "chat",
        "estimated_tokens": 1000,
    }
    body.update(over)
    r = api.client.post("/v1/authorize", json=body, headers=api.h("ingest"))
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    out["_headers"] = dict(r.headers)
    return out


def usage(i: str, tokens_in: int, tokens_out: int, **over: object) -> dict[str, object]:
    e: dict[str, object] = {
        "id": i,
        "source": "gw",
        "time": NOW.isoformat(),
        "model": "llama-70b",
        "customer": "acme",
        "request_type": "chat",
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
    }
    e.update(over)
    return e
