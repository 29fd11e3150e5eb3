"""The fixture nodes of the agent tests: MIG, MPS and time-sliced GPUs with known holders.

``gpu-mix`` (3 x H100-80GB, MPS strategy): GPU 0 in MIG 3g+2g+2g (llama-3-8b on the 3g,
mistral-7b on each 2g), GPU 1 shared by MPS (mixtral-8x7b, llama-3-70b: 2 replicas), GPU 2
whole (llama-3-70b). ``gpu-ts`` (1 x A100-80GB, time-slicing): llama-3-8b and mixtral-8x7b
on 2 replicas. Every device is held in full, so all metered cost has an owner. Processes use
different cgroup forms (containerd/CRI-O, systemd/cgroupfs, v1/v2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from scheduler.model import Mode
from scheduler.simfleet import NodeSpec, SimFleet, build_fleet

SPEC = (
    NodeSpec("gpu-mix", "H100-80GB", 3, mig=(("3g", "2g", "2g"), None, None)),
    NodeSpec("gpu-ts", "A100-80GB", 1, pricing_class="spot"),
)
NODE_LABELS = {
    "gpu-mix": {"nvidia.com/gpu.sharing-strategy": "mps", "nvidia.com/gpu.replicas": "2"},
    "gpu-ts": {
        "nvidia.com/gpu.sharing-strategy": "time-slicing",
        "nvidia.com/gpu.replicas": "2",
    },
}
# (model, node, gpu, mode, MIG profile, share, cgroup style); expected (mode, fraction)
PLACEMENT = (
    ("llama-3-8b", "gpu-mix", 0, Mode.mig, "3g", 3 / 7, "containerd-systemd-v2"),
    ("mistral-7b", "gpu-mix", 0, Mode.mig, "2g", 2 / 7, "crio-systemd-v2"),
    ("mistral-7b", "gpu-mix", 0, Mode.mig, "2g", 2 / 7, "containerd-cgroupfs-v1"),
    ("mixtral-8x7b", "gpu-mix", 1, Mode.mps, None, 1 / 2, "containerd-systemd-v2"),
    ("llama-3-70b", "gpu-mix", 1, Mode.mps, None, 1 / 2, "crio-systemd-v2"),
    ("llama-3-70b", "gpu-mix", 2, Mode.gpu, None, 1.0, "containerd-cgroupfs-v1"),
    ("llama-3-8b", "gpu-ts", 0, Mode.timeslice, None, 1 / 2, "crio-systemd-v2"),
    ("mixtral-8x7b", "gpu-ts", 0, Mode.timeslice, None, 1 / 2, "containerd-systemd-v2"),
)
LOAD = {"llama-3-8b": 0.6, "mistral-7b": 0.4, "mixtral-8x7b": 0.5, "llama-3-70b": 0.7}


@dataclass(frozen=True)
class Expected:
    """One holding the fixture says exists."""

    node: str
    device_uuid: str
    gpu_uuid: str
    namespace: str
    pod: str
    pod_uid: str
    model: str
    mode: str
    fraction: float
    pid: int


def fixture_fleet(clock: Callable[[], datetime], seed: int = 0) -> tuple[SimFleet, list[Expected]]:
    """The fleet with its processes placed, and the holdings it must produce."""
    fleet = build_fleet(SPEC, clock=clock, seed=seed)
    out = []
    for model, node, index, mode, key, share, style in PLACEMENT:
        ns = "batch" if model == "mixtral-8x7b" else "serving"
        p = fleet.place(model, node, index, mem_mib=10000, mode=mode, profile=key,
                        share=share, namespace=ns, cgroup_style=style)  # fmt: skip
        g = fleet.gpu(node, index)
        inst = next((i for i in g.instances if i.gi_id == p.gi_id), None)
        device = inst.uuid if inst else g.uuid
        out.append(Expected(node, device, g.uuid, ns, p.pod, p.pod_uid, model, mode.value,
                            share, p.pid))  # fmt: skip
    for model, busy in LOAD.items():
        fleet.set_load(model, busy)
    return fleet, out
