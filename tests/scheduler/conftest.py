"""Scheduler test fixtures: real NVML and a real cluster must never be touched."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

T0 = datetime(2026, 11, 23, 10, tzinfo=UTC)


def _must_not_be_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("Must not be called!")


@pytest.fixture(autouse=True)
def _no_real_nvml_or_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real pynvml init and kube config loading raise: tests run on fakes only."""
    import pynvml
    from kubernetes import config as kube_config

    monkeypatch.setattr(pynvml, "nvmlInit", _must_not_be_called)
    monkeypatch.setattr(kube_config, "load_kube_config", _must_not_be_called)
    monkeypatch.setattr(kube_config, "load_incluster_config", _must_not_be_called)


class Clock:
    """A settable clock."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def tick(self, seconds: float) -> datetime:
        self.t += timedelta(seconds=seconds)
        return self.t


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()
