"""`costctl agent`: the node agent of a GPU node (DaemonSet), shipping to the API."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

import typer

from costctl.context import fail, get_ctx

log = logging.getLogger(__name__)


def agent(
    ctx: typer.Context,
    duration: Annotated[
        float | None, typer.Option(min=0.1, help="exit cleanly after this many seconds")
    ] = None,
) -> None:
    """Run the node agent: NVML + kubelet PodResources + pod labels -> the API (SIGTERM stops).

    Settings: COSTCTL_AGENT__API_URL, COSTCTL_AGENT__API_KEY (role ingest),
    COSTCTL_AGENT__NODE_NAME, COSTCTL_AGENT__POD_RESOURCES_SOCKET, COSTCTL_AGENT__PROC_ROOT,
    COSTCTL_AGENT__SPOOL_DIR, COSTCTL_AGENT__INTERVAL_S, COSTCTL_AGENT__HEALTH_PORT.
    """
    from costctl.serve import stop_on_signals
    from scheduler.agent.node import NodeAgent, serve_agent
    from scheduler.config import SchedulerConfig
    from scheduler.kube.pods import KubePodLister
    from scheduler.nvml import load_nvml

    cfg = get_ctx(ctx).settings.agent
    problems = cfg.problems()
    if problems:
        fail("; ".join(problems))
    nvml = load_nvml(SchedulerConfig(nvml_backend="pynvml"))
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        fail(f"NVML: {exc} (is the agent on a GPU node with the NVIDIA runtime?)", 1)
    try:
        lister = KubePodLister.in_cluster(cfg.node_name)
    except Exception as exc:  # kubernetes.config.ConfigException and file errors
        fail(f"Kubernetes API: {exc}", 1)
    try:
        node_agent = NodeAgent.build(cfg, nvml=nvml, pod_lister=lister)
    except OSError as exc:
        fail(f"spool directory {cfg.spool_dir}: {exc}", 1)
    stop = threading.Event()
    with stop_on_signals(stop):
        log.info("agent for node %s shipping to %s", cfg.node_name, cfg.api_url)
        serve_agent(node_agent, stop, duration=duration)
    nvml.nvmlShutdown()


def register(app: typer.Typer) -> None:
    """Add the agent command."""
    app.command("agent")(agent)
