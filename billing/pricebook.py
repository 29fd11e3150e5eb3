"""The price book: USD per GPU-hour by GPU type and pricing class, from YAML into the store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.attribution import PRICE_COLUMNS
from billing.ingest import bulk_insert_ignore
from billing.models import Price, table_of

PRICING_CLASSES = ("on-demand", "spot", "reserved")


class PriceBookError(ValueError):
    """A price book file that is malformed."""


def read_price_book(path: Path) -> pd.DataFrame:
    """Parse a price book YAML (``prices: {GPU: {class: usd_per_hour}}``) into PRICE_COLUMNS."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PriceBookError(f"cannot read price book {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("prices"), dict):
        raise PriceBookError(f"{path}: expected a mapping 'prices: {{GPU type: {{class: usd}}}}'")
    rows = []
    for gpu_type, classes in doc["prices"].items():
        if not isinstance(classes, dict):
            raise PriceBookError(f"{path}: prices.{gpu_type} must map pricing class to USD/hour")
        for cls, usd in classes.items():
            if cls not in PRICING_CLASSES:
                raise PriceBookError(f"{path}: prices.{gpu_type}.{cls}: unknown pricing class")
            if not isinstance(usd, int | float) or usd < 0:
                raise PriceBookError(f"{path}: prices.{gpu_type}.{cls} must be a number >= 0")
            rows.append((str(gpu_type), str(cls), float(usd)))
    return pd.DataFrame(rows, columns=PRICE_COLUMNS)


def store_prices(engine: Engine, prices: pd.DataFrame, effective_from: datetime) -> int:
    """Record prices effective from ``effective_from``; re-storing the same date is a no-op."""
    rows = [
        (r.gpu_type, r.pricing_class, r.usd_per_hour, effective_from)
        for r in prices.itertuples(index=False)
    ]
    cols = ("gpu_type", "pricing_class", "usd_per_hour", "effective_from")
    with engine.begin() as conn:
        return bulk_insert_ignore(conn, table_of(Price), cols, rows)


def prices_at(engine: Engine, at: datetime) -> pd.DataFrame:
    """The price of each (GPU type, pricing class) in force at ``at`` (latest effective_from)."""
    t = table_of(Price).c
    stmt = select(t.gpu_type, t.pricing_class, t.usd_per_hour, t.effective_from)
    with engine.connect() as conn:
        df = pd.read_sql(stmt, conn)
    if df.empty:
        return pd.DataFrame(columns=PRICE_COLUMNS)
    df["effective_from"] = pd.to_datetime(df["effective_from"], utc=True)
    df = df[df["effective_from"] <= pd.Timestamp(at)]
    df = df.sort_values("effective_from").groupby(["gpu_type", "pricing_class"]).tail(1)
    return df[PRICE_COLUMNS].reset_index(drop=True)
