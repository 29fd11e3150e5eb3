"""Scheduler commands: `plan`, `apply` (Kubernetes), `sample` (one NVML round into the store).

The fleet and demand come from the store (recent GPU samples, process samples, open
allocations) or from a YAML spec (``--spec``)::

    nodes:
      - {name: gpu-node-a, gpu_type: A100-80GB, gpus: 2, pricing_class: on-demand}
      - {name: gpu-node-b, gpu_type: H100-80GB, gpus: 2, mig: [[3g, 2g, 2g], null]}
    workloads:
      - {model: llama-3-8b, mem_mib: 20000, compute: 0.3, replicas: 2, isolation: shared}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costctl.context import AppContext, fail, get_ctx, now
from costctl.settings import Settings
from scheduler.jobs import make_collectors, record_allocations, sample_once
from scheduler.model import Isolation, LatencyClass, Snapshot, Workload
from scheduler.planner import plan as make_plan
from scheduler.policy import Policy
from scheduler.simfleet import NodeSpec, build_fleet
from scheduler.snapshot import PriceMap, fleet_gpus, make_snapshot
from scheduler.store_snapshot import snapshot_from_store, store_prices
from scheduler.views import plan_to_dict


class _NodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    gpu_type: str
    gpus: int = Field(default=1, ge=1, le=64)
    pricing_class: str = "on-demand"
    mig: list[list[str] | None] = Field(default_factory=list)


class _WorkloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    mem_mib: float = Field(ge=0)
    compute: float = Field(gt=0, le=8)
    replicas: int = Field(default=1, ge=0)
    isolation: Isolation = Isolation.shared
    latency: LatencyClass = LatencyClass.interactive
    ref_type: str = "A100-80GB"
    gpus: int = Field(default=1, ge=1)
    gpu_types: list[str] = Field(default_factory=list)


class _SpecIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[_NodeIn]
    workloads: list[_WorkloadIn]


def _prices(c: AppContext) -> PriceMap:
    return store_prices(c.engine, now())


def load_spec(path: Path) -> _SpecIn:
    """Parse and validate a fleet + demand spec (exit 2 with the field on bad input)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read spec {path}: {exc}")
    try:
        return _SpecIn.model_validate(doc)
    except ValidationError as exc:
        e = exc.errors()[0]
        fail(f"spec {path}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}")


def build_snapshot(c: AppContext, spec: Path | None) -> Snapshot:
    """The planner's input from a spec file or from the store."""
    prices = _prices(c)
    if spec is not None:
        s = load_spec(spec)
        try:
            fleet = build_fleet(
                [
                    NodeSpec(
                        n.name,
                        n.gpu_type,
                        n.gpus,
                        n.pricing_class,
                        tuple(None if m is None else tuple(m) for m in n.mig),
                    )
                    for n in s.nodes
                ]
            )
            gpus = fleet_gpus(fleet, prices)
        except (KeyError, ValueError) as exc:
            fail(f"spec {spec}: {exc}")
        workloads = [
            Workload(
                w.model,
                w.mem_mib,
                w.compute,
                w.replicas,
                w.isolation,
                w.latency,
                w.ref_type,
                w.gpus,
                tuple(w.gpu_types),
            )
            for w in s.workloads
        ]
        return make_snapshot(gpus, workloads, (), now())
    snap = snapshot_from_store(c.engine, c.settings.scheduler, now(), prices=prices)
    if snap is None:
        fail(
            "no GPU samples or no measured demand in the last hour: run `costctl sample` / "
            "`costctl demo`, or pass --spec"
        )
    return snap


def _slot_label(s: dict[str, Any]) -> str:
    if s["profile"]:
        return str(s["profile"])
    if s["thread_pct"]:
        return f"{s['thread_pct']}%"
    return f"{s['share']:.2f}"


def _table(d: dict[str, Any]) -> str:
    lines = [
        f"plan: {d['gpus_used']} GPUs, ${d['usd_per_hour']:.2f}/h "
        f"(lower bound {d['lower_bound']['gpus']} GPUs, ${d['lower_bound']['usd_per_hour']:.2f}/h)",
        (
            f"current: ${d['current_usd_per_hour']:.2f}/h  saving vs current: "
            f"${d['saving_vs_current_usd_per_hour']:.2f}/h"
            if d["current_usd_per_hour"] > 0
            else "current: no placement recorded (nothing applied yet): every slot is a move"
        ),
        f"one model per GPU: {d['one_per_gpu']['gpus']} GPUs, "
        f"${d['one_per_gpu']['usd_per_hour']:.2f}/h  saving: "
        f"${d['saving_vs_one_per_gpu_usd_per_hour']:.2f}/h",
        "",
        f"{'node':<16} {'gpu':<14} {'type':<11} {'mode':<9} {'$/h':>7}  slots",
    ]
    for g in d["gpus"]:
        slots = ", ".join(f"{s['model']}[{_slot_label(s)}]" for s in g["slots"])
        lines.append(
            f"{g['node']:<16} {g['gpu_uuid'][:14]:<14} {g['gpu_type']:<11} "
            f"{g['mode']:<9} {g['usd_per_hour']:>7.2f}  {slots}"
        )
    for u in d["unplaced"]:
        why = u["reasons"][0] if u["reasons"] else {}
        lines.append(
            f"UNPLACED {u['model']}#{u['replica']}: {why.get('resource')}: {why.get('reason')}"
        )
    moves = [m for m in d["moves"] if m["action"] != "keep"]
    lines.append(
        f"moves: {len(moves)} ({sum(m['action'] == 'add' for m in moves)} add, "
        f"{sum(m['action'] == 'remove' for m in moves)} remove)"
    )
    return "\n".join(lines)


APPLIER_FACTORY: Callable[[Settings], Any] | None = None
TARGETS = ("device-plugin", "dra")
TargetOpt = Annotated[
    str,
    typer.Option(
        "--target", help="device-plugin (extended resources) | dra (resource.k8s.io/v1 claims)"
    ),
]


def _policy(settings: Settings, target: str) -> Policy:
    """The planning policy for ``target`` (exit 2 on an unknown one): DRA plans per-claim MPS."""
    if target not in TARGETS:
        fail(f"--target must be device-plugin or dra, not {target!r}")
    cfg = settings.scheduler
    if target == "dra":
        cfg = cfg.model_copy(update={"mps_shares": "per-claim"})
    return Policy.from_config(cfg)


PATCH_HEADER = (
    "# costctl plan (target {target}): server-side apply configurations, fieldManager=costctl.\n"
    "# Deployments here are PATCHES (only the fields costctl owns: replicas, GPU limits, MPS env,\n"
    "# node affinity), not complete manifests; `--manifests` merges them onto the live\n"
    "# Deployments (or --from-dir DIR). ConfigMaps are completed with the GPU Operator's own\n"
    "# entries at apply time."
)


def _applier(settings: Settings) -> Any:
    """The Kubernetes applier; exit 2 with one line when no cluster is configured."""
    if APPLIER_FACTORY is not None:
        return APPLIER_FACTORY(settings)
    from scheduler.kube import KubeApplier, NoClusterError

    try:
        return KubeApplier.from_settings(settings)
    except NoClusterError as exc:
        fail(f"{exc}; `costctl plan -o k8s` renders the objects without one")


def k8s_objects(
    c: AppContext, p: Any, snap: Snapshot, target: str, bases: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The plan as Kubernetes objects for ``target`` (bases: complete Deployments onto them)."""
    from scheduler.kube import render, to_dicts
    from scheduler.kube.manifests import complete

    r = render(
        p,
        snap.gpus,
        namespace=c.settings.scheduler.kube_namespace,
        mig_configmap=c.settings.scheduler.mig_parted_configmap,
        device_plugin_configmap=c.settings.scheduler.device_plugin_configmap,
        operator_namespace=c.settings.scheduler.gpu_operator_namespace,
    )
    if bases is None:
        return to_dicts(r.objects())
    try:
        deployments = complete(r, bases)
    except LookupError as exc:
        fail(f"--manifests: {exc}")
    others = [o for o in to_dicts(r.objects()) if o["kind"] != "Deployment"]
    return others + deployments


def apply_plan(applier: Any, p: Any, snap: Snapshot, target: str, dry_run: bool) -> Any:
    """Apply (or diff) the plan on the cluster for ``target``; exit 2 on a cluster error."""
    from scheduler.kube import ApplyError

    try:
        return applier.apply(p, snap.gpus, dry_run=dry_run, target=target)
    except (ApplyError, LookupError) as exc:
        fail(f"kubernetes: {exc}")


def _bases(c: AppContext, from_dir: Path | None) -> list[dict[str, Any]]:
    """Deployments to complete the plan onto: from ``from_dir`` or the cluster."""
    if from_dir is not None:
        from scheduler.kube.manifests import read_dir

        try:
            return read_dir(from_dir)
        except (OSError, yaml.YAMLError) as exc:
            fail(f"--from-dir {from_dir}: {exc}")
    from scheduler.kube import ApplyError, to_dicts
    from scheduler.kube.render import MODEL_LABEL

    a = _applier(c.settings)
    try:
        found = a._retry(a.apps.list_namespaced_deployment, a.namespace, label_selector=MODEL_LABEL)
    except ApplyError as exc:
        fail(f"kubernetes: {exc}")
    return to_dicts(found.items)


def register(app: typer.Typer) -> None:
    """Add `plan`, `apply` and `sample`."""

    @app.command("plan")
    def plan_cmd(
        ctx: typer.Context,
        spec: Annotated[Path | None, typer.Option(help="fleet + demand YAML")] = None,
        output: Annotated[
            str, typer.Option("-o", "--output", help="table|json|yaml|k8s")
        ] = "table",
        target: TargetOpt = "device-plugin",
        manifests: Annotated[
            bool,
            typer.Option(
                "--manifests",
                help="-o k8s: complete Deployments (the plan merged onto the cluster's or DIR's)",
            ),
        ] = False,
        from_dir: Annotated[
            Path | None, typer.Option(help="--manifests: read the Deployments from this directory")
        ] = None,
    ) -> None:
        """Print the packing plan, its cost, and the savings vs current and one-per-GPU."""
        if output not in ("table", "json", "yaml", "k8s"):
            fail(f"--output must be table, json, yaml or k8s, not {output!r}")
        if (manifests or from_dir is not None) and output != "k8s":
            fail("--manifests / --from-dir go with -o k8s")
        if from_dir is not None and not manifests:
            fail("--from-dir goes with --manifests")
        if manifests and target != "device-plugin":
            fail("--manifests goes with --target device-plugin")
        c = get_ctx(ctx)
        policy = _policy(c.settings, target)
        snap = build_snapshot(c, spec)
        p = make_plan(snap, policy)
        d = plan_to_dict(p)
        if output == "json":
            typer.echo(json.dumps(d, indent=2))
        elif output == "yaml":
            typer.echo(yaml.safe_dump(d, sort_keys=False))
        elif output == "k8s" and target == "dra":
            from scheduler.kube.dra import render_dra

            ns = c.settings.scheduler.kube_namespace
            objs = render_dra(p, snap.gpus, namespace=ns).objects()
            typer.echo(yaml.safe_dump_all(objs, sort_keys=False))
        elif output == "k8s":
            bases = _bases(c, from_dir) if manifests else None
            objs = k8s_objects(c, p, snap, target, bases)
            if not manifests:
                typer.echo(PATCH_HEADER.format(target=target))
            typer.echo(yaml.safe_dump_all(objs, sort_keys=False))
        else:
            typer.echo(_table(d))

    @app.command("apply")
    def apply_cmd(
        ctx: typer.Context,
        spec: Annotated[Path | None, typer.Option(help="fleet + demand YAML")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="print the diff only")] = False,
        target: TargetOpt = "device-plugin",
    ) -> None:
        """Apply the plan on Kubernetes (node labels, ConfigMaps, Deployments; DRA claims)."""
        c = get_ctx(ctx)
        policy = _policy(c.settings, target)
        snap = build_snapshot(c, spec)
        p = make_plan(snap, policy)
        applier = _applier(c.settings)
        result = apply_plan(applier, p, snap, target, dry_run)
        for ch in result.changes:
            typer.echo(f"{ch.kind}/{ch.name} {ch.field}: {ch.before!r} -> {ch.after!r}"[:300])
        typer.echo(
            f"{len(result.changes)} change(s); "
            + ("dry run, nothing written" if dry_run else f"applied={result.applied}")
        )
        for n in result.notes:
            typer.echo(f"note: {n}")
        for e in result.errors:
            typer.echo(f"error: {e}", err=True)
        if result.errors:
            raise typer.Exit(1)
        if result.applied and not dry_run:
            # what was applied, as planned allocations (observed holdings win over them)
            plan_id = now().strftime("plan-%Y%m%dT%H%M%SZ")
            n = record_allocations(c.engine, p.slots, start=now(), plan_id=plan_id)
            typer.echo(f"recorded {n} planned allocation(s) as {plan_id}")

    @app.command("sample")
    def sample_cmd(
        ctx: typer.Context,
        rounds: Annotated[int, typer.Option(min=1, max=1000)] = 1,
    ) -> None:
        """Run the NVML collector (simulated backend: the demo fleet) and store the samples."""
        c = get_ctx(ctx)
        cfg = c.settings.scheduler
        if cfg.nvml_backend == "simulated":
            from scheduler.demo import start_demo_fleet

            demo = start_demo_fleet(c.engine, cfg)
            collectors = demo.collectors
        else:
            collectors = make_collectors(cfg)
        total = 0
        for i in range(rounds):
            if cfg.nvml_backend == "simulated":
                demo.refresh_load(now())
            total += sample_once(collectors, c.engine, now() + timedelta(microseconds=i)).inserted
        typer.echo(f"{total} sample row(s) stored")
