"""POST /v1/usage and /v1/gpu-samples: validated, de-duplicated, stored before the ack.

Concurrent usage posts of one worker share a transaction (billing.api.group_commit).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any
from weakref import WeakKeyDictionary

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from billing.api.deps import ApiState, HotIngestDep, HotStateDep, IngestDep, StateDep
from billing.api.errors import json_body, unprocessable
from billing.api.group_commit import GroupCommit
from billing.ingest import ingest_gpu_samples, validate_usage_batch
from billing.schemas import USAGE_BATCH, GpuSampleBatch, IngestResult, RejectedEvent

router = APIRouter(prefix="/v1", tags=["ingest"])
log = logging.getLogger(__name__)

# ApiState.extras[USAGE_HOOKS]: callables (events) -> None run after a batch is stored, e.g.
# enforcement settling reservations. A failing hook is logged and never fails the ingest:
# the events are stored, and the hook's owner must catch up from the table.
USAGE_HOOKS = "usage_hooks"
# ApiState.extras[GROUP_COMMIT]: event loop -> its GroupCommit (billing.api.group_commit).
GROUP_COMMIT = "usage_group_commit"


def _committer(state: ApiState) -> GroupCommit:
    """This event loop's GroupCommit (made on first use, after every extension added its hook).

    One per loop: uvicorn runs one loop per worker; a test client may run several.
    """
    per_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = state.extras.setdefault(
        GROUP_COMMIT, WeakKeyDictionary()
    )
    loop = asyncio.get_running_loop()
    gc = per_loop.get(loop)
    if gc is None:
        hooks = state.extras.get(USAGE_HOOKS, [])
        gc = per_loop[loop] = GroupCommit(state.engine, hooks, state.config.max_batch)
    return gc


def _events(body: Any) -> list[Any]:
    """A bare JSON array, a CloudEvents batch (array), or ``{"events": [...]}``."""
    if isinstance(body, dict) and "events" in body:
        body = body["events"]
    elif isinstance(body, dict):
        body = [body]  # a single event or a single structured CloudEvent
    if not isinstance(body, list):
        raise unprocessable(["body", "events"], "expected a list of usage events", "list_type")
    return body


_USAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": USAGE_BATCH.json_schema()},
            "application/cloudevents-batch+json": {"schema": {"type": "array"}},
        },
    }
}


@router.post("/usage", response_model=IngestResult, openapi_extra=_USAGE_BODY)
async def post_usage(
    request: Request,
    state: HotStateDep,
    _principal: HotIngestDep,
    partial: Annotated[
        bool, Query(description="Store the good events of a batch that has bad ones.")
    ] = False,
) -> IngestResult:
    """Ingest a batch of usage events.

    A batch with any bad event is rejected whole with 422 listing every bad event's index
    and field, unless ``partial=true``: then the good events are stored and the bad ones are
    returned in ``rejected``. Re-sending any batch is safe: (source, id) is the idempotency key.
    """
    events = _events(await json_body(request))
    limit = state.config.max_batch
    if len(events) > limit:
        raise unprocessable(
            ["body", "events"], f"batch of {len(events)} exceeds {limit} events", "too_long"
        )
    good, errors = validate_usage_batch(events)
    if errors and not partial:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{**e, "loc": ["body", *e["loc"]]} for e in errors],
        )
    result = await _committer(state).submit(good)
    rejected_idx = sorted({e["index"] for e in errors})
    return IngestResult(
        received=len(events),
        inserted=result.inserted,
        duplicates=result.duplicates,
        rejected=[
            RejectedEvent.model_validate(
                {"index": i, "errors": [e for e in errors if e["index"] == i]}
            )
            for i in rejected_idx
        ],
    )


@router.post("/gpu-samples", response_model=IngestResult)
async def post_gpu_samples(
    batch: GpuSampleBatch, state: StateDep, _principal: IngestDep
) -> IngestResult:
    """Ingest GPU and process samples from a collector (idempotent per device and time)."""
    return await run_in_threadpool(ingest_gpu_samples, state.engine, batch.samples, batch.processes)
