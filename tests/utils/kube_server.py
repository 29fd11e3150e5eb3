"""A fake Kubernetes API server over HTTP (JSON) for tests: nodes, configmaps, deployments
and their scale subresource, pods, driven by the real kubernetes client.

Behaviours: a simulated GPU-operator MIG manager (changing ``nvidia.com/mig.config`` sets
``nvidia.com/mig.config.state=pending``; the next GET of the node turns it into the outcome
configured in ``state.mig_outcome[node]``: "success" (default), "failed" or "stuck");
``state.fail_next`` holds HTTP codes returned to the next requests (retry tests); every
request is logged in ``state.requests`` as (method, path), and in ``state.access`` as the
RBAC attributes the real API server would authorize (``Access``: verb, API group, resource,
subresource, namespace, name), whatever the fake then answers.

Pods (``state.add_pod``): ``GET /api/v1/pods`` and ``/api/v1/namespaces/<ns>/pods[/<name>]``
with ``labelSelector`` and ``fieldSelector``. Where it differs from a real API server:
fieldSelector knows only equality on ``spec.nodeName``, ``metadata.name``,
``metadata.namespace`` and ``status.phase`` (comma = and; a real server also has ``!=`` and
more fields, and answers 400 to an unknown field, here too); ``resourceVersion``, ``limit``
and ``continue`` are ignored (one page, always current); no watch.

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

from kubernetes import client

from tests.utils.kube_dra import route_resource

MIG_CONFIG = "nvidia.com/mig.config"
MIG_STATE = "nvidia.com/mig.config.state"


def merge(base: Any, patch: Any) -> Any:
    """Strategic-merge approximation: maps merge (None deletes), lists of named maps merge
    by name, other lists are replaced."""
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
            if x["name"] not in by:
                order.append(x["name"])
            by[x["name"]] = merge(by.get(x["name"]), x)
        return [by[n] for n in order]
    return copy.deepcopy(patch)


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
    mig_outcome: dict[str, str] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    access: list[Access] = field(default_factory=list)
    # resource.k8s.io/v1 (tests/utils/kube_dra.py): "resourceclaimtemplates", "resourceclaims"
    resource: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=lambda: {"resourceclaimtemplates": {}, "resourceclaims": {}}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A Ready node."""
        self.nodes[name] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": {},
            "status": {},
        }

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
        self.deployments[(ns, name)] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
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
    reason = {400: "BadRequest", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid"}.get(
        code, "InternalError"
    )
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


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
        return json.loads(self.rfile.read(n) or b"null")

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
            node = st.nodes[name]
            if method == "PATCH":
                before = (node["metadata"].get("labels") or {}).get(MIG_CONFIG)
                st.nodes[name] = node = merge(node, self._body())
                labels = node["metadata"].setdefault("labels", {})
                if labels.get(MIG_CONFIG) != before:
                    labels[MIG_STATE] = "pending"
            elif method == "GET":
                labels = node["metadata"].setdefault("labels", {})
                if labels.get(MIG_STATE) == "pending":
                    outcome = st.mig_outcome.get(name, "success")
                    if outcome != "stuck":
                        labels[MIG_STATE] = outcome
            return 200, node
        if path == "/api/v1/pods" and method == "GET":
            return 200, self._pod_list(None, q)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?", path):
            if m.group(2) is None and method == "GET":
                return 200, self._pod_list(m.group(1), q)
            return self._objects(st.pods, m.group(1), m.group(2), method, q, "Pod")
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/configmaps(?:/([^/]+))?", path):
            return self._objects(st.configmaps, m.group(1), m.group(2), method, q, "ConfigMap")
        if m := re.fullmatch(
            r"/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?(/scale)?", path
        ):
            ns, name, scale = m.groups()
            if scale:
                return self._scale(ns, name, method)
            return self._objects(st.deployments, ns, name, method, q, "Deployment")
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

    def _pod_list(self, ns: str | None, q: dict[str, str]) -> dict[str, Any]:
        items = [
            p
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
                o
                for (n, _), o in sorted(store.items())
                if n == ns and _selected(o, q.get("labelSelector"))
            ]
            return 200, {"apiVersion": "v1", "kind": f"{kind}List", "metadata": {}, "items": items}
        if name is None and method == "POST":
            body = self._body()
            key = (ns, body["metadata"]["name"])
            if key in store:
                return 409, _status(409, f"{kind} {key[1]} exists")
            body["metadata"]["namespace"] = ns
            store[key] = body
            return 201, body
        assert name is not None
        if method == "GET":
            return 200, store[(ns, name)]
        if method == "PATCH":
            store[(ns, name)] = merge(store[(ns, name)], self._body())
            return 200, store[(ns, name)]
        if method == "PUT":
            store[(ns, name)] = self._body()
            return 200, store[(ns, name)]
        if method == "DELETE":
            store.pop((ns, name))
            return 200, _status(200, "deleted")
        return 405, _status(405, method)

    def _scale(self, ns: str, name: str, method: str) -> tuple[int, dict[str, Any]]:
        d = self.state.deployments[(ns, name)]
        if method == "PATCH":
            replicas = int(self._body()["spec"]["replicas"])
            d["spec"]["replicas"] = replicas
            d["status"] = {"replicas": replicas}
        n = d["spec"].get("replicas", 0)
        return 200, {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": n},
            "status": {"replicas": n},
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

    def __init__(self) -> None:
        self.state = KubeState()
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
