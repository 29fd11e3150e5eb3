"""Wire the NVIDIA GPU Operator to costctl's ConfigMaps (ClusterPolicy, nvidia.com/v1).

The operator's MIG manager reads only the ConfigMap named in
``ClusterPolicy.spec.migManager.config.name`` (stock: ``default-mig-parted-config``, key
``config.yaml``), and its device plugin only the one in ``spec.devicePlugin.config.name``
(stock: empty, no sharing) with the default key ``spec.devicePlugin.config.default``.

Choice: costctl points the ClusterPolicy at **its own** ConfigMaps (server-side apply of those
two ``name`` fields, and of ``devicePlugin.config.default`` when the operator has none), and
copies into them the entries of the ConfigMaps the ClusterPolicy named before (the operator's
``all-disabled``, ``all-1g.10gb``, ``all-balanced``, ... or a site's own configs), so a node
labelled with one of those keeps working. costctl's own entries win on a name clash. The
operator's ConfigMaps are only read, never written (the operator reconciles its default one).
A Helm upgrade of the operator resets the ClusterPolicy to its chart values: set
``migManager.config.name`` / ``devicePlugin.config.name`` in the chart values to keep it.

Pure functions here; the reads and writes are in planapply.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

OPERATOR_DEFAULT_MIG = "default-mig-parted-config"
NO_SHARING_KEY = "costctl-none"
COPIED_FROM = "costctl.io/copied-from"


@dataclass(frozen=True)
class OperatorWiring:
    """What the ClusterPolicy names today."""

    policy: str
    mig_configmap: str
    dp_configmap: str
    dp_default: str


def wiring_of(policy: dict[str, Any]) -> OperatorWiring:
    """The ConfigMap names a ClusterPolicy (as a dict) points at."""
    spec = policy.get("spec") or {}
    mig = ((spec.get("migManager") or {}).get("config") or {}).get("name") or OPERATOR_DEFAULT_MIG
    dp = (spec.get("devicePlugin") or {}).get("config") or {}
    return OperatorWiring(
        str(policy["metadata"]["name"]),
        str(mig),
        str(dp.get("name") or ""),
        str(dp.get("default") or ""),
    )


def sources(
    w: OperatorWiring, ours: tuple[str, str], copied_from: tuple[str | None, str | None]
) -> tuple[str, str]:
    """The ConfigMaps whose entries costctl copies: (mig-parted, device plugin) ("" = none).

    What the ClusterPolicy names, unless that is costctl's own ConfigMap already: then the
    one it was copied from (annotation ``costctl.io/copied-from``), else the operator default.
    """
    mig = w.mig_configmap if w.mig_configmap != ours[0] else copied_from[0] or OPERATOR_DEFAULT_MIG
    dp = w.dp_configmap if w.dp_configmap != ours[1] else copied_from[1] or ""
    return mig, dp


def merged_mig_config(ours: str, theirs: str | None, keep: dict[str, Any]) -> str:
    """costctl's mig-parted ``config.yaml`` with the named ConfigMap's configs and ``keep``.

    ``keep``: configs of costctl's current ConfigMap that nodes are labelled with now (a node
    that is rolled back still finds its config).
    """
    doc = yaml.safe_load(ours) or {}
    base = (yaml.safe_load(theirs or "") or {}).get("mig-configs") or {}
    configs = {**base, **keep, **(doc.get("mig-configs") or {})}
    return yaml.safe_dump({"version": "v1", "mig-configs": configs}, sort_keys=False)


def merged_device_plugin(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, str]:
    """costctl's device-plugin configs plus the ones the ClusterPolicy named before."""
    out = {**theirs, **ours}
    out.setdefault(
        NO_SHARING_KEY,
        yaml.safe_dump({"version": "v1", "flags": {"migStrategy": "mixed"}}, sort_keys=False),
    )
    return dict(sorted(out.items()))


def policy_patch(w: OperatorWiring, mig_configmap: str, dp_configmap: str | None) -> dict[str, Any]:
    """The apply configuration costctl owns in the ClusterPolicy (dp_configmap None: the MIG
    manager's only, as the DRA target needs)."""
    spec: dict[str, Any] = {"migManager": {"config": {"name": mig_configmap}}}
    if dp_configmap is not None:
        dp: dict[str, Any] = {"name": dp_configmap}
        if w.dp_default in ("", NO_SHARING_KEY):  # the operator had none: costctl's, kept
            dp["default"] = NO_SHARING_KEY
        spec["devicePlugin"] = {"config": dp}
    return {
        "apiVersion": "nvidia.com/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": w.policy},
        "spec": spec,
    }
