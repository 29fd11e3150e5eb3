"""The costctl command line: the composition root of settings, stores and packages."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from costctl.commands import metering
from costctl.context import EXIT_USAGE, AppContext
from costctl.settings import Settings

app = typer.Typer(
    name="costctl",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Pack ML models onto shared GPUs and know, to the cent, who spent what.",
)
app.registered_commands += metering.app.registered_commands
app.add_typer(metering.keys_app, name="keys")
app.add_typer(metering.prices_app, name="prices")


def _register_optional() -> None:
    """Command groups of the other areas (each module exposes ``register(app)``)."""
    import importlib

    for name in ("bench", "scheduling", "enforcement", "serving", "roles", "agent"):
        try:
            module = importlib.import_module(f"costctl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"costctl.commands.{name}":
                raise
            continue
        module.register(app)


_register_optional()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option(help="overrides COSTCTL_DATABASE_URL", show_default=False)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="the costctl API (overrides COSTCTL_API_URL): state changes go through it",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="key for --url (overrides COSTCTL_API_KEY)", show_default=False),
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Global options."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        over: dict[str, Any] = {"database_url": database_url, "api_url": url, "api_key": api_key}
        settings = Settings(**{k: v for k, v in over.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        print(f"error: settings: {loc}: {first['msg']}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from None
    ctx.obj = AppContext(settings)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
