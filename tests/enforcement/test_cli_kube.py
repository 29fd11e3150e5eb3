"""The enforcement CLI and the kill-switch end to end through the scheduler's KubeApplier
against the fake Kubernetes API (tests/utils/kube_server.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from costctl.cli import app
from costctl.commands import enforcement as enforcement_cmd
from costctl.settings import Settings
from scheduler.kube import KubeApplier
from tests.enforcement.conftest import authorize, make_enf_api
from tests.utils.kube_server import KubeServer

runner = CliRunner()


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as k:
        k.state.add_deployment("default", "llama-70b", model="llama-70b", replicas=3)
        k.state.add_deployment("default", "mistral", model="mistral", replicas=1)
        yield k


def _replicas(kube: KubeServer, name: str) -> int:
    return int(kube.state.deployments[("default", name)]["spec"]["replicas"])


@pytest.fixture
def db(tmp_path: Path, kube: KubeServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    def factory(settings: Settings) -> KubeApplier:
        return KubeApplier(kube.api_client(), settings.scheduler.kube_namespace)

    monkeypatch.setattr(enforcement_cmd, "SCALER_FACTORY", factory)
    monkeypatch.delenv("COSTCTL_REDIS_URL", raising=False)
    return ["--database-url", f"sqlite:///{tmp_path}/cli.db"]


def test_cli_kill_scales_to_zero_and_revive_restores(db: list[str], kube: KubeServer) -> None:
    r = runner.invoke(app, [*db, "kill", "model", "llama-70b", "--reason", "runaway loop"])
    assert r.exit_code == 0, r.output
    assert "from 3 to 0 replicas" in r.output
    assert _replicas(kube, "llama-70b") == 0
    assert _replicas(kube, "mistral") == 1
    r = runner.invoke(app, [*db, "kill", "model", "llama-70b", "--reason", "again"])
    assert r.exit_code == 0 and "already killed" in r.output
    r = runner.invoke(app, [*db, "status", "--json"])
    doc = json.loads(r.output)
    assert [(k["scope"], k["target"], k["previous_replicas"]) for k in doc["kill_switches"]] == [
        ("model", "llama-70b", 3)
    ]
    r = runner.invoke(app, [*db, "revive", "model", "llama-70b", "--reason", "fixed"])
    assert r.exit_code == 0, r.output
    assert _replicas(kube, "llama-70b") == 3
    r = runner.invoke(app, [*db, "revive", "model", "llama-70b", "--reason", "fixed"])
    assert r.exit_code == 2 and "is not killed" in r.output


def test_cli_kill_unknown_model_still_kills(db: list[str]) -> None:
    r = runner.invoke(app, [*db, "kill", "model", "ghost", "--reason", "no deployment"])
    assert r.exit_code == 0
    assert "killed model ghost" in r.output and "not scaled" in r.output
    assert "no model 'ghost' was ever seen" in r.output
    r = runner.invoke(app, [*db, "status", "--json"])
    assert [k["target"] for k in json.loads(r.output)["kill_switches"]] == ["ghost"]


def test_cli_budgets_and_bad_input(db: list[str]) -> None:
    r = runner.invoke(
        app,
        [
            *db,
            "budgets",
            "set",
            "acme",
            "--period",
            "monthly",
            "--limit-usd",
            "250",
            "--customer",
            "acme",
            "--action",
            "throttle",
            "--soft",
            "0.9",
        ],
    )
    assert r.exit_code == 0 and "created budget acme" in r.output
    r = runner.invoke(app, [*db, "budgets", "list", "--json"])
    (b,) = json.loads(r.output)
    assert (b["customer"], b["limit_usd"], b["action"], b["soft_ratio"]) == (
        "acme",
        250.0,
        "throttle",
        0.9,
    )
    for args, needle in [
        (["budgets", "set", "x", "--period", "daily"], "limit_usd"),
        (["budgets", "set", "x", "--period", "daily", "--limit-usd", "-5"], "limit_usd"),
        (["budgets", "set", "x", "--period", "yearly", "--limit-usd", "5"], "yearly"),
        (["budgets", "delete", "nope"], "no budget"),
        (["kill", "model", "llama-70b"], "--reason: required (why, kept in the audit log)"),
        (["revive", "model", "llama-70b"], "--reason: required"),
        (["kill", "customer", "--reason", "r"], "target"),
        (["kill", "planet", "x", "--reason", "r"], "planet"),
    ]:
        r = runner.invoke(app, [*db, *args])
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output, (args, r.output)
    r = runner.invoke(app, [*db, "budgets", "delete", "acme"])
    assert r.exit_code == 0


def test_api_kill_through_kube_applier(engine: Engine, kube: KubeServer) -> None:
    scaler = KubeApplier(kube.api_client(), "default")
    api, _ = make_enf_api(engine, scaler=scaler)
    body = {"scope": "model", "target": "llama-70b", "reason": "cost spike"}
    r = api.client.post("/v1/killswitches", json=body, headers=api.h("admin"))
    assert r.status_code == 201 and r.json()["previous_replicas"] == 3
    assert _replicas(kube, "llama-70b") == 0
    assert authorize(api)["reason"] == "killed:model:llama-70b"
    r = api.client.post(
        "/v1/killswitches/model/llama-70b/revive", json={"reason": "ok"}, headers=api.h("admin")
    )
    assert r.status_code == 200
    assert _replicas(kube, "llama-70b") == 3
    assert authorize(api)["allowed"] is True


def test_cli_refuses_to_revoke_the_last_admin_key_or_scope_a_reserved_name(db: list[str]) -> None:
    r = runner.invoke(app, [*db, "keys", "create", "--role", "admin", "--name", "root"])
    assert r.exit_code == 0, r.output
    prefix = r.output.strip().split("_")[1]
    r = runner.invoke(app, [*db, "keys", "revoke", prefix])
    assert r.exit_code == 2 and "last live admin key" in r.output, r.output
    r = runner.invoke(app, [*db, "keys", "create", "--role", "read", "--customer", "__idle__"])
    assert r.exit_code == 2 and "reserved" in r.output, r.output
