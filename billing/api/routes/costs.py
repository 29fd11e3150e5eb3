"""GET /v1/costs: ledger totals over a window, grouped; tenant keys see only their customer.

The ledger holds buckets of ``ledger_resolution_s`` seconds. The route sums every bucket that
overlaps the requested window and says which ones in ``effective_window`` (start, end,
resolution_s): exact for windows of whole buckets, never hiding money metered inside the
window. A window shorter than one bucket is a 422 that names the resolution.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from billing.api.deps import NowDep, ReadDep, StateDep
from billing.api.errors import unprocessable
from billing.enforcement.config import EnforcementConfig
from billing.enforcement.rates import add_price
from billing.kinds import LedgerKind
from billing.known import unknown_values
from billing.ledger import GROUP_KEYS, metered_cents, query_costs
from billing.windows import Window, WindowError, parse_window

router = APIRouter(prefix="/v1", tags=["costs"])


class CostRow(BaseModel):
    """One group: the group_by keys asked for (others null) and its totals."""

    model: str | None = None
    customer: str | None = None
    request_type: str | None = None
    kind: str | None = None
    hour: str | None = None
    day: str | None = None
    gpu_seconds: float
    input_tokens: int
    output_tokens: int
    requests: int
    cost_cents: int
    cost_usd: float
    price_usd: float | None = Field(
        default=None, description="with include=price: the tokens at the rate card"
    )
    margin_usd: float | None = Field(
        default=None, description="with include=price: price_usd - cost_usd"
    )


class CostsResponse(BaseModel):
    """Grouped ledger rows and their totals."""

    window: dict[str, str]
    effective_window: dict[str, str | int]
    group_by: list[str]
    rows: list[CostRow]
    totals: dict[str, float | int]
    metered_cost_usd: float | None = None
    unknown: dict[str, list[str]] = Field(
        default_factory=dict,
        description="filter values never seen in usage or the ledger (not merely no spend)",
    )


@router.get("/costs", response_model=CostsResponse)
async def get_costs(
    state: StateDep,
    principal: ReadDep,
    now: NowDep,
    window: Annotated[str, Query(description="today, 7d, lastweek, 2026-W47, or start,end")] = "7d",
    group_by: Annotated[str, Query(description=f"comma list of {', '.join(GROUP_KEYS)}")] = (
        "model,customer,request_type"
    ),
    model: str | None = None,
    customer: str | None = None,
    request_type: str | None = None,
    kind: LedgerKind | None = None,
    include: Annotated[
        str, Query(description="comma list; price: add price_usd and margin_usd (rate card)")
    ] = "",
) -> CostsResponse:
    """Costs by any of model, customer, request_type, kind, hour, day over a window; with
    ``include=price`` also the list price (rate card) and margin beside the cost."""
    extra = [x.strip() for x in include.split(",") if x.strip()]
    if [x for x in extra if x != "price"]:
        raise unprocessable(["query", "include"], f"unknown {extra}; allowed: ['price']")
    try:
        w = parse_window(window, now)
    except WindowError as exc:
        raise unprocessable(["query", "window"], str(exc)) from exc
    res = state.config.ledger_resolution_s
    if w.seconds < res:
        raise unprocessable(
            ["query", "window"],
            f"window {window!r} is {w.seconds:g} s, shorter than the ledger resolution of "
            f"{res} s: ask for at least {res} s, or set COSTCTL_BILLING__LEDGER_RESOLUTION_S "
            "(e.g. 300) and re-run the rollup",
            "window_below_resolution",
        )
    eff = w.aligned(res)
    keys = [k.strip() for k in group_by.split(",") if k.strip()]
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise unprocessable(
            ["query", "group_by"], f"unknown key(s) {unknown}; allowed: {list(GROUP_KEYS)}"
        )
    filters = {
        k: v
        for k, v in {
            "model": model,
            "customer": customer,
            "request_type": request_type,
            "kind": kind.value if kind else None,
        }.items()
        if v
    }
    if principal.customer is not None:
        if customer is not None and customer != principal.customer:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "this key may only read its own customer's costs"
            )
        filters["customer"] = principal.customer
    if "price" in extra:
        df = await run_in_threadpool(
            _priced_costs, state.engine, eff, keys, filters, state.config.enforcement
        )
    else:
        df = await run_in_threadpool(query_costs, state.engine, eff, group_by=keys, filters=filters)
    if "hour" in df.columns:
        df["hour"] = df["hour"].map(lambda t: t.isoformat())
    rows = [CostRow.model_validate(r) for r in df.to_dict(orient="records")]
    totals: dict[str, float | int] = {
        c: (int(df[c].sum()) if c != "gpu_seconds" else float(df[c].sum()))
        for c in ("gpu_seconds", "input_tokens", "output_tokens", "requests", "cost_cents")
    }
    totals["cost_usd"] = totals["cost_cents"] / 100
    if "price_usd" in df.columns:
        totals["price_usd"] = round(float(df["price_usd"].sum()), 6)
        totals["margin_usd"] = round(totals["price_usd"] - totals["cost_usd"], 6)
    metered = None
    if principal.customer is None and not filters:
        metered = await run_in_threadpool(metered_cents, state.engine, eff) / 100
    never_seen = await run_in_threadpool(unknown_values, state.engine, filters)
    return CostsResponse(
        window={"start": w.start.isoformat(), "end": w.end.isoformat()},
        effective_window={
            "start": eff.start.isoformat(),
            "end": eff.end.isoformat(),
            "resolution_s": res,
        },
        group_by=keys,
        rows=rows,
        totals=totals,
        metered_cost_usd=metered,
        unknown=never_seen,
    )


def _priced_costs(
    engine: Engine,
    window: Window,
    keys: list[str],
    filters: dict[str, str],
    enforcement: EnforcementConfig,
) -> pd.DataFrame:
    """query_costs grouped by ``keys`` with price_usd and margin_usd: priced per model x
    customer (the rate card's grain), then summed to the groups asked for."""
    fine = [*keys, *[k for k in ("model", "customer") if k not in keys]]
    df = add_price(query_costs(engine, window, group_by=fine, filters=filters), enforcement)
    sums = ["gpu_seconds", "input_tokens", "output_tokens", "requests", "cost_cents", "price_usd"]
    if keys:
        df = df.groupby(keys, as_index=False, dropna=False)[sums].sum()
    else:
        df = df[sums].sum().to_frame().T
    df = df.sort_values("cost_cents", ascending=False, kind="stable")
    df["cost_usd"] = df["cost_cents"] / 100
    df["price_usd"] = df["price_usd"].astype(float).round(6)
    df["margin_usd"] = (df["price_usd"] - df["cost_usd"]).round(6)
    return df
