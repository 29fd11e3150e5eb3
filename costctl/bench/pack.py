"""`costctl bench pack`: the packer on the Alibaba GPU trace, against baselines in the same run.

Pod -> workload rule (documented in BENCHMARKS.md):
- only pods with num_gpu >= 1 (CPU-only pods are counted, not packed);
- compute: gpu_milli / 1000 of whichever GPU the pod lands on (num_gpu == 1 and
  gpu_milli < 1000); num_gpu > 1 or gpu_milli = 1000 -> that many whole GPUs on one node;
- GPU memory: gpu_milli / 1000 x 16 GiB (the smallest GPU of the trace), i.e. a pod asking
  for x% of a GPU is taken to need x% of a 16 GB card;
- isolation: qos Guaranteed -> strict (MIG or a whole GPU), LS -> shared (MPS),
  BE / Burstable -> best-effort (time-slicing); latency: LS interactive, others batch;
- allowed GPU types: gpu_spec ('|'-separated; empty or absent = any); no qos column (the
  multigpu lists) = LS.
- host: the pod's cpu_milli and memory_mib are its CPU / memory requests.
Fleet: the node list as it is (GPU count and model, allocatable cpu_milli and memory_mib per
node), priced by the price book (on-demand); every packer sees the same fleet and enforces
node CPU and memory. The default list does not fit (it needs 98% of the GPUs, and its CPU /
memory and fragmentation leave less): ``gpu_share_placed`` (Σ GPUs x share of the placed
pods) is what the packers are compared on there; where all pods fit, GPUs used.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from billing.config import DEFAULT_PRICE_BOOK
from billing.pricebook import read_price_book
from costctl.bench.common import ALIBABA, emit
from costctl.context import fail
from scheduler.baselines import pack_baseline, replica_share
from scheduler.catalog import GPU_TYPES
from scheduler.fgd import pack_fgd
from scheduler.model import (
    GpuSnapshot,
    Isolation,
    LatencyClass,
    NodeSnapshot,
    Plan,
    Snapshot,
    Workload,
)
from scheduler.planner import plan, replica_order
from scheduler.policy import Policy
from scheduler.snapshot import price_map

SMALLEST_GPU_MIB = 16384
QOS = {
    "Guaranteed": (Isolation.strict, LatencyClass.interactive),
    "LS": (Isolation.shared, LatencyClass.interactive),
    "BE": (Isolation.best_effort, LatencyClass.batch),
    "Burstable": (Isolation.best_effort, LatencyClass.batch),
}


def pod_workloads(pods: pd.DataFrame) -> tuple[list[Workload], list[Workload], int]:
    """(workloads grouped by identical shape, one workload per pod in trace order, CPU-only).

    Raises: KeyError for a missing column, ValueError for an unknown qos or GPU type.
    """
    gpu = pods[pods["num_gpu"] > 0]
    if "gpu_spec" not in gpu.columns:
        gpu = gpu.assign(gpu_spec="")
    if "qos" not in gpu.columns:  # the multigpu lists have none: treat as latency-sensitive
        gpu = gpu.assign(qos="LS")
    per_pod: list[Workload] = []
    for num_gpu, milli, spec, qos, cpu, mem in zip(
        gpu["num_gpu"],
        gpu["gpu_milli"],
        gpu["gpu_spec"].astype(object).fillna(""),
        gpu["qos"],
        gpu["cpu_milli"],
        gpu["memory_mib"],
        strict=True,
    ):
        if qos not in QOS:
            raise ValueError(f"unknown qos {qos!r}")
        types = tuple(t for t in str(spec).split("|") if t)
        unknown = [t for t in types if t not in GPU_TYPES]
        if unknown:
            raise ValueError(f"unknown GPU type(s) {unknown} in gpu_spec")
        whole = int(num_gpu) > 1 or int(milli) >= 1000
        share = 1.0 if whole else int(milli) / 1000
        iso, lat = QOS[qos]
        per_pod.append(
            Workload(
                model="",
                mem_mib=0.0 if whole else math.ceil(share * SMALLEST_GPU_MIB),
                compute=share,
                isolation=iso,
                latency=lat,
                gpus=int(num_gpu),
                gpu_types=types,
                scale_compute=False,
                cpu_milli=int(cpu),
                host_mem_mib=float(mem),
            )
        )
    shapes = Counter(per_pod)
    grouped = [
        replace(w, model=f"shape-{i}", replicas=n) for i, (w, n) in enumerate(shapes.items())
    ]
    return grouped, per_pod, int((pods["num_gpu"] == 0).sum())


def fleet(
    nodes: pd.DataFrame, prices: dict[tuple[str, str], float]
) -> tuple[tuple[GpuSnapshot, ...], tuple[NodeSnapshot, ...]]:
    """One GpuSnapshot per GPU of the node list, and each node's allocatable CPU / memory."""
    gpus, hosts = [], []
    for sn, n, model, cpu, mem in zip(
        nodes["sn"],
        nodes["gpu"],
        nodes["model"],
        nodes["cpu_milli"],
        nodes["memory_mib"],
        strict=True,
    ):
        node = str(sn)
        hosts.append(NodeSnapshot(node, cpu_milli=int(cpu), mem_mib=float(mem)))
        usd = prices.get((str(model), "on-demand"), 0.0)
        for i in range(int(n)):
            gpus.append(GpuSnapshot(f"{node}/{i}", node, i, str(model), "on-demand", usd))
    return tuple(gpus), tuple(hosts)


def plan_share(result: Plan, grouped: list[Workload], types: list[str]) -> float:
    """Σ GPUs x share of the replicas ``result`` placed."""
    missed = Counter(u.model for u in result.unplaced)
    return round(sum((w.replicas - missed[w.model]) * replica_share(w, types) for w in grouped), 3)


def run(pods_csv: Path, nodes_csv: Path) -> dict[str, object]:
    """Run the packer and the baselines; the figures of BENCHMARKS.md."""
    pods, nodes = pd.read_csv(pods_csv), pd.read_csv(nodes_csv)
    grouped, per_pod, cpu_only = pod_workloads(pods)
    prices = price_map(read_price_book(DEFAULT_PRICE_BOOK))
    gpus, hosts = fleet(nodes, prices)
    snap = Snapshot(gpus, tuple(grouped), hosts)
    types = sorted({g.gpu_type for g in gpus})
    t0 = time.perf_counter()
    result = plan(snap, Policy(mps_shares="per-claim"))
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    runs = {
        "first_fit": pack_baseline(snap, per_pod, best=False),
        "best_fit": pack_baseline(snap, per_pod, best=True),
        "ffd": pack_baseline(snap, sorted(per_pod, key=replica_order), best=False),
        "fgd": pack_fgd(snap, per_pod),
    }
    baseline_s = time.perf_counter() - t1
    placed = len(per_pod) - len(result.unplaced)
    held = [s.share for s in result.slots if s.mode.value != "gpu"]
    shared_gpus = sum(1 for g in result.gpus if g.mode.value != "gpu")
    lb = result.lower_bound.gpus
    demand_share = round(sum(replica_share(w, types) for w in per_pod), 3)
    return {
        "pods": len(per_pod),
        "cpu_only_pods": cpu_only,
        "placed": placed,
        "gpu_share_demand": demand_share,
        "gpu_share_placed": plan_share(result, grouped, types),
        "baseline_gpu_share_placed": {k: r.gpu_share_placed for k, r in runs.items()},
        "baseline_placed": {k: r.placed for k, r in runs.items()},
        "gpus_used": result.gpus_used,
        "lower_bound": lb,
        "ratio_to_lower_bound": round(result.gpus_used / lb, 4) if lb else None,
        "baseline_gpus": {k: r.gpus_used for k, r in runs.items()},
        "mean_allocated_sm": round(sum(held) / shared_gpus, 4) if shared_gpus else None,
        "usd_per_hour": result.usd_per_hour,
        "lower_bound_usd_per_hour": result.lower_bound.usd_per_hour,
        "baseline_usd_per_hour": {k: r.usd_per_hour for k, r in runs.items()},
        "fleet_gpus": len(gpus),
        "fleet_nodes": len(hosts),
        "seconds": round(seconds, 3),
        "baseline_seconds": round(baseline_s, 3),
    }


def register(bench_app: typer.Typer) -> None:
    """Add `bench pack`."""

    @bench_app.command("pack")
    def pack(
        pods: Annotated[Path, typer.Option(help="Alibaba openb pod list CSV")] = ALIBABA
        / "openb_pod_list_default.csv",
        nodes: Annotated[Path, typer.Option(help="Alibaba openb node list CSV")] = ALIBABA
        / "openb_node_list_gpu_node.csv",
        json_out: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
    ) -> None:
        """Pack the trace's pods onto its nodes; compare with first/best fit, FGD and the bound."""
        for p in (pods, nodes):
            if not p.is_file():
                fail(f"no such file: {p}")
        try:
            result = run(pods, nodes)
        except (KeyError, ValueError, pd.errors.ParserError) as exc:
            fail(f"cannot read the trace: {exc}")
        emit(result, json_out)
