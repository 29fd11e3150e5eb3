"""The dashboard role: the Dash app from settings, served by waitress (a production WSGI
server, not werkzeug's development server), with the session secret from settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dash import Dash
from sqlalchemy.engine import Engine
from waitress.server import create_server

from costctl.settings import Settings
from dashboard.app import create_dash_app
from dashboard.budgets import make_budget_panel
from dashboard.callbacks import Panels
from dashboard.fleet import panels_for

log = logging.getLogger(__name__)


def default_panels(engine: Engine, settings: Settings) -> Panels:
    """Budget burn-down (enforcement), packing plan and what-if (scheduler) over the store."""
    plan, whatif = panels_for(engine, settings.scheduler)
    return Panels(
        budget=make_budget_panel(engine, settings.billing),
        plan=plan,
        whatif=whatif,
        rate_card=settings.billing.enforcement,
    )


def build_dashboard(
    settings: Settings,
    engine: Engine,
    *,
    clock: Callable[[], datetime],
    panels: Panels | None = None,
    refresh_s: float = 30.0,
    default_window: str = "24h",
) -> Dash:
    """The Dash app; its cookie is signed with ``settings.dashboard.session_secret`` when set."""
    secret = settings.dashboard.session_secret
    return create_dash_app(
        engine,
        clock=clock,
        require_auth=settings.billing.require_auth,
        panels=panels or default_panels(engine, settings),
        refresh_s=refresh_s,
        default_window=default_window,
        secret_key=secret.get_secret_value().encode() if secret else None,
    )


class WsgiServer:
    """A waitress server bound at construction (port 0 picks one).

    ``run()`` serves until ``close()`` (from any thread): the event loop runs in short rounds
    and checks a stop flag between them, so closing never pulls a socket from under select().
    """

    def __init__(self, app: Any, *, host: str, port: int, threads: int) -> None:
        self._srv = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="costctl-dashboard",
            clear_untrusted_proxy_headers=True,
        )
        self.effective_port: int = self._srv.effective_port
        self._stop = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        """Serve until ``close``."""
        try:
            while not self._stop.is_set():
                self._srv.asyncore.loop(timeout=0.2, map=self._srv._map, count=1)
        finally:
            self._done.set()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop serving, finish the requests in flight, release the port."""
        self._stop.set()
        self._done.wait(timeout_s)
        self._srv.close()
        self._srv.task_dispatcher.shutdown()


def wsgi_server(dash: Dash, settings: Settings, host: str, port: int) -> WsgiServer:
    """The dashboard's WSGI server on ``host:port``."""
    return WsgiServer(dash.server, host=host, port=port, threads=settings.dashboard.threads)
