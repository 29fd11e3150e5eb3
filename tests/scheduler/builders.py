"""Fluent builders for planner tests: make_gpu("a100").mig("3g", "2g").on("node-a")."""

from __future__ import annotations

from dataclasses import dataclass, replace

from scheduler import mig
from scheduler.model import GpuSnapshot, Isolation, LatencyClass, Workload

TYPES = {
    "a100": "A100-80GB",
    "a100-40": "A100-40GB",
    "h100": "H100-80GB",
    "h200": "H200-141GB",
    "a30": "A30",
    "t4": "T4",
}
PRICES = {
    "A100-80GB": 5.12,
    "A100-40GB": 3.67,
    "H100-80GB": 9.80,
    "H200-141GB": 11.06,
    "A30": 1.90,
    "T4": 0.53,
}


@dataclass(frozen=True)
class GpuBuilder:
    """Builds a GpuSnapshot."""

    snap: GpuSnapshot

    def on(self, node: str, index: int = 0) -> GpuBuilder:
        return GpuBuilder(replace(self.snap, node=node, index=index, uuid=f"GPU-{node}-{index}"))

    def mig(self, *profiles: str) -> GpuBuilder:
        family = "a30" if self.snap.gpu_type == "A30" else "a100"
        return GpuBuilder(replace(self.snap, mig_layout=mig.place(family, profiles)))

    def price(self, usd: float) -> GpuBuilder:
        return GpuBuilder(replace(self.snap, usd_per_hour=usd))

    def build(self) -> GpuSnapshot:
        return self.snap


def make_gpu(kind: str) -> GpuBuilder:
    t = TYPES[kind]
    return GpuBuilder(GpuSnapshot(f"GPU-{kind}", "node-a", 0, t, "on-demand", PRICES[t]))


def fleet(*specs: tuple[str, str, int]) -> tuple[GpuSnapshot, ...]:
    """(kind, node, count) -> GPUs indexed per node."""
    return tuple(make_gpu(k).on(n, i).build() for k, n, c in specs for i in range(c))


def workload(
    model: str,
    mem: float,
    compute: float,
    replicas: int = 1,
    iso: str = "shared",
    latency: str = "interactive",
    **kw: object,
) -> Workload:
    return Workload(model, mem, compute, replicas, Isolation(iso), LatencyClass(latency), **kw)  # type: ignore[arg-type]
