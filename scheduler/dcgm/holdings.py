"""Observed holdings: maximal runs of steps in which a device carries one pod.

Pure. A holding is a maximal run of consecutive steps carrying one pod with the same number of
co-holders; it is ``[first step, last step + step)``, open (``end=None``) when it reaches the
range's last step. Holdings continue across pulls through the stored ones (``known``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from billing.schemas import AllocationIn
from scheduler.dcgm.readings import OBSERVER, Device, DeviceKey, Holder, Options, at, fraction_of


def _runs(dev: Device, step: int) -> list[tuple[Holder, int, int, int]]:
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


def _holding(
    dev: Device, holder: Holder, first: int, k: int, fraction: float, model: str
) -> AllocationIn:
    """The holding of one run, open (the caller sets its end and a continued start)."""
    ns, pod, container = holder
    whole = dev.key[1] is None
    item = AllocationIn(
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
        start=at(first),
        source="observed",
        observer=OBSERVER,
    )
    return item


def holdings_of(
    devices: Mapping[DeviceKey, Device],
    start: int,
    end: int,
    opts: Options,
    models: Mapping[tuple[str, str], str | None],
    known: Sequence[AllocationIn],
) -> tuple[list[AllocationIn], set[tuple[str, str]], list[str]]:
    """Observed holdings of ``[start, end)`` (unix seconds on the step grid).

    Returns: the holdings, the (namespace, pod) pairs without a model, problems.
    Details: a run that begins at ``start`` continues a known holding of the same device,
    pod and fraction that began earlier and ends after ``start`` (it keeps that start); a
    known open holding that no run continues ends at ``start``. Known holdings that begin at
    or after ``start`` are this range's own (a re-pull) and are recomputed, not closed.
    """
    step = opts.step_s
    prior = {
        (a.device_uuid, a.namespace, a.pod, a.container): a
        for a in known
        if a.start < at(start) and (a.end is None or a.end > at(start))
    }
    out: list[AllocationIn] = []
    unresolved: set[tuple[str, str]] = set()
    problems: list[str] = []
    continued: set[tuple[str, str, str, str]] = set()
    for dev in devices.values():
        fraction = fraction_of(dev)
        for holder, first, last, k in _runs(dev, step):
            model = models.get(holder[:2])
            if model is None:
                unresolved.add((holder[0], holder[1]))
                continue
            if fraction is None:
                problems.append(f"{dev.uuid}: no slice fraction for MIG profile {dev.profile}")
                continue
            item = _holding(dev, holder, first, k, fraction, model)
            key = (dev.uuid, *holder)
            was = prior.get(key)
            update: dict[str, object] = {"end": None if last + step >= end else at(last + step)}
            if first == start and was is not None and math.isclose(was.fraction, item.fraction):
                update["start"] = was.start
                continued.add(key)
            out.append(item.model_copy(update=update))
    for key, a in prior.items():
        if a.end is None and key not in continued:
            out.append(a.model_copy(update={"end": at(start)}))
    return out, unresolved, problems
