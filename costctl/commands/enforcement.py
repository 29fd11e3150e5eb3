"""Enforcement commands: `budgets list|set|delete`, `ratelimits ...`, `kill`, `revive`, `status`.

They act on the database (the source of truth) like the API does, notify every API worker over
Redis pub/sub when COSTCTL_REDIS_URL is set (workers also poll), and for a model kill-switch
scale the model's Deployment through the scheduler's Kubernetes applier.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from billing.enforcement.backend import DeploymentScaler, Publisher, ReservationBackend
from billing.enforcement.burn import budget_burn
from billing.enforcement.killswitch import CHANNEL, kill, revive
from billing.enforcement.models import Basis, BudgetAction, KillScope, Period
from billing.enforcement.rates import load_rates
from billing.enforcement.redis_backend import RedisPublisher, RedisReservations
from billing.enforcement.schemas import BudgetCreate, KillIn, RateLimitCreate, ReviveIn
from billing.enforcement.spend import seed_counters
from billing.enforcement.sql_backend import SqlReservations
from billing.enforcement.store import (
    delete_budget,
    delete_rate_limit,
    list_budgets,
    list_kill_switches,
    list_rate_limits,
    load_policy,
    set_budget,
    set_rate_limit,
)
from billing.known import model_seen
from costctl.context import AppContext, fail, get_ctx, now
from costctl.settings import Settings

budgets_app = typer.Typer(help="Budgets: list, set, delete.", no_args_is_help=True)
rates_app = typer.Typer(help="Rate limits (requests/min, tokens/min).", no_args_is_help=True)


def default_scaler(settings: Settings) -> DeploymentScaler:
    """The scheduler's Kubernetes applier (in-cluster config, else ~/.kube/config).

    Raises: whatever loading the Kubernetes configuration raises (no cluster configured).
    """
    from scheduler.kube import KubeApplier

    return KubeApplier.from_settings(settings)


# tests hand in an applier over the fake Kubernetes API here
SCALER_FACTORY: Callable[[Settings], DeploymentScaler] = default_scaler


def kube_scaler(settings: Settings) -> tuple[DeploymentScaler | None, str | None]:
    """The scaler, or None and why: a missing cluster must not stop a kill."""
    try:
        return SCALER_FACTORY(settings), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _publisher(c: AppContext) -> Publisher | None:
    url = c.settings.redis_url
    return RedisPublisher(url, CHANNEL) if url else None


def _backend(c: AppContext) -> ReservationBackend:
    """The reservation backend the API workers use (Redis when configured, else the database)."""
    if c.settings.redis_url and c.settings.billing.enforcement.backend != "sql":
        return RedisReservations(c.settings.redis_url)
    return SqlReservations(c.engine)


def _validated(model: Any, data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"]) or "input"
        fail(f"{loc}: {e['msg']}")


def _require_reason(reason: str) -> None:
    if not reason.strip():
        fail("--reason: required (why, kept in the audit log)")


def _opt(value: str | None) -> str | None:
    return None if value in (None, "*", "") else value


@budgets_app.command("list")
def budgets_list(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """List budgets."""
    rows = list_budgets(get_ctx(ctx).engine)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    if not rows:
        typer.echo("no budgets")
    for b in rows:
        scope = ",".join(
            f"{d}={getattr(b, d)}" for d in ("customer", "model", "request_type") if getattr(b, d)
        )
        lim = " ".join(
            x
            for x in (
                f"${b.limit_usd:g}" if b.limit_usd is not None else "",
                f"{b.limit_tokens} tok" if b.limit_tokens is not None else "",
            )
            if x
        )
        typer.echo(
            f"{b.name:<20} {scope or 'global':<40} {b.period.value:<8} {lim:<22} "
            f"soft {b.soft_ratio:.0%} {b.action.value} basis {b.basis.value}"
        )


@budgets_app.command("set")
def budgets_set(
    ctx: typer.Context,
    name: str,
    period: Annotated[Period, typer.Option()],
    limit_usd: Annotated[float | None, typer.Option()] = None,
    limit_tokens: Annotated[int | None, typer.Option()] = None,
    customer: Annotated[str | None, typer.Option(help="* or omitted: any")] = None,
    model: Annotated[str | None, typer.Option()] = None,
    request_type: Annotated[str | None, typer.Option()] = None,
    soft: Annotated[float, typer.Option(help="soft (alert) line as a fraction")] = 0.8,
    action: Annotated[BudgetAction, typer.Option()] = BudgetAction.block,
    basis: Annotated[
        Basis, typer.Option(help="cost: ledger GPU cost (cost_usd); price: rate card (price_usd)")
    ] = Basis.cost,
) -> None:
    """Create or replace a budget (a new one counts what its scope spent this period)."""
    c = get_ctx(ctx)
    spec = _validated(
        BudgetCreate,
        {
            "customer": _opt(customer),
            "model": _opt(model),
            "request_type": _opt(request_type),
            "period": period,
            "limit_usd": limit_usd,
            "limit_tokens": limit_tokens,
            "soft_ratio": soft,
            "action": action,
            "basis": basis,
        },
    )
    if not name or len(name) > 100:
        fail("name: 1 to 100 characters")
    if (api := c.remote) is not None:
        r = api.call("PUT", f"/v1/budgets/{name}", spec.model_dump(mode="json"))
        verb = "created" if r.status_code == 201 else "updated"
        typer.echo(f"{verb} budget {name} (id {r.json()['id']})")
        return
    t = now()
    b, created, reset = set_budget(c.engine, name=name, spec=spec, actor=_actor(), now=t)
    if created or reset:
        backend = _backend(c)
        if reset:
            backend.forget(b.id)
        enf = c.settings.billing.enforcement
        new = [x for x in load_policy(c.engine).budgets if x.id == b.id]
        res = c.settings.billing.ledger_resolution_s
        seed_counters(c.engine, backend, new, load_rates(c.engine, enf, t), t, resolution_s=res)
    pub = _publisher(c)
    if pub is not None:
        pub.publish("budgets")
    typer.echo(f"{'created' if created else 'updated'} budget {b.name} (id {b.id})")


@budgets_app.command("delete")
def budgets_delete(ctx: typer.Context, name: str) -> None:
    """Delete a budget."""
    c = get_ctx(ctx)
    if (api := c.remote) is not None:
        api.call("DELETE", f"/v1/budgets/{name}")
        typer.echo(f"deleted budget {name}")
        return
    bid = delete_budget(c.engine, name=name, actor=_actor(), now=now())
    if bid is None:
        fail(f"no budget {name!r}")
    if c.settings.redis_url:
        RedisReservations(c.settings.redis_url).forget(bid)
    pub = _publisher(c)
    if pub is not None:
        pub.publish("budgets")
    typer.echo(f"deleted budget {name}")


@rates_app.command("list")
def rates_list(ctx: typer.Context) -> None:
    """List rate limits as JSON lines."""
    for r in list_rate_limits(get_ctx(ctx).engine):
        typer.echo(r.model_dump_json())


@rates_app.command("set")
def rates_set(
    ctx: typer.Context,
    name: str,
    rpm: Annotated[float | None, typer.Option()] = None,
    tpm: Annotated[float | None, typer.Option()] = None,
    customer: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    request_type: Annotated[str | None, typer.Option()] = None,
    per: Annotated[str, typer.Option(help="comma list: one bucket per value")] = "",
) -> None:
    """Create or replace a rate limit."""
    c = get_ctx(ctx)
    spec = _validated(
        RateLimitCreate,
        {
            "customer": _opt(customer),
            "model": _opt(model),
            "request_type": _opt(request_type),
            "rpm": rpm,
            "tpm": tpm,
            "per": [p for p in per.split(",") if p],
        },
    )
    problem = c.settings.billing.enforcement.rpm_problem(spec.rpm)
    if problem is not None:
        fail(f"rpm: {problem}")
    if (api := c.remote) is not None:
        resp = api.call("PUT", f"/v1/rate-limits/{name}", spec.model_dump(mode="json"))
        typer.echo(f"{'created' if resp.status_code == 201 else 'updated'} rate limit {name}")
        return
    r, created = set_rate_limit(c.engine, name=name, spec=spec, actor=_actor(), now=now())
    pub = _publisher(c)
    if pub is not None:
        pub.publish("rate-limits")
    typer.echo(f"{'created' if created else 'updated'} rate limit {r.name}")


@rates_app.command("delete")
def rates_delete(ctx: typer.Context, name: str) -> None:
    """Delete a rate limit."""
    c = get_ctx(ctx)
    if (api := c.remote) is not None:
        api.call("DELETE", f"/v1/rate-limits/{name}")
        typer.echo(f"deleted rate limit {name}")
        return
    if not delete_rate_limit(c.engine, name=name, actor=_actor(), now=now()):
        fail(f"no rate limit {name!r}")
    pub = _publisher(c)
    if pub is not None:
        pub.publish("rate-limits")
    typer.echo(f"deleted rate limit {name}")


ScopeArg = Annotated[KillScope, typer.Argument(help="model, customer, request_type or global")]
TargetArg = Annotated[str, typer.Argument(help="the model/customer/request type (global: omit)")]


def kill_cmd(
    ctx: typer.Context,
    scope: ScopeArg,
    target: TargetArg = "*",
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")] = "",
    no_scale: Annotated[
        bool, typer.Option("--no-scale", help="do not scale the Deployment")
    ] = False,
) -> None:
    """Trip a kill-switch: every API worker denies the scope; a model is scaled to zero."""
    c = get_ctx(ctx)
    _require_reason(reason)
    spec = _validated(KillIn, {"scope": scope, "target": target, "reason": reason})
    if spec.scope == KillScope.model and c.remote is None and not model_seen(c.engine, spec.target):
        typer.echo(
            f"warning: no model {spec.target!r} was ever seen in usage or allocations; "
            "recording the kill anyway",
            err=True,
        )
    if (api := c.remote) is not None:  # the API's scaler acts (--no-scale does not apply)
        r = api.call("POST", "/v1/killswitches", spec.model_dump(mode="json"))
        what = f"{spec.scope.value} {spec.target}"
        typer.echo(f"killed {what}" if r.status_code == 201 else f"{what} is already killed")
        return
    scaler, why = (None, None)
    if spec.scope == KillScope.model and not no_scale:
        scaler, why = kube_scaler(c.settings)
    out = kill(
        c.engine,
        scope=spec.scope,
        target=spec.target,
        reason=spec.reason,
        actor=_actor(),
        now=now(),
        publisher=_publisher(c),
        scaler=scaler,
    )
    what = f"{spec.scope.value} {spec.target}"
    if not out.changed:
        typer.echo(f"{what} is already killed")
        return
    typer.echo(f"killed {what}")
    if out.replicas is not None:
        typer.echo(f"scaled Deployment of {spec.target} from {out.replicas} to 0 replicas")
    elif spec.scope == KillScope.model and not no_scale:
        note = out.scale_error or why or "no Kubernetes applier"
        typer.echo(f"warning: Deployment not scaled: {note}", err=True)


def revive_cmd(
    ctx: typer.Context,
    scope: ScopeArg,
    target: TargetArg = "*",
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")] = "",
) -> None:
    """Revive a killed scope; a model gets back the replicas it had."""
    c = get_ctx(ctx)
    _require_reason(reason)
    body = _validated(ReviveIn, {"reason": reason})
    target = "*" if scope == KillScope.global_ else target
    if scope != KillScope.global_ and target == "*":
        fail(f"a {scope.value} needs a target name")
    if (api := c.remote) is not None:
        api.call("POST", f"/v1/killswitches/{scope.value}/{target}/revive", body.model_dump())
        typer.echo(f"revived {scope.value} {target}")
        return
    scaler, why = kube_scaler(c.settings) if scope == KillScope.model else (None, None)
    out = revive(
        c.engine,
        scope=scope,
        target=target,
        reason=body.reason,
        actor=_actor(),
        now=now(),
        publisher=_publisher(c),
        scaler=scaler,
    )
    if not out.changed:
        fail(f"{scope.value} {target} is not killed")
    typer.echo(f"revived {scope.value} {target}")
    if out.replicas is not None:
        typer.echo(f"restored Deployment of {target} to {out.replicas} replicas")
    elif scope == KillScope.model and (out.scale_error or why):
        typer.echo(f"warning: Deployment not restored: {out.scale_error or why}", err=True)


def status_cmd(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Active kill-switches, budget burn this period, reservations in flight."""
    c = get_ctx(ctx)
    t = now()
    backend = _backend(c)
    kills = list_kill_switches(c.engine)
    burn = budget_burn(
        c.engine,
        c.settings.billing.enforcement,
        t,
        reservations=backend,
        resolution_s=c.settings.billing.ledger_resolution_s,
    )
    doc = {
        "kill_switches": [k.model_dump(mode="json") for k in kills],
        "budgets": [b.public().model_dump(mode="json") for b in burn],
        "reservations_in_flight": backend.in_flight(),
    }
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(f"kill-switches active: {len(kills)}")
    for k in kills:
        typer.echo(
            f"  {k.scope.value}:{k.target}  since {k.created_at:%F %T}  by {k.actor}: {k.reason}"
        )
    typer.echo(f"reservations in flight: {doc['reservations_in_flight']}")
    typer.echo("budgets:" if burn else "budgets: none")
    for b in burn:
        p = b.public()
        typer.echo(
            f"  {p.name:<20} {p.status:<4} {p.ratio:6.1%}  spent ${p.spent_usd:.4f} "
            f"({p.basis.value}) reserved ${p.reserved_usd:.4f} of ${p.limit_usd or 0:g}  "
            f"{p.scope}"
        )


def register(app: typer.Typer) -> None:
    """Add the enforcement commands to the costctl app."""
    app.add_typer(budgets_app, name="budgets")
    app.add_typer(rates_app, name="ratelimits")
    app.command("kill")(kill_cmd)
    app.command("revive")(revive_cmd)
    app.command("status")(status_cmd)
