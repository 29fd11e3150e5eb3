"""A real Prometheus server for tests: the Debian package's binary on a free loopback port.

Installed by ``make prometheus`` (part of ``make test``); never the default port 9090.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

BINARY = "prometheus"
PROMTOOL = "promtool"


def prometheus_problem() -> str | None:
    """Why the Prometheus tests cannot run here (binaries missing), or None."""
    missing = [b for b in (BINARY, PROMTOOL) if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} not installed (run `make prometheus` as root)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(targets: Sequence[str], scrape_interval_s: float) -> str:
    jobs = ""
    if targets:
        listed = ", ".join(f'"{t}"' for t in targets)
        jobs = (
            "scrape_configs:\n"
            "  - job_name: dcgm\n"
            f"    scrape_interval: {scrape_interval_s:g}s\n"
            f"    scrape_timeout: {scrape_interval_s:g}s\n"
            f"    static_configs:\n      - targets: [{listed}]\n"
        )
    return f"global:\n  evaluation_interval: 1m\n{jobs}"


@contextmanager
def run_prometheus(
    workdir: Path,
    targets: Sequence[str] = (),
    *,
    scrape_interval_s: float = 1.0,
    data_dir: Path | None = None,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Run Prometheus scraping ``targets`` (host:port) until the block ends; yields its URL.

    ``data_dir`` may hold blocks made by ``backfill``; otherwise a fresh one in ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "prometheus.yml"
    cfg.write_text(_config(targets, scrape_interval_s))
    data = data_dir or workdir / "data"
    log = (workdir / "prometheus.log").open("w")
    for _attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if _wait_ready(url, proc):
            break
        proc.kill()
        proc.wait(10)
    else:
        log.close()
        raise RuntimeError(f"Prometheus did not start: {(workdir / 'prometheus.log').read_text()}")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def backfill(openmetrics_text: str, workdir: Path) -> Path:
    """TSDB blocks of timestamped OpenMetrics text (promtool); returns the data directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "history.om"
    src.write_text(openmetrics_text)
    data = workdir / "data"
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(src), str(data)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return data
