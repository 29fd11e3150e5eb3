"""The Dockerfile: its shape (multi-stage, wheel install, non-root, costctl entrypoint), and
its builder stage replayed here offline: the COPY lines (minus .dockerignore) and `pip wheel`
without dependencies must give a wheel holding every module and data file of the packages."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.manifests import ROOT, built, pods

PACKAGES = ("billing", "scheduler", "dashboard", "costctl")


def instructions() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments)."""
    lines: list[str] = []
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + raw.strip()
        else:
            lines.append(raw.strip())
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        op, _, args = line.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append((op.upper(), args.strip()))
    return stages


def _args(stage: list[tuple[str, str]], op: str) -> list[str]:
    return [a for o, a in stage if o == op]


def test_two_stages_on_python_311_slim() -> None:
    builder, runtime = instructions()
    assert _args(builder, "FROM") == ["python:3.11-slim AS builder"]
    assert _args(runtime, "FROM") == ["python:3.11-slim"]
    assert _args(builder, "RUN") == ["pip wheel --wheel-dir /wheels ."]
    assert not _args(runtime, "COPY"), "the runtime gets the package from the wheels only"
    install = [r for r in _args(runtime, "RUN") if "pip install" in r]
    assert install == [
        "--mount=type=bind,from=builder,source=/wheels,target=/wheels "
        "pip install --no-index --find-links=/wheels costctl"
    ]


def test_runs_costctl_as_the_non_root_user_of_the_manifests() -> None:
    _, runtime = instructions()
    ops = [o for o, _ in runtime]
    (user,) = _args(runtime, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert ops.index("USER") > max(i for i, (o, a) in enumerate(runtime) if o == "RUN")
    assert _args(runtime, "ENTRYPOINT") == ['["costctl"]']
    uids = {
        spec["securityContext"]["runAsUser"]
        for w, spec in pods(built())
        if w["metadata"]["name"] != "costctl-agent"
    }
    assert uids == {int(uid)}


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore match for the patterns used here: ``X`` matches the path (or a
    directory above it) from the context root, ``**/X`` matches it at any depth."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    anywhere = ["/".join(parts[i : j + 1]) for i in range(len(parts)) for j in range(i, len(parts))]
    return any(
        fnmatch.fnmatch(x, pat.removeprefix("**/"))
        for pat in patterns
        for x in (anywhere if pat.startswith("**/") else prefixes)
    )


def _replay_copies(src: Path) -> None:
    builder, _ = instructions()
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for args in _args(builder, "COPY"):
        *sources, dest = args.split()
        for s in sources:
            assert not _ignored(s, patterns), f"COPY {s} is excluded by .dockerignore"
            target = src / dest / (Path(s).name if dest.endswith("/") else "")
            if (ROOT / s).is_dir():
                shutil.copytree(
                    ROOT / s,
                    target,
                    ignore=lambda d, names: [
                        n for n in names if _ignored(f"{Path(d).relative_to(ROOT)}/{n}", patterns)
                    ],
                )
            else:
                shutil.copy2(ROOT / s, target)


def test_the_builder_stage_makes_a_complete_wheel(tmp_path: Path) -> None:
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    src.mkdir()
    _replay_copies(src)
    assert {p.name for p in src.iterdir()} == {"pyproject.toml", "README.md", *PACKAGES}
    # the builder's `pip wheel --wheel-dir /wheels .`, without the dependencies' wheels
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--quiet", "--wheel-dir", str(wheels), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("costctl-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (ep,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = z.read(ep).decode()
    expected = {
        str(p.relative_to(src))
        for pkg in PACKAGES
        for p in (src / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "billing/price_book.yaml" in expected
    assert expected - names == set(), "files the image would lack"
    assert "costctl = costctl.cli:main" in entry_points
