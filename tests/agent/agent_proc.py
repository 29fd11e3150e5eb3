"""A node agent process for the kill -9 test: the fixture nodes, real agents, real clock.

Usage: python -m tests.agent.agent_proc WORKDIR API_URL API_KEY PRODUCED_LOG

Runs until killed (SIGTERM: clean stop). After each samples record is durably spooled it
appends that record's sample keys to PRODUCED_LOG (fsync'd), so the test knows what must
arrive.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.agent.config import AgentConfig
from scheduler.agent.simnode import start_sim_nodes
from scheduler.agent.spool import Spool
from tests.agent.fixture_node import fixture_fleet


def _record_produced(spool: Spool, log: Path) -> None:
    append = spool.append

    def logged(kind: str, body: Any) -> None:
        append(kind, body)
        if kind != "samples":
            return
        keys = [[s["gpu_uuid"], s["ts"]] for s in body["samples"]]
        keys += [[p["device_uuid"], p["ts"], p["pid"]] for p in body["processes"]]
        with log.open("a") as f:
            f.write(json.dumps(keys) + "\n")
            f.flush()
            os.fsync(f.fileno())

    spool.append = logged  # type: ignore[method-assign]


def main(workdir: str, api_url: str, api_key: str, produced: str) -> None:
    """Run the fixture nodes' agents until SIGTERM."""
    fleet, _ = fixture_fleet(lambda: datetime.now(UTC))
    config = AgentConfig(backoff_base_s=0.05, backoff_max_s=0.3, request_timeout_s=5)
    nodes = start_sim_nodes(fleet, api_url, api_key, Path(workdir), interval_s=0.05, config=config)
    for a in nodes.agents:
        _record_produced(a.spool, Path(produced))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    nodes.run()
    stop.wait()
    nodes.stop()


if __name__ == "__main__":
    main(*sys.argv[1:5])
