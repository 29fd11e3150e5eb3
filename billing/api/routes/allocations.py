"""POST /v1/allocations (observed holdings, idempotent) and GET /v1/allocations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from billing.allocations import ingest_allocations, query_allocations
from billing.api.deps import IngestDep, StateDep
from billing.api.errors import json_body, unprocessable
from billing.schemas import ALLOCATION_BATCH, AllocationPublic, AllocationResult, UtcDatetime

router = APIRouter(prefix="/v1", tags=["allocations"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ALLOCATION_BATCH.json_schema()}},
    }
}


def _items(body: Any) -> list[Any]:
    """A bare JSON array or ``{"allocations": [...]}``."""
    if isinstance(body, dict) and "allocations" in body:
        body = body["allocations"]
    if not isinstance(body, list):
        raise unprocessable(["body", "allocations"], "expected a list of allocations", "list_type")
    return body


@router.post("/allocations", response_model=AllocationResult, openapi_extra=_BODY)
async def post_allocations(
    request: Request, state: StateDep, _principal: IngestDep
) -> AllocationResult:
    """Record observed (or planned) holdings; a batch with a bad item is rejected whole (422)."""
    items = _items(await json_body(request))
    limit = state.config.max_batch
    if len(items) > limit:
        raise unprocessable(
            ["body", "allocations"], f"batch of {len(items)} exceeds {limit}", "too_long"
        )
    try:
        good = ALLOCATION_BATCH.validate_python(items)
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {"loc": ["body", "allocations", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None
    return await run_in_threadpool(ingest_allocations, state.engine, good)


@router.get("/allocations", response_model=list[AllocationPublic])
async def get_allocations(
    state: StateDep,
    _principal: IngestDep,
    node: Annotated[str | None, Query(max_length=200)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    device_uuid: Annotated[str | None, Query(max_length=200)] = None,
    source: Annotated[str | None, Query(pattern="^(observed|planned)$")] = None,
    open: Annotated[bool, Query(description="only allocations still held")] = False,
    since: Annotated[UtcDatetime | None, Query()] = None,
    until: Annotated[UtcDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AllocationPublic]:
    """Allocations overlapping [since, until) that match every filter (roles ingest, admin)."""
    since_utc: datetime | None = since
    return await run_in_threadpool(
        lambda: query_allocations(
            state.engine,
            node=node,
            model=model,
            device_uuid=device_uuid,
            source=source,
            open_only=open,
            since=since_utc,
            until=until,
            limit=limit,
        )
    )
