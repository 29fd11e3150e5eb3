"""Dashboard login with an API key: admin and read keys get in, a customer-scoped read key
sees only its customer's rows.

The key is checked once with ``billing.apikeys.verify_key``; the signed Flask session then
holds the key id, role and customer (never the key). Every callback re-checks that the key
has not been revoked since, so revoking a key locks its dashboard sessions out at the next
refresh.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.apikeys import verify_key
from billing.models import ApiKey, ApiRole, table_of

SESSION_KEY = "costctl_viewer"
OPEN_PREFIXES = ("/login", "/logout", "/healthz", "/_dash-component-suites/", "/assets/")
OPEN_PATHS = ("/_favicon.ico", "/favicon.ico")


@dataclass(frozen=True)
class Viewer:
    """Who is looking: a key's name and role; ``customer`` scopes everything to one tenant."""

    name: str
    role: str
    customer: str | None = None
    key_id: int | None = None

    @property
    def is_tenant(self) -> bool:
        """True for a customer-scoped key (fleet-wide panels are hidden)."""
        return self.customer is not None


ANONYMOUS_ADMIN = Viewer(name="anonymous (auth disabled)", role=ApiRole.admin.value)


def check_key(engine: Engine, key: str) -> Viewer | None:
    """The viewer of a live admin or read key, else None (ingest keys cannot read costs)."""
    p = verify_key(engine, key.strip())
    if p is None or not p.can(ApiRole.read):
        return None
    return Viewer(name=p.name, role=p.role.value, customer=p.customer, key_id=p.key_id)


def key_is_live(engine: Engine, key_id: int | None) -> bool:
    """True when the key behind a session exists and is not revoked."""
    if key_id is None:
        return False
    t = table_of(ApiKey).c
    with engine.connect() as conn:
        row = conn.execute(select(t.revoked_at).where(t.id == key_id)).first()
    return row is not None and row[0] is None


def current_viewer(require_auth: bool) -> Viewer | None:
    """The viewer of the current request's session (admin when auth is off)."""
    if not require_auth:
        return ANONYMOUS_ADMIN
    if not flask.has_request_context():
        return None
    raw = flask.session.get(SESSION_KEY)
    if not isinstance(raw, dict):
        return None
    return Viewer(**raw)


LOGIN_PAGE = """<!doctype html><html><head><title>costctl: sign in</title><style>
body{{font-family:system-ui,sans-serif;background:#f4f6f8;display:flex;justify-content:center;
padding-top:12vh}} form{{background:#fff;padding:2em 2.5em;border-radius:8px;
box-shadow:0 1px 4px #0002;width:30em}} input{{width:100%;padding:.5em;margin:.6em 0;
font-family:monospace}} button{{padding:.5em 1.4em}} .err{{color:#b00020}}</style></head>
<body><form method="post" action="/login"><h2>costctl unit economics</h2>
<p>Sign in with an API key (admin or read; a customer-scoped read key sees only its own
costs).</p><p class="err">{error}</p>
<input id="key" name="key" type="password" placeholder="cc_xxxxxxxx_..." autofocus>
<button id="login" type="submit">Sign in</button></form></body></html>"""


def install(server: flask.Flask, engine: Engine, *, require_auth: bool) -> None:
    """Add /login and /logout and a guard: unsigned-in pages go to /login, callbacks get 401."""

    def login() -> Any:
        if flask.request.method == "GET":
            return LOGIN_PAGE.format(error="")
        viewer = check_key(engine, flask.request.form.get("key", ""))
        if viewer is None:
            page = LOGIN_PAGE.format(error=html.escape("invalid, revoked or ingest-only key"))
            return page, 401
        flask.session.clear()
        flask.session[SESSION_KEY] = viewer.__dict__
        return flask.redirect("/")

    def logout() -> Any:
        flask.session.clear()
        return flask.redirect("/login")

    server.add_url_rule("/login", "costctl_login", login, methods=["GET", "POST"])
    server.add_url_rule("/logout", "costctl_logout", logout)
    server.before_request(_guard(engine, require_auth))


def _guard(engine: Engine, require_auth: bool) -> Callable[[], Any]:
    def guard() -> Any:
        path = flask.request.path
        if not require_auth or path.startswith(OPEN_PREFIXES) or path in OPEN_PATHS:
            return None
        viewer = current_viewer(require_auth)
        callback = path.startswith("/_dash-update-component")
        if viewer is not None and callback and not key_is_live(engine, viewer.key_id):
            flask.session.clear()
            viewer = None
        if viewer is not None:
            return None
        if path.startswith("/_dash"):
            return flask.jsonify({"detail": "sign in at /login"}), 401
        return flask.redirect("/login")

    return guard
