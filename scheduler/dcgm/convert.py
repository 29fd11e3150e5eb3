"""dcgm-exporter series (Prometheus query_range results) as GPU samples and observed holdings.

Pure: the caller passes the query results, the step grid, the pods' models and the holdings
already stored; nothing here reads a clock, the store or the network.

The model of the data:
- A device is a whole GPU (series without ``GPU_I_ID``) or a MIG GPU instance (``UUID`` of the
  parent GPU + ``GPU_I_ID`` + ``GPU_I_PROFILE``, as dcgm-exporter labels them). dcgm-exporter
  exports no MIG device UUID, so an instance's id is ``mig_device_id(parent, gi)``.
- Each evaluation time ``t`` of query_range (plain selectors: the state at the last scrape at
  or before ``t``) is one reading standing for ``[t, t + step)``: a sample with
  ``interval_s = step``. A MIG GPU has only instance series (dcgm-exporter's default "flex"
  mode), so its physical row is made from its instances.
- The pods on a device at ``t`` are the ``namespace/pod/container`` label sets of its series at
  ``t``. A holding is a maximal run of consecutive steps carrying one pod with the same number
  of co-holders; it is ``[first step, last step + step)``, open (``end=None``) when it reaches
  the range's last step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from billing.schemas import AllocationIn, GpuProcessSampleIn, GpuSampleIn
from scheduler.dcgm.gputypes import gpu_type_of, memory_mib, mig_fraction

GR_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # ratio 0..1
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent 0..100
FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
POWER = "DCGM_FI_DEV_POWER_USAGE"  # W
METRICS = (GR_ACTIVE, GPU_UTIL, FB_USED, FB_FREE, POWER)
OBSERVER = "dcgm"
WORKLOAD = ("namespace", "pod", "container")

Holder = tuple[str, str, str]  # namespace, pod, container
DeviceKey = tuple[str, int | None]  # parent/whole GPU UUID, GPU_I_ID


class Series(Protocol):
    """What the conversion reads of a result series (scheduler.promclient.Series is one)."""

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def points(self) -> Sequence[tuple[float, float]]: ...


def mig_device_id(parent_uuid: str, gi_id: int) -> str:
    """The stable id of a MIG instance seen through DCGM (not NVML's MIG-<uuid>)."""
    return f"MIG-{parent_uuid}/gi{gi_id}"


@dataclass(frozen=True)
class Options:
    """What the conversion needs from the settings."""

    step_s: int
    gpu_types: Mapping[str, str] = field(default_factory=dict)
    pricing_class: Mapping[str, str] = field(default_factory=dict)  # node -> class
    workload_labels: Literal["auto", "exported"] = "auto"


@dataclass
class _Device:
    key: DeviceKey
    node: str
    index: int
    gpu_type: str
    profile: str | None
    values: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    holders: dict[int, set[Holder]] = field(default_factory=lambda: defaultdict(set))

    @property
    def uuid(self) -> str:
        gpu, gi = self.key
        return gpu if gi is None else mig_device_id(gpu, gi)


@dataclass
class Converted:
    """The rows of one range: samples, pod-level process rows, holdings, what was skipped."""

    samples: list[GpuSampleIn] = field(default_factory=list)
    processes: list[GpuProcessSampleIn] = field(default_factory=list)
    allocations: list[AllocationIn] = field(default_factory=list)
    unresolved: set[tuple[str, str]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def holder_of(labels: Mapping[str, str], mode: Literal["auto", "exported"]) -> Holder | None:
    """The pod of a series: ``exported_*`` labels (a scrape that renamed them), else plain.

    Details: with ``mode="exported"`` the plain labels are the scrape target's (the exporter
    pod) and never a workload. No pod name: None (an idle device); a missing namespace or
    container reads "-".
    """
    prefix = "exported_" if labels.get("exported_pod") or mode == "exported" else ""
    ns, pod, container = (labels.get(f"{prefix}{k}", "") for k in WORKLOAD)
    return (ns or "-", pod, container or "-") if pod else None


def _gi(labels: Mapping[str, str]) -> int | None:
    raw = labels.get("GPU_I_ID", "")
    return int(raw) if raw.isdigit() and labels.get("GPU_I_PROFILE") else None


def collect_devices(
    results: Mapping[str, Sequence[Series]], opts: Options
) -> tuple[dict[DeviceKey, _Device], list[str]]:
    """Readings and holders per device and step (unix second) from every metric's series."""
    devices: dict[DeviceKey, _Device] = {}
    problems: list[str] = []
    for metric, series in results.items():
        for s in series:
            uuid = s.labels.get("UUID", "")
            if not uuid:
                problems.append(f"{metric} series without UUID: {dict(s.labels)}"[:200])
                continue
            key = (uuid, _gi(s.labels))
            dev = devices.get(key)
            if dev is None:
                gpu = s.labels.get("gpu", "0")
                dev = devices[key] = _Device(
                    key,
                    s.labels.get("Hostname") or s.labels.get("instance", "unknown"),
                    int(gpu) if gpu.isdigit() else 0,
                    gpu_type_of(s.labels.get("modelName", "unknown"), opts.gpu_types),
                    s.labels.get("GPU_I_PROFILE") if key[1] is not None else None,
                )
            holder = holder_of(s.labels, opts.workload_labels)
            for t, v in s.points:
                if not math.isfinite(v) or v < 0:
                    continue
                step = round(t)
                dev.values[step][metric] = v
                if holder is not None:
                    dev.holders[step].add(holder)
                else:
                    dev.holders.setdefault(step, set())
    return devices, problems


def _util(v: Mapping[str, float]) -> float | None:
    if GR_ACTIVE in v:
        return min(100.0, v[GR_ACTIVE] * 100.0)
    if GPU_UTIL in v:
        return min(100.0, v[GPU_UTIL])
    return None


def _at(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _sample(dev: _Device, t: int, opts: Options, parent: str | None) -> GpuSampleIn:
    v = dev.values[t]
    used, free = v.get(FB_USED), v.get(FB_FREE)
    return GpuSampleIn(
        ts=_at(t),
        node=dev.node,
        gpu_uuid=dev.uuid,
        parent_uuid=parent,
        gpu_index=dev.index,
        gpu_type=dev.gpu_type,
        pricing_class=opts.pricing_class.get(dev.node, "on-demand"),
        mig_profile=dev.profile,
        sm_util=_util(v),
        mem_used_mib=used,
        mem_total_mib=None if used is None or free is None else used + free,
        power_w=None if parent else v.get(POWER),
        interval_s=opts.step_s,
    )


def _parent_sample(gpu: str, parts: Sequence[_Device], t: int, opts: Options) -> GpuSampleIn:
    """A MIG GPU's physical row at ``t`` from its instances (no whole-GPU series under MIG).

    Details: sm_util = Σ instance util x slice fraction when every instance's is known (as the
    NVML agent does); memory used = Σ instances; total from the catalog (else Σ instances);
    power = the instances' shared device reading.
    """
    first = parts[0]
    utils = [(_util(p.values[t]), mig_fraction(p.gpu_type, p.profile or "")) for p in parts]
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
        ts=_at(t),
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


def samples_of(devices: Mapping[DeviceKey, _Device], opts: Options) -> list[GpuSampleIn]:
    """One row per device and step with a reading, plus MIG GPUs' physical rows."""
    out: list[GpuSampleIn] = []
    instances: dict[str, list[_Device]] = defaultdict(list)
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


def _fraction(dev: _Device) -> float | None:
    if dev.key[1] is None:
        return 1.0
    return mig_fraction(dev.gpu_type, dev.profile or "")


def _runs(dev: _Device, step: int) -> list[tuple[Holder, int, int, int]]:
    """Maximal runs (holder, first step, last step, co-holders) of one device."""
    runs: list[tuple[Holder, int, int, int]] = []
    open_: dict[Holder, tuple[int, int, int]] = {}
    for t in sorted(dev.holders):
        here = dev.holders[t]
        for h, (first, last, k) in list(open_.items()):
            if h not in here or last != t - step or k != len(here):
                runs.append((h, first, last, k))
                del open_[h]
        for h in here:
            if h in open_:
                first, _, k = open_[h]
                open_[h] = (first, t, k)
            else:
                open_[h] = (t, t, len(here))
    runs += [(h, first, last, k) for h, (first, last, k) in open_.items()]
    return sorted(runs, key=lambda r: (r[1], r[0]))


def holdings_of(
    devices: Mapping[DeviceKey, _Device],
    start: int,
    end: int,
    opts: Options,
    models: Mapping[tuple[str, str], str | None],
    known: Sequence[AllocationIn],
    out: Converted,
) -> None:
    """Observed holdings of ``[start, end)`` (unix seconds on the step grid) into ``out``.

    Details: a run that begins at ``start`` continues a known holding of the same device,
    pod and fraction that began earlier and ends after ``start`` (it keeps that start); a known
    open holding that no run continues ends at ``start``. Known holdings that begin at or
    after ``start`` are this range's own (a re-pull) and are recomputed, not closed.
    """
    step = opts.step_s
    prior = {
        (a.device_uuid, a.namespace, a.pod, a.container): a
        for a in known
        if a.start < _at(start) and (a.end is None or a.end > _at(start))
    }
    continued: set[tuple[str, str, str, str]] = set()
    for dev in devices.values():
        fraction = _fraction(dev)
        for holder, first, last, k in _runs(dev, step):
            ns, pod, container = holder
            model = models.get((ns, pod))
            if model is None:
                out.unresolved.add((ns, pod))
                continue
            if fraction is None:
                out.problems.append(f"{dev.uuid}: no slice fraction for MIG profile {dev.profile}")
                continue
            key = (dev.uuid, ns, pod, container)
            began = _at(first)
            if first == start and key in prior and math.isclose(prior[key].fraction, fraction / k):
                began = prior[key].start
                continued.add(key)
            whole = dev.key[1] is None
            out.allocations.append(
                AllocationIn(
                    device_uuid=dev.uuid,
                    gpu_uuid=dev.key[0],
                    node=dev.node,
                    namespace=ns,
                    pod=pod,
                    container=container,
                    pod_uid=None,
                    model=model,
                    mode="timeslice" if whole and k > 1 else ("gpu" if whole else "mig"),
                    profile=dev.profile,
                    fraction=fraction / k,
                    start=began,
                    end=None if last + step >= end else _at(last + step),
                    source="observed",
                    observer=OBSERVER,
                )
            )
    for key, a in prior.items():
        if a.end is None and key not in continued:
            out.allocations.append(a.model_copy(update={"end": _at(start)}))


def processes_of(
    devices: Mapping[DeviceKey, _Device],
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
        fraction = _fraction(dev)
        for t, holders in sorted(dev.holders.items()):
            if len(holders) != 1 or fraction is None:
                continue
            ((ns, pod, _),) = holders
            model = models.get((ns, pod))
            if model is None:
                continue
            util = _util(dev.values[t])
            out.append(
                GpuProcessSampleIn(
                    ts=_at(t),
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


def pods_of(results: Mapping[str, Sequence[Series]], opts: Options) -> set[tuple[str, str]]:
    """The (namespace, pod) pairs the series name: what the caller resolves to models."""
    return {
        (h[0], h[1])
        for series in results.values()
        for s in series
        if (h := holder_of(s.labels, opts.workload_labels)) is not None
    }


def convert(
    results: Mapping[str, Sequence[Series]],
    *,
    start: datetime,
    end: datetime,
    opts: Options,
    models: Mapping[tuple[str, str], str | None],
    known: Sequence[AllocationIn] = (),
) -> Converted:
    """Samples, pod rows and observed holdings of ``[start, end)`` from query_range results.

    ``results`` maps each metric name of METRICS to its series, evaluated at the step grid
    start, start + step, ..., end - step; ``models`` maps (namespace, pod) to a model (None:
    unknown, the pod's holdings are skipped and listed in ``unresolved``); ``known`` are the
    stored observed holdings of observer ``dcgm`` that may continue into this range.
    Raises: ValueError when start/end are not on the step grid.
    """
    s, e = start.timestamp(), end.timestamp()
    if s % opts.step_s or e % opts.step_s or e <= s:
        raise ValueError(f"range [{start}, {end}) is not on the {opts.step_s}s grid")
    devices, problems = collect_devices(results, opts)
    for dev in devices.values():  # steps outside the range (a misaligned query) are dropped
        for t in [t for t in dev.values if not s <= t < e]:
            dev.values.pop(t)
            dev.holders.pop(t, None)
    out = Converted(problems=problems)
    out.samples = samples_of(devices, opts)
    out.processes = processes_of(devices, opts, models)
    holdings_of(devices, int(s), int(e), opts, models, known, out)
    return out
