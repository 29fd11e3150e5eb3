"""Metering commands: init-db, prices, replay, attribute, costs, keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer

from billing.apikeys import LastAdminKeyError, create_key, list_keys, new_key, revoke_key
from billing.db import init_db
from billing.ingest import ingest_usage
from billing.ledger import RollupResult, query_costs, rollup
from billing.models import ApiRole
from billing.replay import TraceError, load_events, run_replay
from billing.schemas import IngestResult, UsageEventIn
from billing.windows import WindowError, parse_window
from costctl.commands.prices import load_prices, prices_app
from costctl.context import fail, get_ctx, now

__all__ = ["app", "keys_app", "prices_app"]

app = typer.Typer(no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command("init-db")
def init_db_cmd(ctx: typer.Context) -> None:
    """Migrate the schema to head and load the price book (idempotent)."""
    c = get_ctx(ctx)
    init_db(c.raw_engine)
    load_prices(ctx, None, quiet=False)
    typer.echo(f"database ready: {c.engine.url.render_as_string(hide_password=True)}")


@app.command()
def replay(
    ctx: typer.Context,
    trace: Annotated[Path, typer.Option(help="Azure LLM trace CSV")],
    speed: Annotated[float, typer.Option(min=0.001, help="x real time")] = 60.0,
    seed: Annotated[int, typer.Option(help="seed for model/customer assignment")] = 7,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="send everything now")] = False,
    start: Annotated[str | None, typer.Option(help="RFC 3339 time of the first event")] = None,
    loops: Annotated[int, typer.Option(min=1)] = 1,
    url: Annotated[str | None, typer.Option(help="POST to this API instead of the DB")] = None,
    key: Annotated[str | None, typer.Option(envvar="COSTCTL_API_KEY")] = None,
) -> None:
    """Replay a trace as usage events (timestamps compressed by --speed)."""
    c = get_ctx(ctx)
    if not trace.is_file():
        fail(f"--trace: no such file {trace}")
    try:
        t0 = datetime.fromisoformat(start.replace("Z", "+00:00")) if start else now()
    except ValueError:
        fail(f"--start: not an RFC 3339 time: {start!r}")
    if t0.tzinfo is None:
        fail("--start: needs a timezone, e.g. 2026-11-23T00:00:00Z")
    sink = _http_sink(url, key) if url else (lambda ev: ingest_usage(c.engine, ev))
    total = {"sent": 0, "inserted": 0, "duplicates": 0}
    for loop in range(loops):
        try:
            events = load_events(trace, seed=seed, start=t0, speed=speed, loop=loop)
        except TraceError as exc:
            fail(str(exc))
        if loop == 0 and events:
            span = (events[-1]["time"] - events[0]["time"]).total_seconds()
        stats = run_replay(events, sink, realtime=not no_wait, now=now)
        t0 = t0 + (events[-1]["time"] - events[0]["time"]) if events else t0
        for k in total:
            total[k] += getattr(stats, k)
    typer.echo(
        json.dumps(
            {
                **total,
                "trace": str(trace),
                "seed": seed,
                "speed": speed,
                "span_s": round(span, 3) if events else 0,
            }
        )
    )


def _http_sink(url: str, key: str | None) -> Callable[[Sequence[UsageEventIn]], IngestResult]:
    client = httpx.Client(
        base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"} if key else {}
    )

    def send(events: Sequence[UsageEventIn]) -> IngestResult:
        body = [{**e, "time": e["time"].isoformat()} for e in events]
        r = client.post("/v1/usage", json=body)
        if r.status_code != 200:
            fail(f"{url}/v1/usage answered {r.status_code}: {r.text[:500]}", code=1)
        return IngestResult.model_validate(r.json())

    return send


@app.command()
def attribute(
    ctx: typer.Context,
    window: Annotated[
        str, typer.Option(help="today, 24h, 7d, lastweek, 2026-W47, start,end")
    ] = "24h",
) -> None:
    """Attribute a window now and replace its ledger rows (warns on stderr when nothing could
    be attributed: no samples, no allocations, unpriced GPU time)."""
    c = get_ctx(ctx)
    try:
        w = parse_window(window, now())
    except WindowError as exc:
        fail(f"--window: {exc}")
    r = rollup(c.engine, w, c.settings.billing)
    span = f"{r.window.start.isoformat()}..{r.window.end.isoformat()}"
    for line in _attribute_warnings(r, span):
        typer.echo(f"warning: {line}", err=True)
    typer.echo(
        json.dumps(
            {
                "window": [r.window.start.isoformat(), r.window.end.isoformat()],
                "hours": r.hours,
                "rows": r.rows,
                "metered_usd": r.metered_cost_cents / 100,
                "ledger_usd": r.ledger_cost_cents / 100,
                "unallocated_usd": r.unallocated_cost_cents / 100,
                "unpriced_gpu_seconds": round(sum(s for _, _, s in r.unpriced), 3),
            }
        )
    )


def _attribute_warnings(r: RollupResult, span: str) -> list[str]:
    out = []
    if not r.samples:
        used = f" ({r.requests} requests recorded)" if r.requests else ""
        out.append(f"no GPU samples in {span}: nothing metered{used}")
    elif not r.allocations:
        out.append(
            f"all GPU time unallocated: no allocations recorded for {span} "
            "(POST /v1/allocations, the node agent, or DCGM through Prometheus)"
        )
    out += [
        f"{secs:.0f} GPU-seconds of {t}/{cls} have no price (row __unpriced__, 0 USD): "
        f"`costctl prices set {t} {cls} USD --from TIME`"
        for t, cls, secs in r.unpriced
    ]
    return out


@app.command()
def costs(
    ctx: typer.Context,
    window: Annotated[str, typer.Option()] = "7d",
    group_by: Annotated[
        str, typer.Option(help="comma list: model,customer,request_type,kind,day")
    ] = "model,customer,request_type",
    customer: Annotated[str | None, typer.Option()] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="table|json|csv")] = "table",
) -> None:
    """Show ledger costs over a window."""
    c = get_ctx(ctx)
    if output not in ("table", "json", "csv"):
        fail("-o/--output must be table, json or csv")
    try:
        w = parse_window(window, now())
        df = query_costs(
            c.engine,
            w,
            group_by=[g for g in group_by.split(",") if g],
            filters={"customer": customer} if customer else None,
        )
    except (WindowError, ValueError) as exc:
        fail(str(exc))
    if output == "json":
        typer.echo(df.to_json(orient="records", date_format="iso"))
    elif output == "csv":
        typer.echo(df.to_csv(index=False), nl=False)
    else:
        typer.echo(df.to_string(index=False) if len(df) else "no ledger rows in window")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[ApiRole, typer.Option()],
    name: Annotated[str, typer.Option()] = "cli",
    customer: Annotated[str | None, typer.Option(help="scope a read key to one customer")] = None,
    key: Annotated[
        str | None,
        typer.Option(help="store this key (from `costctl keys new`) instead of a new one"),
    ] = None,
) -> None:
    """Create an API key and print it (shown once)."""
    c = get_ctx(ctx)
    if (api := c.remote) is not None:
        if key is not None:
            fail("--key: only with a local database (the API makes its own keys)")
        body = {"name": name, "role": role.value, "customer": customer}
        typer.echo(api.call("POST", "/v1/keys", body).json()["key"])
        return
    try:
        made = create_key(c.engine, name=name, role=role, customer=customer, now=now(), key=key)
    except ValueError as exc:
        fail(f"--key: {exc}" if key is not None and "key" in str(exc) else str(exc))
    typer.echo(made)


@keys_app.command("new")
def keys_new() -> None:
    """Print a fresh random key (for COSTCTL_BILLING__BOOTSTRAP_ADMIN_KEY); stores nothing."""
    typer.echo(new_key())


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """List keys (prefix, role, customer; never the secret)."""
    for k in list_keys(get_ctx(ctx).engine):
        state = "revoked" if k.revoked_at else "live"
        typer.echo(f"{k.prefix}  {k.role:<7} {k.customer or '-':<12} {state:<8} {k.name}")


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, prefix: str) -> None:
    """Revoke a key by its prefix."""
    if (api := get_ctx(ctx).remote) is not None:
        api.call("DELETE", f"/v1/keys/{prefix}")
        typer.echo(f"revoked {prefix}")
        return
    try:
        revoked = revoke_key(get_ctx(ctx).engine, prefix=prefix, now=now())
    except LastAdminKeyError as exc:
        fail(f"{exc}: create another first (costctl keys create --role admin)")
    if not revoked:
        fail(f"no live key with prefix {prefix!r}")
    typer.echo(f"revoked {prefix}")
