"""The process roles of one image: `costctl api`, `worker`, `dashboard`; `db`, `jobs`.

Each role checks the schema before it starts: behind or ahead of the code's migrations, it
exits 2 with one line naming `costctl db upgrade` (the migration Job runs it).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from typing import Annotated

import typer

from billing import migrations
from billing.runner.runs import list_runs
from costctl.context import AppContext, fail, get_ctx, now, require_schema

db_app = typer.Typer(help="Schema migrations (Alembic).", no_args_is_help=True)

Host = Annotated[str | None, typer.Option(help="bind address (default: settings)")]
Duration = Annotated[
    float | None, typer.Option(min=0.1, help="exit cleanly after this many seconds")
]


def _ready(ctx: typer.Context) -> AppContext:
    c = get_ctx(ctx)
    require_schema(c.raw_engine)
    return c


def api(
    ctx: typer.Context,
    host: Host = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535)] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the API (stateless; run N replicas and/or --workers N). No jobs run here."""
    import uvicorn

    c = _ready(ctx)
    s = c.settings
    host, port = host or s.api_host, s.api_port if port is None else port
    if workers == 1:
        from costctl.apiapp import build_api
        from costctl.commands.enforcement import kube_scaler

        scaler, _why = kube_scaler(s)
        uvicorn.run(build_api(s, c.raw_engine, clock=now, scaler=scaler), host=host, port=port)
        return
    # Worker processes build their app from the environment: hand the overrides on.
    os.environ["COSTCTL_DATABASE_URL"] = s.database_url
    uvicorn.run("costctl.apiapp:app_from_env", factory=True, host=host, port=port, workers=workers)


def worker(
    ctx: typer.Context,
    lease_s: Annotated[
        float | None, typer.Option(min=0.2, help="overrides COSTCTL_WORKER__LEASE_S")
    ] = None,
    duration: Duration = None,
) -> None:
    """Run every scheduled job; any number of workers may run, one runs each slot."""
    from prometheus_client import CollectorRegistry, start_http_server

    from billing.metrics import RollupMetrics
    from costctl.commands.enforcement import kube_scaler
    from costctl.serve import stop_on_signals
    from costctl.worker import Worker, job_specs

    c = _ready(ctx)
    s = c.settings
    scaler, _why = kube_scaler(s)
    registry = CollectorRegistry(auto_describe=True)
    specs = job_specs(c.raw_engine, s, clock=now, scaler=scaler, metrics=RollupMetrics(registry))
    if s.worker.metrics_port:
        start_http_server(s.worker.metrics_port, addr=s.worker.metrics_host, registry=registry)
    w = Worker(c.raw_engine, specs, clock=now, lease_s=lease_s or s.worker.lease_s)
    stop = threading.Event()
    with stop_on_signals(stop):
        w.start()
        typer.echo(f"worker {w.worker_id}: {', '.join(x.name for x in specs)}")
        try:
            stop.wait(duration)
        finally:
            w.stop()


def dashboard(
    ctx: typer.Context,
    host: Host = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535)] = None,
) -> None:
    """Serve the dashboard on waitress (stateless; replicas share the session secret)."""
    from costctl.dashboard_role import build_dashboard, wsgi_server

    c = _ready(ctx)
    s = c.settings
    if s.dashboard.session_secret is None:
        typer.echo(
            "note: COSTCTL_DASHBOARD__SESSION_SECRET is unset: sessions are signed with a "
            "random secret, valid on this replica only",
            err=True,
        )
    dash = build_dashboard(s, c.raw_engine, clock=now)
    srv = wsgi_server(dash, s, host or s.api_host, s.dashboard_port if port is None else port)
    typer.echo(f"dashboard http://{host or s.api_host}:{srv.effective_port}")
    from costctl.serve import stop_on_signals

    stop = threading.Event()
    with stop_on_signals(stop):
        runner = threading.Thread(target=srv.run, name="dashboard", daemon=True)
        runner.start()
        stop.wait()
        srv.close()


def _fmt(ts: datetime | None) -> str:
    return "-" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S")


def jobs(
    ctx: typer.Context,
    output: Annotated[str, typer.Option("-o", "--output", help="table|json")] = "table",
    job: Annotated[str | None, typer.Option(help="only this job")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
) -> None:
    """Runs of the scheduled jobs, newest first (from the job_run table)."""
    if output not in ("table", "json"):
        fail(f"-o/--output: {output!r} is not one of table, json")
    runs = list_runs(get_ctx(ctx).engine, job=job, limit=limit)
    if output == "json":
        typer.echo(json.dumps([r.as_json() for r in runs], indent=2))
        return
    typer.echo(f"{'started':19}  {'job':28} {'slot':19}  {'outcome':9} {'secs':>7}  worker")
    for r in runs:
        secs = (
            "-"
            if r.finished_at is None
            else f"{(r.finished_at - r.started_at).total_seconds():.2f}"
        )
        typer.echo(
            f"{_fmt(r.started_at)}  {r.job:28} {_fmt(r.slot)}  {r.outcome:9} {secs:>7}  "
            f"{r.worker_id}" + (f"  {r.error[:80]}" if r.error else "")
        )


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Migrate the schema up to ``revision`` (default head); a no-op when already there."""
    engine = get_ctx(ctx).raw_engine
    before, after = migrations.upgrade(engine, revision)
    if before == after:
        typer.echo(f"schema already at {after}")
    else:
        typer.echo(f"schema upgraded {before or '(empty)'} -> {after}")


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="target, e.g. -1")]
) -> None:
    """Migrate the schema down to ``revision``."""
    before, after = migrations.downgrade(get_ctx(ctx).raw_engine, revision)
    typer.echo(f"schema downgraded {before} -> {after or '(empty)'}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """The database's revision and whether it is at the code's head (exit 1 if not)."""
    st = migrations.state(get_ctx(ctx).raw_engine)
    typer.echo(f"{st.current or '(none)'} ({st.status.value}; head {st.head})")
    if not st.ok:
        raise typer.Exit(1)


@db_app.command("history")
def db_history() -> None:
    """Every revision, newest first."""
    head = migrations.head()
    for r in migrations.history():
        mark = " (head)" if r.revision == head else ""
        typer.echo(f"{r.down_revision or '<base>'} -> {r.revision}{mark}  {r.message}")


def register(app: typer.Typer) -> None:
    """Add the role commands and the db group."""
    app.command("api")(api)
    app.command("worker")(worker)
    app.command("dashboard")(dashboard)
    app.command("jobs")(jobs)
    app.add_typer(db_app, name="db")
