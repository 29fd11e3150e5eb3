"""Enforcement routes and the ``create_app`` extension that installs them.

Roles: authorize and release take an ingest key (the gateway that also posts usage); budgets,
rate limits, kill-switches and the audit log take an admin key, except reading budgets and
their burn, which a read key may do (a tenant key sees only its customer's budgets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Response,
    status,
)
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from billing.api.deps import (
    AdminDep,
    ApiState,
    HotIngestDep,
    IngestDep,
    NowDep,
    ReadDep,
    StateDep,
    get_now,
)
from billing.api.errors import unprocessable
from billing.api.routes.health import READINESS
from billing.api.routes.usage import USAGE_HOOKS
from billing.enforcement.backend import DeploymentScaler
from billing.enforcement.burn import budget_burn
from billing.enforcement.domain import AuthorizeRequest
from billing.enforcement.killswitch import kill, revive
from billing.enforcement.models import MICROS, KillScope
from billing.enforcement.schemas import (
    AuditPublic,
    AuthorizeIn,
    AuthorizeOut,
    BudgetCreate,
    BudgetPublic,
    BurnPublic,
    KillIn,
    KillSwitchPublic,
    ObjName,
    RateLimitCreate,
    RateLimitPublic,
    ReviveIn,
)
from billing.enforcement.service import Enforcer
from billing.enforcement.store import (
    delete_budget,
    delete_rate_limit,
    list_audit,
    list_budgets,
    list_kill_switches,
    list_rate_limits,
    set_budget,
    set_rate_limit,
)
from billing.schemas import UsageEventIn

ENFORCER = "enforcer"

router = APIRouter(prefix="/v1", tags=["enforcement"])
metrics_router = APIRouter(tags=["metrics"])


async def hot_now(request: Request) -> datetime:
    """``get_now`` without a thread hop (honours its test override)."""
    override = request.app.dependency_overrides.get(get_now)
    return override() if override is not None else datetime.now(UTC)


async def hot_enforcer(request: Request) -> Enforcer:
    """The worker's Enforcer without a thread hop."""
    enf: Enforcer = request.app.state.costctl.extras[ENFORCER]
    return enf


def get_enforcer(state: StateDep) -> Enforcer:
    """The worker's Enforcer (installed by the extension)."""
    enf: Enforcer = state.extras[ENFORCER]
    return enf


EnforcerDep = Annotated[Enforcer, Depends(get_enforcer)]


@router.post("/authorize", response_model=AuthorizeOut)
async def post_authorize(
    body: AuthorizeIn,
    enf: Annotated[Enforcer, Depends(hot_enforcer)],
    _p: HotIngestDep,
    now: Annotated[datetime, Depends(hot_now)],
    response: Response,
) -> AuthorizeOut:
    """Allow or deny a request, reserving its estimated cost on every matching budget.

    Always 200 with ``allowed``; a denial carries ``Retry-After`` (seconds, rounded up) when
    waiting can help. Send the usage event with ``id = reservation_id`` to settle it.
    """
    req = AuthorizeRequest(**body.model_dump())
    if enf.reservations.name == "redis":  # one Lua round trip: cheaper than a thread hop
        got = enf.authorize(req, now)
    else:
        got = await run_in_threadpool(enf.authorize, req, now)
    d = got.decision
    if not d.allowed and d.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, int(-(-d.retry_after_s // 1))))
    return AuthorizeOut(
        allowed=d.allowed,
        reason=d.reason if not d.detail else f"{d.reason}:{d.detail}",
        retry_after_s=d.retry_after_s,
        reservation_id=got.key if d.allowed else None,
        reserved_usd=got.reserved_micros / MICROS,
        expires_at=got.expires_at if d.allowed else None,
        budget=d.budget,
    )


@router.post("/reservations/{key}/release", status_code=status.HTTP_204_NO_CONTENT)
def post_release(key: str, enf: EnforcerDep, _p: IngestDep, now: NowDep) -> None:
    """Give back a reservation whose request never ran (404 if none is held)."""
    if not enf.release(key, now):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no held reservation {key!r}")


@router.get("/budgets", response_model=list[BudgetPublic])
def get_budgets(state: StateDep, p: ReadDep) -> list[BudgetPublic]:
    """Budgets (a tenant key sees its customer's only)."""
    return list_budgets(state.engine, customer=p.customer)


@router.get("/budgets/burn", response_model=list[BurnPublic])
def get_burn(state: StateDep, enf: EnforcerDep, p: ReadDep, now: NowDep) -> list[BurnPublic]:
    """Spent and reserved against the soft and hard lines, per budget, this period."""
    rows = budget_burn(
        state.engine,
        enf.config,
        now,
        reservations=enf.reservations,
        resolution_s=state.config.ledger_resolution_s,
    )
    if p.customer is not None:
        rows = [r for r in rows if r.customer == p.customer]
    return [r.public() for r in rows]


@router.put(
    "/budgets/{name}",
    response_model=BudgetPublic,
    responses={201: {"model": BudgetPublic, "description": "created"}},
)
def put_budget(
    name: ObjName,
    body: BudgetCreate,
    state: StateDep,
    enf: EnforcerDep,
    p: AdminDep,
    now: NowDep,
    response: Response,
) -> BudgetPublic:
    """Create or replace a budget (201 when created); a new (or re-scoped) budget starts
    from what its scope already spent this period."""
    b, created, reset = set_budget(enf.engine, name=name, spec=body, actor=p.name, now=now)
    if created:
        response.status_code = status.HTTP_201_CREATED
    if reset:
        enf.reservations.forget(b.id)
    enf.changed("budgets")
    if created or reset:
        new = [x for x in enf.policy().budgets if x.id == b.id]
        enf.seed(new, now, resolution_s=state.config.ledger_resolution_s)
    return b


@router.delete("/budgets/{name}", status_code=status.HTTP_204_NO_CONTENT)
def del_budget(name: str, enf: EnforcerDep, p: AdminDep, now: NowDep) -> None:
    """Delete a budget."""
    bid = delete_budget(enf.engine, name=name, actor=p.name, now=now)
    if bid is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no budget {name!r}")
    enf.reservations.forget(bid)
    enf.changed("budgets")


@router.get("/rate-limits", response_model=list[RateLimitPublic])
def get_rate_limits(state: StateDep, _p: AdminDep) -> list[RateLimitPublic]:
    """Every rate limit."""
    return list_rate_limits(state.engine)


@router.put(
    "/rate-limits/{name}",
    response_model=RateLimitPublic,
    responses={201: {"model": RateLimitPublic, "description": "created"}},
)
def put_rate_limit(
    name: ObjName,
    body: RateLimitCreate,
    enf: EnforcerDep,
    p: AdminDep,
    now: NowDep,
    response: Response,
) -> RateLimitPublic:
    """Create or replace a rate limit (201 when created; 422 for an rpm no priority can use)."""
    problem = enf.config.rpm_problem(body.rpm)
    if problem is not None:
        raise unprocessable(["body", "rpm"], problem, "rpm_below_minimum")
    r, created = set_rate_limit(enf.engine, name=name, spec=body, actor=p.name, now=now)
    if created:
        response.status_code = status.HTTP_201_CREATED
    enf.changed("rate-limits")
    return r


@router.delete("/rate-limits/{name}", status_code=status.HTTP_204_NO_CONTENT)
def del_rate_limit(name: str, enf: EnforcerDep, p: AdminDep, now: NowDep) -> None:
    """Delete a rate limit."""
    if not delete_rate_limit(enf.engine, name=name, actor=p.name, now=now):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rate limit {name!r}")
    enf.changed("rate-limits")


@router.get("/killswitches", response_model=list[KillSwitchPublic])
def get_kill_switches(
    state: StateDep, _p: AdminDep, history: Annotated[bool, Query()] = False
) -> list[KillSwitchPublic]:
    """Active kill-switches (or every one ever, with ``history=true``)."""
    return list_kill_switches(state.engine, active_only=not history)


@router.post(
    "/killswitches",
    response_model=KillSwitchPublic,
    responses={201: {"model": KillSwitchPublic, "description": "created"}},
)
def post_kill(
    body: KillIn, enf: EnforcerDep, p: AdminDep, now: NowDep, response: Response
) -> KillSwitchPublic:
    """Trip a kill-switch: every worker denies the scope at once (201; 200 if already active)."""
    out = kill(
        enf.engine,
        scope=body.scope,
        target=body.target,
        reason=body.reason,
        actor=p.name,
        now=now,
        publisher=enf.publisher,
        scaler=enf.scaler,
    )
    enf.refresh()
    assert out.switch is not None
    if out.changed:
        response.status_code = status.HTTP_201_CREATED
    return out.switch


@router.post("/killswitches/{scope}/{target}/revive", response_model=KillSwitchPublic)
def post_revive(
    scope: KillScope, target: str, body: ReviveIn, enf: EnforcerDep, p: AdminDep, now: NowDep
) -> KillSwitchPublic:
    """Revive a scope (404 if it is not killed); a model gets its replicas back."""
    out = revive(
        enf.engine,
        scope=scope,
        target="*" if scope == KillScope.global_ else target,
        reason=body.reason,
        actor=p.name,
        now=now,
        publisher=enf.publisher,
        scaler=enf.scaler,
    )
    enf.refresh()
    if out.switch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{scope.value} {target!r} is not killed")
    return out.switch


@router.get("/audit", response_model=list[AuditPublic])
def get_audit(
    state: StateDep, _p: AdminDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> list[AuditPublic]:
    """The newest enforcement audit entries."""
    return list_audit(state.engine, limit=limit)


@metrics_router.get("/metrics", include_in_schema=False)
async def get_metrics(enf: EnforcerDep) -> Response:
    """Prometheus exposition of this worker's enforcement metrics."""
    body = await run_in_threadpool(generate_latest, enf.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def make_extension(
    *,
    scaler: DeploymentScaler | None = None,
    clock: Callable[[], datetime] = _utcnow,
    listen: bool = True,
) -> Callable[[FastAPI, ApiState], None]:
    """An extension for ``create_app``: enforcement tables, Enforcer, routes, usage hook.

    ``scaler`` is the scheduler's Kubernetes applier (handed in by costctl); ``listen``
    starts the pub/sub + poll listener with the app's lifespan.
    """

    def install(app: FastAPI, state: ApiState) -> None:
        enf = Enforcer(
            state.engine,
            state.config.enforcement,
            redis_url=state.redis_url,
            clock=clock,
            scaler=scaler,
            resolution_s=state.config.ledger_resolution_s,
        )
        state.extras[ENFORCER] = enf

        def on_usage(events: list[UsageEventIn]) -> None:
            enf.reconcile(events, clock())

        state.extras.setdefault(USAGE_HOOKS, []).append(on_usage)
        state.extras.setdefault(READINESS, []).append(lambda: {"enforcement": enf.mode()})
        app.include_router(router)
        if state.config.enforcement.metrics_public:
            app.include_router(metrics_router)
        else:
            app.include_router(metrics_router, dependencies=[Depends(_admin_only)])
        if listen:
            _wrap_lifespan(app, enf)

    return install


def _admin_only(_p: AdminDep) -> None:
    """/metrics behind an admin key when metrics_public is off."""


def _wrap_lifespan(app: FastAPI, enf: Enforcer) -> None:
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        await run_in_threadpool(enf.start)
        try:
            async with inner(a) as st:
                yield st
        finally:
            await run_in_threadpool(enf.stop)

    app.router.lifespan_context = lifespan


extension = make_extension()
routers = (router, metrics_router)
