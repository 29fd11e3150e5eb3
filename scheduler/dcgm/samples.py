"""GPU samples and pod-level utilisation rows of the devices read from dcgm-exporter.

Pure. Each step ``t`` with a reading is one sample standing for ``[t, t + step)``
(``interval_s = step``). A MIG GPU has only instance series (dcgm-exporter's default "flex"
device mode), so its physical row is made from its instances.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from billing.schemas import GpuProcessSampleIn, GpuSampleIn
from scheduler.dcgm.gputypes import memory_mib, mig_fraction
from scheduler.dcgm.readings import (
    FB_FREE,
    FB_USED,
    POWER,
    Device,
    DeviceKey,
    Options,
    at,
    fraction_of,
    util_of,
)


def _sample(dev: Device, t: int, opts: Options, parent: str | None) -> GpuSampleIn:
    v = dev.values[t]
    used, free = v.get(FB_USED), v.get(FB_FREE)
    return GpuSampleIn(
        ts=at(t),
        node=dev.node,
        gpu_uuid=dev.uuid,
        parent_uuid=parent,
        gpu_index=dev.index,
        gpu_type=dev.gpu_type,
        pricing_class=opts.pricing_class.get(dev.node, "on-demand"),
        mig_profile=dev.profile,
        sm_util=util_of(v),
        mem_used_mib=used,
        mem_total_mib=None if used is None or free is None else used + free,
        power_w=None if parent else v.get(POWER),
        interval_s=opts.step_s,
    )


def _parent_sample(gpu: str, parts: Sequence[Device], t: int, opts: Options) -> GpuSampleIn:
    """A MIG GPU's physical row at ``t`` from its instances (no whole-GPU series under MIG).

    Details: sm_util = Σ instance util x slice fraction when every instance's is known (as the
    NVML agent does); memory used = Σ instances; total from the catalog (else Σ instances);
    power = the instances' shared device reading.
    """
    first = parts[0]
    utils = [(util_of(p.values[t]), mig_fraction(p.gpu_type, p.profile or "")) for p in parts]
    sm: float | None = 0.0
    for u, f in utils:
        sm = None if sm is None or u is None or f is None else sm + u * f
    used = [p.values[t][FB_USED] for p in parts if FB_USED in p.values[t]]
    sizes = [
        p.values[t][FB_USED] + p.values[t][FB_FREE]
        for p in parts
        if FB_USED in p.values[t] and FB_FREE in p.values[t]
    ]
    power = [p.values[t][POWER] for p in parts if POWER in p.values[t]]
    return GpuSampleIn(
        ts=at(t),
        node=first.node,
        gpu_uuid=gpu,
        gpu_index=first.index,
        gpu_type=first.gpu_type,
        pricing_class=opts.pricing_class.get(first.node, "on-demand"),
        sm_util=None if sm is None else min(100.0, sm),
        mem_used_mib=sum(used) if used else None,
        mem_total_mib=memory_mib(first.gpu_type) or (sum(sizes) if sizes else None),
        power_w=max(power) if power else None,
        interval_s=opts.step_s,
    )


def _order(key: DeviceKey) -> tuple[str, int]:
    return key[0], -1 if key[1] is None else key[1]


def samples_of(devices: Mapping[DeviceKey, Device], opts: Options) -> list[GpuSampleIn]:
    """One row per device and step with a reading, plus MIG GPUs' physical rows."""
    out: list[GpuSampleIn] = []
    instances: dict[str, list[Device]] = defaultdict(list)
    for (gpu, gi), dev in sorted(devices.items(), key=lambda kv: _order(kv[0])):
        if gi is not None:
            instances[gpu].append(dev)
        out += [_sample(dev, t, opts, gpu if gi is not None else None) for t in sorted(dev.values)]
    for gpu, parts in instances.items():
        whole = devices.get((gpu, None))
        steps = sorted({t for p in parts for t in p.values})
        for t in steps:
            if whole is not None and t in whole.values:
                continue  # a whole-GPU series at t already made the physical row
            present = [p for p in parts if t in p.values]
            out.append(_parent_sample(gpu, present, t, opts))
    return out


def processes_of(
    devices: Mapping[DeviceKey, Device],
    opts: Options,
    models: Mapping[tuple[str, str], str | None],
) -> list[GpuProcessSampleIn]:
    """Pod-level utilisation rows (pid 0) for devices held by exactly one resolved pod.

    Details: DCGM has no per-process readings; a device's utilisation is its one holder's,
    as % of the whole GPU (MIG: instance util x slice fraction), which is what billing's
    utilisation idle policy reads. Shared devices get none (their utilisation is unknown,
    so billing bills the holdings in full).
    """
    out: list[GpuProcessSampleIn] = []
    for dev in devices.values():
        fraction = fraction_of(dev)
        for t, holders in sorted(dev.holders.items()):
            if len(holders) != 1 or fraction is None:
                continue
            ((ns, pod, _),) = holders
            model = models.get((ns, pod))
            if model is None:
                continue
            util = util_of(dev.values[t])
            out.append(
                GpuProcessSampleIn(
                    ts=at(t),
                    device_uuid=dev.uuid,
                    gpu_uuid=dev.key[0],
                    pid=0,
                    namespace=ns,
                    pod=pod,
                    model=model,
                    sm_util=None if util is None else util * fraction,
                    mem_used_mib=dev.values[t].get(FB_USED),
                    interval_s=opts.step_s,
                )
            )
    return out
