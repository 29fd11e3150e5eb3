"""Pods of deploy/: Pod Security "restricted" for all but the agent, the agent's exceptions
and GPU-node placement, ServiceAccounts and tokens."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.kustomize import Doc, pod_spec
from tests.deploy.manifests import built, env_of, named, pods


def test_agent_runs_on_gpu_nodes_with_nvml_and_the_kubelet_socket() -> None:
    spec = named(built(), "DaemonSet", "costctl-agent")["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["hostPID"] is True and spec["runtimeClassName"] == "nvidia"
    (c,) = spec["containers"]
    env = env_of(c)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["COSTCTL_AGENT__NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["COSTCTL_AGENT__API_URL"] == "http://costctl-api:8000"
    assert env["COSTCTL_AGENT__API_KEY"] == {
        "secretKeyRef": {"name": "costctl", "key": "agent-api-key"}
    }
    assert env["COSTCTL_AGENT__PROC_ROOT"] == "/host/proc"
    assert not any("DATABASE" in k for k in env), "the agent never holds database credentials"
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in c["volumeMounts"]}
    assert {host[n]: mounts[n] for n in host} == {
        "/var/lib/kubelet/pod-resources": ("/var/lib/kubelet/pod-resources", True),
        "/proc": ("/host/proc", True),
        "/var/lib/costctl/agent-spool": (env["COSTCTL_AGENT__SPOOL_DIR"], False),
    }
    sock = Path(env["COSTCTL_AGENT__POD_RESOURCES_SOCKET"])
    assert str(sock.parent) == "/var/lib/kubelet/pod-resources"


def _restricted(workload: Doc, spec: Doc) -> list[str]:
    """Pod Security Standard "restricted" violations of one pod spec."""
    bad = [f"host{x}" for x in ("PID", "Network", "IPC") if spec.get(f"host{x}")]
    bad += [f"hostPath {v['name']}" for v in spec.get("volumes") or [] if "hostPath" in v]
    psc = spec.get("securityContext") or {}
    if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        bad.append("seccompProfile")
    for c in spec["containers"] + (spec.get("initContainers") or []):
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            bad.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{c['name']}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{c['name']}: allowPrivilegeEscalation")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            bad.append(f"{c['name']}: capabilities.drop")
        if sc.get("privileged") or (sc.get("capabilities") or {}).get("add"):
            bad.append(f"{c['name']}: privileged/capabilities.add")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{c['name']}: readOnlyRootFilesystem")
    return bad


def test_every_pod_but_the_agent_is_restricted() -> None:
    found = {w["metadata"]["name"]: _restricted(w, spec) for w, spec in pods(built())}
    assert found.pop("costctl-agent")  # the agent's exceptions are checked below
    assert found == {
        "costctl-db-upgrade": [],
        "costctl-api": [],
        "costctl-worker": [],
        "costctl-dashboard": [],
    }


def test_the_agent_only_has_the_exceptions_it_needs() -> None:
    agent = named(built(), "DaemonSet", "costctl-agent")
    assert sorted(_restricted(agent, pod_spec(agent) or {})) == sorted(
        [
            "hostPID",
            "hostPath pod-resources",
            "hostPath host-proc",
            "hostPath spool",
            "agent: runAsNonRoot",
            "agent: runAsUser 0",
        ]
    )


def test_service_accounts_and_tokens() -> None:
    docs = built()
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    tokens = {}
    for w, spec in pods(docs):
        sa = spec["serviceAccountName"]
        assert sa in sas and sas[sa]["metadata"]["namespace"] == w["metadata"]["namespace"]
        tokens[w["metadata"]["name"]] = spec.get(
            "automountServiceAccountToken", sas[sa].get("automountServiceAccountToken", True)
        )
    assert tokens == {
        "costctl-db-upgrade": False,
        "costctl-api": True,  # the kill-switch scales model Deployments from the API
        "costctl-worker": True,
        "costctl-dashboard": False,
        "costctl-agent": True,
    }
    for name in ("costctl-dashboard", "costctl-migrate"):
        assert sas[name]["automountServiceAccountToken"] is False
    assert sas["costctl-api"]["automountServiceAccountToken"] is True
