"""A fake Kubernetes API server over HTTP (JSON) for tests: nodes, configmaps, deployments
and their scale subresource, pods and their eviction subresource, PodDisruptionBudgets and
the GPU Operator's ClusterPolicy, driven by the real kubernetes client.

Writes: POST (create), PUT (update), PATCH as ``application/apply-patch+yaml`` (server-side
apply: tests/utils/kube_ssa.py; ``fieldManager`` required, ``force``), as
``application/merge-patch+json`` (RFC 7386) or as strategic merge (``merge`` below);
``dryRun=All`` answers the result and stores nothing; an apply that creates the object is
authorized (``state.access``) as patch and create, as a real server does. Every write records
field ownership
(``metadata.managedFields``); a non-apply write's manager is its ``fieldManager`` or
``"python-client"``.

Behaviours (tests/utils/kube_sim.py): a Deployment controller and scheduler (pods bound to
nodes by selector, affinity, cordon and ``status.allocatable``), the GPU Operator's MIG manager
and device plugin reading the ConfigMaps the ClusterPolicy names (``state.add_gpu_operator``;
``state.mig_outcome[node]`` = "failed" or "stuck" forces an outcome), and a timeline of state
changes (``state.timeline``); ``state.fail_next`` holds HTTP codes returned to the next
requests (retry tests); every
request is logged in ``state.requests`` as (method, path), and in ``state.access`` as the
RBAC attributes the real API server would authorize (``Access``: verb, API group, resource,
subresource, namespace, name), whatever the fake then answers.

Pods (``state.add_pod``): ``GET /api/v1/pods`` and ``/api/v1/namespaces/<ns>/pods[/<name>]``
with ``labelSelector`` and ``fieldSelector``. Where it differs from a real API server:
fieldSelector knows only equality on ``spec.nodeName``, ``metadata.name``,
``metadata.namespace`` and ``status.phase`` (comma = and; a real server also has ``!=`` and
more fields, and answers 400 to an unknown field, here too); ``resourceVersion``, ``limit``
and ``continue`` are ignored (one page, always current); no watch; no optimistic concurrency
(``resourceVersion`` is not checked on update); no admission or schema validation.

Usage::

    with KubeServer() as kube:
        kube.state.add_node("gpu-node-a", {"nvidia.com/gpu.product": "A100"})
        kube.state.add_deployment("default", "llama", model="llama", replicas=2)
        api = kube.api_client()
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlparse

import yaml
from kubernetes import client

from tests.utils import kube_sim, kube_ssa
from tests.utils.kube_dra import route_resource, status_body
from tests.utils.kube_sim import Event

DEFAULT_MANAGER = "python-client"


def merge(base: Any, patch: Any) -> Any:
    """Strategic-merge approximation: maps merge (None deletes), lists of named maps merge
    by name (an item ``{"name": n, "$patch": "delete"}`` removes it), other lists are
    replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(base.get(k), v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and patch
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        by = {x["name"]: x for x in base}
        order = [x["name"] for x in base]
        for x in patch:
            if x.get("$patch") == "delete":
                by.pop(x["name"], None)
                continue
            if x["name"] not in by:
                order.append(x["name"])
            by[x["name"]] = merge(by.get(x["name"]), x)
        return [by[n] for n in order if n in by]
    return copy.deepcopy(patch)


def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge (null deletes), everything else is replaced."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class Access(NamedTuple):
    """One request as RBAC sees it: ``verb`` on ``group``/``resource``[/``subresource``]."""

    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def rbac_resource(self) -> str:
        """The resource as RBAC rules spell it ("deployments/scale")."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def access_of(method: str, path: str, query: dict[str, str]) -> Access | None:
    """The RBAC attributes of a resource request (None for /version, /openapi and the like).

    Details: /api/v1/... is the core group "", /apis/<group>/<version>/... a named group;
    namespaces/<ns>/<resource>... is namespaced; GET without a name is list (watch with
    watch=true); DELETE without a name is deletecollection; POST is create.
    """
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    verb = _VERBS.get(method, method.lower())
    if name is None and method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else "list"
    elif name is None and method == "DELETE":
        verb = "deletecollection"
    return Access(verb, group, resource, sub, namespace, name)


@dataclass
class KubeState:
    """The objects the server holds, and its behaviours."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deployments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pdbs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    clusterpolicies: dict[str, dict[str, Any]] = field(default_factory=dict)
    managed: dict[tuple[str, str, str], kube_ssa.Managed] = field(default_factory=dict)
    timeline: list[Event] = field(default_factory=list)
    node_gpus: dict[str, int] = field(default_factory=dict)
    node_mig: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    operator_namespace: str = "gpu-operator"
    seq: int = 0
    mig_outcome: dict[str, str] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    access: list[Access] = field(default_factory=list)
    # resource.k8s.io/v1 (tests/utils/kube_dra.py): "resourceclaimtemplates", "resourceclaims"
    resource: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=lambda: {"resourceclaimtemplates": {}, "resourceclaims": {}}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_node(
        self, name: str, labels: dict[str, str] | None = None, *, gpus: int | None = None
    ) -> None:
        """A Ready node (with ``gpus``: its device plugin advertises them)."""
        self.nodes[name] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, **dict(labels or {})},
            },
            "spec": {},
            "status": {},
        }
        if gpus is not None:
            self.node_gpus[name] = gpus
            kube_sim.advertise(self, name)

    def add_gpu_operator(
        self, namespace: str = "gpu-operator", name: str = "cluster-policy"
    ) -> None:
        """A stock GPU Operator: its ClusterPolicy and ``default-mig-parted-config``."""
        self.operator_namespace = namespace
        self.clusterpolicies[name] = {
            "apiVersion": "nvidia.com/v1",
            "kind": "ClusterPolicy",
            "metadata": {"name": name},
            "spec": {
                "mig": {"strategy": "mixed"},
                "migManager": {
                    "enabled": True,
                    "config": {"name": kube_sim.OPERATOR_DEFAULT_MIG, "default": "all-disabled"},
                },
                "devicePlugin": {"enabled": True, "config": {"name": "", "default": ""}},
            },
        }
        doc = {"version": "v1", "mig-configs": kube_sim.OPERATOR_MIG_CONFIGS}
        self.configmaps[(namespace, kube_sim.OPERATOR_DEFAULT_MIG)] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": kube_sim.OPERATOR_DEFAULT_MIG, "namespace": namespace},
            "data": {"config.yaml": yaml.safe_dump(doc, sort_keys=False)},
        }

    def add_pdb(self, ns: str, name: str, match_labels: dict[str, str], **budget: int) -> None:
        """A policy/v1 PodDisruptionBudget (``minAvailable=`` or ``maxUnavailable=``)."""
        self.pdbs[(ns, name)] = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": match_labels}, **budget},
        }

    def reconcile(self) -> None:
        """Run the Deployment controller and scheduler now (they also run after each write)."""
        kube_sim.reconcile(self)

    def add_deployment(
        self,
        ns: str,
        name: str,
        *,
        model: str,
        replicas: int = 1,
        container: str = "server",
        image: str = "vllm/vllm-openai:v0.6",
    ) -> None:
        """A Deployment labelled costctl.io/model=<model>."""
        labels = {"app": name, "costctl.io/model": model}
        self.managed[("Deployment", ns, name)] = {
            "kubectl": (
                "Update",
                kube_ssa.fields_of(self._deployment(ns, name, labels, replicas, container, image)),
            )
        }
        self.deployments[(ns, name)] = self._deployment(
            ns, name, labels, replicas, container, image
        )

    @staticmethod
    def _deployment(
        ns: str, name: str, labels: dict[str, str], replicas: int, container: str, image: str
    ) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {
                        "labels": {"app": name, "costctl.io/model": labels["costctl.io/model"]}
                    },
                    "spec": {"containers": [{"name": container, "image": image}]},
                },
            },
            "status": {"replicas": replicas},
        }

    def add_pod(
        self,
        ns: str,
        name: str,
        *,
        node: str,
        uid: str,
        labels: dict[str, str] | None = None,
        owner: tuple[str, str] | None = None,
        containers: tuple[str, ...] = ("server",),
        phase: str = "Running",
    ) -> None:
        """A pod bound to ``node``; ``owner`` = (kind, name) of its controller."""
        meta: dict[str, Any] = {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "labels": dict(labels or {}),
        }
        if owner is not None:
            meta["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner[0],
                    "name": owner[1],
                    "uid": uid[::-1],
                    "controller": True,
                }
            ]
        self.pods[(ns, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": node,
                "containers": [{"name": c, "image": "x"} for c in containers],
            },
            "status": {"phase": phase},
        }


FIELDS = {
    "spec.nodeName": ("spec", "nodeName"),
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "status.phase": ("status", "phase"),
}


def _field_selected(obj: dict[str, Any], selector: str | None) -> bool:
    """Equality-only fieldSelector. Raises: ValueError for an unsupported field or operator."""
    for term in (selector or "").split(","):
        if not term:
            continue
        if "!=" in term or "=" not in term:
            raise ValueError(f"unsupported fieldSelector term {term!r}")
        k, v = term.split("=", 1)
        path = FIELDS.get(k.rstrip("="))
        if path is None:
            raise ValueError(f"field label not supported: {k}")
        if (obj.get(path[0]) or {}).get(path[1]) != v:
            return False
    return True


def _status(code: int, message: str) -> dict[str, Any]:
    reason = {
        400: "BadRequest",
        404: "NotFound",
        409: "Conflict",
        422: "Invalid",
        429: "TooManyRequests",
    }.get(code, "InternalError")
    return status_body(code, reason, message)


def _selected(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj["metadata"].get("labels") or {}
    for term in selector.split(","):
        if "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term not in labels:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    state: KubeState

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) or b"null"
        if self.headers.get("Content-Type", "").startswith("application/apply-patch+yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        st = self.state
        with st.lock:
            st.requests.append((method, url.path))
            if (acc := access_of(method, url.path, query)) is not None:
                st.access.append(acc)
            if st.fail_next:
                code = st.fail_next.pop(0)
                self._send(code, _status(code, "injected failure"))
                return
            try:
                code, body = self._route(method, url.path, query)
            except kube_ssa.Conflict as exc:
                code, body = 409, _status(409, str(exc))
            except KeyError as exc:
                code, body = 404, _status(404, f"not found: {exc}")
            except ValueError as exc:
                code, body = 400, _status(400, str(exc))
        self._send(code, body)

    def _route(self, method: str, path: str, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        st = self.state
        if m := re.fullmatch(r"/api/v1/nodes(?:/([^/]+))?", path):
            name = m.group(1)
            if name is None:
                items = [n for n in st.nodes.values() if _selected(n, q.get("labelSelector"))]
                return 200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}
            if method == "GET":
                kube_sim.mig_manager_step(st, name)
                return 200, self._out("Node", "", st.nodes[name])
            before = copy.deepcopy(st.nodes[name])
            code, body = self._write(st.nodes, "Node", "", name, method, q, key=name)
            if code < 300 and q.get("dryRun") != "All":
                kube_sim.node_changed(st, name, before)
                body = self._out("Node", "", st.nodes[name])
            return code, body
        if m := re.fullmatch(r"/apis/nvidia\.com/v1/clusterpolicies(?:/([^/]+))?", path):
            if m.group(1) is None and method == "GET":
                items = list(st.clusterpolicies.values())
                return 200, {
                    "apiVersion": "nvidia.com/v1",
                    "kind": "ClusterPolicyList",
                    "metadata": {},
                    "items": items,
                }
            return self._write(
                st.clusterpolicies, "ClusterPolicy", "", m.group(1), method, q, key=m.group(1)
            )
        if path == "/api/v1/pods" and method == "GET":
            return 200, self._pod_list(None, q)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction", path):
            return self._evict(m.group(1), m.group(2))
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?", path):
            if m.group(2) is None and method == "GET":
                return 200, self._pod_list(m.group(1), q)
            return self._objects(st.pods, m.group(1), m.group(2), method, q, "Pod")
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/configmaps(?:/([^/]+))?", path):
            return self._objects(st.configmaps, m.group(1), m.group(2), method, q, "ConfigMap")
        if m := re.fullmatch(r"/apis/policy/v1/namespaces/([^/]+)/poddisruptionbudgets", path):
            return self._objects(st.pdbs, m.group(1), None, method, q, "PodDisruptionBudget")
        if m := re.fullmatch(
            r"/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?(/scale)?", path
        ):
            ns, name, scale = m.groups()
            if scale:
                return self._scale(ns, name, method, q)
            code, body = self._objects(st.deployments, ns, name, method, q, "Deployment")
            if method != "GET" and code < 300 and q.get("dryRun") != "All":
                if method == "DELETE":
                    for k in [
                        k
                        for k, p in st.pods.items()
                        if k[0] == ns
                        and any(
                            r.get("name") == name
                            for r in p["metadata"].get("ownerReferences") or []
                        )
                    ]:
                        kube_sim.delete_pod(st, k)
                kube_sim.reconcile(st)
                if name and (ns, name) in st.deployments:
                    body = self._out("Deployment", ns, st.deployments[(ns, name)])
            return code, body
        found = route_resource(
            st.resource,
            method,
            path,
            lambda o: _selected(o, q.get("labelSelector")),
            self._body,
            merge,
        )
        if found is not None:
            return found
        return 404, _status(404, f"no route {path}")

    def _out(self, kind: str, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served: with managedFields."""
        out = copy.deepcopy(obj)
        managed = self.state.managed.get((kind, ns, obj["metadata"]["name"]), {})
        if managed:
            out["metadata"]["managedFields"] = kube_ssa.managed_fields(
                managed, str(obj.get("apiVersion", "v1"))
            )
        for k in ("seq", "hash"):
            out["metadata"].pop(k, None)
        return out

    def _write(
        self,
        store: dict[Any, dict[str, Any]],
        kind: str,
        ns: str,
        name: str | None,
        method: str,
        q: dict[str, str],
        *,
        key: Any,
    ) -> tuple[int, dict[str, Any]]:
        """POST/PUT/PATCH/DELETE of one object, with field ownership and dryRun."""
        st = self.state
        dry = q.get("dryRun") == "All"
        if method == "GET":
            return 200, self._out(kind, ns, store[key])
        if method == "DELETE":
            if not dry:
                store.pop(key)
                st.managed.pop((kind, ns, name or ""), None)
            return 200, _status(200, "deleted")
        body = self._body()
        if method == "POST":
            name = body["metadata"]["name"]
            key = (ns, name)
        mkey = (kind, ns, name or "")
        current = store.get(key)
        managed = st.managed.get(mkey, {})
        ctype = self.headers.get("Content-Type", "")
        if method == "PATCH" and ctype.startswith("application/apply-patch+yaml"):
            manager = q.get("fieldManager")
            if not manager:
                raise ValueError("fieldManager is required for apply requests")
            if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
                raise ValueError("apply configuration must name apiVersion and kind")
            if (body.get("metadata") or {}).get("name") != name:
                raise ValueError("the name in the apply configuration does not match the URL")
            result, managed = kube_ssa.apply(
                current, body, managed, manager, force=q.get("force") in ("true", "1")
            )
            code = 200 if current is not None else 201
            if current is None:  # an apply that creates is authorized as create too
                acc = access_of("PATCH", self.path.split("?")[0], q)
                if acc is not None:
                    st.access.append(acc._replace(verb="create"))
        else:
            if current is None and method != "POST":
                raise KeyError(name)
            if method == "POST" and current is not None:
                return 409, _status(409, f"{kind} {name} exists")
            if method in ("POST", "PUT"):
                result = body
            elif ctype.startswith("application/merge-patch+json"):
                result = merge_patch(current, body)
            else:
                result = merge(current, body)
            managed = kube_ssa.update(
                current, result, managed, q.get("fieldManager") or DEFAULT_MANAGER
            )
            code = 201 if method == "POST" else 200
        result.setdefault("metadata", {})["name"] = name
        if ns:
            result["metadata"]["namespace"] = ns
        if current is not None:
            for k in ("seq", "hash", "uid"):
                if k in current["metadata"]:
                    result["metadata"][k] = current["metadata"][k]
            if "status" in current and "status" not in result:
                result["status"] = current["status"]
        result.setdefault("status", {}) if kind in ("Node", "Deployment") else None
        result["metadata"].pop("managedFields", None)
        if not dry:
            store[key] = result
            st.managed[mkey] = managed
            return code, self._out(kind, ns, result)
        saved = st.managed.get(mkey)
        st.managed[mkey] = managed
        out = self._out(kind, ns, result)
        if saved is None:
            st.managed.pop(mkey, None)
        else:
            st.managed[mkey] = saved
        return code, out

    def _pod_list(self, ns: str | None, q: dict[str, str]) -> dict[str, Any]:
        items = [
            self._out("Pod", n, p)
            for (n, _), p in sorted(self.state.pods.items())
            if (ns is None or n == ns)
            and _selected(p, q.get("labelSelector"))
            and _field_selected(p, q.get("fieldSelector"))
        ]
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def _objects(
        self,
        store: dict[tuple[str, str], dict[str, Any]],
        ns: str,
        name: str | None,
        method: str,
        q: dict[str, str],
        kind: str,
    ) -> tuple[int, dict[str, Any]]:
        if name is None and method == "GET":
            items = [
                self._out(kind, n, o)
                for (n, _), o in sorted(store.items())
                if n == ns and _selected(o, q.get("labelSelector"))
            ]
            return 200, {"apiVersion": "v1", "kind": f"{kind}List", "metadata": {}, "items": items}
        if name is None and method != "POST":
            return 405, _status(405, method)
        return self._write(store, kind, ns, name, method, q, key=(ns, name))

    def _evict(self, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        """policy/v1 Eviction: refused (429) when a PodDisruptionBudget allows no disruption."""
        st = self.state
        pod = st.pods[(ns, name)]
        labels = pod["metadata"].get("labels") or {}
        for pdb in (p for (n, _), p in st.pdbs.items() if n == ns):
            sel = pdb["spec"]["selector"].get("matchLabels") or {}
            if any(labels.get(k) != v for k, v in sel.items()):
                continue
            matching = [
                p
                for (n, _), p in st.pods.items()
                if n == ns
                and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
            ]
            healthy = sum(1 for p in matching if p["spec"].get("nodeName"))
            if "minAvailable" in pdb["spec"]:
                allowed = healthy - int(pdb["spec"]["minAvailable"])
            else:
                allowed = int(pdb["spec"].get("maxUnavailable", 0)) - (len(matching) - healthy)
            if allowed < 1:
                return 429, _status(
                    429,
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                )
        kube_sim.delete_pod(st, (ns, name))
        kube_sim.reconcile(st)
        return 201, _status(201, "evicted")

    def _scale(
        self, ns: str, name: str, method: str, q: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        st = self.state
        d = st.deployments[(ns, name)]
        if method == "PATCH":
            before = copy.deepcopy(d)
            replicas = int(self._body()["spec"]["replicas"])
            d["spec"]["replicas"] = replicas
            key = ("Deployment", ns, name)
            st.managed[key] = kube_ssa.update(
                before, d, st.managed.get(key, {}), q.get("fieldManager") or DEFAULT_MANAGER
            )
            kube_sim.reconcile(st)
        n = d["spec"].get("replicas", 0)
        return 200, {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": n},
            "status": {"replicas": int((d.get("status") or {}).get("replicas", n))},
        }

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class KubeServer:
    """Context manager: a fake API server on 127.0.0.1:<free port> in a thread."""

    def __init__(self, *, gpu_operator: bool = True) -> None:
        self.state = KubeState()
        if gpu_operator:
            self.state.add_gpu_operator()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> KubeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def api_client(self) -> client.ApiClient:
        """A real kubernetes ApiClient pointed at this server."""
        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)
