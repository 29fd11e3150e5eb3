"""The OpenAPI document as the API behaves: error responses each operation can give.

FastAPI declares 200 and its own 422; ``install_openapi`` adds, per operation, what the code
can answer: 401/403 where a key is required, 404 where a path names a thing, 409 where a
conflict is refused, 400/413 where a body is read (FastAPI's parser, BodyGuard), 422
everywhere (BodyGuard checks every query string), 503 from the health checks. Bodies follow
``{"detail": ...}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

CONFLICTS = {("delete", "/v1/keys/{prefix}")}
UNAVAILABLE = {("get", "/readyz"), ("get", "/healthz/jobs")}
_DESCRIPTIONS = {
    "400": "the body could not be read as JSON",
    "401": "missing, invalid or revoked API key",
    "403": "the key's role or customer scope does not allow this",
    "404": "no such object",
    "409": "refused: it conflicts with the current state",
    "413": "request body larger than billing.max_body_bytes",
    "422": "invalid input; ``loc`` names the field",
    "503": "not ready",
}


class ErrorItem(BaseModel):
    """One invalid field: where (``loc``), why (``msg``) and a machine-readable ``type``."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: a message, or one item per invalid field."""

    detail: str | list[ErrorItem]


def _codes(method: str, path: str, op: dict[str, Any]) -> list[str]:
    codes = ["422"]
    if op.get("security"):
        codes += ["401", "403"]
    if "{" in path:
        codes.append("404")
    if (method, path) in CONFLICTS:
        codes.append("409")
    if "requestBody" in op:
        codes += ["400", "413"]
    if (method, path) in UNAVAILABLE:
        codes.append("503")
    return sorted(codes)


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ErrorBody and the error responses of every operation added."""
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    comps.update(body.pop("$defs", {}))
    comps["ErrorBody"] = body
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            for code in _codes(method, path, op):
                responses[code] = {
                    "description": _DESCRIPTIONS[code],
                    "content": {"application/json": {"schema": ref}},
                }
    for stale in ("HTTPValidationError", "ValidationError"):
        comps.pop(stale, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve ``document(...)`` of FastAPI's schema as /openapi.json (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
