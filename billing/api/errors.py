"""422 responses in FastAPI's own shape: ``{"detail": [{"loc", "msg", "type"}]}``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def unprocessable(loc: list[Any], msg: str, type_: str = "value_error") -> HTTPException:
    """A 422 naming the offending field."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": loc, "msg": msg, "type": type_}],
    )


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON; 422 at ``["body"]`` when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise unprocessable(["body"], f"body is not valid JSON: {exc}", "json_invalid") from exc
    except RecursionError as exc:
        raise unprocessable(["body"], "JSON nested too deeply", "json_invalid") from exc


def _safe_error(e: dict[str, Any]) -> dict[str, Any]:
    """A validation error without its ``input``/``ctx`` (they may hold NaN or deep input)."""
    return {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}


async def _validation_422(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": [_safe_error(e) for e in errors]},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render 422s without echoing the input, so rendering one can never fail."""
    app.add_exception_handler(RequestValidationError, _validation_422)
