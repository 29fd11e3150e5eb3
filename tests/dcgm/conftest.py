"""DCGM pull fixtures: one node's fleet as the fixture dcgm-exporter serves it."""

from __future__ import annotations

from tests.utils.dcgm_exporter import Device, Gpu, Pod, Scenario

H100 = "GPU-1b7a3c1e-6f0d-4c2a-9e57-3f5a1c2b9d01"
A100 = "GPU-2c8b4d2f-7a1e-4d3b-8f68-4a6b2d3c0e02"
T4 = "GPU-3d9c5e3a-8b2f-4e4c-9a79-5b7c3e4d1f03"

# (namespace, pod) -> model, as the Kubernetes API's costctl.io/model label would say
MODELS = {
    ("ml", "llama-70b-0"): "llama-3-70b",
    ("ml", "mistral-0"): "mistral-7b",
    ("ml", "llama-8b-0"): "llama-3-8b",
    ("ml", "mixtral-0"): "mixtral-8x7b",
    ("ml", "mixtral-1"): "mixtral-8x7b",
    ("batch", "embed-0"): "mistral-7b",
    ("batch", "embed-1"): "llama-3-8b",
}


def fleet() -> Scenario:
    """An H100 (whole), an A100-80GB in MIG mode (3g + 4g) and a time-sliced T4."""
    return Scenario(
        [
            Gpu(
                0,
                H100,
                "NVIDIA H100 80GB HBM3",
                400.0,
                Device(0.7, 30000, 81559, [Pod("ml", "llama-70b-0")]),
            ),
            Gpu(
                1,
                A100,
                "NVIDIA A100-SXM4-80GB",
                250.0,
                instances={
                    1: ("3g.40gb", Device(0.3, 9000, 40192, [Pod("ml", "llama-8b-0")])),
                    2: ("4g.40gb", Device(0.6, 15000, 40192, [Pod("ml", "mixtral-0")])),
                },
            ),
            Gpu(
                2,
                T4,
                "Tesla T4",
                60.0,
                Device(0.4, 6000, 15360, [Pod("batch", "embed-0"), Pod("batch", "embed-1")]),
            ),
        ]
    )
