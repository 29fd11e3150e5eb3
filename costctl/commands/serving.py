"""`costctl serve`, `costctl demo` and `costctl export weekly`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from billing.config import ExportFormat
from billing.db import init_db, is_sqlite, make_engine
from billing.windows import WindowError
from costctl.bench.common import AZURE_CONV
from costctl.commands.enforcement import kube_scaler
from costctl.context import fail, get_ctx, now

export_app = typer.Typer(help="Cost-review exports.", no_args_is_help=True)

Duration = Annotated[
    float | None, typer.Option(min=0.1, help="exit cleanly after this many seconds")
]
Port = Annotated[int | None, typer.Option("--port", min=0, max=65535, help="API port")]
DashPort = Annotated[
    int | None, typer.Option("--dashboard-port", min=0, max=65535, help="dashboard port")
]


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="bind address (default: settings)")] = None,
    port: Port = None,
    dashboard_port: DashPort = None,
    duration: Duration = None,
) -> None:
    """Run the API, the worker's jobs and the dashboard in one process (Ctrl-C stops).

    A SQLite store is migrated to head first; any other store must already be (`costctl db
    upgrade`), as for the separate roles.
    """
    from costctl.context import require_schema
    from costctl.serve import Stack, run

    c = get_ctx(ctx)
    settings = c.settings.model_copy(
        update={
            k: v
            for k, v in {
                "api_host": host,
                "api_port": port,
                "dashboard_port": dashboard_port,
            }.items()
            if v is not None
        }
    )
    engine = make_engine(settings.database_url)
    if is_sqlite(engine):
        init_db(engine)
    require_schema(engine)
    scaler, why = kube_scaler(settings)
    if why:
        typer.echo(
            f"note: no Kubernetes cluster ({why}); a model kill-switch will deny requests "
            "but cannot scale Deployments to zero",
            err=True,
        )
    try:
        stack = Stack(settings, engine, clock=now, scaler=scaler)
    except OSError as exc:
        fail(f"cannot listen: {exc}", code=1)

    def started(s: Stack) -> None:
        typer.echo(f"API        {s.api_url}   (/docs, /healthz, /readyz, /healthz/jobs)")
        typer.echo(f"dashboard  {s.dashboard_url}   (sign in with an admin or read key)")

    run(stack, duration=duration, on_started=started)


def demo(
    ctx: typer.Context,
    port: Port = 8000,
    dashboard_port: DashPort = 8050,
    duration: Duration = None,
    history: Annotated[
        str, typer.Option(help="history to backfill before going live, e.g. 7d, 36h, 0h")
    ] = "7d",
    trace: Annotated[
        Path | None,
        typer.Option(help="Azure LLM trace CSV (default: ../shared/data's conv trace if present)"),
    ] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file (default: a new temp dir)")] = None,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Demo on SQLite: simulated GPUs and a workload at 1x on one clock, history backfilled."""
    from datetime import timedelta

    from billing.replay import TraceError
    from billing.synthetic import demo_workload
    from costctl.demo import (
        DemoClock,
        DemoFleetHook,
        Replayer,
        backfill,
        demo_database,
        demo_settings,
        parse_history,
        prepare,
    )
    from costctl.serve import Stack, run

    if trace is not None and not trace.is_file():
        fail(f"--trace: no such file {trace}")
    span = parse_history(history)
    if span is None:
        fail(f"--history: expected a duration like 7d, 36h or 90m, got {history!r}")
    try:
        workload = demo_workload(trace or AZURE_CONV, seed)
    except TraceError as exc:
        fail(f"--trace: {exc}")
    c = get_ctx(ctx)
    url = demo_database(db)
    settings = demo_settings(c.settings, url, port or 0, dashboard_port or 0)
    engine = make_engine(url)
    init_db(engine)
    keys = prepare(engine, settings, now())
    clock = DemoClock(now)
    fleet = DemoFleetHook(keys.ingest, clock=clock)
    try:
        stack = Stack(
            settings, engine, clock=now, job_hooks=(fleet,), refresh_s=5.0, default_window="7d"
        )
    except OSError as exc:
        fail(f"cannot listen (try --port/--dashboard-port): {exc}", code=1)
    replayer: list[Replayer] = []

    def started(s: Stack) -> None:
        fleet.start_agents(s.api_url)
        live = now()
        typer.echo(f"workload        {workload.describe()}")
        if fleet.demo is not None and span > timedelta(0):
            typer.echo(f"backfilling     {history} of usage and agent ticks (every 600 s) ...")
            sys.stdout.flush()
            st = backfill(
                engine, settings, workload, fleet.demo, clock, start=live - span, end=live
            )
            typer.echo(
                f"backfilled      {st.events} requests, {st.ticks} agent ticks, "
                f"{st.ledger_hours} ledger hours in {st.seconds:.1f} s (usage {st.usage_s:.1f} s, "
                f"agents {st.ticks_s:.1f} s, rollup {st.rollup_s:.1f} s)"
            )
        r = Replayer(s.api_url, keys.ingest, workload, start=live, clock=now)
        r.start()
        replayer.append(r)
        lines = [
            "costctl demo is running (Ctrl-C stops it)",
            f"  database        {url}",
            f"  API             {s.api_url}   (/docs, /healthz, /readyz, /healthz/jobs)",
            f"  dashboard       {s.dashboard_url}   (sign in with a key below)",
            f"  admin key       {keys.admin}",
            f"  acme read key   {keys.tenant}   (sees only customer acme)",
            f"  live            {workload.stem} at 1x from {live:%Y-%m-%d %H:%M:%S} UTC; rollup "
            f"every {settings.billing.rollup_interval_s} s",
            f"  try             curl -H 'Authorization: Bearer {keys.admin}' "
            f"'{s.api_url}/v1/costs?window=7d&group_by=model'",
        ]
        typer.echo("\n".join(lines))
        sys.stdout.flush()

    def stopping() -> None:
        fleet.stop()
        for r in replayer:
            r.stop()
            typer.echo(f"replayed {r.sent} events live in {r.windows} windows")
            if r.error:
                typer.echo(f"error: replay: {r.error}", err=True)

    run(stack, duration=duration, on_started=started, on_stopping=stopping)


@export_app.command("weekly")
def export_weekly_cmd(
    ctx: typer.Context,
    week: Annotated[str, typer.Option(help="ISO week, e.g. 2026-W47")],
    fmt: Annotated[
        list[str] | None,
        typer.Option("--format", help="csv|parquet|xlsx|html (repeat for several)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="folder (default: settings export dir)")] = None,
) -> None:
    """Write the weekly cost review of one ISO week."""
    from dashboard.export import FORMATS, export_weekly

    c = get_ctx(ctx)
    formats = fmt or list(c.settings.billing.export.formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        fail(f"--format: unknown {bad}; use one of {list(FORMATS)}")
    chosen: list[ExportFormat] = [f for f in FORMATS if f in formats]
    folder = out or c.settings.billing.export.dir
    try:
        paths = export_weekly(c.engine, week, c.settings.billing, folder, chosen)
    except WindowError as exc:
        fail(f"--week: {exc}")
    except OSError as exc:
        fail(f"--out: cannot write to {exc.filename or folder}: {exc.strerror or exc}")
    for p in paths:
        typer.echo(str(p))


def register(app: typer.Typer) -> None:
    """Add serve, demo and the export group."""
    app.command("serve")(serve)
    app.command("demo")(demo)
    app.add_typer(export_app, name="export")
