"""`costctl export weekly` end to end on SQLite, and its exit codes for bad input."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from billing.db import init_db, make_engine
from costctl.cli import app
from tests.dashboard.ledger import CONV, build_ledger

runner = CliRunner()


def test_bad_input_exits_2(tmp_path: Path) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path}/x.db"]
    r = runner.invoke(app, [*db, "export", "weekly", "--week", "2026-47"])
    assert r.exit_code == 2 and "2026-W47" in r.output
    r = runner.invoke(app, [*db, "export", "weekly", "--week", "2026-W47", "--format", "pdf"])
    assert r.exit_code == 2 and "unknown" in r.output
    r = runner.invoke(app, [*db, "demo", "--trace", str(tmp_path / "nope.csv"), "--duration", "1"])
    assert r.exit_code == 2 and "no such file" in r.output
    (tmp_path / "plain").write_text("a file, not a folder")
    out = ["--out", str(tmp_path / "plain" / "sub")]
    r = runner.invoke(app, [*db, "export", "weekly", "--week", "2026-W47", "--format", "csv", *out])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.output.strip().splitlines() == [
        f"error: --out: cannot write to {out[1]}: Not a directory"
    ]


@pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")
def test_export_weekly_writes_every_format(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    engine = make_engine(url)
    init_db(engine)
    build_ledger(engine)
    engine.dispose()
    out = tmp_path / "out"
    args = ["--database-url", url, "export", "weekly", "--week", "2026-W48", "--out", str(out)]
    r = runner.invoke(app, [*args, "--format", "csv", "--format", "xlsx", "--format", "html"])
    assert r.exit_code == 0, r.output
    paths = [Path(p) for p in r.output.split()]
    assert all(p.exists() for p in paths) and len(paths) == 6 + 1 + 1
    summary = pd.read_csv(out / "costctl-weekly-2026-W48-summary.csv")
    assert summary["metered_cost_usd"].iloc[0] == pytest.approx(69.27)
    xl = pd.read_excel(out / "costctl-weekly-2026-W48.xlsx", sheet_name="lines")
    assert xl["x_Requests"].sum() == 19366
