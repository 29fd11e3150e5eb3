"""422 responses in FastAPI's own shape: ``{"detail": [{"loc", "msg", "type"}]}``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request, status


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
