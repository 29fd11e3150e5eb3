"""The fake API server's ``resource.k8s.io/v1`` part: ResourceClaimTemplates and ResourceClaims.

Routes ``/apis/resource.k8s.io/v1/namespaces/<ns>/{resourceclaimtemplates,resourceclaims}``
[``/<name>``]: list (``labelSelector`` equality/existence), get, create (409 when it exists),
update/patch (merge patch; 422 when ``spec`` would change: the spec of both kinds is
immutable, as on a real server) and delete (answers the deleted object).

Where it differs from a real API server: no allocation (``status`` stays empty, nothing
reads DeviceClasses or ResourceSlices, CEL selectors are not compiled), no
``reservedFor`` / delete-protection finalizer (a claim in use is deleted at once), no
ResourceClaims created from templates for pods, no resourceVersion or watch, and only the
schema checks below (apiVersion/kind, a name, a ``spec``).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from typing import Any

API = "resource.k8s.io/v1"
KINDS = {"resourceclaimtemplates": "ResourceClaimTemplate", "resourceclaims": "ResourceClaim"}
_PATH = re.compile(
    r"/apis/resource\.k8s\.io/v1/namespaces/([^/]+)/(resourceclaimtemplates|resourceclaims)"
    r"(?:/([^/]+))?"
)

Store = dict[tuple[str, str], dict[str, Any]]
Result = tuple[int, dict[str, Any]]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A failure ``Status`` object as the API server sends it."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def route_resource(
    stores: dict[str, Store],
    method: str,
    path: str,
    selected: Callable[[dict[str, Any]], bool],
    body: Callable[[], Any],
    merge: Callable[[Any, Any], Any],
) -> Result | None:
    """Answer a resource.k8s.io/v1 request, or None when ``path`` is not one of its routes."""
    m = _PATH.fullmatch(path)
    if m is None:
        return None
    ns, resource, name = m.groups()
    kind = KINDS[resource]
    store = stores[resource]
    if name is None and method == "GET":
        items = [o for (n, _), o in sorted(store.items()) if n == ns and selected(o)]
        return 200, {"apiVersion": API, "kind": f"{kind}List", "metadata": {}, "items": items}
    if name is None and method == "POST":
        return _create(store, ns, kind, body())
    if name is None:
        return 405, status_body(405, "MethodNotAllowed", method)
    if (ns, name) not in store:
        return 404, status_body(404, "NotFound", f'{resource} "{name}" not found')
    have = store[(ns, name)]
    if method == "GET":
        return 200, have
    if method == "DELETE":
        return 200, store.pop((ns, name))
    if method in ("PUT", "PATCH"):
        new = body() if method == "PUT" else merge(have, body())
        if new.get("spec") != have.get("spec"):
            return 422, status_body(422, "Invalid", f"{kind} {name}: spec: field is immutable")
        new["metadata"] = {**new.get("metadata", {}), "uid": have["metadata"]["uid"]}
        store[(ns, name)] = new
        return 200, new
    return 405, status_body(405, "MethodNotAllowed", method)


def _create(store: Store, ns: str, kind: str, obj: Any) -> Result:
    if not isinstance(obj, dict) or obj.get("apiVersion") != API or obj.get("kind") != kind:
        return 400, status_body(400, "BadRequest", f"expected {API} {kind}")
    name = (obj.get("metadata") or {}).get("name")
    if not name or not isinstance(obj.get("spec"), dict):
        return 422, status_body(422, "Invalid", f"{kind}: metadata.name and spec are required")
    if (ns, name) in store:
        return 409, status_body(409, "AlreadyExists", f'{kind} "{name}" already exists')
    obj = copy.deepcopy(obj)
    obj["metadata"] |= {"namespace": ns, "uid": str(uuid.uuid4())}
    if kind == "ResourceClaim":  # a ResourceClaimTemplate has no status
        obj.setdefault("status", {})
    store[(ns, name)] = obj
    return 201, obj
