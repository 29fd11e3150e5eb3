"""`costctl agent`: settings problems exit 2 with one line; no NVML exits 1 and says why."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from costctl.cli import app
from costctl.settings import Settings

runner = CliRunner()


def test_settings_carry_the_agent_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTCTL_AGENT__NODE_NAME", "gpu-a")
    monkeypatch.setenv("COSTCTL_AGENT__API_KEY", "cc_00000000_secret")
    monkeypatch.setenv("COSTCTL_AGENT__INTERVAL_S", "2.5")
    s = Settings()
    assert s.agent.node_name == "gpu-a" and s.agent.interval_s == 2.5
    assert s.agent.api_key is not None and "secret" not in repr(s.agent)
    assert s.agent.pod_resources_socket == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert s.agent.health_port == 8081 and s.agent.observer == "agent/gpu-a"


def test_missing_node_and_key_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTCTL_AGENT__NODE_NAME", raising=False)
    monkeypatch.delenv("COSTCTL_AGENT__API_KEY", raising=False)
    r = runner.invoke(app, ["agent"])
    assert r.exit_code == 2
    assert "agent.node_name is empty" in r.output and "agent.api_key is empty" in r.output


def test_bad_interval_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTCTL_AGENT__INTERVAL_S", "0")
    r = runner.invoke(app, ["agent"])
    assert r.exit_code == 2 and "agent.interval_s" in r.output


def test_no_nvml_driver_exits_1_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    monkeypatch.setenv("COSTCTL_AGENT__NODE_NAME", "gpu-a")
    monkeypatch.setenv("COSTCTL_AGENT__API_KEY", "cc_00000000_secret")
    r = runner.invoke(app, ["agent"])
    assert r.exit_code == 1 and "NVML:" in r.output and "GPU node" in r.output
