"""Holdings over time -> allocations, and the state file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from billing.schemas import ALLOCATION_BATCH
from scheduler.agent.holdings import HoldingState, HoldingStore, diff_holdings, key_of
from scheduler.agent.join import Holding
from tests.scheduler.conftest import T0

OBS = "agent/n1"


def h(pod: str, fraction: float = 1.0, model: str = "llama", device: str = "GPU-1") -> Holding:
    return Holding(device, "GPU-1", "n1", "s", pod, "server", f"uid-{pod}", model, "gpu",
                   None, fraction)  # fmt: skip


def test_new_held_and_vanished_keys() -> None:
    d1 = diff_holdings({}, [h("a"), h("b", device="GPU-2")], now=T0, observer=OBS)
    assert [a["pod"] for a in d1.opened] == ["a", "b"] and d1.closed == []
    assert {a["start"] for a in d1.opened} == {T0.isoformat()}
    assert all(a["end"] is None and a["source"] == "observed" for a in d1.opened)
    t1 = T0 + timedelta(seconds=10)
    d2 = diff_holdings(d1.open, [h("a")], now=t1, observer=OBS)
    assert d2.opened == []
    (closed,) = d2.closed
    assert (closed["pod"], closed["start"], closed["end"]) == ("b", T0.isoformat(), t1.isoformat())
    assert list(d2.open) == [("GPU-1", "s", "a", "server")]
    ALLOCATION_BATCH.validate_python(d1.opened + d2.closed)  # the API's schema takes them


@pytest.mark.parametrize(
    "changed",
    [h("a", fraction=0.5), h("a", model="other")],
    ids=["fraction", "model"],
)
def test_a_changed_holding_is_closed_and_reopened(changed: Holding) -> None:
    d1 = diff_holdings({}, [h("a")], now=T0, observer=OBS)
    t1 = T0 + timedelta(minutes=1)
    d2 = diff_holdings(d1.open, [changed], now=t1, observer=OBS)
    assert [(a["start"], a["end"]) for a in d2.closed] == [(T0.isoformat(), t1.isoformat())]
    assert [(a["start"], a["end"]) for a in d2.opened] == [(t1.isoformat(), None)]


def test_first_seen_sets_the_start_of_a_new_holding() -> None:
    early = T0 - timedelta(minutes=5)
    d = diff_holdings({}, [h("a")], now=T0, observer=OBS, first_seen={h("a").key: early})
    assert d.opened[0]["start"] == early.isoformat()


def test_state_round_trips(tmp_path: Path) -> None:
    store = HoldingStore(tmp_path / "holdings.json")
    assert not store.exists() and store.load() == HoldingState()
    d = diff_holdings({}, [h("a"), h("b")], now=T0, observer=OBS)
    state = HoldingState(adopted=True, open=d.open, first_seen={h("c").key: T0.isoformat()})
    store.save(state)
    assert store.load() == state
    assert not (tmp_path / "holdings.json.tmp").exists()
    assert key_of(d.opened[0]) == h("a").key
