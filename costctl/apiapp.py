"""The API role's app: billing's API + enforcement + the jobs health route, from settings.

``app_from_env`` is the uvicorn factory of `costctl api --workers N` (each worker process
builds its app from the environment); ``build_api`` is what it and `costctl serve` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Response, status
from sqlalchemy.engine import Engine

from billing.api.app import create_app
from billing.api.deps import ApiState
from billing.db import make_engine
from billing.enforcement.api import make_extension
from billing.enforcement.backend import DeploymentScaler
from billing.runner.runner import JobSpec
from costctl.settings import Settings, get_settings
from costctl.worker import job_specs, jobs_report


def jobs_health_extension(
    specs: Sequence[JobSpec], lease_s: float, clock: Callable[[], datetime]
) -> Callable[[FastAPI, ApiState], None]:
    """``GET /healthz/jobs``: every job's state from ``job_run`` (503 when one fails or is late)."""

    def install(app: FastAPI, state: ApiState) -> None:
        @app.get("/healthz/jobs", tags=["health"])
        def healthz_jobs(response: Response) -> dict[str, Any]:
            """Each scheduled job's state and newest run; 503 when one failed or is late."""
            report = jobs_report(state.engine, specs, clock(), lease_s)
            if report["status"] != "ok":
                response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            return report

    return install


def build_api(
    settings: Settings,
    engine: Engine,
    *,
    clock: Callable[[], datetime],
    scaler: DeploymentScaler | None = None,
    specs: Sequence[JobSpec] | None = None,
    listen: bool = True,
) -> FastAPI:
    """The API over ``engine``: ingest, costs, keys, allocations, enforcement, health."""
    specs = job_specs(engine, settings, clock=clock) if specs is None else specs
    return create_app(
        engine=engine,
        config=settings.billing,
        redis_url=settings.redis_url,
        extensions=[
            make_extension(clock=clock, scaler=scaler, listen=listen),
            jobs_health_extension(specs, settings.worker.lease_s, clock),
        ],
    )


def _now() -> datetime:
    return datetime.now(UTC)


def app_from_env() -> FastAPI:
    """uvicorn factory: settings from the environment (the CLI exports its overrides)."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    from costctl.commands.enforcement import kube_scaler

    scaler, _why = kube_scaler(settings)
    return build_api(settings, engine, clock=_now, scaler=scaler)
