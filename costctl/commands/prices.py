"""Price book commands: `costctl prices load | set | list` (effective-dated versions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from billing.attribution import PRICE_COLUMNS
from billing.pricebook import (
    PriceBookError,
    add_price_versions,
    check_price,
    load_price_book,
    price_versions,
)
from billing.windows import WindowError, parse_instant
from costctl.context import fail, get_ctx, now

prices_app = typer.Typer(help="Load, set and list GPU price versions.", no_args_is_help=True)


def load_prices(ctx: typer.Context, path: Path | None, *, quiet: bool) -> int:
    """Add the versions a price book YAML implies (the settings' book by default)."""
    c = get_ctx(ctx)
    path = path or c.settings.billing.price_book_path
    try:
        book = load_price_book(path)
    except PriceBookError as exc:
        fail(str(exc))
    added = add_price_versions(c.engine, book.prices, now=now(), effective_from=book.effective_from)
    if not quiet:
        typer.echo(f"price book {path}: {len(book.prices)} prices, {added} new version(s)")
    return added


@prices_app.command("load")
def prices_load(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option(help="price book YAML")] = None,
) -> None:
    """Load a price book YAML: each changed price becomes a new version (re-loading: 0 new).

    A version starts at the file's top-level ``effective_from`` if it has one, else now; a
    GPU type and class never priced before starts at 2020-01-01 (its past gets priced).
    """
    load_prices(ctx, file, quiet=False)


@prices_app.command("set")
def prices_set(
    ctx: typer.Context,
    gpu_type: Annotated[str, typer.Argument(help="GPU type, e.g. H100-80GB")],
    pricing_class: Annotated[str, typer.Argument(help="on-demand, spot or reserved")],
    usd: Annotated[float, typer.Argument(help="USD per GPU-hour")],
    from_: Annotated[
        str | None, typer.Option("--from", help="RFC 3339 time the price starts (default now)")
    ] = None,
) -> None:
    """Add a price version: GPU-hours from --from on are priced at USD (marks them for rollup)."""
    c = get_ctx(ctx)
    try:
        price = check_price(gpu_type, pricing_class, usd, "price")
        start = parse_instant(from_) if from_ else None
    except (PriceBookError, WindowError) as exc:
        fail(f"--from: {exc}" if isinstance(exc, WindowError) else str(exc))
    rows = pd.DataFrame([(gpu_type, pricing_class, price)], columns=PRICE_COLUMNS)
    added = add_price_versions(c.engine, rows, now=now(), effective_from=start or now())
    when = (start or now()).isoformat()
    typer.echo(
        f"{gpu_type}/{pricing_class}: {price} USD/h from {when}"
        if added
        else f"{gpu_type}/{pricing_class}: {price} USD/h already in force at {when} (0 new)"
    )


@prices_app.command("list")
def prices_list(
    ctx: typer.Context,
    output: Annotated[str, typer.Option("-o", "--output", help="table|json")] = "table",
) -> None:
    """List every price version; ``*`` marks the one in force now."""
    if output not in ("table", "json"):
        fail("-o/--output must be table or json")
    df = price_versions(get_ctx(ctx).engine)
    t = pd.Timestamp(now())
    latest = df[df["effective_from"] <= t].groupby(["gpu_type", "pricing_class"]).tail(1).index
    df["in_force"] = df.index.isin(latest)
    if output == "json":
        typer.echo(df.to_json(orient="records", date_format="iso"))
        return
    if df.empty:
        typer.echo("no prices: run `costctl prices load`")
    for gpu_type, cls, usd, eff, live in zip(
        df["gpu_type"],
        df["pricing_class"],
        df["usd_per_hour"],
        df["effective_from"],
        df["in_force"],
        strict=True,
    ):
        star = "*" if live else " "
        typer.echo(f"{star} {gpu_type:<14} {cls:<10} {usd:>8.4f}  {eff.isoformat()}")
