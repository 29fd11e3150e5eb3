"""The node agent: every ``interval_s`` read NVML, the kubelet and the pods, spool, ship.

One tick (``NodeAgent.tick(now)``): list this node's pods and labels (the last good listing
is kept on an error), collect NVML readings with processes mapped to pods, append the samples
to the spool, read the kubelet's PodResources, join them into holdings and turn holding
changes into allocations (closes are spooled before the state file is replaced, opens
after it; on start the open ones are spooled again, which the API ignores as unchanged). A
PodResources error changes no holding. A second thread ships the spool (``Shipper``).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scheduler.agent.config import AgentConfig
from scheduler.agent.holdings import (
    Allocation,
    HoldingState,
    HoldingStore,
    diff_holdings,
    key_of,
)
from scheduler.agent.join import Holding, MigInfo, join, model_for
from scheduler.agent.ship import Backoff, ShipError, Shipper
from scheduler.agent.spool import Spool
from scheduler.nvml import Collector, CollectResult
from scheduler.podmap import PodInfo, PodLister, PodRef, PodResolver, proc_cgroup_reader
from scheduler.podresources.client import PodResourcesError, list_pod_devices
from scheduler.podresources.devices import PodDevices

log = logging.getLogger(__name__)
ALLOCATION_FIELDS = (
    "device_uuid", "gpu_uuid", "node", "namespace", "pod", "container", "pod_uid", "model",
    "mode", "profile", "fraction", "start", "end", "source", "observer",
)  # fmt: skip


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def normalize(a: dict[str, Any]) -> Allocation:
    """An allocation from the API as the JSON this agent posts (contract fields only)."""
    out = {k: a.get(k) for k in ALLOCATION_FIELDS}
    out["start"], out["end"] = _iso(out["start"]), _iso(out["end"])
    return out


@dataclass
class AgentStatus:
    """What /healthz reports."""

    started: datetime
    last_tick: datetime | None = None
    ticks: int = 0
    holdings: int = 0
    last_shipped: datetime | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class NodeAgent:
    """The agent of one node, built from its edges (NVML, kubelet, Kubernetes API, HTTP)."""

    config: AgentConfig
    collector: Collector
    list_devices: Callable[[], Sequence[PodDevices]]
    pod_lister: PodLister
    resolver: PodResolver
    spool: Spool
    shipper: Shipper
    store: HoldingStore
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    state: HoldingState = field(default_factory=HoldingState)
    pods: list[PodInfo] = field(default_factory=list)
    node_labels: dict[str, str] = field(default_factory=dict)
    mig: dict[str, MigInfo] = field(default_factory=dict)
    wake: threading.Event = field(default_factory=threading.Event)
    status: AgentStatus | None = None

    @classmethod
    def build(
        cls,
        config: AgentConfig,
        *,
        nvml: Any,
        pod_lister: PodLister,
        list_devices: Callable[[], Sequence[PodDevices]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> NodeAgent:
        """Wire an agent from settings; ``nvml``: pynvml (initialised) or a FakeNvml."""
        resolver = PodResolver(
            proc_cgroup_reader(config.proc_root), lambda: {}, refresh_on_miss=False
        )
        collector = Collector(
            nvml, config.node_name, config.interval_s, config.pricing_class, resolver
        )
        spool = Spool(
            config.spool_dir / "spool",
            max_bytes=config.spool_max_bytes,
            max_records=config.spool_max_records,
        )
        key = config.api_key.get_secret_value() if config.api_key else ""
        shipper = Shipper.create(spool, config.api_url, key, config.request_timeout_s)
        shipper.backoff = Backoff(config.backoff_base_s, config.backoff_max_s)
        shipper.max_items = {
            "samples": config.batch_max_samples,
            "allocations": config.batch_max_allocations,
        }
        devices = list_devices or functools.partial(
            list_pod_devices, config.pod_resources_socket, config.kubelet_timeout_s
        )
        agent = cls(
            config, collector, devices, pod_lister, resolver, spool, shipper,
            HoldingStore(config.spool_dir / "holdings.json"),
        )  # fmt: skip
        if clock is not None:
            agent.clock = clock
        agent.start()
        return agent

    def start(self) -> None:
        """Load the state file; re-spool the open allocations it holds (idempotent)."""
        self.state = self.store.load()
        self.status = AgentStatus(self.clock())
        self.shipper.on_success = self._shipped
        if self.state.adopted and self.state.open:
            self.spool.append("allocations", {"allocations": list(self.state.open.values())})

    def _shipped(self) -> None:
        if self.status is not None:
            self.status.last_shipped = self.clock()

    # -- one tick -------------------------------------------------------------------------------
    def _refresh_pods(self, notes: list[str]) -> None:
        try:
            self.pods = self.pod_lister.pods()
            self.node_labels = self.pod_lister.node_labels()
        except Exception as exc:  # an API error of any kind: keep the last good listing
            notes.append(f"pods: {exc}")
        label = self.config.model_label
        self.resolver.set_pods(
            {p.uid: PodRef(p.uid, p.namespace, p.name, model_for(p, label)) for p in self.pods}
        )

    def _learn_mig(self, r: CollectResult) -> None:
        types = {s.gpu_uuid: s.gpu_type for s in r.samples}
        for i in r.instances:
            self.mig[i.uuid] = MigInfo(i.uuid, i.gpu_uuid, types.get(i.uuid, ""), i.profile)

    def tick(self, now: datetime) -> list[str]:
        """One round at ``now``; returns notes (errors that did not stop the round)."""
        notes: list[str] = []
        self._refresh_pods(notes)
        r = self.collector.collect(now)
        notes += r.faults
        self._learn_mig(r)
        if r.samples or r.processes:
            body = {
                "samples": [s.model_dump(mode="json") for s in r.samples],
                "processes": [p.model_dump(mode="json") for p in r.processes],
            }
            self.spool.append("samples", body)
        try:
            devices = self.list_devices()
        except PodResourcesError as exc:
            notes.append(str(exc))
        else:
            obs = join(
                node=self.config.node_name,
                pod_devices=devices,
                pods=self.pods,
                node_labels=self.node_labels,
                mig_devices=self.mig,
                model_label=self.config.model_label,
            )
            notes += obs.notes
            self._holdings(obs.holdings, now, notes)
        self.wake.set()
        if self.status is not None:
            self.status.last_tick, self.status.ticks = now, self.status.ticks + 1
            self.status.holdings, self.status.notes = len(self.state.open), notes[-10:]
        return notes

    def _adopt(self, now: datetime, observed: Sequence[Holding], notes: list[str]) -> bool:
        try:
            server = self.shipper.open_allocations(self.config.node_name, self.config.observer)
        except ShipError as exc:
            for h in observed:
                self.state.first_seen.setdefault(h.key, now.isoformat())
            self.store.save(self.state)
            notes.append(f"waiting to read this node's open allocations: {exc}")
            return False
        self.state.open = {key_of(a): normalize(a) for a in server}
        self.state.adopted = True
        log.info("adopted %d open allocation(s) of %s", len(server), self.config.observer)
        return True

    def _holdings(self, observed: Sequence[Holding], now: datetime, notes: list[str]) -> None:
        st = self.state
        if not st.adopted and not self._adopt(now, observed, notes):
            return
        first = {k: datetime.fromisoformat(v) for k, v in st.first_seen.items()}
        d = diff_holdings(
            st.open, observed, now=now, observer=self.config.observer, first_seen=first
        )
        if d.closed:
            self.spool.append("allocations", {"allocations": d.closed})
        if d.closed or d.opened or st.first_seen:
            st.open, st.first_seen = d.open, {}
            self.store.save(st)
        if d.opened:
            self.spool.append("allocations", {"allocations": d.opened})

    # -- running ----------------------------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP code, body) for /healthz: 200 while ticks are on time, else 503."""
        st = self.status or AgentStatus(self.clock())
        records, nbytes = self.spool.depth()
        now = self.clock()
        ref = st.last_tick or st.started
        ok = (now - ref).total_seconds() <= 3 * self.config.interval_s + 30
        body = {
            "status": "ok" if ok else "stale",
            "node": self.config.node_name,
            "last_tick": st.last_tick.isoformat() if st.last_tick else None,
            "ticks": st.ticks,
            "open_holdings": st.holdings,
            "spool_records": records,
            "spool_bytes": nbytes,
            "spool_dropped": self.spool.dropped,
            "last_shipped": st.last_shipped.isoformat() if st.last_shipped else None,
            "last_ship_error": self.shipper.last_error,
            "notes": st.notes,
        }
        return (200 if ok else 503), body

    def ship_loop(self, stop: threading.Event) -> None:
        """Drain the spool whenever woken; back off with jitter while the API is down."""
        failures = 0
        while not stop.is_set():
            try:
                self.shipper.drain()
                failures = 0
            except ShipError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("shipping failed (%d in a row): %s", failures, exc)
                stop.wait(self.shipper.backoff.next_delay())
                continue
            self.wake.wait(self.config.interval_s)
            self.wake.clear()

    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval_s`` and ship in a second thread until ``stop`` is set."""
        shipper = threading.Thread(
            target=self.ship_loop, args=(stop,), name="agent-ship", daemon=True
        )
        shipper.start()
        while not stop.is_set():
            try:
                for note in self.tick(self.clock()):
                    log.info("%s: %s", self.config.node_name, note)
            except Exception:
                log.exception("agent tick failed on %s", self.config.node_name)
            stop.wait(self.config.interval_s)
        self.wake.set()
        shipper.join(timeout=self.config.request_timeout_s + 1)


def serve_agent(agent: NodeAgent, stop: threading.Event, *, duration: float | None = None) -> None:
    """Run ``agent`` with its /healthz (``health_port`` 0: none) until ``stop`` or ``duration``."""
    from scheduler.agent.health import start_health_server

    cfg = agent.config
    server = (
        start_health_server(cfg.health_host, cfg.health_port, agent.health)
        if (cfg.health_port)
        else None
    )
    if duration is not None:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        agent.run(stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
