"""The DCGM pull's pod -> model lookup through the real kubernetes client, and its wiring."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from costctl.settings import Settings
from costctl.worker import job_specs
from scheduler.kube.pods import PodListError, PodModels
from tests.utils.kube_server import KubeServer


def test_pod_models_read_labels_and_cache() -> None:
    with KubeServer() as kube:
        kube.state.add_pod(
            "serving", "llama-7d9f-x2", node="n1", uid="u1", labels={"costctl.io/model": "llama"}
        )
        kube.state.add_pod(
            "serving", "web-1", node="n1", uid="u2", labels={"app.kubernetes.io/name": "mistral"}
        )
        models = PodModels("costctl.io/model", kube.api_client())
        assert models("serving", "llama-7d9f-x2") == "llama"
        assert models("serving", "web-1") == "mistral"  # the fallback label
        assert models("serving", "gone") is None  # 404: the pod no longer exists
        before = len(kube.state.requests)
        assert models("serving", "llama-7d9f-x2") == "llama"
        assert len(kube.state.requests) == before  # answered from the cache
        kube.state.fail_next = [500, 500, 500, 500, 500, 500]
        with pytest.raises(PodListError, match="HTTP 500"):
            models("serving", "not-cached")


def test_the_worker_runs_the_dcgm_pull_only_when_prometheus_is_set(tmp_path: Path) -> None:
    from billing.db import init_db, make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/w.db")
    init_db(engine)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    off = job_specs(engine, Settings(), clock=clock)
    assert "scheduler.dcgm_pull" not in {s.name for s in off}
    on = Settings(scheduler={"prometheus_url": "http://127.0.0.1:9"})
    assert "scheduler.dcgm_pull" in {s.name for s in job_specs(engine, on, clock=clock)}
    engine.dispose()
