"""The node agent (``costctl agent``): observed GPU holdings and samples, shipped to the API.

Edges: NVML (``scheduler.nvml``), the kubelet's PodResources (``scheduler.podresources``),
/proc cgroups (``scheduler.podmap``), the Kubernetes API (``scheduler.kube.pods``) and the
costctl API over HTTP (``ship``). The join of one tick (``join``) and the holdings diff
(``holdings``) are pure. The agent never touches the database.
"""
