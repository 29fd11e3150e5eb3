"""API test helpers: an app over a test engine, keys per role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from billing.api.app import create_app
from billing.apikeys import create_key
from billing.config import BillingConfig
from billing.models import ApiRole


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        """Authorization header for a named key."""
        return {"Authorization": f"Bearer {self.keys[who]}"}


def make_api(engine: Engine, config: BillingConfig | None = None) -> Api:
    app = create_app(engine=engine, config=config or BillingConfig())
    return Api(TestClient(app), make_keys(engine))


def make_keys(engine: Engine) -> dict[str, str]:
    """An admin, an ingest, a read and a customer-scoped read key (acme), in clear."""
    now = datetime.now(UTC)
    return {
        "admin": create_key(engine, name="a", role=ApiRole.admin, customer=None, now=now),
        "ingest": create_key(engine, name="i", role=ApiRole.ingest, customer=None, now=now),
        "read": create_key(engine, name="r", role=ApiRole.read, customer=None, now=now),
        "acme": create_key(engine, name="acme", role=ApiRole.read, customer="acme", now=now),
    }


def event(i: int, **over: object) -> dict[str, object]:
    """A valid usage event as JSON."""
    e: dict[str, object] = {
        "id": f"e{i}",
        "source": "test",
        "time": "2026-11-23T10:00:00Z",
        "model": "llama",
        "customer": "acme",
        "request_type": "chat",
        "input_tokens": 100 + i,
        "output_tokens": 10 + i,
    }
    e.update(over)
    return e
