"""DCGM through Prometheus: dcgm-exporter series into GPU samples and observed allocations.

``gputypes`` maps dcgm-exporter's ``modelName`` to price-book GPU types, ``convert`` is the pure
conversion of query_range results, ``pull`` the worker-job edge (Prometheus in, store out).
"""
