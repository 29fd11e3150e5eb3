"""Dependencies shared by the routes: the app's state, the caller, role checks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from billing.apikeys import Principal, verify_key
from billing.config import BillingConfig
from billing.models import ApiRole


@dataclass
class ApiState:
    """What the routes need, built once by ``create_app`` (no globals)."""

    engine: Engine
    config: BillingConfig
    redis_url: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> ApiState:
    """The ApiState stored on the app."""
    state: ApiState = request.app.state.costctl
    return state


def get_now() -> datetime:
    """The clock, at the edge (tests override it)."""
    return datetime.now(UTC)


# ApiState.extras[KEY_CACHE]: key -> (Principal, monotonic expiry) of the hot ingest paths
# (authorize and usage posts, ``hot_ingest_principal``).
KEY_CACHE = "enforcement.key_cache"

StateDep = Annotated[ApiState, Depends(get_state)]
NowDep = Annotated[datetime, Depends(get_now)]


# The two ways to send a key, declared as OpenAPI security schemes (checked by get_principal).
BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer cc_<prefix>_<secret>")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: ``Authorization: Bearer`` wins over ``X-API-Key``."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def get_principal(
    state: StateDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
    x_api_key: Annotated[str | None, Depends(API_KEY_HEADER)] = None,
) -> Principal:
    """The caller from ``Authorization: Bearer <key>`` or ``X-API-Key``; 401 if missing/invalid."""
    return principal_of(state, bearer.credentials if bearer else None, x_api_key)


def principal_of(state: ApiState, bearer_key: str | None, x_api_key: str | None) -> Principal:
    """The principal of a presented key (bearer first); 401 if missing or invalid."""
    if not state.config.require_auth:
        return Principal(None, "anonymous", ApiRole.admin)
    key = bearer_key or x_api_key
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing API key", headers={"WWW-Authenticate": "Bearer"}
        )
    principal = verify_key(state.engine, key)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: ApiRole) -> Any:
    """A dependency that lets through principals holding one of ``roles`` (admin always)."""

    def check(principal: PrincipalDep) -> Principal:
        if not principal.can(*roles):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role.value!r} may not do this; needs one of "
                f"{[r.value for r in roles] or ['admin']}",
            )
        return principal

    return Depends(check)


AdminDep = Annotated[Principal, require(ApiRole.admin)]
IngestDep = Annotated[Principal, require(ApiRole.ingest)]
ReadDep = Annotated[Principal, require(ApiRole.read)]


async def hot_state(request: Request) -> ApiState:
    """``get_state`` without a thread hop (for the hot async routes)."""
    state: ApiState = request.app.state.costctl
    return state


# A revoked key stops working on the hot paths within KEY_CACHE_S in every worker (at once in
# the worker that revoked it: DELETE /v1/keys clears that worker's cache).
KEY_CACHE_S = 1.0


async def hot_ingest_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
    x_api_key: Annotated[str | None, Depends(API_KEY_HEADER)] = None,
) -> Principal:
    """Like ``get_principal`` + ingest role, caching a verified key for KEY_CACHE_S seconds.

    Details: an async dependency (no thread hop) that saves a database read per authorize and
    per usage post; a revoked key stops working here within KEY_CACHE_S seconds.
    """
    state: ApiState = request.app.state.costctl
    bearer_key = bearer.credentials if bearer else None
    key = bearer_key or x_api_key
    cache: dict[str, tuple[Principal, float]] = state.extras.setdefault(KEY_CACHE, {})
    hit = cache.get(key or "")
    t = time.monotonic()
    if hit is not None and hit[1] > t:
        principal = hit[0]
    else:
        principal = await run_in_threadpool(principal_of, state, bearer_key, x_api_key)
        if key:
            if len(cache) > 10_000:
                cache.clear()
            cache[key] = (principal, t + KEY_CACHE_S)
    if not principal.can(ApiRole.ingest):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"role {principal.role.value!r} may not do this; needs ingest",
        )
    return principal


HotStateDep = Annotated[ApiState, Depends(hot_state)]
HotIngestDep = Annotated[Principal, Depends(hot_ingest_principal)]
