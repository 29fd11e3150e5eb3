"""API keys: admins create, list and revoke them."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from billing.api.deps import AdminDep, NowDep, StateDep
from billing.api.errors import unprocessable
from billing.apikeys import create_key, list_keys, revoke_key
from billing.models import ApiRole

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyCreate(BaseModel):
    """A new key's name, role and (read keys only) customer scope."""

    name: str = Field(min_length=1, max_length=200)
    role: ApiRole
    customer: str | None = Field(default=None, min_length=1, max_length=200)


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
    created_at: datetime
    revoked_at: datetime | None


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
async def delete_key(prefix: str, state: StateDep, _a: AdminDep, now: NowDep) -> None:
    """Revoke a key."""
    if not await run_in_threadpool(lambda: revoke_key(state.engine, prefix=prefix, now=now)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live key with prefix {prefix!r}")
