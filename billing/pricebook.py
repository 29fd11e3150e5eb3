"""The price book: USD per GPU-hour by GPU type and pricing class, effective-dated.

The ``price`` table keeps versions: (gpu_type, pricing_class, effective_from) is unique and a
version is in force from its ``effective_from`` until the next one. The rollup prices each
ledger bucket by the version in force at the bucket's start (billing.attribution rule 2).

Adding versions (``add_price_versions``: YAML load, ``costctl prices set``): a price equal to
the one in force at its effective time adds nothing, so re-loading a file is a no-op; a
changed price is a new version from ``effective_from`` (the YAML's, or ``--from``) or else
from now; a (type, class) with no version yet starts at FIRST_EFFECTIVE so its past
hours, unpriced until then, get priced. Every new version marks the hours it re-prices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine

from billing.attribution import PRICE_COLUMNS
from billing.dirty import mark_dirty_hours
from billing.ingest import bulk_insert_ignore
from billing.models import GpuSample, Price, table_of

PRICING_CLASSES = ("on-demand", "spot", "reserved")
FIRST_EFFECTIVE = datetime(2020, 1, 1, tzinfo=UTC)
VERSION_COLUMNS = [*PRICE_COLUMNS, "effective_from"]


class PriceBookError(ValueError):
    """A price book file or price that is malformed."""


@dataclass(frozen=True)
class PriceBook:
    """A parsed price book: PRICE_COLUMNS rows and the optional top-level effective_from."""

    prices: pd.DataFrame
    effective_from: datetime | None


def _instant(value: object, where: str) -> datetime:
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise PriceBookError(f"{where}: not an RFC 3339 time: {value!r}") from exc
    if ts.tzinfo is None:
        raise PriceBookError(f"{where}: needs a time zone, e.g. 2026-12-01T00:00:00Z")
    return ts.astimezone(UTC)


def check_price(gpu_type: str, pricing_class: str, usd: object, where: str) -> float:
    """The price as a float; raises PriceBookError naming ``where`` when it is not valid."""
    if not gpu_type or len(gpu_type) > 64:
        raise PriceBookError(f"{where}: GPU type must be 1..64 characters")
    if pricing_class not in PRICING_CLASSES:
        raise PriceBookError(
            f"{where}: unknown pricing class {pricing_class!r} (one of {list(PRICING_CLASSES)})"
        )
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not usd >= 0:
        raise PriceBookError(f"{where}: USD per GPU-hour must be a number >= 0")
    return float(usd)


def load_price_book(path: Path) -> PriceBook:
    """Parse ``prices: {GPU: {class: usd_per_hour}}`` and an optional ``effective_from``."""
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
            where = f"{path}: prices.{gpu_type}.{cls}"
            rows.append((str(gpu_type), str(cls), check_price(str(gpu_type), str(cls), usd, where)))
    eff = doc.get("effective_from")
    when = None if eff is None else _instant(eff, f"{path}: effective_from")
    return PriceBook(pd.DataFrame(rows, columns=PRICE_COLUMNS), when)


def read_price_book(path: Path) -> pd.DataFrame:
    """The PRICE_COLUMNS rows of a price book YAML (see ``load_price_book``)."""
    return load_price_book(path).prices


def store_prices(engine: Engine, prices: pd.DataFrame, effective_from: datetime) -> int:
    """Record prices effective from ``effective_from``; re-storing the same date is a no-op."""
    rows = [
        (r.gpu_type, r.pricing_class, r.usd_per_hour, effective_from)
        for r in prices.itertuples(index=False)
    ]
    with engine.begin() as conn:
        return bulk_insert_ignore(conn, table_of(Price), VERSION_COLUMNS, rows)


def _versions(conn: Connection) -> pd.DataFrame:
    t = table_of(Price).c
    df = pd.read_sql(select(*[t[c] for c in VERSION_COLUMNS]), conn)
    df["effective_from"] = pd.to_datetime(df["effective_from"], utc=True)
    return df.sort_values(["gpu_type", "pricing_class", "effective_from"], ignore_index=True)


def price_versions(engine: Engine) -> pd.DataFrame:
    """Every version (VERSION_COLUMNS), by type, class and effective_from."""
    with engine.connect() as conn:
        return _versions(conn)


def prices_at(engine: Engine, at: datetime) -> pd.DataFrame:
    """The price of each (GPU type, pricing class) in force at ``at`` (latest effective_from)."""
    df = price_versions(engine)
    if df.empty:
        return pd.DataFrame(columns=PRICE_COLUMNS)
    df = df[df["effective_from"] <= pd.Timestamp(at)]
    df = df.groupby(["gpu_type", "pricing_class"]).tail(1)
    return df[PRICE_COLUMNS].reset_index(drop=True)


def _mark_repriced(conn: Connection, start: datetime, end: datetime | None) -> None:
    """Mark the hours with GPU samples in [start, end) (end None: no later version)."""
    s = table_of(GpuSample).c
    lo, hi = conn.execute(
        select(func.min(s.ts), func.max(s.ts)).where(
            s.ts >= start - timedelta(hours=1), *([s.ts < end] if end else [])
        )
    ).one()
    if lo is None:
        return
    upper = hi + timedelta(hours=1) if end is None else min(end, hi + timedelta(hours=1))
    mark_dirty_hours(conn, max(lo, start), upper)


def _add_version(
    conn: Connection,
    mine: list[tuple[datetime, float]],
    key: tuple[str, str],
    usd: float,
    start: datetime,
) -> bool:
    """Add (or correct) the version of ``key`` from ``start`` unless that price is in force.

    ``mine``: the key's versions (effective_from, usd) in ascending order.
    """
    before = [v for v in mine if v[0] <= start]
    if before and abs(before[-1][1] - usd) < 1e-9:
        return False
    t = table_of(Price)
    if before and before[-1][0] == start:
        conn.execute(
            update(t)
            .where(t.c.gpu_type == key[0], t.c.pricing_class == key[1], t.c.effective_from == start)
            .values(usd_per_hour=usd)
        )
    else:
        bulk_insert_ignore(conn, t, VERSION_COLUMNS, [(key[0], key[1], usd, start)])
    later = [v[0] for v in mine if v[0] > start]
    _mark_repriced(conn, start, later[0] if later else None)
    return True


def add_price_versions(
    engine: Engine, prices: pd.DataFrame, *, now: datetime, effective_from: datetime | None = None
) -> int:
    """Add a version for each price that differs from the one in force when it would start.

    Details: start = ``effective_from``, else now for a (type, class) with versions, else
    FIRST_EFFECTIVE. A version already at exactly that start is corrected in place. Marks
    the re-priced hours (billing.dirty). Returns the versions added or corrected.
    """
    changed = 0
    with engine.begin() as conn:
        versions: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
        v = _versions(conn)
        for gpu_type, cls, usd, when in zip(
            v["gpu_type"].tolist(),
            v["pricing_class"].tolist(),
            v["usd_per_hour"].tolist(),
            v["effective_from"].dt.to_pydatetime().tolist(),
            strict=True,
        ):
            versions.setdefault((gpu_type, cls), []).append((when, float(usd)))
        for gpu_type, cls, usd in prices[PRICE_COLUMNS].itertuples(index=False):
            key = (str(gpu_type), str(cls))
            mine = versions.get(key, [])
            start = effective_from or (now if mine else FIRST_EFFECTIVE)
            changed += _add_version(conn, mine, key, float(usd), start)
    return changed
