"""The metering CLI end to end on SQLite, and its exit codes for bad input."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costctl.cli import app

CONV = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
)
runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{tmp_path}/cli.db"]


def test_bad_input_exits_2_with_a_message(db: list[str], tmp_path: Path) -> None:
    r = runner.invoke(app, [*db, "attribute", "--window", "fortnight"])
    assert r.exit_code == 2 and "unknown window" in r.output
    r = runner.invoke(app, [*db, "replay", "--trace", str(tmp_path / "nope.csv")])
    assert r.exit_code == 2 and "no such file" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = runner.invoke(app, [*db, "replay", "--trace", str(bad), "--no-wait"])
    assert r.exit_code == 2 and "expected columns" in r.output
    r = runner.invoke(app, ["--database-url", "mysql://x", "costs"])
    assert r.exit_code == 2 and "database_url" in r.output
    r = runner.invoke(app, [*db, "keys", "create", "--role", "ingest", "--customer", "acme"])
    assert r.exit_code == 2 and "only read keys" in r.output
    r = runner.invoke(app, [*db, "costs", "-o", "pdf"])
    assert r.exit_code == 2


@pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")
def test_replay_is_idempotent_and_attributes(db: list[str]) -> None:
    assert runner.invoke(app, [*db, "init-db"]).exit_code == 0
    args = [
        *db,
        "replay",
        "--trace",
        str(CONV),
        "--no-wait",
        "--start",
        "2026-11-23T00:00:00Z",
        "--speed",
        "60",
    ]
    first = json.loads(runner.invoke(app, args).output)
    again = json.loads(runner.invoke(app, args).output)
    assert (first["inserted"], again["inserted"], again["duplicates"]) == (19366, 0, 19366)
    # 58 minutes of trace at 60x -> about 58 seconds of timestamps
    assert 55 < first["span_s"] < 60
    r = runner.invoke(
        app, [*db, "attribute", "--window", "2026-11-23T00:00:00Z,2026-11-23T01:00:00Z"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    # no GPU samples in this store: nothing metered, nothing invented, and it says so
    assert out["metered_usd"] == out["ledger_usd"] == 0
    assert "warning: no GPU samples in" in r.stderr
    r = runner.invoke(
        app,
        [
            *db,
            "costs",
            "--window",
            "2026-11-23T00:00:00Z,2026-11-24T00:00:00Z",
            "--group-by",
            "model",
            "-o",
            "json",
        ],
    )
    rows = json.loads(r.output)
    assert sum(x["requests"] for x in rows) == 19366


def test_keys_lifecycle(db: list[str]) -> None:
    key = runner.invoke(app, [*db, "keys", "create", "--role", "read", "--customer", "acme"])
    assert key.exit_code == 0 and key.output.startswith("cc_")
    prefix = key.output.split("_")[1]
    listed = runner.invoke(app, [*db, "keys", "list"]).output
    assert prefix in listed and "acme" in listed and key.output.strip() not in listed
    assert runner.invoke(app, [*db, "keys", "revoke", prefix]).exit_code == 0
    assert runner.invoke(app, [*db, "keys", "revoke", prefix]).exit_code == 2
