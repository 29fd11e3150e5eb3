"""`costctl plan|apply|sample|bench pack` and the dashboard's pure views."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from billing.db import make_engine
from billing.models import Allocation, table_of
from costctl.bench.common import ALIBABA
from costctl.cli import app
from costctl.commands import scheduling
from scheduler.kube import KubeApplier
from scheduler.model import Snapshot
from scheduler.views import packing_view, what_if
from tests.scheduler.builders import fleet, workload
from tests.utils.kube_server import KubeServer

runner = CliRunner()
SPEC = """
nodes:
  - {name: gpu-node-a, gpu_type: A100-80GB, gpus: 2}
  - {name: gpu-node-b, gpu_type: H100-80GB, gpus: 2, mig: [[3g, 2g, 2g], null]}
workloads:
  - {model: llama-3-8b, mem_mib: 19000, compute: 0.25, replicas: 2}
  - {model: mistral-7b, mem_mib: 9000, compute: 0.14, replicas: 2, isolation: strict}
"""


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{tmp_path}/cli.db"]


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(SPEC)
    return p


def test_plan_from_a_spec(db: list[str], spec: Path) -> None:
    r = runner.invoke(app, [*db, "plan", "--spec", str(spec), "-o", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["gpus_used"] == 1 and d["one_per_gpu"]["gpus"] == 4
    assert d["usd_per_hour"] == pytest.approx(5.12)  # all four replicas on one A100 via MIG
    assert d["saving_vs_one_per_gpu_usd_per_hour"] == pytest.approx(4 * 5.12 - 5.12)
    r = runner.invoke(app, [*db, "plan", "--spec", str(spec)])
    assert r.exit_code == 0 and "one model per GPU: 4 GPUs" in r.output
    r = runner.invoke(app, [*db, "plan", "--spec", str(spec), "-o", "k8s"])
    assert r.exit_code == 0 and "nvidia.com/mig-1g.10gb" in r.output


def test_bad_input_exits_2(db: list[str], spec: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, [*db, "plan", "--spec", str(spec), "-o", "pdf"])
    assert r.exit_code == 2 and "--output" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("compute: 0.25", "compute: -1"))
    r = runner.invoke(app, [*db, "plan", "--spec", str(bad)])
    assert r.exit_code == 2 and "workloads.0.compute" in r.output
    bad.write_text(SPEC.replace("A100-80GB", "B300"))
    r = runner.invoke(app, [*db, "plan", "--spec", str(bad)])
    assert r.exit_code == 2 and "unknown GPU type" in r.output
    r = runner.invoke(app, [*db, "plan"])
    assert r.exit_code == 2 and "no GPU samples" in r.output


def test_sample_then_plan_from_the_store(db: list[str]) -> None:
    r = runner.invoke(app, [*db, "sample", "--rounds", "2"])
    assert r.exit_code == 0 and "28 sample row(s) stored" in r.output
    r = runner.invoke(app, [*db, "plan", "-o", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    placed = {s["model"] for g in d["gpus"] for s in g["slots"]}
    unplaced = {u["model"] for u in d["unplaced"]}
    assert placed | unplaced == {"llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b"}
    # equal MPS shares (the device plugin's): 73.5 GB and 50.4 GB replicas need more than
    # half an 80 GB GPU, so they take whole GPUs (3 of the 4); 2 x 21 GB + 2 x 16.8 GB do not
    # fit the last one (MIG 3g+3g+2g+2g > 7 slices; 4 equal MPS shares of 20 GB < 21 GB)
    assert unplaced == {"mistral-7b"}
    assert all(u["reasons"] for u in d["unplaced"])


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeServer]:
    with KubeServer() as k:
        for n in ("gpu-node-a", "gpu-node-b"):
            k.state.add_node(n)
        for m in ("llama-3-8b", "mistral-7b"):
            k.state.add_deployment("default", m, model=m)

        def factory(settings: Any) -> KubeApplier:
            return KubeApplier(
                k.api_client(), settings.scheduler.kube_namespace, sleep=lambda s: None
            )

        monkeypatch.setattr(scheduling, "APPLIER_FACTORY", factory)
        yield k


def test_apply_dry_run_then_apply(db: list[str], spec: Path, kube: KubeServer) -> None:
    r = runner.invoke(app, [*db, "apply", "--spec", str(spec), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "Node/gpu-node-a labels.nvidia.com/mig.config" in r.output and "dry run" in r.output
    assert ("gpu-operator", "costctl-mig-parted") not in kube.state.configmaps
    r = runner.invoke(app, [*db, "apply", "--spec", str(spec)])
    assert r.exit_code == 0 and "applied=True" in r.output
    assert kube.state.nodes["gpu-node-a"]["metadata"]["labels"]["nvidia.com/mig.config.state"] == (
        "success"
    )
    # what was applied is recorded as planned allocations, one per placed replica
    recorded = int(r.output.split("recorded ")[1].split()[0])
    engine = make_engine(db[1])
    with engine.connect() as c:
        rows = c.execute(select(table_of(Allocation))).mappings().all()
    engine.dispose()
    assert recorded > 0 and len(rows) == recorded
    assert {(a["source"], a["end"]) for a in rows} == {("planned", None)}
    assert all(a["observer"].startswith("apply/plan-") for a in rows)
    kube.state.mig_outcome["gpu-node-a"] = "failed"
    kube.state.nodes["gpu-node-a"]["metadata"]["labels"]["nvidia.com/mig.config"] = "other"
    r = runner.invoke(app, [*db, "apply", "--spec", str(spec)])
    assert r.exit_code == 1 and "rolled back" in r.output


PODS = ALIBABA / "openb_pod_list_default.csv"


@pytest.mark.skipif(not PODS.exists(), reason=f"shared data missing: {PODS}")
def test_bench_pack_on_a_slice_of_the_trace(tmp_path: Path) -> None:
    pods = tmp_path / "pods.csv"
    pd.read_csv(PODS).head(600).to_csv(pods, index=False)
    nodes = ALIBABA / "openb_node_list_gpu_node.csv"
    r = runner.invoke(app, ["bench", "pack", "--pods", str(pods), "--nodes", str(nodes), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in (
        "pods",
        "placed",
        "gpus_used",
        "lower_bound",
        "gpu_share_demand",
        "gpu_share_placed",
        "mean_allocated_sm",
        "seconds",
    ):
        assert key in d
    assert set(d["baseline_gpus"]) == {"first_fit", "best_fit", "ffd", "fgd"}
    assert 0 < d["placed"] <= d["pods"] and d["gpus_used"] <= d["fleet_gpus"]
    assert 0 < d["gpu_share_placed"] <= d["gpu_share_demand"]
    for k, share in d["baseline_gpu_share_placed"].items():
        assert 0 < share <= d["gpu_share_demand"] and d["baseline_gpus"][k] <= d["fleet_gpus"]
    r = runner.invoke(app, ["bench", "pack", "--pods", str(tmp_path / "no.csv"), "--json"])
    assert r.exit_code == 2 and "no such file" in r.output


def _demand() -> Snapshot:
    return Snapshot(
        fleet(("a100", "n1", 2), ("h100", "n2", 2)),
        (workload("a", 9000, 0.14, 2, iso="strict"), workload("b", 19000, 0.25, 2)),
    )


def test_packing_view_rows_and_savings() -> None:
    v = packing_view(_demand())
    assert v.saving_vs_one_per_gpu_usd_per_hour == pytest.approx(
        v.one_per_gpu_usd_per_hour - v.usd_per_hour
    )
    assert v.one_per_gpu_usd_per_hour == pytest.approx(4 * 5.12)
    (row,) = v.rows
    assert row["gpu_type"] == "A100-80GB" and len(row["slots"]) == 4
    assert sum(s["usd_per_hour"] for s in row["slots"]) <= row["usd_per_hour"] + 1e-9


def test_what_if_packs_more_demand_on_fewer_gpus_than_one_per_gpu() -> None:
    rows = what_if(_demand(), (3, 10))
    assert [r.multiplier for r in rows] == [3, 10]
    for r in rows:
        assert r.unplaced == 0
        assert r.naive_gpus == 4 * r.multiplier
        assert r.packed_gpus * 3 <= r.naive_gpus  # ≥ 3x fewer GPUs for this demand
        assert r.packed_usd_per_hour < r.naive_usd_per_hour
