"""MIG geometry derived from the ``nvidia-smi mig -lgipp`` placement tables (../shared/MIG.md).

A GPU instance (GI) of a profile occupies memory slots ``[start, start + size)`` on the 8-slot
(A100/H100/H200) or 4-slot (A30) axis; two GIs are compatible iff their intervals do not
overlap, each profile has a max instance count, and SM slices add up to at most 7 (A30: 4).
Everything else (maximal layouts, which multisets fit on one GPU, where each GI goes) is
computed from those tables, never typed in.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class MigProfile:
    """One GI profile of a family. ``key`` is family-wide ('1g', '1g+me', '1g.2x', '2g', ...)."""

    key: str
    smi_id: int  # nvidia-smi profile ID (nvmlGpuInstanceProfileInfo_t.id)
    nvml_enum: int  # NVML_GPU_INSTANCE_PROFILE_* index
    sm_slices: int
    mem_slots: int
    starts: tuple[int, ...]
    max_instances: int


@dataclass(frozen=True)
class MigFamily:
    """A placement table: slots on the memory axis, SM slices and the GI profiles."""

    name: str
    mem_slots: int
    sm_slices: int
    profiles: tuple[MigProfile, ...]

    def profile(self, key: str) -> MigProfile:
        """The profile with this family key. Raises: KeyError."""
        for p in self.profiles:
            if p.key == key:
                return p
        raise KeyError(f"MIG family {self.name} has no profile {key!r}")


FAMILIES: dict[str, MigFamily] = {
    "a100": MigFamily(
        "a100",
        8,
        7,
        (
            MigProfile("1g", 19, 0, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7),
            MigProfile("1g+me", 20, 7, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1),
            MigProfile("1g.2x", 15, 9, 1, 2, (0, 2, 4, 6), 4),
            MigProfile("2g", 14, 1, 2, 2, (0, 2, 4), 3),
            MigProfile("3g", 9, 2, 3, 4, (0, 4), 2),
            MigProfile("4g", 5, 3, 4, 4, (0,), 1),
            MigProfile("7g", 0, 4, 7, 8, (0,), 1),
        ),
    ),
    "a30": MigFamily(
        "a30",
        4,
        4,
        (
            MigProfile("1g", 14, 0, 1, 1, (0, 1, 2, 3), 4),
            MigProfile("1g+me", 21, 7, 1, 1, (0, 1, 2, 3), 1),
            MigProfile("2g", 5, 1, 2, 2, (0, 2), 2),
            MigProfile("2g+me", 6, 8, 2, 2, (0, 2), 1),
            MigProfile("4g", 0, 3, 4, 4, (0,), 1),
        ),
    ),
}

# Profile names as nvidia-smi / mig-parted / the device plugin spell them, per GPU type.
# Memory (MiB) as NVML reports it: A100 from MIG.md (go-nvml mock data); H100-80GB uses the
# A100-80GB sizes; H200 and A30 are nominal (GB x 1024), unverified on hardware.
PROFILE_NAMES: dict[str, dict[str, tuple[str, int]]] = {
    "A100-40GB": {
        "1g": ("1g.5gb", 4864),
        "1g+me": ("1g.5gb+me", 4864),
        "1g.2x": ("1g.10gb", 9856),
        "2g": ("2g.10gb", 9856),
        "3g": ("3g.20gb", 19968),
        "4g": ("4g.20gb", 19968),
        "7g": ("7g.40gb", 40192),
    },
    "A100-80GB": {
        "1g": ("1g.10gb", 9856),
        "1g+me": ("1g.10gb+me", 9856),
        "1g.2x": ("1g.20gb", 19968),
        "2g": ("2g.20gb", 19968),
        "3g": ("3g.40gb", 40192),
        "4g": ("4g.40gb", 40192),
        "7g": ("7g.80gb", 80384),
    },
    "H200-141GB": {
        "1g": ("1g.18gb", 18432),
        "1g+me": ("1g.18gb+me", 18432),
        "1g.2x": ("1g.35gb", 35840),
        "2g": ("2g.35gb", 35840),
        "3g": ("3g.71gb", 72704),
        "4g": ("4g.71gb", 72704),
        "7g": ("7g.141gb", 144384),
    },
    "A30": {
        "1g": ("1g.6gb", 6144),
        "1g+me": ("1g.6gb+me", 6144),
        "2g": ("2g.12gb", 12288),
        "2g+me": ("2g.12gb+me", 12288),
        "4g": ("4g.24gb", 24576),
    },
}
PROFILE_NAMES["H100-80GB"] = PROFILE_NAMES["A100-80GB"]

# What the packer places: one profile per SM size, the plain ones (no +me, no double memory).
CLASSIC = {"a100": ("1g", "2g", "3g", "4g", "7g"), "a30": ("1g", "2g", "4g")}

Placement = tuple[str, int]  # (profile key, start slot)
Layout = tuple[Placement, ...]  # sorted


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def can_add(family: MigFamily, layout: Iterable[Placement], key: str, start: int) -> bool:
    """Whether GI ``key`` at ``start`` can join ``layout`` (interval, count and SM rules)."""
    p = family.profile(key)
    if start not in p.starts:
        return False
    placed = list(layout)
    if sum(1 for k, _ in placed if k == key) >= p.max_instances:
        return False
    if sum(family.profile(k).sm_slices for k, _ in placed) + p.sm_slices > family.sm_slices:
        return False
    span = (start, start + p.mem_slots)
    return not any(_overlaps(span, (s, s + family.profile(k).mem_slots)) for k, s in placed)


@cache
def all_layouts(family_name: str, keys: tuple[str, ...]) -> frozenset[Layout]:
    """Every valid positional layout (including the empty one) using profiles ``keys``."""
    family = FAMILIES[family_name]
    options = sorted((k, s) for k in keys for s in family.profile(k).starts)
    found: set[Layout] = set()

    def grow(layout: Layout, i: int) -> None:
        found.add(layout)
        for j in range(i, len(options)):
            key, start = options[j]
            if can_add(family, layout, key, start):
                grow(tuple(sorted((*layout, (key, start)))), j + 1)

    grow((), 0)
    return frozenset(found)


@cache
def maximal_layouts(family_name: str, keys: tuple[str, ...]) -> frozenset[Layout]:
    """Positional layouts to which no GI of ``keys`` can be added."""
    family = FAMILIES[family_name]
    options = [(k, s) for k in keys for s in family.profile(k).starts]
    return frozenset(
        lay
        for lay in all_layouts(family_name, keys)
        if not any(can_add(family, lay, k, s) for k, s in options)
    )


def multiset(layout: Layout) -> tuple[str, ...]:
    """The profiles of a layout, sorted (positions dropped)."""
    return tuple(sorted(k for k, _ in layout))


@cache
def feasible_multisets(family_name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], Layout]:
    """Every multiset of profiles that fits one GPU, with one positional layout realising it."""
    out: dict[tuple[str, ...], Layout] = {}
    for lay in sorted(all_layouts(family_name, keys)):
        out.setdefault(multiset(lay), lay)
    return out


def fits(family_name: str, profiles: Iterable[str]) -> bool:
    """Whether these profiles (classic keys) can all live on one GPU of the family."""
    keys = CLASSIC[family_name]
    return tuple(sorted(profiles)) in feasible_multisets(family_name, keys)


def place(family_name: str, profiles: Iterable[str], current: Layout = ()) -> Layout:
    """Positions for ``profiles`` on one GPU, keeping as many GIs of ``current`` as possible.

    Returns: a layout realising the multiset. Raises: ValueError if it does not fit.
    Details: among all layouts of the multiset, the one sharing the most (profile, start)
    pairs with ``current`` wins (fewest GIs to destroy and re-create); ties: sorted order.
    """
    want = tuple(sorted(profiles))
    keys = tuple(sorted(set(CLASSIC[family_name]) | set(want)))
    candidates = sorted(lay for lay in all_layouts(family_name, keys) if multiset(lay) == want)
    if not candidates:
        raise ValueError(f"MIG profiles {list(want)} do not fit one {family_name} GPU")
    keep: Counter[Placement] = Counter(current)

    def kept(lay: Layout) -> int:
        both: Counter[Placement] = Counter(lay) & keep
        return sum(both.values())

    return max(candidates, key=kept)


def profile_name(gpu_type: str, key: str) -> str:
    """nvidia-smi name of a family profile on a GPU type ('3g' on A100-80GB -> '3g.40gb')."""
    return PROFILE_NAMES[gpu_type][key][0]


def profile_memory_mib(gpu_type: str, key: str) -> int:
    """Memory of a GI of this profile on this GPU type, in MiB as NVML reports it."""
    return PROFILE_NAMES[gpu_type][key][1]


def key_of(gpu_type: str, name: str) -> str:
    """The family key of a profile name ('1g.10gb' on A100-80GB -> '1g'). Raises: KeyError."""
    for key, (n, _) in PROFILE_NAMES[gpu_type].items():
        if n == name:
            return key
    raise KeyError(f"{gpu_type} has no MIG profile {name!r}")


def price_fraction(family_name: str, key: str) -> float:
    """Share of the GPU price a GI holds: SM slices / 7 (A30: / 4)."""
    family = FAMILIES[family_name]
    return family.profile(key).sm_slices / family.sm_slices


_LEADING_SLICES = re.compile(r"(\d+)g")


def profile_fraction(gpu_type: str, profile: str) -> float | None:
    """Share of the GPU's price a MIG instance of ``profile`` holds: SM slices / 7 (A30: / 4).

    Details: through this module's tables when the GPU type is known here; otherwise the
    leading ``<n>g`` of the profile name over 7 slices. None when neither applies.
    """
    from scheduler.catalog import GPU_TYPES

    t = GPU_TYPES.get(gpu_type)
    if gpu_type in PROFILE_NAMES and t is not None and t.mig_family is not None:
        try:
            return price_fraction(t.mig_family, key_of(gpu_type, profile))
        except KeyError:
            pass
    m = _LEADING_SLICES.match(profile)
    if m is None or not 1 <= int(m.group(1)) <= 7:
        return None
    return int(m.group(1)) / 7
