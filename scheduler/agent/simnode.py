"""Simulated node edges for a SimFleet, so the demo runs the REAL agent end to end.

Per node of the fleet: a kubelet PodResources gRPC server on a unix socket (which pod's
container holds which device id: ``GPU-<uuid>``, ``MIG-<uuid>`` under the mixed strategy's
``nvidia.com/mig-<profile>`` resource, ``GPU-<uuid>::<n>`` for MPS / time-slice replicas), a
/proc tree with each simulated process's cgroup file, and a pod lister (``SimPodLister``,
the interface of scheduler.kube.pods) with GPU feature discovery's sharing labels. Only
hardware and cluster are simulated; the agents are built by ``NodeAgent.build`` as on a
real node and post to the API. Nothing here writes allocations.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from pydantic import SecretStr

from scheduler import mig
from scheduler.agent.config import AgentConfig
from scheduler.agent.join import REPLICAS_LABEL, STRATEGY_LABEL
from scheduler.agent.node import NodeAgent, serve_agent
from scheduler.agent.ship import ShipError
from scheduler.model import Mode
from scheduler.nvml_fake import FakeNvml
from scheduler.podmap import MODEL_LABEL, PodInfo, PodLister
from scheduler.podresources.devices import DeviceRef, PodDevices, parse_device_id
from scheduler.podresources.server import MAX_UNIX_PATH, serve_pod_resources
from scheduler.simfleet import SimFleet, SimGpu, SimProcess

log = logging.getLogger(__name__)
SHARED = (Mode.mps, Mode.timeslice)


def _device(g: SimGpu, p: SimProcess, replica: int | None) -> DeviceRef:
    if p.gi_id is not None:
        inst = next(i for i in g.instances if i.gi_id == p.gi_id)
        resource = f"nvidia.com/mig-{mig.profile_name(g.type.name, inst.key)}"
        ref = parse_device_id(inst.uuid, resource)
    else:
        raw = g.uuid if replica is None else f"{g.uuid}::{replica}"
        ref = parse_device_id(raw, "nvidia.com/gpu")
    assert ref is not None
    return ref


def sim_pod_devices(fleet: SimFleet, node: str) -> list[PodDevices]:
    """What the kubelet reports for ``node``: each process's pod container and its device."""
    out = []
    for g in (x for x in fleet.gpus if x.node == node):
        shared = 0
        for p in g.processes:
            replica = None
            if p.mode in SHARED and p.gi_id is None:
                replica, shared = shared, shared + 1
            out.append(PodDevices(p.namespace, p.pod, p.container, (_device(g, p, replica),)))
    return out


def sim_pods(fleet: SimFleet, node: str, model_label: str = MODEL_LABEL) -> list[PodInfo]:
    """The pods of ``node`` as the Kubernetes API would list them (model label set)."""
    return [
        PodInfo(
            p.pod_uid,
            p.namespace,
            p.pod,
            {model_label: p.model, "app.kubernetes.io/name": p.model},
            "ReplicaSet",
            f"{p.model}-5d8f7c",
        )
        for g in fleet.gpus
        if g.node == node
        for p in g.processes
    ]


def sim_node_labels(fleet: SimFleet, node: str) -> dict[str, str]:
    """GPU feature discovery's sharing labels: strategy of the node, replicas per GPU.

    Details: replicas = the most shared processes on one GPU of the node (at least 2).
    """
    shared = [
        [p for p in g.processes if p.mode in SHARED and p.gi_id is None]
        for g in fleet.gpus
        if g.node == node
    ]
    most = max((len(s) for s in shared), default=0)
    if most == 0:
        return {"nvidia.com/gpu.sharing-strategy": "none"}
    modes = {p.mode for s in shared for p in s}
    strategy = "mps" if modes == {Mode.mps} else "time-slicing"
    return {STRATEGY_LABEL: strategy, REPLICAS_LABEL: str(max(2, most))}


@dataclass
class SimPodLister:
    """scheduler.kube.pods' interface over the fleet (PodLister)."""

    fleet: SimFleet
    node: str
    model_label: str = MODEL_LABEL
    before: Callable[[], None] | None = None

    def pods(self) -> list[PodInfo]:
        """The node's pods (the simulated kernel's /proc catches up first)."""
        if self.before is not None:
            self.before()
        return sim_pods(self.fleet, self.node, self.model_label)

    def node_labels(self) -> dict[str, str]:
        """The node's GPU sharing labels."""
        return sim_node_labels(self.fleet, self.node)


@dataclass
class SimNodeEdge:
    """The kubelet socket, /proc tree and pods of one simulated node."""

    fleet: SimFleet
    node: str
    root: Path
    server: grpc.Server | None = None

    @property
    def socket_path(self) -> str:
        """The PodResources unix socket."""
        return str(self.root / "kubelet.sock")

    @property
    def proc_root(self) -> Path:
        """The simulated host /proc."""
        return self.root / "proc"

    def start(self) -> SimNodeEdge:
        """Write /proc and serve PodResources."""
        self.sync_proc()
        self.server = serve_pod_resources(self.socket_path, self.pod_devices)
        return self

    def pod_devices(self) -> list[PodDevices]:
        """The kubelet's answer now."""
        return sim_pod_devices(self.fleet, self.node)

    def sync_proc(self) -> None:
        """/proc/<pid>/cgroup for every process of the node (and the MPS servers)."""
        want: dict[int, str] = {}
        for g in (x for x in self.fleet.gpus if x.node == self.node):
            pids = [p.pid for p in g.processes]
            pids += [g.mps_server_pid] if g.mps_server_pid is not None else []
            want.update({pid: self.fleet.cgroups[pid] for pid in pids if pid in self.fleet.cgroups})
        self.proc_root.mkdir(parents=True, exist_ok=True)
        for d in self.proc_root.iterdir():
            if d.name.isdigit() and int(d.name) not in want:
                shutil.rmtree(d, ignore_errors=True)
        for pid, text in want.items():
            f = self.proc_root / str(pid) / "cgroup"
            if not f.exists() or f.read_text() != text:
                f.parent.mkdir(exist_ok=True)
                f.write_text(text)

    def lister(self, model_label: str = MODEL_LABEL) -> SimPodLister:
        """A pod lister for this node that keeps /proc in step."""
        return SimPodLister(self.fleet, self.node, model_label, self.sync_proc)

    def stop(self) -> None:
        """Stop the gRPC server."""
        if self.server is not None:
            self.server.stop(None)
            self.server = None


@dataclass
class SimNodes:
    """Running simulated nodes and their real agents."""

    edges: list[SimNodeEdge]
    agents: list[NodeAgent]
    workdir: Path
    owns_workdir: bool = False
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def tick(self, now: datetime) -> None:
        """One agent round on every node at ``now``, then ship what each spooled."""
        for a in self.agents:
            for note in a.tick(now):
                log.debug("%s: %s", a.config.node_name, note)
            try:
                a.shipper.drain()
            except ShipError as exc:
                log.info("%s: shipping deferred: %s", a.config.node_name, exc)

    def run(self) -> None:
        """Run every agent's own loop (tick + ship threads) until ``stop``."""
        for a in self.agents:
            t = threading.Thread(
                target=serve_agent, args=(a, self.stop_event), name=f"agent-{a.config.node_name}"
            )
            t.daemon = True
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        """Stop the agents' loops and the kubelet servers; remove a temp workdir."""
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=15)
        for a in self.agents:
            a.shipper.client.close()
        for e in self.edges:
            e.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _short_dir(tmpdir: Path | None) -> tuple[Path, bool]:
    if tmpdir is not None and len(str(tmpdir)) + 40 <= MAX_UNIX_PATH:
        tmpdir.mkdir(parents=True, exist_ok=True)
        return tmpdir, False
    return Path(tempfile.mkdtemp(prefix="costctl-nodes-")), True


def start_sim_nodes(
    fleet: SimFleet,
    api_url: str,
    api_key: str,
    tmpdir: Path | None = None,
    *,
    interval_s: float = 5.0,
    clock: Callable[[], datetime] | None = None,
    pod_listers: dict[str, PodLister] | None = None,
    config: AgentConfig | None = None,
) -> SimNodes:
    """Edges + a real NodeAgent per node of ``fleet``, posting to ``api_url`` with ``api_key``.

    Call ``tick(now)`` from a scheduler (the demo) or ``run()`` for the agents' own loops;
    ``stop()`` always. ``pod_listers`` replaces a node's SimPodLister (e.g. the real
    Kubernetes client on a fake API server). ``tmpdir`` too long for a unix socket: a
    temp dir is used (and removed by ``stop``).
    """
    workdir, owns = _short_dir(tmpdir)
    base = config or AgentConfig()
    edges, agents = [], []
    for node in dict.fromkeys(g.node for g in fleet.gpus):
        edge = SimNodeEdge(fleet, node, workdir / node).start()
        cfg = base.model_copy(
            update={
                "api_url": api_url,
                "api_key": SecretStr(api_key),
                "node_name": node,
                "pod_resources_socket": edge.socket_path,
                "proc_root": edge.proc_root,
                "spool_dir": workdir / node / "spool",
                "interval_s": interval_s,
                "health_port": 0,
                "pricing_class": next(g.pricing_class for g in fleet.gpus if g.node == node),
            }
        )
        nvml = FakeNvml(fleet, node)
        nvml.nvmlInit()
        lister = (pod_listers or {}).get(node) or edge.lister(cfg.model_label)
        agents.append(NodeAgent.build(cfg, nvml=nvml, pod_lister=lister, clock=clock or _utcnow))
        edges.append(edge)
    return SimNodes(edges, agents, workdir, owns)


def _utcnow() -> datetime:
    return datetime.now(UTC)
