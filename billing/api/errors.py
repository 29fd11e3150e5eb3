"""422 responses in FastAPI's own shape: ``{"detail": [{"loc", "msg", "type"}]}``."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status


def unprocessable(loc: list[Any], msg: str, type_: str = "value_error") -> HTTPException:
    """A 422 naming the offending field."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": loc, "msg": msg, "type": type_}],
    )
