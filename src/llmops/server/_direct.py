"""The gateway's hot path served without uvicorn's request-response cycle (see ``_protocol.py``).

``POST /v1/chat/completions`` is most of a gateway's traffic, and uvicorn's own per-request code (a cycle object
with an ``asyncio.Event``, the ASGI supervision coroutine, per-header checks, two writes held and joined, a
keep-alive timer per request) was ~13% of such a call's CPU (py-spy, 16 concurrent calls). A hot-path request is
read whole (within the body size limit) by the protocol, then the app below the limit (the access guard, then the
hot path) runs on it in one task, and ``DirectResponse`` writes the answer: status line and headers with the first
piece of the body, one write per piece, chunked without a Content-Length. ``DirectCycle`` keeps the state uvicorn's
protocol reads from its own cycles (``response_complete``, ``disconnected``, ``keep_alive``, ``message_event``), so
its disconnect, shutdown, keep-alive and pipelining handling work unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import ASGIApp, Message
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from llmops.server._limits import reject_too_large

__all__ = ["DirectCycle", "serve_direct"]

_SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n"
    b"connection: close\r\n\r\nInternal Server Error"
)


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...


class _Signal:
    """A one-shot event: what uvicorn's protocol sets (``message_event.set()``) when the connection is lost."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        if not self._set:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class DirectCycle:
    """One hot-path request: its scope, its body as it arrives, and the state of its response."""

    __slots__ = (
        "chunks",
        "disconnected",
        "handed",
        "keep_alive",
        "message_event",
        "received",
        "response_complete",
        "response_started",
        "scope",
        "size",
        "started",
    )

    def __init__(self, scope: Any, *, keep_alive: bool, declared: int) -> None:
        self.scope = scope
        self.chunks: list[bytes] = []
        self.received = 0
        self.size = declared  # the body's length as far as known: its declared Content-Length, or what arrived
        self.keep_alive = keep_alive
        self.started = False  # its task runs
        self.handed = False  # the app received the body
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.message_event = _Signal()

    def add(self, piece: bytes, max_bytes: int) -> None:
        """Keep a piece of the body, unless the body is over ``max_bytes`` (the rest is not kept)."""
        self.received += len(piece)
        self.size = max(self.size, self.received)
        if self.size <= max_bytes:
            self.chunks.append(piece)

    async def receive(self) -> Message:
        """The whole body at the first call; then, as under uvicorn, waits for the client to leave."""
        if not self.handed:
            self.handed = True
            chunks = self.chunks
            self.chunks = []
            return {"type": "http.request", "body": chunks[0] if len(chunks) == 1 else b"".join(chunks)}
        if not self.disconnected and not self.response_complete:
            await self.message_event.wait()
        return {"type": "http.disconnect"}


async def serve_direct(
    cycle: DirectCycle,
    app: ASGIApp,
    max_bytes: int,
    transport: Writer,
    flow: FlowControl,
    default_headers: list[tuple[bytes, bytes]],
    on_complete: Callable[[], None],
    logger: logging.Logger,
) -> None:
    """Run ``app`` on a read request and write its answer; a 413 for a body over ``max_bytes``; uvicorn's handling
    of a failing app (a 500 before the answer started, the connection closed after)."""
    response = DirectResponse(cycle, transport, flow, default_headers, on_complete)
    try:
        if cycle.size > max_bytes:
            cycle.keep_alive = False  # the rest of the body is never read: the connection cannot carry another
            await reject_too_large(response.send, cycle.size, max_bytes)
            return
        await app(cycle.scope, cycle.receive, response.send)
    except BaseException as exc:
        logger.error("Exception in ASGI application\n", exc_info=exc)
        _abort(cycle, transport)
        return
    if not cycle.response_complete and not cycle.disconnected:
        logger.error("ASGI callable returned without %s response.", "completing" if cycle.response_started else "a")
        _abort(cycle, transport)


def _abort(cycle: DirectCycle, transport: Writer) -> None:
    if not cycle.response_started and not cycle.disconnected and not transport.is_closing():
        transport.write(_SERVER_ERROR)
    cycle.keep_alive = False
    transport.close()


class DirectResponse:
    """Writes the answer to a ``DirectCycle``: headers with the first piece of the body, one write per piece, chunked
    when no Content-Length is given, without uvicorn's per-header checks (the app writing them is ours; a line
    break in a header is still refused)."""

    __slots__ = ("_cycle", "_defaults", "_flow", "_head", "_on_complete", "_remaining", "_transport")

    def __init__(
        self,
        cycle: DirectCycle,
        transport: Writer,
        flow: FlowControl,
        default_headers: list[tuple[bytes, bytes]],
        on_complete: Callable[[], None],
    ) -> None:
        self._cycle = cycle
        self._transport = transport
        self._flow = flow
        self._defaults = default_headers
        self._on_complete = on_complete
        self._head = b""
        self._remaining: int | None = None  # bytes of a Content-Length body still to come; None: chunked

    async def send(self, message: Message) -> None:
        cycle = self._cycle
        if self._flow.write_paused and not cycle.disconnected:
            await self._flow.drain()  # a slow reader of a stream: wait until the transport's buffer drains
        if cycle.disconnected:
            return
        kind = message["type"]
        if not cycle.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got {kind!r}.")
            self._head = self._start(message["status"], message.get("headers", ()))
            cycle.response_started = True  # after the headers passed: a refused one still gets a 500
            return
        if cycle.response_complete or kind != "http.response.body":
            raise RuntimeError(f"Unexpected ASGI message {kind!r} after the response started or completed.")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self._remaining is None:
            data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            self._remaining -= len(body)
            if self._remaining < 0 or (not more and self._remaining):
                raise RuntimeError("Response content does not match its Content-Length")
            data = body
        if self._head:
            data, self._head = self._head + data, b""
        if data:
            self._transport.write(data)
        if not more:
            cycle.response_complete = True
            cycle.message_event.set()
            if not cycle.keep_alive:
                self._transport.close()
            self._on_complete()

    def _start(self, status: int, headers: Any) -> bytes:
        cycle = self._cycle
        head = [STATUS_LINE[status]]
        closes = False
        lines = 2  # the status line's and the blank line's line breaks
        for name, value in (*self._defaults, *headers):
            name = name.lower()
            if name == b"content-length":
                self._remaining = int(value)
            elif name == b"connection" and b"close" in value.lower():
                cycle.keep_alive = False
                closes = True
            head += (name, b": ", value, b"\r\n")
            lines += 1
        if not cycle.keep_alive and not closes:
            head.append(b"connection: close\r\n")
            lines += 1
        if self._remaining is None:
            head.append(b"transfer-encoding: chunked\r\n")
            lines += 1
        head.append(b"\r\n")
        data = b"".join(head)
        if data.count(b"\n") != lines or data.count(b"\r") != lines:  # one check for every header at once
            raise RuntimeError("Invalid HTTP header: a line break in its name or value.")
        return data
