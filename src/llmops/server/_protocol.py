"""uvicorn's httptools protocol, with the writes of one event-loop turn sent as one, and the gateway's hot path
served directly (``_direct.py``).

uvicorn writes a response's status line and headers when the app sends ``http.response.start`` and its body when
it sends ``http.response.body``: two ``send`` system calls, so two TCP segments, for a response the app hands over
in one go (every non-streamed gateway answer). On loopback a segment costs the sender the receiver's whole network
path and its wake-up, and the client wakes twice. Here every write is held in the event loop's ``WriteBatch``
(``llmops._writes``) until the turn ends: a response's headers go out with its body, and the responses of one turn
to several connections go out together (a streamed answer still goes out piece by piece: the app awaits between
pieces).

The hot path (``POST /v1/chat/completions`` of the platform's app, whose outer layer is the body size limit) is read
and answered by ``_direct.py`` instead of uvicorn's request-response cycle; every other request, and a hot-path one
that uvicorn must queue (pipelined behind an unfinished one) or that asks for something unusual (an upgrade, a
concurrency limit), takes uvicorn's own way.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llmops._writes import WriteBatch
from llmops.gateway._loop_local import LoopLocal
from llmops.server._chat_completions import PATH
from llmops.server._direct import DirectCycle, serve_direct
from llmops.server._limits import BodySizeLimit, declared_length

_DIRECT_URL = PATH.encode()

__all__ = ["CoalescingHttpToolsProtocol", "uvicorn_options"]


class _CoalescedWrites:
    """A transport whose writes are held in the loop's ``WriteBatch`` (so those of one turn go out in one ``write``);
    everything else is the real transport's."""

    __slots__ = ("_batch", "_transport")

    def __init__(self, transport: asyncio.WriteTransport, batch: WriteBatch) -> None:
        self._transport = transport
        self._batch = batch

    def write(self, data: bytes) -> None:
        self._batch.write(self._transport, data)

    def close(self) -> None:
        self._batch.flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._batch.held(self._transport)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def uvicorn_options() -> dict[str, Any]:
    """How ``llmops up`` has uvicorn serve (tests serve the same way): this protocol, no access log, and no
    proxy-header middleware (nothing reads the client's address, and it is one more layer on every request)."""
    return {"http": CoalescingHttpToolsProtocol, "proxy_headers": False, "access_log": False}


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(app, **uvicorn_options())``."""

    # One batch of writes per event loop, shared by the connections it serves (see ``llmops._writes``).
    _batches: ClassVar[LoopLocal[WriteBatch]] = LoopLocal(WriteBatch)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        coalesced: Any = _CoalescedWrites(transport, self._batches.get())  # type: ignore[arg-type]
        super().connection_made(coalesced)  # uvicorn's self.transport, which every write of the protocol uses
        app = self.app
        self._direct = app if isinstance(app, BodySizeLimit) and self.limit_concurrency is None else None
        self._idle_since: float | None = None

    # Keep-alive: uvicorn arms a loop timer when a response ends and cancels it when the next request's bytes
    # arrive, a libuv timer opened and closed per request. Here a connection keeps at most one timer, which looks
    # when it fires whether the connection has been idle for the whole timeout, and is armed again if not.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # bytes arrived, or the connection ended

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next request has arrived already
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:  # a request is under way: its response arms the timer again
            return
        remaining = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self.timeout_keep_alive_handler)
        elif not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        direct, parser, previous = self._direct, self.parser, self.cycle
        if (
            direct is None
            or self.url != _DIRECT_URL
            or parser.get_method() != b"POST"
            or parser.should_upgrade()
            or not (previous is None or previous.response_complete)  # pipelined: uvicorn queues it
        ):
            super().on_headers_complete()
            return
        scope = self.scope
        version = parser.get_http_version()
        scope["method"] = "POST"
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = PATH
        scope["raw_path"] = _DIRECT_URL
        scope["query_string"] = b""
        declared = declared_length(self.headers)
        cycle = DirectCycle(scope, keep_alive=version != "1.0" and parser.should_keep_alive(), declared=declared)
        self.cycle = cycle  # type: ignore[assignment]  # read by uvicorn's disconnect, shutdown and pipelining
        if declared > direct.max_bytes:
            self._start_direct(cycle)  # refused before its body arrives
        elif self.expect_100_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle
        if not isinstance(cycle, DirectCycle):
            super().on_body(body)
            return
        if cycle.started or self._direct is None:
            return  # refused already: the rest of the body is dropped
        cycle.add(body, self._direct.max_bytes)
        if cycle.size > self._direct.max_bytes:
            self._start_direct(cycle)

    def on_message_complete(self) -> None:
        cycle: object = self.cycle
        if not isinstance(cycle, DirectCycle):
            super().on_message_complete()
        elif not cycle.started:
            self._start_direct(cycle)

    def _start_direct(self, cycle: DirectCycle) -> None:
        assert self._direct is not None
        cycle.started = True
        task = self.loop.create_task(
            serve_direct(
                cycle,
                self._direct.app,
                self._direct.max_bytes,
                self.transport,
                self.flow,
                self.server_state.default_headers,
                self.on_response_complete,
                self.logger,
            )
        )
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
