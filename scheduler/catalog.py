"""GPU types the scheduler knows: memory, SMs, MIG family, relative speed (pure data).

Sources: ../shared/MIG.md (memory as NVML reports it, SM counts, PCI IDs). Types of the Alibaba
trace (T4, P100, V100M16/32, A10, G1-G3) are included without MIG; G1-G3 are undisclosed parts
whose memory is an assumption (32 GiB), used only by the packing benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuType:
    """A GPU model: total memory (MiB), SMs, MIG family ('a100', 'a30' or None), speed."""

    name: str
    memory_mib: int
    sms: int
    mig_family: str | None = None
    relative_speed: float = 1.0
    nvml_name: str = ""
    pci_device_id: int = 0


GPU_TYPES: dict[str, GpuType] = {
    t.name: t
    for t in (
        GpuType("A100-40GB", 40960, 108, "a100", 1.0, "NVIDIA A100-SXM4-40GB", 0x20B010DE),
        GpuType("A100-80GB", 81920, 98, "a100", 1.0, "NVIDIA A100-SXM4-80GB", 0x20B210DE),
        GpuType("H100-80GB", 81920, 132, "a100", 2.0, "NVIDIA H100 80GB HBM3", 0x233010DE),
        GpuType("H200-141GB", 143771, 132, "a100", 2.3, "NVIDIA H200", 0x233510DE),
        GpuType("A30", 24576, 56, "a30", 0.55, "NVIDIA A30", 0x20B710DE),
        GpuType("A10", 24576, 72, None, 0.4, "NVIDIA A10"),
        GpuType("T4", 16384, 40, None, 0.2, "Tesla T4"),
        GpuType("P100", 16384, 56, None, 0.15, "Tesla P100-PCIE-16GB"),
        GpuType("V100M16", 16384, 80, None, 0.35, "Tesla V100-SXM2-16GB"),
        GpuType("V100M32", 32768, 80, None, 0.35, "Tesla V100-SXM2-32GB"),
        GpuType("G1", 32768, 80, None, 0.5),
        GpuType("G2", 32768, 80, None, 0.5),
        GpuType("G3", 32768, 80, None, 0.5),
    )
}

_BY_NVML_NAME = {t.nvml_name: t for t in GPU_TYPES.values() if t.nvml_name}


class UnknownGpuTypeError(KeyError):
    """A GPU type name that is not in the catalog."""


def gpu_type(name: str) -> GpuType:
    """The catalog entry for ``name``. Raises: UnknownGpuTypeError."""
    try:
        return GPU_TYPES[name]
    except KeyError:
        raise UnknownGpuTypeError(
            f"unknown GPU type {name!r}; known: {sorted(GPU_TYPES)}"
        ) from None


def type_from_nvml_name(nvml_name: str) -> str:
    """Our type name for what nvmlDeviceGetName returns (the raw name if unknown)."""
    t = _BY_NVML_NAME.get(nvml_name)
    return t.name if t else nvml_name
