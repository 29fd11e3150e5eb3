"""The Kubernetes edge: the only place that imports ``kubernetes``.

``KubeApplier`` applies plans and scales models (the kill-switch's DeploymentScaler);
``render`` turns a plan into kubernetes client models.
"""

from scheduler.kube.apply import ApplyError, ApplyResult, Change, KubeApplier, NoClusterError
from scheduler.kube.render import Rendered, render, to_dicts

__all__ = [
    "ApplyError",
    "ApplyResult",
    "Change",
    "KubeApplier",
    "NoClusterError",
    "Rendered",
    "render",
    "to_dicts",
]
