"""Agent test fixtures: short socket directories, no real NVML or cluster."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scheduler.conftest import Clock
from tests.scheduler.conftest import _no_real_nvml_or_cluster as _scheduler_guard

# The scheduler suite's guard, shared: real pynvml init and kube config loading raise.
_no_real_nvml_or_cluster = _scheduler_guard


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
