"""The DRA target's rendering: kubernetes-validate 1.34, the typed GpuConfig, what pods get."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scheduler import catalog
from scheduler.kube.dra import GPU_CLASS, MIG_CLASS, POD_CLAIM, DraRendered, render_dra
from scheduler.kube.dra_params import GpuConfig, quantity_bytes
from scheduler.model import Mode, Plan, Snapshot
from scheduler.planner import plan
from scheduler.policy import Policy
from tests.scheduler.builders import fleet, workload

PER_CLAIM = Policy(mps_shares="per-claim")  # what `--target dra` plans (claims carry shares)
K8S_VERSION = "1.34.0"  # resource.k8s.io/v1 is GA from 1.34


def _snapshot() -> Snapshot:
    gpus = fleet(("a100", "a", 2), ("h100", "b", 2), ("h200", "c", 2))
    ws = (
        workload("llama-3-70b", 70000, 0.9, 1, iso="strict"),
        workload("llama-3-8b", 18000, 0.3, 2),
        workload("mistral-7b", 16000, 0.25, 2, iso="strict"),
        workload("mixtral-8x7b", 30000, 0.4, 1, iso="best-effort", latency="batch"),
        workload("bert-gang", 30000, 1.0, 1, gpus=2, gpu_types=("H200-141GB",)),
    )
    return Snapshot(gpus, ws)


@pytest.fixture(scope="module")
def planned() -> tuple[Snapshot, Plan, DraRendered]:
    snap = _snapshot()
    p = plan(snap, PER_CLAIM)
    assert {s.mode for s in p.slots} == {Mode.gpu, Mode.mig, Mode.mps}
    assert not p.unplaced
    return snap, p, render_dra(p, snap.gpus)


def _claims_by_name(r: DraRendered) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in (*r.claim_templates, *r.claims)}


def _claim_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = (
        obj["spec"]["spec"] if obj["kind"] == "ResourceClaimTemplate" else obj["spec"]
    )
    return spec


def _pod_claim(d: dict[str, Any]) -> str:
    (rc,) = d["spec"]["template"]["spec"]["resourceClaims"]
    assert rc["name"] == POD_CLAIM
    return str(rc.get("resourceClaimTemplateName") or rc["resourceClaimName"])


def _env(d: dict[str, Any]) -> dict[str, str]:
    c0 = d["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in c0.get("env") or []}


def test_every_object_passes_kubernetes_validate_1_34(
    planned: tuple[Snapshot, Plan, DraRendered],
) -> None:
    _, _, r = planned
    objs = r.objects()
    kinds = {o["kind"] for o in objs}
    assert kinds == {"ConfigMap", "Node", "ResourceClaimTemplate", "ResourceClaim", "Deployment"}
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    # the check can fail: a misspelt request field is refused by the 1.34 schema
    bad = dict(r.claim_templates[0])
    bad["spec"] = {"spec": {"devices": {"requests": [{"name": "gpu", "exact": {}}]}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_opaque_parameters_match_the_typed_gpu_config(
    planned: tuple[Snapshot, Plan, DraRendered],
) -> None:
    _, _, r = planned
    seen = 0
    for obj in (*r.claim_templates, *r.claims):
        for cfg in _claim_spec(obj)["devices"].get("config", []):
            assert cfg["opaque"]["driver"] == "gpu.nvidia.com"
            params = cfg["opaque"]["parameters"]
            assert GpuConfig.model_validate(params).to_json() == params
            seen += 1
    assert seen == len(r.claims) == 1  # the one MPS GPU; whole GPUs and MIG carry no config


@pytest.mark.parametrize(
    "params",
    [
        {"sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 101}}},
        {"sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": -1}}},
        {"sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Fast"}}},
        {"sharing": {"strategy": "Exclusive"}},
        {"sharing": {"strategy": "TimeSlicing", "mpsConfig": {}}},
        {"sharing": {"strategy": "MPS", "timeSlicingConfig": {"interval": "Long"}}},
        {"sharing": {"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "0Mi"}}},
        {"sharing": {"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "512Ki"}}},
        {"sharing": {"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "ten"}}},
        {
            "sharing": {
                "strategy": "MPS",
                "mpsConfig": {"defaultPerDevicePinnedMemoryLimit": {"0": "0"}},
            }
        },
        {"sharing": {"strategy": "MPS"}, "replicas": 2},
        {"apiVersion": "resource.nvidia.com/v1", "sharing": {"strategy": "MPS"}},
        {"kind": "MigDeviceConfig"},
    ],
    ids=[
        "pct-over-100",
        "pct-negative",
        "unknown-interval",
        "unknown-strategy",
        "mps-config-with-time-slicing",
        "time-slicing-config-with-mps",
        "pinned-zero",
        "pinned-below-1Mi",
        "pinned-not-a-quantity",
        "per-device-zero",
        "unknown-field",
        "wrong-api-version",
        "wrong-kind",
    ],
)
def test_gpu_config_refuses_what_the_driver_refuses(params: dict[str, Any]) -> None:
    doc = {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", **params}
    with pytest.raises(ValidationError):
        GpuConfig.model_validate(doc)


def test_gpu_config_accepts_the_driver_demo() -> None:
    # demo/specs/quickstart/v1/gpu-test-mps.yaml of NVIDIA/k8s-dra-driver-gpu
    doc = {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "GpuConfig",
        "sharing": {
            "strategy": "MPS",
            "mpsConfig": {
                "defaultActiveThreadPercentage": 50,
                "defaultPinnedDeviceMemoryLimit": "10Gi",
            },
        },
    }
    cfg = GpuConfig.model_validate(doc)
    assert cfg.sharing is not None and cfg.sharing.mps_config is not None
    assert cfg.sharing.mps_config.pinned_mib() == 10 * 1024  # 10Gi / 2^20
    assert cfg.to_json() == doc
    assert GpuConfig.model_validate(
        {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig"}
    )
    assert quantity_bytes("1.5G") == 1_500_000_000


def test_mps_per_claim_shares_cover_each_models_demand(
    planned: tuple[Snapshot, Plan, DraRendered],
) -> None:
    snap, p, r = planned
    claims = _claims_by_name(r)
    demand = {w.model: w for w in snap.workloads}
    gpu_type = {g.uuid: g.gpu_type for g in snap.gpus}
    memory = {g.uuid: catalog.gpu_type(g.gpu_type).memory_mib for g in snap.gpus}

    def gpu_memory_of(claim: dict[str, Any]) -> int:
        expr = claim["spec"]["devices"]["requests"][0]["exactly"]["selectors"][0]["cel"][
            "expression"
        ]
        return memory[expr.split("'")[-2]]

    pct_by_claim: dict[str, list[int]] = {}
    mps = [d for d in r.deployments if _env(d)]
    assert mps
    for d in mps:
        claim = claims[_pod_claim(d)]
        assert claim["kind"] == "ResourceClaim"  # shared by every client of the GPU
        (cfg,) = claim["spec"]["devices"]["config"]
        mps_cfg = GpuConfig.model_validate(cfg["opaque"]["parameters"]).sharing.mps_config  # type: ignore[union-attr]
        assert mps_cfg is not None
        assert mps_cfg.default_active_thread_percentage == 100
        assert mps_cfg.pinned_mib() == gpu_memory_of(claim)  # the whole GPU: clients lower it
        env = _env(d)
        # what the client gets: the client env can only lower the daemon's defaults
        pct = min(
            mps_cfg.default_active_thread_percentage or 100,
            int(env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]),
        )
        mem = min(
            mps_cfg.pinned_mib() or 0,
            int(env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"].removeprefix("0=").removesuffix("M")),
        )
        w = demand[d["metadata"]["labels"]["costctl.io/model"]]
        (uuid,) = {s.gpu_uuid for s in p.slots if s.model == w.model and s.mode is Mode.mps}
        assert pct / 100 >= w.compute_on(gpu_type[uuid]) - 1e-9
        assert mem >= w.mem_mib
        expr = claim["spec"]["devices"]["requests"][0]["exactly"]["selectors"][0]["cel"][
            "expression"
        ]
        assert expr == f"device.attributes['gpu.nvidia.com'].uuid == '{uuid}'"
        pct_by_claim.setdefault(claim["metadata"]["name"], []).extend([pct] * d["spec"]["replicas"])
    ((_, pcts),) = pct_by_claim.items()
    # per-claim (unequal) shares on one GPU: 0.3 x A100 = 15% of an H100, 0.4 -> 20%
    assert sorted(pcts) == [15, 20] and sum(pcts) <= 100


def test_cel_selector_names_the_planned_mig_profile(
    planned: tuple[Snapshot, Plan, DraRendered],
) -> None:
    _, p, r = planned
    claims = _claims_by_name(r)
    mig_slots = [s for s in p.slots if s.mode is Mode.mig]
    assert mig_slots
    for s in mig_slots:
        (d,) = [
            d
            for d in r.deployments
            if d["metadata"]["labels"]["costctl.io/model"] == s.model
            and d["metadata"]["labels"]["costctl.io/variant"]
            == f"mig-{s.profile}".replace(".", "-")
        ]
        t = claims[_pod_claim(d)]
        assert t["kind"] == "ResourceClaimTemplate"
        (req,) = t["spec"]["spec"]["devices"]["requests"]
        assert req["exactly"]["deviceClassName"] == MIG_CLASS
        exprs = [sel["cel"]["expression"] for sel in req["exactly"]["selectors"]]
        assert f"device.attributes['gpu.nvidia.com'].profile == '{s.profile}'" in exprs
        assert any("parentUUID" in e and f"'{s.gpu_uuid}'" in e for e in exprs)


def test_whole_gpus_are_exact_counts_without_sharing(
    planned: tuple[Snapshot, Plan, DraRendered],
) -> None:
    _, _, r = planned
    claims = _claims_by_name(r)
    counts = {}
    for d in r.deployments:
        variant = d["metadata"]["labels"]["costctl.io/variant"]
        if not variant.startswith("gpu-"):
            continue
        (req,) = _claim_spec(claims[_pod_claim(d)])["devices"]["requests"]
        assert req["exactly"]["deviceClassName"] == GPU_CLASS
        assert "config" not in _claim_spec(claims[_pod_claim(d)])["devices"]
        counts[d["metadata"]["labels"]["costctl.io/model"]] = req["exactly"].get("count", 1)
    assert counts == {"llama-3-70b": 1, "bert-gang": 2}


def test_deployments_name_their_claims_and_carry_no_extended_resources(
    planned: tuple[Snapshot, Plan, DraRendered],
) -> None:
    snap, _, r = planned
    claims = _claims_by_name(r)
    replicas: dict[str, int] = {}
    for d in r.deployments:
        assert _pod_claim(d) in claims
        (c0,) = d["spec"]["template"]["spec"]["containers"]
        assert c0["resources"] == {"claims": [{"name": POD_CLAIM}]}  # no nvidia.com/* limits
        model = d["metadata"]["labels"]["costctl.io/model"]
        replicas[model] = replicas.get(model, 0) + d["spec"]["replicas"]
    assert replicas == {w.model: w.replicas for w in snap.workloads}
    named = {_pod_claim(d) for d in r.deployments}
    assert named == set(claims)  # no claim object is rendered that nothing names


def test_time_sliced_gpus_get_a_time_slicing_claim() -> None:
    gpus = fleet(("t4", "c", 1))
    ws = (
        workload("batch-a", 4000, 0.3, 1, iso="best-effort", latency="batch", ref_type="T4"),
        workload("batch-b", 4000, 0.3, 2, iso="best-effort", latency="batch", ref_type="T4"),
    )
    p = plan(Snapshot(gpus, ws), Policy(modes=("gpu", "timeslice")))
    assert {s.mode for s in p.slots} == {Mode.timeslice}
    r = render_dra(p, gpus)
    (claim,) = r.claims
    (cfg,) = claim["spec"]["devices"]["config"]
    assert cfg["opaque"]["parameters"]["sharing"] == {
        "strategy": "TimeSlicing",
        "timeSlicingConfig": {"interval": "Default"},
    }
    assert {_pod_claim(d) for d in r.deployments} == {claim["metadata"]["name"]}
    assert all(not _env(d) for d in r.deployments)
    for o in r.objects():
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


_WORKLOADS = st.lists(
    st.tuples(
        st.integers(2000, 60000),  # mem MiB
        st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.45, 0.7, 1.0]),  # compute (A100 = 1)
        st.integers(1, 3),  # replicas
        st.sampled_from(["strict", "shared", "best-effort"]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=25, deadline=None)
@given(_WORKLOADS, st.sampled_from(["a100", "h100", "t4"]))
def test_every_placed_replica_gets_what_it_needs_from_its_claim(
    specs: list[tuple[int, float, int, str]], kind: str
) -> None:
    gpus = fleet((kind, "n", 3))
    ws = tuple(
        workload(
            f"m{i}", mem, c, n, iso=iso, latency="batch" if iso == "best-effort" else "interactive"
        )
        for i, (mem, c, n, iso) in enumerate(specs)
    )
    snap = Snapshot(gpus, ws)
    p = plan(snap, PER_CLAIM)
    r = render_dra(p, gpus)
    claims = _claims_by_name(r)
    by_model = {w.model: w for w in ws}
    placed: dict[str, int] = {}
    for d in r.deployments:
        model = d["metadata"]["labels"]["costctl.io/model"]
        placed[model] = placed.get(model, 0) + d["spec"]["replicas"]
        spec = _claim_spec(claims[_pod_claim(d)])
        (req,) = spec["devices"]["requests"]
        for cfg in spec["devices"].get("config", []):
            GpuConfig.model_validate(cfg["opaque"]["parameters"])
        env = _env(d)
        if env:  # MPS: the client's own share covers its demand on that GPU type
            w = by_model[model]
            pct = int(env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"])
            mem = int(env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"].removeprefix("0=").removesuffix("M"))
            assert pct / 100 >= w.compute_on(gpus[0].gpu_type) - 1e-9 and mem >= w.mem_mib
        if req["exactly"]["deviceClassName"] == MIG_CLASS:
            variant = d["metadata"]["labels"]["costctl.io/variant"]
            exprs = " ".join(s["cel"]["expression"] for s in req["exactly"]["selectors"])
            profiles = {s.profile for s in p.slots if s.model == model and s.mode is Mode.mig}
            assert any(
                f"profile == '{pr}'" in exprs and variant.endswith(pr.replace(".", "-"))
                for pr in profiles
            )  # type: ignore[union-attr]
    unplaced = {u.model for u in p.unplaced}
    for w in ws:
        if w.model not in unplaced:
            assert placed.get(w.model, 0) == w.replicas
    # shared GPUs: the clients' thread percentages on one claim never add up past the GPU
    per_claim: dict[str, int] = {}
    for d in r.deployments:
        if _env(d):
            pct = int(_env(d)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]) * d["spec"]["replicas"]
            per_claim[_pod_claim(d)] = per_claim.get(_pod_claim(d), 0) + pct
    assert all(v <= 100 for v in per_claim.values())
