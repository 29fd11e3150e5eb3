"""RBAC as the API server evaluates it, over manifests: a ServiceAccount's permissions from
the Roles, ClusterRoles and bindings, and whether they allow one request (``Access``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.utils.kube_server import Access

Doc = dict[str, Any]


@dataclass(frozen=True)
class Permission:
    """One verb on one resource, cluster-wide (``namespace`` None) or in one namespace."""

    namespace: str | None
    group: str
    resource: str
    verb: str
    names: tuple[str, ...]  # resourceNames; () = any object
    source: str  # "RoleBinding default/costctl-worker -> Role costctl-worker"

    def __str__(self) -> str:
        where = self.namespace or "cluster"
        names = f"[{','.join(self.names)}]" if self.names else ""
        return f"{where}:{self.group or 'core'}/{self.resource}{names}:{self.verb}"


def key(p: Permission) -> tuple[str | None, str, str, str]:
    """(namespace, group, resource, verb) of a permission."""
    return (p.namespace, p.group, p.resource, p.verb)


def _bound(binding: Doc, sa_namespace: str, sa_name: str) -> bool:
    own = binding["metadata"].get("namespace")
    return any(
        s.get("kind") == "ServiceAccount"
        and s.get("name") == sa_name
        and (s.get("namespace") or own) == sa_namespace
        for s in binding.get("subjects") or []
    )


def permissions(docs: Sequence[Doc], sa_namespace: str, sa_name: str) -> list[Permission]:
    """Every permission the bindings in ``docs`` give ``sa_namespace/sa_name``.

    Raises: AssertionError for a binding whose role is not in ``docs``.
    """
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    out: list[Permission] = []
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not _bound(b, sa_namespace, sa_name):
            continue
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        ref = b["roleRef"]
        assert b["kind"] == "RoleBinding" or ref["kind"] == "ClusterRole", b["metadata"]
        key = (ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{b['kind']} {b['metadata']['name']}: no {key}"
        source = f"{b['kind']} {ns or ''}/{b['metadata']['name']} -> {ref['kind']} {ref['name']}"
        for rule in roles[key].get("rules") or []:
            out += [
                Permission(ns, g, r, v, tuple(rule.get("resourceNames") or ()), source)
                for g in rule.get("apiGroups") or []
                for r in rule.get("resources") or []
                for v in rule.get("verbs") or []
            ]
    return sorted(set(out), key=lambda p: (p.namespace or "", str(p)))


def allows(perm: Permission, access: Access) -> bool:
    """True when ``perm`` authorizes ``access`` (RBAC has no wildcards here: tests forbid them).

    Details: a namespaced permission covers requests in its namespace only, so never a
    cluster-scoped object; resourceNames cover requests that name one of them, so never a
    create or a list.
    """
    return (
        perm.group == access.group
        and perm.resource == access.rbac_resource
        and perm.verb == access.verb
        and (perm.namespace is None or perm.namespace == access.namespace)
        and (not perm.names or access.name in perm.names)
    )


def denied(perms: Iterable[Permission], accesses: Iterable[Access]) -> list[Access]:
    """The requests no permission authorizes, in order, without repeats."""
    ps = list(perms)
    out: list[Access] = []
    for a in accesses:
        if a not in out and not any(allows(p, a) for p in ps):
            out.append(a)
    return out
