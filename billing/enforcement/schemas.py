"""API shapes of enforcement (Create/Public per entity), validated once for the API and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from billing import limits as L
from billing.enforcement.config import Priority
from billing.enforcement.models import Basis, BudgetAction, KillScope, Period
from billing.schemas import MAX_TOKENS, Name, RequestType

ObjName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=L.OBJ_NAME_LEN, pattern=r"^[\w.\-:]+$"
    ),
]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=L.REASON_LEN)
]


class ScopeIn(BaseModel):
    """customer x model x request_type; an omitted (null) field matches anything."""

    model_config = ConfigDict(extra="forbid")

    customer: Name | None = None
    model: Name | None = None
    request_type: RequestType | None = None


class BudgetCreate(ScopeIn):
    """A budget as an admin sets it (PUT /v1/budgets/{name}, ``costctl budgets set``)."""

    period: Period
    limit_usd: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] | None = None
    limit_tokens: Annotated[int, Field(ge=0, le=10**15, strict=True)] | None = None
    soft_ratio: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.8
    action: BudgetAction = BudgetAction.block
    basis: Basis = Field(
        default=Basis.cost,
        description="cost: the ledger's attributed GPU cost (cost_usd); price: the rate card "
        "(price_usd)",
    )

    @model_validator(mode="after")
    def _limits(self) -> BudgetCreate:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("set limit_usd and/or limit_tokens")
        dims = [d for d in ("customer", "model", "request_type") if getattr(self, d) is not None]
        if self.action == BudgetAction.kill and len(dims) > 1:
            raise ValueError(
                "a 'kill' budget must scope one dimension (or none: global), since a "
                f"kill-switch covers one model, customer or request type; got {dims}"
            )
        return self


class BudgetPublic(BudgetCreate):
    """A stored budget."""

    id: int
    name: str
    created_at: datetime
    updated_at: datetime


class RateLimitCreate(ScopeIn):
    """Requests/min and/or tokens/min for a scope; ``per`` gives each value its own bucket."""

    rpm: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] | None = None
    tpm: Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)] | None = None
    per: list[str] = Field(
        default_factory=list, description="subset of customer, model, request_type"
    )

    @model_validator(mode="after")
    def _valid(self) -> RateLimitCreate:
        if self.rpm is None and self.tpm is None:
            raise ValueError("set rpm and/or tpm")
        bad = [p for p in self.per if p not in ("customer", "model", "request_type")]
        if bad:
            raise ValueError(f"per: unknown dimension(s) {bad}")
        return self


class RateLimitPublic(RateLimitCreate):
    """A stored rate limit."""

    id: int
    name: str
    updated_at: datetime


class AuthorizeIn(BaseModel):
    """POST /v1/authorize: who wants to run what, and how big it may get."""

    model_config = ConfigDict(extra="forbid")

    customer: Name
    model: Name
    request_type: RequestType
    estimated_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS, strict=True)]
    estimated_input_tokens: Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)] = 0
    priority: Priority = "normal"
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=L.NAME_LEN)] | None = (
        Field(
            default=None,
            description="The id the usage event will carry (generated when omitted).",
        )
    )

    @model_validator(mode="after")
    def _split(self) -> AuthorizeIn:
        if self.estimated_input_tokens > self.estimated_tokens:
            raise ValueError("estimated_input_tokens cannot exceed estimated_tokens")
        return self


class AuthorizeOut(BaseModel):
    """The decision. Send the usage event with ``id = reservation_id`` to settle it."""

    allowed: bool
    reason: str
    retry_after_s: float | None = None
    reservation_id: str | None = None
    reserved_usd: float = 0.0
    expires_at: datetime | None = None
    budget: str | None = None


class KillIn(BaseModel):
    """Trip a kill-switch."""

    model_config = ConfigDict(extra="forbid")

    scope: KillScope
    target: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=L.NAME_LEN)
    ] = "*"
    reason: Reason

    @model_validator(mode="after")
    def _target(self) -> KillIn:
        if self.scope == KillScope.global_:
            self.target = "*"
        elif self.target == "*":
            raise ValueError(f"a {self.scope.value} kill-switch needs a target name")
        return self


class ReviveIn(BaseModel):
    """Revive a scope."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason


class KillSwitchPublic(BaseModel):
    """A kill-switch and its history."""

    id: int
    scope: KillScope
    target: str
    active: bool
    reason: str
    actor: str
    created_at: datetime
    revived_at: datetime | None
    previous_replicas: int | None


class AuditPublic(BaseModel):
    """One audit entry."""

    ts: datetime
    actor: str
    action: str
    subject: str
    reason: str
    detail: str


class BurnPublic(BaseModel):
    """A budget's burn in its current period (see billing.enforcement.burn)."""

    name: str
    scope: str
    period: Period
    period_start: datetime
    period_end: datetime
    limit_usd: float | None
    limit_tokens: int | None
    soft_usd: float | None
    spent_usd: float
    spent_tokens: int
    reserved_usd: float
    reserved_tokens: int
    ratio: float
    status: str
    action: BudgetAction
    basis: Basis
