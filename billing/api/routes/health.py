"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from billing import migrations
from billing.api.deps import StateDep

router = APIRouter(tags=["health"])
READINESS = "readiness"  # ApiState.extras key: callables adding fields to the /readyz body


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> dict[str, str]:
    """The database answers and its schema is at the code's head revision (503 otherwise).

    Extensions add fields (``enforcement``: ``redis``, ``sql``, ``sql-fallback`` or ``deny``);
    those report a degraded mode in the body and keep the 200, as the worker still serves.
    """

    def check() -> migrations.SchemaState:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return migrations.state(state.engine)

    try:
        schema = await run_in_threadpool(check)
    except Exception as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"database: {exc}") from exc
    if not schema.ok:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"schema: {schema.message()}")
    body = {
        "status": "ready",
        "database": state.engine.dialect.name,
        "schema": schema.current or "",
    }
    for extra in state.extras.get(READINESS, []):
        body.update(extra())
    return body
