"""The CLI's API edge: commands that change state go through the costctl API when
``COSTCTL_API_URL`` (or ``--url``) is set, with ``COSTCTL_API_KEY`` (or ``--api-key``).

The server runs the same rule as the local path (one implementation: the route calls the same
store function); this module only carries the request and turns errors into CLI exits:
4xx → exit 2 with the field the API named, unreachable or 5xx → exit 1.
"""

from __future__ import annotations

from typing import Any

import httpx

from costctl.context import fail


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300] or r.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = ".".join(str(p) for p in first.get("loc", []) if p not in ("body", "path", "query"))
        return f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", ""))
    return str(detail)


class RemoteApi:
    """A thin, synchronous client of the costctl API for the CLI."""

    def __init__(self, url: str, key: str | None, *, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Send one request; exits 2 on a 4xx (naming the field), 1 when unreachable or 5xx."""
        try:
            r = self.client.request(method, path, json=body)
        except httpx.TransportError as exc:
            fail(f"API {self.url} unreachable: {exc}", code=1)
        if r.status_code >= 500:
            fail(f"API {self.url}{path}: HTTP {r.status_code}: {_detail(r)}", code=1)
        if r.status_code >= 400:
            fail(f"API: HTTP {r.status_code}: {_detail(r)}")
        return r
