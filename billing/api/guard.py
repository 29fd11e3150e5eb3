"""Checks every request passes before a route parses it: size (413), JSON depth, NaN, NUL (422).

An ASGI middleware: the body is read once, counted as it streams (Content-Length is checked
first), scanned, and handed on unchanged. Each scan is a C-level byte search first, so a
clean body costs one pass; only a body that might hold the bad thing is parsed here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class _Constant:
    """Stands for a NaN or Infinity literal found while parsing."""


_NON_FINITE = _Constant()


def _max_depth(brackets: bytes) -> int:
    depth = deepest = 0
    for b in brackets:
        if b in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than ``max_depth`` (strings skipped).

    Details: counts brackets first (C-level); only a body whose raw brackets nest too deep is
    scanned again with its strings removed, so a ``"[[["`` inside a string is not nesting.
    A string full of closing brackets can hide nesting from the first count; the JSON parser's
    own recursion limit then answers (400/422), so nothing deeper than ~1000 levels gets in.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    if _max_depth(body.translate(None, _NOT_BRACKETS)) <= max_depth:
        return False
    return _max_depth(_STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)) > max_depth


def _walk(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    if value is _NON_FINITE:
        yield path, "NaN and Infinity are not allowed"
    elif isinstance(value, str):
        if "\x00" in value:
            yield path, "NUL characters (\\u0000) are not allowed"
    elif isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                yield (*path, k), "NUL characters (\\u0000) are not allowed in keys"
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def body_problem(body: bytes, max_depth: int) -> tuple[list[Any], str] | None:
    """(loc, message) of the first thing no route accepts in a JSON body, else None."""
    if json_depth_exceeds(body, max_depth):
        return ["body"], f"JSON nested deeper than {max_depth} levels"
    if b"NaN" not in body and b"Infinity" not in body and b"\\u0000" not in body:
        return None
    try:
        parsed = json.loads(body, parse_constant=lambda _c: _NON_FINITE)
    except (ValueError, RecursionError):
        return None  # not JSON: the route says so
    for path, msg in _walk(parsed):
        return ["body", *path], msg
    return None


def query_problem(scope: Scope) -> tuple[list[Any], str] | None:
    """(loc, message) for a NUL in the path or a query parameter, else None."""
    if "\x00" in scope.get("path", ""):
        return ["path"], "NUL characters are not allowed in the path"
    raw = scope.get("query_string", b"").decode("latin-1")
    if "%00" not in raw and "\x00" not in raw:
        return None
    for name, value in parse_qsl(raw, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return ["query", name.replace("\x00", "")], "NUL characters are not allowed"
    return None


async def _reply(send: Send, status: int, detail: Any) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _unprocessable(problem: tuple[list[Any], str]) -> list[dict[str, Any]]:
    return [{"loc": problem[0], "msg": problem[1], "type": "value_error"}]


class BodyGuard:
    """ASGI middleware: 413 over ``max_bytes``, 422 for deep JSON, NaN/Infinity or NUL."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then run the app with the body replayed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if problem := query_problem(scope):
            await _reply(send, 422, _unprocessable(problem))
            return
        too_big = f"request body larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _reply(send, 413, too_big)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reply(send, 413, too_big)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and (problem := body_problem(body, self.max_depth)):
            await _reply(send, 422, _unprocessable(problem))
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
