"""Agent test fixtures: short socket directories, no real NVML or cluster."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scheduler.conftest import Clock


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


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp dir short enough for unix sockets (pytest's tmp_path can pass 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ag-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def clock() -> Iterator[Clock]:
    """A settable clock at T0."""
    yield Clock()
