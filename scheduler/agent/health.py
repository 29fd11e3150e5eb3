"""``GET /healthz`` of the node agent: a tiny http.server in a daemon thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

StatusFn = Callable[[], tuple[int, dict[str, Any]]]


def start_health_server(host: str, port: int, status: StatusFn) -> ThreadingHTTPServer:
    """Serve ``status()`` as JSON on /healthz (404 elsewhere); ``server.shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            code, body = status() if self.path.split("?")[0] == "/healthz" else (404, {})
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="agent-health", daemon=True).start()
    return server
