"""The Dash application factory (a Flask app; ``costctl serve`` runs it next to the API)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime

import flask
from dash import Dash
from sqlalchemy.engine import Engine

from dashboard import auth, callbacks
from dashboard.auth import current_viewer
from dashboard.callbacks import Panels
from dashboard.layout import page


def create_dash_app(
    engine: Engine,
    *,
    clock: Callable[[], datetime],
    require_auth: bool = True,
    panels: Panels | None = None,
    refresh_s: float = 30.0,
    default_window: str = "7d",
    secret_key: bytes | None = None,
) -> Dash:
    """A Dash app over ``engine``: login, one page, one callback, GET /healthz.

    ``secret_key`` signs the session cookie (random per process by default, so a restart
    signs everybody out).
    """
    server = flask.Flask("costctl.dashboard")
    server.secret_key = secret_key or secrets.token_bytes(32)
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    auth.install(server, engine, require_auth=require_auth)
    app = Dash(
        "costctl",
        server=server,
        title="costctl · unit economics",
        update_title=None,
        suppress_callback_exceptions=True,
        health_endpoint="healthz",
    )

    def layout() -> object:
        viewer = current_viewer(require_auth) or auth.ANONYMOUS_ADMIN
        return page(viewer, default_window=default_window, refresh_s=refresh_s)

    app.layout = layout
    callbacks.register(
        app, engine, clock=clock, require_auth=require_auth, panels=panels or Panels()
    )
    return app
