"""State-changing CLI commands through the API (--url + key) instead of the database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import uvicorn
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing.apikeys import create_key, list_keys
from billing.enforcement.store import list_budgets, list_kill_switches
from billing.models import ApiRole
from costctl.apiapp import build_api
from costctl.cli import app
from costctl.settings import Settings

runner = CliRunner()


@pytest.fixture
def api_url(engine: Engine) -> Iterator[str]:
    """The real API (uvicorn) over ``engine`` on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            build_api(Settings(), engine, clock=lambda: datetime.now(UTC), listen=False),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


def test_state_changes_go_through_the_api(engine: Engine, api_url: str) -> None:
    admin = create_key(engine, name="ops", role=ApiRole.admin, customer=None, now=datetime.now(UTC))
    # no database URL that could work: everything must go over HTTP
    cli = [
        "--database-url",
        "sqlite:////nonexistent/dir/x.db",
        "--url",
        api_url,
        "--api-key",
        admin,
    ]
    r = runner.invoke(
        app,
        [
            *cli,
            "budgets",
            "set",
            "acme-day",
            "--period",
            "daily",
            "--limit-usd",
            "25",
            "--customer",
            "acme",
        ],
    )
    assert (r.exit_code, r.output.split(" (id")[0]) == (0, "created budget acme-day"), r.output
    assert [(b.name, b.limit_usd) for b in list_budgets(engine)] == [("acme-day", 25.0)]
    r = runner.invoke(app, [*cli, "kill", "customer", "acme", "--reason", "runaway"])
    assert (r.exit_code, r.output.strip()) == (0, "killed customer acme")
    assert [(k.scope, k.target) for k in list_kill_switches(engine)] == [("customer", "acme")]
    r = runner.invoke(app, [*cli, "revive", "customer", "acme", "--reason", "paid"])
    assert (r.exit_code, r.output.strip()) == (0, "revived customer acme")
    assert list_kill_switches(engine) == []
    r = runner.invoke(app, [*cli, "keys", "create", "--role", "read", "--customer", "acme"])
    assert r.exit_code == 0 and r.output.startswith("cc_")
    prefix = r.output.split("_")[1]
    r = runner.invoke(app, [*cli, "keys", "revoke", prefix])
    assert r.exit_code == 0
    assert next(k for k in list_keys(engine) if k.prefix == prefix).revoked_at is not None
    r = runner.invoke(app, [*cli, "budgets", "delete", "acme-day"])
    assert r.exit_code == 0 and list_budgets(engine) == []


def test_api_errors_become_exit_2_naming_the_field(engine: Engine, api_url: str) -> None:
    now = datetime.now(UTC)
    admin = create_key(engine, name="ops", role=ApiRole.admin, customer=None, now=now)
    reader = create_key(engine, name="r", role=ApiRole.read, customer=None, now=now)
    base = ["--url", api_url, "--api-key"]
    r = runner.invoke(app, [*base, admin, "revive", "model", "never-killed", "--reason", "x"])
    assert r.exit_code == 2 and "HTTP 404" in r.output
    r = runner.invoke(app, [*base, reader, "kill", "model", "llama", "--reason", "x"])
    assert r.exit_code == 2 and "HTTP 403" in r.output
    r = runner.invoke(app, [*base, admin, "keys", "revoke", "deadbeef"])
    assert r.exit_code == 2 and "HTTP 404" in r.output
    r = runner.invoke(app, ["--url", "http://127.0.0.1:9", "keys", "revoke", "x"])
    assert r.exit_code == 1 and "unreachable" in r.output
