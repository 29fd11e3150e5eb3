"""A fixture dcgm-exporter: GPUs, MIG instances and pods, served as dcgm-exporter serves them.

The text is dcgm-exporter's exposition format: per metric ``# HELP``/``# TYPE``, then one line
per device with ``gpu``, ``UUID``, ``pci_bus_id``, ``device``, ``modelName``, for a MIG instance
``GPU_I_PROFILE`` and ``GPU_I_ID`` (and the PARENT GPU's UUID: dcgm-exporter exports no MIG
UUID), ``Hostname``, then the kubelet pod-resources labels ``container``, ``namespace``, ``pod``
(sorted, as Go's template ranges over the map) and ``DCGM_FI_DRIVER_VERSION``. A MIG GPU has
instance series only (the exporter's default "flex" device mode); GPU_UTIL is not exported
for instances, POWER_USAGE carries the parent's reading on each instance.

``Scenario`` is mutable (``hold``/``util``) so a test can move pods between devices while a
real Prometheus scrapes ``serve(...)``; ``openmetrics(frames)`` renders timestamped history
for ``promtool tsdb create-blocks-from openmetrics``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HELP = {
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics engine is active.",
}


@dataclass(frozen=True)
class Pod:
    """A container holding a device (what dcgm-exporter reads from the kubelet)."""

    namespace: str
    pod: str
    container: str = "main"


@dataclass
class Device:
    """A whole GPU's or a MIG instance's readings and holders."""

    util: float = 0.5  # GR_ENGINE_ACTIVE ratio 0..1
    fb_used: float = 1024.0
    fb_total: float = 81920.0
    holders: list[Pod] = field(default_factory=list)


@dataclass
class Gpu:
    """A physical GPU: whole (``whole``) or in MIG mode (``instances`` by GPU_I_ID)."""

    index: int
    uuid: str
    model_name: str
    power_w: float = 150.0
    whole: Device | None = None
    instances: dict[int, tuple[str, Device]] = field(default_factory=dict)


@dataclass
class Scenario:
    """A node's GPUs as dcgm-exporter would see them at one moment."""

    gpus: list[Gpu] = field(default_factory=list)
    hostname: str = "node-a"
    driver: str = "550.54.15"

    def device(self, uuid: str, gi: int | None = None) -> Device:
        """The whole GPU ``uuid`` or its MIG instance ``gi``."""
        gpu = next(g for g in self.gpus if g.uuid == uuid)
        dev = gpu.whole if gi is None else gpu.instances[gi][1]
        assert dev is not None, f"{uuid} has no whole-GPU device (MIG mode)"
        return dev

    def hold(self, uuid: str, gi: int | None, *pods: Pod) -> None:
        """Make ``pods`` the holders of a device (none: idle)."""
        self.device(uuid, gi).holders = list(pods)

    def snapshot(self) -> Scenario:
        """A deep copy (a frame of history)."""
        return copy.deepcopy(self)


def _labels(s: Scenario, g: Gpu, mig: tuple[int, str] | None, pod: Pod | None) -> str:
    parts = [
        f'gpu="{g.index}"',
        f'UUID="{g.uuid}"',
        f'pci_bus_id="00000000:{0x10 + g.index:02X}:00.0"',
        f'device="nvidia{g.index}"',
        f'modelName="{g.model_name}"',
    ]
    if mig is not None:
        parts += [f'GPU_I_PROFILE="{mig[1]}"', f'GPU_I_ID="{mig[0]}"']
    parts.append(f'Hostname="{s.hostname}"')
    if pod is not None:
        parts += [
            f'container="{pod.container}"',
            f'namespace="{pod.namespace}"',
            f'pod="{pod.pod}"',
        ]
    parts.append(f'DCGM_FI_DRIVER_VERSION="{s.driver}"')
    return ",".join(parts)


def _value(metric: str, g: Gpu, dev: Device, whole: bool) -> float | None:
    if metric == "DCGM_FI_DEV_GPU_UTIL":
        return round(dev.util * 100) if whole else None
    if metric == "DCGM_FI_DEV_FB_USED":
        return round(dev.fb_used)
    if metric == "DCGM_FI_DEV_FB_FREE":
        return round(dev.fb_total - dev.fb_used)
    if metric == "DCGM_FI_DEV_POWER_USAGE":
        return g.power_w
    return dev.util


def lines(s: Scenario, metric: str) -> list[str]:
    """``name{labels} value`` lines of one metric (one per device and holder)."""
    out = []
    for g in s.gpus:
        devices: list[tuple[tuple[int, str] | None, Device]] = (
            [(None, g.whole)] if g.whole is not None else []
        )
        devices += [((gi, prof), dev) for gi, (prof, dev) in sorted(g.instances.items())]
        for mig, dev in devices:
            v = _value(metric, g, dev, mig is None)
            if v is None:
                continue
            text = f"{v:f}" if isinstance(v, float) else str(v)
            for pod in dev.holders or [None]:
                out.append(f"{metric}{{{_labels(s, g, mig, pod)}}} {text}")
    return out


def render(s: Scenario) -> str:
    """The /metrics text of one scrape."""
    out = []
    for metric, text in HELP.items():
        out += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge", *lines(s, metric)]
    return "\n".join(out) + "\n"


def openmetrics(frames: Iterable[tuple[float, Scenario]]) -> str:
    """Timestamped OpenMetrics text of (unix seconds, scenario) frames, families contiguous."""
    frames = list(frames)
    out = []
    for metric, text in HELP.items():
        out += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge"]
        for ts, s in frames:
            out += [f"{line} {ts:.3f}" for line in lines(s, metric)]
    return "\n".join([*out, "# EOF"]) + "\n"


@dataclass
class Exporter:
    """A running fixture exporter: its URL target and a log of what each scrape saw."""

    target: str
    scenario: Scenario
    lock: threading.Lock
    scrapes: list[tuple[float, Scenario]] = field(default_factory=list)

    @contextmanager
    def change(self) -> Iterator[Scenario]:
        """Mutate the scenario between scrapes (under the exporter's lock)."""
        with self.lock:
            yield self.scenario


@contextmanager
def serve(scenario: Scenario) -> Iterator[Exporter]:
    """Serve ``scenario`` at http://127.0.0.1:<free port>/metrics until the block ends."""
    lock = threading.Lock()
    exporter = Exporter("", scenario, lock)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            with lock:
                body = render(scenario).encode()
                exporter.scrapes.append((time.time(), scenario.snapshot()))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    exporter.target = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield exporter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
