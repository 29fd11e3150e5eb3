"""Pricing inputs of enforcement: the rate card (price) and the measured cost rate (cost).

``Rates`` is one snapshot: ``price(model, customer)`` is the rate card entry (per-customer
overrides first), ``cost(model)`` the model's measured rate from the recent ledger (falling back
to ``enforcement.cost_fallback``, else the rate card), ``rate(basis, ...)`` the one a budget of
that basis counts with. Both are ``TokenPrice`` (USD per 1M input/output tokens = µUSD/token,
the unit counters use; USD per 1k tokens = that / 1000).

The measured rate of a model (pure: ``measure``): its attributed ledger cost over the last
``cost_rate_window_h`` hours split between input and output tokens in the proportion of the
rate card, i.e. rate card x (ledger cost / list price of the same tokens); when the rate card
prices the model at 0, the cost per token for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.enforcement.config import EnforcementConfig, TokenPrice
from billing.enforcement.enums import Basis
from billing.kinds import IDLE, UNALLOCATED, UNPRICED, LedgerKind
from billing.models import LedgerEntry, table_of

MICROS_PER_CENT = 10_000


@dataclass(frozen=True)
class Rates:
    """The rate card and the measured cost rates at one moment."""

    config: EnforcementConfig
    measured: Mapping[str, TokenPrice] = field(default_factory=dict)

    def price(self, model: str, customer: str | None = None) -> TokenPrice:
        """The rate card entry (list price) of ``model`` for ``customer``."""
        return self.config.price(model, customer)

    def cost(self, model: str) -> TokenPrice:
        """The measured cost rate of ``model`` (fallback: cost_fallback, else the rate card)."""
        got = self.measured.get(model)
        if got is not None:
            return got
        return self.config.cost_fallback or self.config.price(model)

    def rate(self, basis: Basis, model: str, customer: str | None = None) -> TokenPrice:
        """The rate a budget of ``basis`` counts ``model``'s tokens at."""
        return self.cost(model) if basis == Basis.cost else self.price(model, customer)


def measure(
    rows: Iterable[tuple[str, int, int, int]], config: EnforcementConfig
) -> dict[str, TokenPrice]:
    """Measured cost rate per model from (model, cost_cents, input_tokens, output_tokens) (pure).

    A model without tokens gets no entry (``Rates.cost`` falls back).
    """
    out: dict[str, TokenPrice] = {}
    for model, cents, inp, outp in rows:
        if inp + outp <= 0:
            continue
        micros = cents * MICROS_PER_CENT
        card = config.price(model)
        list_micros = inp * card.input_usd_per_mtok + outp * card.output_usd_per_mtok
        if list_micros > 0:
            f = micros / list_micros
            out[model] = TokenPrice(
                input_usd_per_mtok=card.input_usd_per_mtok * f,
                output_usd_per_mtok=card.output_usd_per_mtok * f,
            )
        else:
            per = micros / (inp + outp)
            out[model] = TokenPrice(input_usd_per_mtok=per, output_usd_per_mtok=per)
    return out


def load_rates(engine: Engine, config: EnforcementConfig, now: datetime) -> Rates:
    """Rates measured from the attributed ledger of the ``cost_rate_window_h`` hours before now."""
    t = table_of(LedgerEntry).c
    since = now - timedelta(hours=config.cost_rate_window_h)
    stmt = (
        select(
            t.model,
            func.sum(t.cost_cents),
            func.sum(t.input_tokens),
            func.sum(t.output_tokens),
        )
        .where(t.kind == LedgerKind.attributed.value, t.hour >= since, t.hour < now)
        .group_by(t.model)
    )
    with engine.connect() as conn:
        rows = [
            (str(m), int(c or 0), int(i or 0), int(o or 0)) for m, c, i, o in conn.execute(stmt)
        ]
    return Rates(config, measure(rows, config))


def add_price(frame: pd.DataFrame, config: EnforcementConfig) -> pd.DataFrame:
    """Ledger-shaped rows (model, customer, input_tokens, output_tokens, cost_usd) with
    ``price_usd`` (their tokens at the rate card, customer overrides first; idle, unallocated
    and unpriced rows have no price) and ``margin_usd = price_usd - cost_usd`` (pure)."""
    out = frame.copy()
    none = {IDLE, UNALLOCATED, UNPRICED}
    micros = []
    for m, c, i, o in zip(
        out["model"], out["customer"], out["input_tokens"], out["output_tokens"], strict=True
    ):
        if c in none or m in none:
            micros.append(0.0)
            continue
        p = config.price(str(m), str(c))
        micros.append(int(i) * p.input_usd_per_mtok + int(o) * p.output_usd_per_mtok)
    out["price_usd"] = [x / 1_000_000 for x in micros]
    out["margin_usd"] = out["price_usd"] - out["cost_usd"].astype(float)
    return out
