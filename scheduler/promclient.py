"""Prometheus' HTTP API, wrapped once: typed results, every failure as PrometheusError.

Only ``/api/v1/query`` and ``/api/v1/query_range`` (form-encoded POST, so long selectors fit).
Values stay floats as Prometheus sends them ("NaN", "+Inf" included); callers decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx


class PrometheusError(RuntimeError):
    """Prometheus unreachable, answering garbage, or refusing or failing a query."""


@dataclass(frozen=True)
class Series:
    """One time series of a result: its labels and (unix seconds, value) points in time order."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


class PromClient:
    """A client of one Prometheus server (``base_url`` like ``http://prometheus:9090``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests); the client is closed by ``close``."""
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PromClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, expr: str, at: datetime) -> list[Series]:
        """Evaluate ``expr`` at ``at`` (an instant vector, or a range vector's raw samples)."""
        data = self._post("/api/v1/query", {"query": expr, "time": _unix(at)})
        return _series(data)

    def query_range(self, expr: str, start: datetime, end: datetime, step_s: float) -> list[Series]:
        """Evaluate ``expr`` at start, start + step, ..., up to end (inclusive)."""
        form = {"query": expr, "start": _unix(start), "end": _unix(end), "step": f"{step_s:g}"}
        return _series(self._post("/api/v1/query_range", form))

    def _post(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        where = f"Prometheus {self.base_url}{path}"
        try:
            resp = self._http.post(path, data=form)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{where}: {type(exc).__name__}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(
                f"{where}: HTTP {resp.status_code}, not JSON: {resp.text[:200]!r}"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            err = body.get("error") if isinstance(body, dict) else None
            kind = body.get("errorType") if isinstance(body, dict) else None
            raise PrometheusError(f"{where}: HTTP {resp.status_code} {kind}: {err}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"{where}: response without data")
        return data


def _unix(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("Prometheus times must be timezone-aware")
    return f"{ts.timestamp():.3f}"


def _point(p: Any) -> tuple[float, float]:
    return float(p[0]), float(p[1])


def _series(data: Mapping[str, Any]) -> list[Series]:
    """Series of a vector, matrix or scalar result. Raises: PrometheusError for other shapes."""
    kind = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "matrix":
            return [
                Series(dict(r["metric"]), tuple(_point(p) for p in r["values"])) for r in result
            ]
        if kind == "vector":
            return [Series(dict(r["metric"]), (_point(r["value"]),)) for r in result]
        if kind == "scalar":
            return [Series({}, (_point(result),))]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PrometheusError(f"malformed {kind} result: {exc}") from exc
    raise PrometheusError(f"unexpected result type {kind!r}")
