"""dcgm-exporter's ``modelName`` label (the NVML device name) as a price-book GPU type.

Pure data and lookups. The table holds the names NVML reports for the types of
billing/price_book.yaml (catalog names plus the PCIe/SXM variants of the same GPU and memory);
an unknown name passes through unchanged, so an unpriced GPU shows up under its own name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from scheduler import catalog, mig

# NVML device name -> price-book GPU type. The catalog's names first, then the variants.
MODEL_NAMES: dict[str, str] = {
    **{t.nvml_name: t.name for t in catalog.GPU_TYPES.values() if t.nvml_name},
    "NVIDIA A100-PCIE-40GB": "A100-40GB",
    "NVIDIA A100 80GB PCIe": "A100-80GB",
    "NVIDIA H100 PCIe": "H100-80GB",
    "NVIDIA H100 80GB HBM3": "H100-80GB",
    "NVIDIA H200": "H200-141GB",
    "NVIDIA A30": "A30",
    "NVIDIA A10": "A10",
    "Tesla T4": "T4",
    "Tesla P100-PCIE-16GB": "P100",
    "Tesla P100-SXM2-16GB": "P100",
    "Tesla V100-SXM2-16GB": "V100M16",
    "Tesla V100-PCIE-16GB": "V100M16",
    "Tesla V100-SXM2-32GB": "V100M32",
    "Tesla V100-PCIE-32GB": "V100M32",
}

_SLICES = re.compile(r"^(\d+)g\.")


def gpu_type_of(model_name: str, overrides: Mapping[str, str] | None = None) -> str:
    """The price-book type for a ``modelName`` (``overrides`` first; unknown: unchanged)."""
    if overrides and model_name in overrides:
        return overrides[model_name]
    return MODEL_NAMES.get(model_name.strip(), model_name.strip())


def mig_fraction(gpu_type: str, profile: str) -> float | None:
    """Share of the GPU's price a MIG instance of ``profile`` holds (``mig.profile_fraction``)."""
    return mig.profile_fraction(gpu_type, profile)


def memory_mib(gpu_type: str) -> float | None:
    """Total memory of a whole GPU of this type (MiB as NVML reports it), if catalogued."""
    t = catalog.GPU_TYPES.get(gpu_type)
    return float(t.memory_mib) if t else None
