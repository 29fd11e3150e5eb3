"""MIG geometry derived from the lgipp tables matches ../shared/MIG.md §1.3."""

from __future__ import annotations

import pytest

from scheduler import mig

CLASSIC = ("1g", "2g", "3g", "4g", "7g")


def test_a100_family_has_19_maximal_positional_layouts_and_14_multisets() -> None:
    layouts = mig.maximal_layouts("a100", CLASSIC)
    assert len(layouts) == 19
    multisets = {mig.multiset(lay) for lay in layouts}
    assert len(multisets) == 14
    # the layouts an OSS baseline (nos knownMigGeometries) misses are reachable here
    assert ("1g", "1g", "1g", "1g", "3g") in multisets
    assert ("3g", "4g") in multisets
    assert ("7g",) in multisets and ("3g", "3g") in multisets


def test_double_memory_1g_gives_38_maximal_and_77_multisets() -> None:
    keys = ("1g", "1g.2x", "2g", "3g", "4g", "7g")
    assert len({mig.multiset(lay) for lay in mig.maximal_layouts("a100", keys)}) == 38
    assert len(mig.feasible_multisets("a100", keys)) - 1 == 77  # minus the empty layout


def test_a30_maximal_layouts() -> None:
    got = {mig.multiset(lay) for lay in mig.maximal_layouts("a30", ("1g", "2g", "4g"))}
    assert got == {("1g", "1g", "1g", "1g"), ("1g", "1g", "2g"), ("2g", "2g"), ("4g",)}


@pytest.mark.parametrize(
    ("profiles", "fits"),
    [
        (["3g", "3g"], True),  # 3g uses 4 memory slots: two fill the 8
        (["3g", "3g", "1g"], False),
        (["4g", "3g"], True),  # allowed since R510
        (["4g", "2g", "1g"], True),
        (["2g", "2g", "2g", "1g"], True),
        (["2g", "2g", "2g", "2g"], False),  # 2g starts only at 0, 2, 4
        (["1g"] * 7, True),
        (["1g"] * 8, False),  # 1g never starts at slot 7
        (["7g", "1g"], False),
    ],
    ids=["3g+3g", "3g+3g+1g", "4g+3g", "4g+2g+1g", "3x2g+1g", "4x2g", "7x1g", "8x1g", "7g+1g"],
)
def test_fits(profiles: list[str], fits: bool) -> None:
    assert mig.fits("a100", profiles) is fits


def test_place_respects_lgipp_starts_and_keeps_current_instances() -> None:
    lay = mig.place("a100", ["3g", "1g", "1g", "1g", "1g"])
    assert lay == (("1g", 0), ("1g", 1), ("1g", 2), ("1g", 3), ("3g", 4))
    # keep a 3g at 0 where it is: the 1g's go to 4..7 (starts 4, 5, 6 only) -> 3 of them
    kept = mig.place("a100", ["3g", "1g", "1g", "1g"], current=(("3g", 0),))
    assert ("3g", 0) in kept
    with pytest.raises(ValueError, match="do not fit"):
        mig.place("a100", ["4g", "4g"])


def test_names_memory_and_price_fractions() -> None:
    assert mig.profile_name("A100-80GB", "3g") == "3g.40gb"
    assert mig.profile_name("A100-40GB", "1g") == "1g.5gb"
    assert mig.profile_name("H200-141GB", "7g") == "7g.141gb"
    assert mig.profile_memory_mib("A100-40GB", "3g") == 19968
    assert mig.key_of("A100-80GB", "2g.20gb") == "2g"
    assert mig.price_fraction("a100", "3g") == pytest.approx(3 / 7)
    assert mig.price_fraction("a30", "2g") == pytest.approx(2 / 4)
