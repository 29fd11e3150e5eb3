"""The real costctl API (billing.api.app.create_app) under uvicorn on 127.0.0.1, in a thread.

``ApiServer(engine, port)`` can be stopped and started again on the same port (the API
"down for a while"); ``free_port()`` picks a port first.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime

import uvicorn
from sqlalchemy.engine import Engine

from billing.api.app import create_app
from billing.apikeys import create_key
from billing.config import BillingConfig
from billing.models import ApiRole


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ingest_key(engine: Engine) -> str:
    """A new API key with role ingest."""
    return create_key(
        engine, name="agent", role=ApiRole.ingest, customer=None, now=datetime.now(UTC)
    )


class ApiServer:
    """The API over ``engine`` on 127.0.0.1:``port``."""

    def __init__(self, engine: Engine, port: int | None = None) -> None:
        self.engine = engine
        self.port = port or free_port()
        self.app = create_app(engine=engine, config=BillingConfig())
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock = socket.socket()

    def start(self) -> ApiServer:
        """Listen (blocks until uvicorn has started). Raises: RuntimeError."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        self._sock = sock
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("API did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
            self._sock.close()
        self._server = self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
