"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI
from sqlalchemy.engine import Engine

from billing.api.deps import ApiState
from billing.api.errors import install_error_handlers
from billing.api.guard import BodyGuard
from billing.api.openapi import install_openapi
from billing.api.routes import allocations, costs, health, keys, usage
from billing.apikeys import create_key
from billing.config import BillingConfig
from billing.models import ApiRole

Extension = Callable[[FastAPI, ApiState], None]


def create_app(
    *,
    engine: Engine,
    config: BillingConfig,
    redis_url: str | None = None,
    routers: Iterable[APIRouter] = (),
    extensions: Iterable[Extension] = (),
) -> FastAPI:
    """Build the API over ``engine`` (its schema migrated: see billing.migrations);
    ``extensions`` let other packages add routes and state."""
    if config.bootstrap_admin_key:
        create_key(
            engine,
            name="bootstrap-admin",
            role=ApiRole.admin,
            customer=None,
            now=datetime.now(UTC),
            key=config.bootstrap_admin_key,
        )
    app = FastAPI(
        title="costctl",
        version="0.1.0",
        description="GPU cost metering, attribution and budget policy API.",
    )
    install_error_handlers(app)
    app.add_middleware(BodyGuard, max_bytes=config.max_body_bytes, max_depth=config.max_json_depth)
    state = ApiState(engine=engine, config=config, redis_url=redis_url)
    app.state.costctl = state
    for r in (
        health.router,
        usage.router,
        allocations.router,
        costs.router,
        keys.router,
        *routers,
    ):
        app.include_router(r)
    for ext in extensions:
        ext(app, state)
    install_openapi(app)
    return app
