"""Settings of the node agent (``costctl agent``): the ``agent`` section of costctl's Settings.

Environment: COSTCTL_AGENT__API_URL, COSTCTL_AGENT__API_KEY (an ingest key),
COSTCTL_AGENT__NODE_NAME (the downward API's spec.nodeName), ... (one per field below).
The agent never needs database credentials.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from scheduler.podmap import MODEL_LABEL

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
DEFAULT_SPOOL = Path("/var/lib/costctl/agent-spool")


class AgentConfig(BaseModel):
    """What the node agent reads, measures and where it ships."""

    api_url: str = Field(default="http://127.0.0.1:8000", description="costctl API base URL")
    api_key: SecretStr | None = Field(default=None, description="an API key with role ingest")
    node_name: str = Field(default="", description="this node's name (spec.nodeName)")
    pod_resources_socket: str = Field(default=DEFAULT_SOCKET, description="kubelet socket")
    kubelet_timeout_s: float = Field(default=5.0, gt=0, le=120)
    proc_root: Path = Field(default=Path("/proc"), description="the host's /proc (hostPID)")
    spool_dir: Path = Field(default=DEFAULT_SPOOL, description="buffer + state on disk")
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    spool_max_records: int | None = Field(default=None, ge=1)
    interval_s: float = Field(default=10.0, gt=0, le=3600)
    health_host: str = Field(default="0.0.0.0", description="bind address of /healthz")
    health_port: int = Field(default=8081, ge=0, le=65535, description="0 = no /healthz")
    model_label: str = Field(default=MODEL_LABEL, min_length=1)
    pricing_class: str = Field(default="on-demand", min_length=1, max_length=32)
    request_timeout_s: float = Field(default=10.0, gt=0, le=300)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    batch_max_samples: int = Field(default=5000, ge=1, le=100_000)
    batch_max_allocations: int = Field(default=500, ge=1)

    def problems(self) -> list[str]:
        """What is missing to run (empty when the agent can start)."""
        out = []
        if not self.node_name.strip():
            out.append("agent.node_name is empty (set COSTCTL_AGENT__NODE_NAME)")
        if self.api_key is None or not self.api_key.get_secret_value():
            out.append("agent.api_key is empty (set COSTCTL_AGENT__API_KEY to an ingest key)")
        return out

    @property
    def observer(self) -> str:
        """What allocations this agent writes are tagged with: ``agent/<node>``."""
        return f"agent/{self.node_name}"
