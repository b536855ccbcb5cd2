"""uvicorn's httptools protocol, with the writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers when the app sends ``http.response.start`` and its body when
it sends ``http.response.body``: two ``send`` system calls, so two TCP segments, for a response the app hands over
in one go (every non-streamed gateway answer). On loopback a segment costs the sender the receiver's whole network
path and its wake-up, and the client wakes twice. Here a write is held until the next write of the same event-loop
turn, which sends both (a response's headers go out with its body), or until the turn ends (a streamed answer still
goes out piece by piece: the app awaits between pieces).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "uvicorn_options"]


class _CoalescedWrites:
    """A transport whose writes of one loop turn go out in one ``write``; everything else is the real transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:  # held until the next write of this turn, or the turn's end
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:  # a second write (a response's body after its headers) goes out at once, with the first
            self._pending = None
            pending.append(data)
            self._transport.write(b"".join(pending))

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        pending = sum(map(len, self._pending or ()))
        return self._transport.get_write_buffer_size() + pending

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def uvicorn_options() -> dict[str, Any]:
    """How ``llmops up`` has uvicorn serve (tests serve the same way): this protocol, no access log, and no
    proxy-header middleware (nothing reads the client's address, and it is one more layer on every request)."""
    return {"http": CoalescingHttpToolsProtocol, "proxy_headers": False, "access_log": False}


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.run(app, http=CoalescingHttpToolsProtocol)``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        coalesced: Any = _CoalescedWrites(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(coalesced)
