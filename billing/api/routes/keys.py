"""API keys: admins create, list and revoke them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, Field

from billing import limits as L
from billing.api.deps import KEY_CACHE, AdminDep, NowDep, StateDep
from billing.api.errors import unprocessable
from billing.apikeys import LastAdminKeyError, create_key, list_keys, revoke_key
from billing.models import ApiRole
from billing.schemas import Name


def _aware(ts: datetime) -> datetime:
    """A stored timestamp as aware UTC (SQLite hands back naive UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


AwareUtc = Annotated[datetime, AfterValidator(_aware)]

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyCreate(BaseModel):
    """A new key's name, role and (read keys only) customer scope."""

    name: str = Field(min_length=1, max_length=L.NAME_LEN)
    role: ApiRole
    customer: Name | None = Field(default=None, description="a customer name (not __...)")


class KeyCreated(BaseModel):
    """The new key, in clear, once."""

    key: str
    prefix: str
    role: ApiRole
    customer: str | None


class KeyPublic(BaseModel):
    """A stored key without its hash."""

    name: str
    prefix: str
    role: ApiRole
    customer: str | None
    created_at: AwareUtc
    revoked_at: AwareUtc | None


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
async def post_key(body: KeyCreate, state: StateDep, _a: AdminDep, now: NowDep) -> KeyCreated:
    """Create a key; its secret is returned only here."""
    if body.customer is not None and body.role != ApiRole.read:
        raise unprocessable(["body", "customer"], "only read keys can be scoped to a customer")
    key = await run_in_threadpool(
        lambda: create_key(
            state.engine, name=body.name, role=body.role, customer=body.customer, now=now
        )
    )
    return KeyCreated(key=key, prefix=key.split("_")[1], role=body.role, customer=body.customer)


@router.get("", response_model=list[KeyPublic])
async def get_keys(state: StateDep, _a: AdminDep) -> list[KeyPublic]:
    """Every key, without secrets or hashes."""
    keys = await run_in_threadpool(list_keys, state.engine)
    return [
        KeyPublic(
            name=k.name,
            prefix=k.prefix,
            role=ApiRole(k.role),
            customer=k.customer,
            created_at=k.created_at,
            revoked_at=k.revoked_at,
        )
        for k in keys
    ]


@router.delete("/{prefix}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_key(
    prefix: Annotated[str, Path(max_length=L.KEY_PREFIX_LEN)],
    state: StateDep,
    _a: AdminDep,
    now: NowDep,
) -> None:
    """Revoke a key (409 for the last live admin key)."""
    try:
        revoked = await run_in_threadpool(lambda: revoke_key(state.engine, prefix=prefix, now=now))
    except LastAdminKeyError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{exc}: create another admin key before revoking this one",
        ) from exc
    if not revoked:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live key with prefix {prefix!r}")
    state.extras.get(KEY_CACHE, {}).clear()
