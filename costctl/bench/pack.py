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
Fleet: the node list (GPU count and model per node), priced by the price book (on-demand).
The default trace needs more GPUs than the list has (its lower bound exceeds 6,212), so the
list is repeated ("elastic": more nodes of the same shapes) until one pod per GPU would fit;
every packer sees the same fleet. ``fleet_gpus`` is the list's own size.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from billing.config import DEFAULT_PRICE_BOOK
from billing.pricebook import read_price_book
from costctl.bench.common import ALIBABA, emit
from costctl.context import fail
from scheduler.baselines import pack_baseline
from scheduler.catalog import GPU_TYPES
from scheduler.model import GpuSnapshot, Isolation, LatencyClass, Snapshot, Workload
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
    for num_gpu, milli, spec, qos in zip(
        gpu["num_gpu"],
        gpu["gpu_milli"],
        gpu["gpu_spec"].astype(object).fillna(""),
        gpu["qos"],
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
            )
        )
    shapes = Counter(per_pod)
    grouped = [
        Workload(
            f"shape-{i}",
            w.mem_mib,
            w.compute,
            n,
            w.isolation,
            w.latency,
            w.ref_type,
            w.gpus,
            w.gpu_types,
            w.scale_compute,
        )
        for i, (w, n) in enumerate(shapes.items())
    ]
    return grouped, per_pod, int((pods["num_gpu"] == 0).sum())


def fleet(
    nodes: pd.DataFrame, copies: int, prices: dict[tuple[str, str], float]
) -> tuple[GpuSnapshot, ...]:
    """The node list repeated ``copies`` times, one GpuSnapshot per GPU."""
    out = []
    for c in range(copies):
        for sn, n, model in zip(nodes["sn"], nodes["gpu"], nodes["model"], strict=True):
            node = f"{sn}" if c == 0 else f"{sn}#{c}"
            for i in range(int(n)):
                usd = prices.get((str(model), "on-demand"), 0.0)
                out.append(GpuSnapshot(f"{node}/{i}", node, i, str(model), "on-demand", usd))
    return tuple(out)


def run(pods_csv: Path, nodes_csv: Path) -> dict[str, object]:
    """Run the packer and the baselines; the figures of BENCHMARKS.md."""
    pods, nodes = pd.read_csv(pods_csv), pd.read_csv(nodes_csv)
    grouped, per_pod, cpu_only = pod_workloads(pods)
    prices = price_map(read_price_book(DEFAULT_PRICE_BOOK))
    fleet_gpus = int(nodes["gpu"].sum())
    one_per_gpu = sum(w.gpus for w in per_pod)
    copies = max(1, math.ceil(one_per_gpu / max(1, fleet_gpus)))
    snap = Snapshot(fleet(nodes, copies, prices), tuple(grouped))
    t0 = time.perf_counter()
    result = plan(snap, Policy())
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    ff = pack_baseline(snap, per_pod, best=False)
    bf = pack_baseline(snap, per_pod, best=True)
    ffd = pack_baseline(snap, sorted(per_pod, key=replica_order), best=False)
    baseline_s = time.perf_counter() - t1
    placed = len(per_pod) - len(result.unplaced)
    held = [s.share for s in result.slots if s.mode.value != "gpu"]
    shared_gpus = sum(1 for g in result.gpus if g.mode.value != "gpu")
    lb = result.lower_bound.gpus
    return {
        "pods": len(per_pod),
        "cpu_only_pods": cpu_only,
        "placed": placed,
        "gpus_used": result.gpus_used,
        "lower_bound": lb,
        "ratio_to_lower_bound": round(result.gpus_used / lb, 4) if lb else None,
        "first_fit_gpus": ff.gpus_used,
        "best_fit_gpus": bf.gpus_used,
        "ffd_gpus": ffd.gpus_used,
        "one_per_gpu_gpus": one_per_gpu,
        "baseline_placed": {"first_fit": ff.placed, "best_fit": bf.placed, "ffd": ffd.placed},
        "mean_allocated_sm": round(sum(held) / shared_gpus, 4) if shared_gpus else None,
        "usd_per_hour": result.usd_per_hour,
        "lower_bound_usd_per_hour": result.lower_bound.usd_per_hour,
        "first_fit_usd_per_hour": ff.usd_per_hour,
        "best_fit_usd_per_hour": bf.usd_per_hour,
        "fleet_gpus": fleet_gpus,
        "fleet_copies": copies,
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
        """Pack the trace's pods onto its nodes; compare with first/best fit and the bound."""
        for p in (pods, nodes):
            if not p.is_file():
                fail(f"no such file: {p}")
        try:
            result = run(pods, nodes)
        except (KeyError, ValueError, pd.errors.ParserError) as exc:
            fail(f"cannot read the trace: {exc}")
        emit(result, json_out)
