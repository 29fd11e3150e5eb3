"""Holdings over time -> allocations, and the agent's open holdings on disk.

``diff_holdings`` (pure): a key observed now and not open -> an allocation with ``start`` (its
first sighting) and no end; an open key no longer observed -> the same allocation with
``end=now``; an open key whose attributes changed (model, mode, profile, fraction, GPU) ->
closed at ``now`` and opened again from ``now``. ``HoldingStore`` keeps the open ones in
``<spool_dir>/holdings.json`` (write to a temp file, fsync, rename), so a kill -9 loses none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler.agent.join import Holding, HoldingKey

Allocation = dict[str, Any]  # the JSON of one billing.schemas.AllocationIn
_SAME = ("gpu_uuid", "pod_uid", "model", "mode", "profile")


def key_of(a: Mapping[str, Any]) -> HoldingKey:
    """The holding key of an allocation dict."""
    return (a["device_uuid"], a["namespace"], a["pod"], a["container"])


def allocation(h: Holding, *, start: datetime, observer: str) -> Allocation:
    """The AllocationIn JSON of an open holding (source observed)."""
    out: Allocation = asdict(h)
    out.update(start=start.isoformat(), end=None, source="observed", observer=observer)
    return out


def _same(a: Mapping[str, Any], h: Holding) -> bool:
    d = asdict(h)
    return all(a.get(k) == d[k] for k in _SAME) and abs(a["fraction"] - h.fraction) < 1e-9


@dataclass
class Diff:
    """What changed this tick: allocations to post and the open set after it."""

    opened: list[Allocation] = field(default_factory=list)
    closed: list[Allocation] = field(default_factory=list)
    open: dict[HoldingKey, Allocation] = field(default_factory=dict)


def diff_holdings(
    open_: Mapping[HoldingKey, Allocation],
    observed: Sequence[Holding],
    *,
    now: datetime,
    observer: str,
    first_seen: Mapping[HoldingKey, datetime] | None = None,
) -> Diff:
    """Opened and closed allocations between the open set and this tick's holdings."""
    out = Diff()
    seen = {h.key: h for h in observed}
    end = now.isoformat()
    for key, a in open_.items():
        h = seen.get(key)
        if h is not None and _same(a, h):
            out.open[key] = a
        else:
            out.closed.append({**a, "end": end})
    for key, h in seen.items():
        if key in out.open:
            continue
        changed = key in open_
        start = now if changed else (first_seen or {}).get(key, now)
        a = allocation(h, start=min(start, now), observer=observer)
        out.open[key] = a
        out.opened.append(a)
    return out


@dataclass
class HoldingState:
    """The agent's persistent view: adopted = the API's open allocations were read once."""

    adopted: bool = False
    open: dict[HoldingKey, Allocation] = field(default_factory=dict)
    first_seen: dict[HoldingKey, str] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


@dataclass
class HoldingStore:
    """``holdings.json`` in the spool directory."""

    path: Path

    def exists(self) -> bool:
        """True once a state was saved."""
        return self.path.exists()

    def load(self) -> HoldingState:
        """The saved state (an empty one when there is none). Raises: ValueError if corrupt."""
        if not self.path.exists():
            return HoldingState()
        raw = json.loads(self.path.read_text())
        return HoldingState(
            adopted=bool(raw.get("adopted")),
            open={key_of(a): a for a in raw.get("open", [])},
            first_seen={tuple(k): v for k, v in raw.get("first_seen", [])},  # type: ignore[misc]
        )

    def save(self, state: HoldingState) -> None:
        """Write the state atomically."""
        body = {
            "version": 1,
            "adopted": state.adopted,
            "open": sorted(state.open.values(), key=key_of),
            "first_seen": sorted([list(k), v] for k, v in state.first_seen.items()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(body, sort_keys=True).encode())
