"""deploy/: every document parses and validates (kubernetes-validate, strict, 1.34 and the
newest version it knows); CRD kinds, labels, selectors, probes, secrets, the price book."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.kustomize import Doc, load_docs
from tests.deploy.manifests import (
    COMPONENT,
    DEPLOY,
    K8S_VERSIONS,
    LABELS,
    ROOT,
    WORKLOADS,
    all_containers,
    built,
    env_of,
    is_crd_kind,
    named,
    pods,
    resource_files,
    secret_keys_in_readme,
    yaml_files,
)

SECRET_ENV = ("DATABASE_URL", "REDIS_URL", "SECRET", "API_KEY", "ADMIN_KEY", "PASSWORD", "TOKEN")
ENDPOINT_FIELDS = {"port", "targetPort", "path", "interval", "scrapeTimeout", "scheme"}


def _rel(p: Path) -> str:
    return str(p.relative_to(DEPLOY))


@pytest.mark.parametrize("path", yaml_files(), ids=_rel)
def test_every_yaml_document_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path}: no documents"
    for d in docs:
        assert isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str), d


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", resource_files(), ids=_rel)
def test_builtin_kinds_pass_kubernetes_validate_strict(path: Path, version: str) -> None:
    docs = [d for d in load_docs(path) if not is_crd_kind(d)]
    for d in docs:
        kubernetes_validate.validate(d, version, strict=True)


def test_the_versions_are_134_and_the_newest_known() -> None:
    newest = kubernetes_validate.utils.latest_version()
    assert K8S_VERSIONS[0] == "1.34.0" and K8S_VERSIONS[-1] == newest
    assert tuple(map(int, newest.split("."))) >= (1, 34)


def test_strict_validation_catches_a_misspelt_field() -> None:
    doc = copy.deepcopy(named(built(), "Deployment", "costctl-api"))
    kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    c = doc["spec"]["template"]["spec"]["containers"][0]
    c["livenesProbe"] = c.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def check_service_monitor(sm: Doc) -> None:
    """The fields a monitoring.coreos.com/v1 ServiceMonitor needs (no CRD schema offline)."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    assert sm["metadata"]["name"]
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    spec = sm["spec"]
    assert spec["selector"]["matchLabels"], "an empty selector would scrape every Service"
    assert spec["endpoints"]
    for ep in spec["endpoints"]:
        assert set(ep) <= ENDPOINT_FIELDS, set(ep) - ENDPOINT_FIELDS
        assert isinstance(ep.get("port"), str) and ep["path"].startswith("/")


def test_crd_kinds_are_checked_by_hand() -> None:
    docs = [d for p in resource_files() for d in load_docs(p) if is_crd_kind(d)]
    assert [d["kind"] for d in docs] == ["ServiceMonitor"]
    for d in docs:
        check_service_monitor(d)
    broken = copy.deepcopy(docs[0])
    del broken["spec"]["endpoints"][0]["port"]
    with pytest.raises(AssertionError):
        check_service_monitor(broken)


def test_service_monitor_scrapes_the_api_metrics_port() -> None:
    docs = built()
    sm = named(docs, "ServiceMonitor", "costctl-api")
    svc = named(docs, "Service", "costctl-api")
    assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [ep["port"] for ep in sm["spec"]["endpoints"]] == ["http"]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "http" in {p["name"] for p in svc["spec"]["ports"]}


def test_common_labels_and_selectors() -> None:
    for d in built():
        labels = d["metadata"].get("labels") or {}
        assert {k: labels.get(k) for k in LABELS} == dict.fromkeys(LABELS, "costctl"), d["kind"]
        if d["kind"] in WORKLOADS:
            tpl = d["spec"]["template"]["metadata"]["labels"]
            assert tpl[COMPONENT] == labels[COMPONENT]
            assert {k: tpl[k] for k in LABELS} == {k: labels[k] for k in LABELS}
            if d["kind"] != "Job":
                assert d["spec"]["selector"]["matchLabels"].items() <= tpl.items()
                assert COMPONENT in d["spec"]["selector"]["matchLabels"]


def _selects(selector: dict[str, str], docs: list[Doc]) -> list[str]:
    return [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] in WORKLOADS
        and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]


def test_services_pdb_and_hpa_point_at_their_workloads() -> None:
    docs = built()
    assert _selects(named(docs, "Service", "costctl-api")["spec"]["selector"], docs) == [
        "costctl-api"
    ]
    assert _selects(named(docs, "Service", "costctl-dashboard")["spec"]["selector"], docs) == [
        "costctl-dashboard"
    ]
    pdb = named(docs, "PodDisruptionBudget", "costctl-api")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], docs) == ["costctl-api"]
    api = named(docs, "Deployment", "costctl-api")
    assert pdb["spec"]["minAvailable"] < api["spec"]["replicas"]  # one pod may be evicted
    hpa = named(docs, "HorizontalPodAutoscaler", "costctl-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "costctl-api",
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    for svc in ("costctl-api", "costctl-dashboard"):
        ports = {p["targetPort"] for p in named(docs, "Service", svc)["spec"]["ports"]}
        c = named(docs, "Deployment", svc)["spec"]["template"]["spec"]["containers"][0]
        assert ports <= {p["name"] for p in c["ports"]}


def _probe(c: Doc, kind: str) -> tuple[str, Any]:
    get = c[kind]["httpGet"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}.get(get["port"], get["port"])
    return get["path"], port


ROLES = [
    ("Deployment", "costctl-api", ["api", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]),
    ("Deployment", "costctl-worker", ["worker"]),
    ("Deployment", "costctl-dashboard", ["dashboard", "--host", "0.0.0.0", "--port", "8050"]),
    ("DaemonSet", "costctl-agent", ["agent"]),
    ("Job", "costctl-db-upgrade", ["db", "upgrade"]),
]


@pytest.mark.parametrize(("kind", "name", "args"), ROLES, ids=[r[1] for r in ROLES])
def test_roles_run_their_command_with_resources(kind: str, name: str, args: list[str]) -> None:
    d = named(built(), kind, name)
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert c["args"] == args and "command" not in c  # the image's ENTRYPOINT is costctl
    assert c["image"] == "registry.example.com/costctl:0.1.0"
    res = c["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"]
    assert not any(k.startswith("nvidia.com/") for k in {**res["requests"], **res["limits"]})


def test_probes() -> None:
    docs = built()
    api = named(docs, "Deployment", "costctl-api")["spec"]["template"]["spec"]["containers"][0]
    assert _probe(api, "livenessProbe") == ("/healthz", 8000)
    assert _probe(api, "readinessProbe") == ("/readyz", 8000)
    dash = named(docs, "Deployment", "costctl-dashboard")["spec"]["template"]["spec"]
    for kind in ("livenessProbe", "readinessProbe"):
        assert _probe(dash["containers"][0], kind) == ("/healthz", 8050)
    agent = named(docs, "DaemonSet", "costctl-agent")["spec"]["template"]["spec"]
    assert _probe(agent["containers"][0], "livenessProbe") == ("/healthz", 8081)


def test_replicas_and_the_hpa_floor() -> None:
    for docs in (built(DEPLOY / "base"), built()):
        api = named(docs, "Deployment", "costctl-api")
        hpa = named(docs, "HorizontalPodAutoscaler", "costctl-api")
        assert api["spec"]["replicas"] >= 2
        assert hpa["spec"]["minReplicas"] == api["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
        assert named(docs, "Deployment", "costctl-worker")["spec"]["replicas"] == 2
    assert named(built(), "Deployment", "costctl-api")["spec"]["replicas"] == 3


def test_secrets_are_referenced_never_inlined() -> None:
    assert not [d for p in yaml_files() for d in load_docs(p) if d["kind"] == "Secret"]
    text = "\n".join(p.read_text() for p in yaml_files())
    for needle in ("postgresql://", "redis://", "cc_", "password"):
        assert needle not in text.lower(), needle
    refs: dict[str, bool] = {}
    for _, c in all_containers(built()):
        for e in c.get("env") or []:
            if any(e["name"].endswith(s) for s in SECRET_ENV):
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "costctl", e
                refs[ref["key"]] = refs.get(ref["key"], False) or not ref.get("optional", False)
    required = {k for k, req in refs.items() if req}
    assert required == {"database-url", "dashboard-session-secret", "agent-api-key"}
    assert secret_keys_in_readme() >= required
    assert secret_keys_in_readme() <= set(refs)


def test_price_book_configmap_is_the_package_price_book() -> None:
    docs = built()
    cm = named(docs, "ConfigMap", "costctl-price-book")
    assert cm["data"]["price_book.yaml"] == (ROOT / "billing" / "price_book.yaml").read_text()
    assert yaml.safe_load(cm["data"]["price_book.yaml"])["prices"]["H100-80GB"]["on-demand"] > 0
    users = []
    for w, spec in pods(docs):
        for c in spec["containers"]:
            path = env_of(c).get("COSTCTL_BILLING__PRICE_BOOK_PATH")
            if path is None:
                continue
            vols = {
                v["name"]
                for v in spec["volumes"]
                if (v.get("configMap") or {}).get("name") == "costctl-price-book"
            }
            mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in vols]
            assert path in [f"{m}/price_book.yaml" for m in mounts], (w["metadata"]["name"], path)
            users.append(w["metadata"]["name"])
    assert sorted(users) == ["costctl-api", "costctl-dashboard", "costctl-worker"]
