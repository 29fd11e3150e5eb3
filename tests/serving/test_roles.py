"""The roles refuse a schema that is not at head; `db` commands; api/dashboard serve for real."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing import migrations
from billing.apikeys import create_key
from billing.db import init_db, make_engine
from billing.models import ApiRole
from costctl.cli import app
from costctl.dashboard_role import build_dashboard
from costctl.settings import Settings
from tests.utils.api import make_api

runner = CliRunner()
COSTCTL = [sys.executable, "-m", "costctl.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def old_db(tmp_path: Path) -> str:
    """A SQLite store at the first revision."""
    url = f"sqlite:///{tmp_path}/old.db"
    eng = make_engine(url)
    migrations.upgrade(eng, migrations.BASELINE)
    eng.dispose()
    return url


@pytest.mark.parametrize("role", ["api", "worker", "dashboard", "jobs"])
def test_roles_refuse_a_schema_behind_head(old_db: str, role: str) -> None:
    r = runner.invoke(app, ["--database-url", old_db, role])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == (
        f"error: database schema is at revision 0001, this costctl needs {migrations.head()}: "
        "run `costctl db upgrade`"
    )


def test_api_process_exits_2_with_one_line_and_no_traceback(old_db: str) -> None:
    p = subprocess.run(
        [*COSTCTL, "--database-url", old_db, "api", "--port", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "costctl db upgrade" in p.stderr
    assert "Traceback" not in p.stderr


def test_roles_refuse_a_schema_ahead(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    eng = make_engine(url)
    init_db(eng)
    with eng.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    eng.dispose()
    r = runner.invoke(app, ["--database-url", url, "worker"])
    assert r.exit_code == 2 and "newer than this costctl" in r.output


def test_db_commands(tmp_path: Path) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path}/d.db"]
    head = migrations.head()
    r = runner.invoke(app, [*db, "db", "current"])
    assert r.exit_code == 1 and "(none) (empty" in r.output
    r = runner.invoke(app, [*db, "db", "upgrade"])
    assert r.exit_code == 0 and r.output.strip() == f"schema upgraded (empty) -> {head}"
    r = runner.invoke(app, [*db, "db", "upgrade"])
    assert r.output.strip() == f"schema already at {head}"
    r = runner.invoke(app, [*db, "db", "current"])
    assert r.exit_code == 0 and r.output.startswith(f"{head} (at_head")
    r = runner.invoke(app, [*db, "db", "history"])
    lines = r.output.strip().splitlines()
    assert lines[0].startswith(f"{lines[0].split()[0]} -> {head} (head)")
    assert lines[-1].startswith("<base> -> 0001")
    assert len(lines) == len(migrations.history())


def test_readyz_is_red_when_the_schema_is_not_at_head(engine: Engine) -> None:
    api = make_api(engine)
    ok = api.client.get("/readyz")
    assert ok.status_code == 200 and ok.json()["schema"] == migrations.head()
    with engine.begin() as c:
        c.execute(text("ALTER TABLE usage_event DROP COLUMN device_id"))
    drift = api.client.get("/readyz")
    assert drift.status_code == 503 and "lacks usage_event.device_id" in drift.json()["detail"]
    migrations.downgrade(engine, "0001")
    red = api.client.get("/readyz")
    assert red.status_code == 503 and "costctl db upgrade" in red.json()["detail"]


def _wait_ready(url: str, proc: subprocess.Popen[str], timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_api_role_serves_with_two_worker_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/api.db"
    eng = make_engine(url)
    init_db(eng)
    key = create_key(eng, name="a", role=ApiRole.admin, customer=None, now=datetime.now(UTC))
    eng.dispose()
    port = _free_port()
    env = {**os.environ, "COSTCTL_DATABASE_URL": url}
    proc = subprocess.Popen(
        [*COSTCTL, "api", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        r = _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        assert r.status_code == 200 and r.json()["schema"] == migrations.head()
        h = {"Authorization": f"Bearer {key}"}
        costs = httpx.get(f"http://127.0.0.1:{port}/v1/costs?window=1h", headers=h, timeout=10)
        assert costs.status_code == 200
        # no job runs inside the API: /healthz/jobs says they are waiting for a worker
        jobs = httpx.get(f"http://127.0.0.1:{port}/healthz/jobs", timeout=10).json()
        assert {j["last"] is None for j in jobs["jobs"].values()} == {True}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode is not None


def test_dashboard_replicas_accept_each_others_sessions(engine: Engine) -> None:
    key = create_key(engine, name="a", role=ApiRole.admin, customer=None, now=datetime.now(UTC))
    s = Settings(dashboard={"session_secret": "s3cret-shared-by-replicas"})
    a = build_dashboard(s, engine, clock=lambda: datetime.now(UTC)).server.test_client()
    b = build_dashboard(s, engine, clock=lambda: datetime.now(UTC)).server.test_client()
    assert a.post("/login", data={"key": key}).status_code == 302
    cookie = a.get_cookie("session")
    assert cookie is not None
    b.set_cookie("session", cookie.value)
    assert b.get("/").status_code == 200  # signed in on the other replica
    other = Settings(dashboard={"session_secret": "another-secret"})
    c = build_dashboard(other, engine, clock=lambda: datetime.now(UTC)).server.test_client()
    c.set_cookie("session", cookie.value)
    assert c.get("/").status_code == 302  # a different secret: back to /login


def test_dashboard_role_serves_on_waitress(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/dash.db"
    eng = make_engine(url)
    init_db(eng)
    eng.dispose()
    port = _free_port()
    proc = subprocess.Popen(
        [*COSTCTL, "--database-url", url, "dashboard", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        r = _wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
        assert r.status_code == 200
        assert r.headers["server"] == "costctl-dashboard"  # waitress' ident, not werkzeug
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "SESSION_SECRET is unset" in err


def test_worker_serves_its_metrics_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/wm.db"
    eng = make_engine(url)
    init_db(eng)
    eng.dispose()
    port = _free_port()
    env = {**os.environ, "COSTCTL_WORKER__METRICS_PORT": str(port)}
    proc = subprocess.Popen(
        [*COSTCTL, "--database-url", url, "worker", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        r = _wait_ready(f"http://127.0.0.1:{port}/metrics", proc)
        assert r.status_code == 200
        assert "costctl_rollups_with_unpriced_time_total 0.0" in r.text
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
