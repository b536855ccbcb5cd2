"""Request body size limit, enforced before any handler reads the body."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit", "declared_length", "last_header", "reject_too_large"]


class BodySizeLimit:
    """Answers 413 when a body is larger than ``max_bytes``, whether or not it declares a Content-Length.

    The body is read up to the limit before the app runs, so a handler never sees a partial body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope.get("headers") or ())
        if declared > self.max_bytes:
            await reject_too_large(send, declared, self.max_bytes)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await reject_too_large(send, size, self.max_bytes)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def last_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the last header ``name`` (lower case, as ASGI gives names), as a dict of the headers holds it;
    None when there is none."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """A request's Content-Length (the last one given), or 0 when it gives none that is a number."""
    declared = last_header(headers, b"content-length") or b""
    return int(declared) if declared.isdigit() else 0


async def reject_too_large(send: Send, size: int, max_bytes: int) -> None:
    """The 413 answer to a body of at least ``size`` bytes."""
    payload = json.dumps(
        {
            "error": {
                "message": f"request body is at least {size} bytes; the limit is {max_bytes} bytes",
                "type": "request_too_large",
                "code": 413,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
