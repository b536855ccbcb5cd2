"""A lean HTTP/1.1 client for upstream calls: keep-alive connections on asyncio Protocols, parsed by httptools.

Every gateway call makes one upstream request, so the client's own CPU cost is paid on every call. aiohttp spent
~0.2 ms of CPU per call here (request and response objects, header multidicts, payload registry, stream readers,
timer bookkeeping); this client does what the gateway needs and no more: a request is one prebuilt header block plus
the body, written with one ``transport.write`` at the end of the event loop's turn, together with the turn's other
requests (``llmops._writes``); the response is parsed by llhttp (httptools, a dependency of the
server already) straight into the connection object, which wakes its reader once per response (a whole body) or
per received piece (a stream).

What it does:

- a pool of keep-alive connections per origin and event loop (``limit`` open at most, callers beyond it wait; idle
  connections older than ``keepalive_s`` are closed instead of reused);
- TLS through ``ssl.create_default_context()`` (system CA store, hostname checked), as aiohttp's default;
- a connect timeout (TCP connect and TLS handshake); the gateway times the waits for the answer itself;
- chunked, length-delimited and close-delimited bodies; ``gzip`` and ``deflate`` content encodings;
- a request that finds its reused connection closed by the server before any byte of an answer arrived (the server
  dropped an idle keep-alive connection) is sent once more on a new connection, as urllib3 and httpcore do;
- a response not read to its end (an error, a cancelled or abandoned stream) closes its connection, which is never
  reused.

What it does not do: redirects (a 3xx is an error: an upstream API does not redirect, and a client-supplied base URL
must not lead the gateway elsewhere), proxies from the environment (aiohttp's default ignores them too), cookies,
HTTP/2.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import httptools

from llmops._writes import WriteBatch
from llmops.gateway._loop_local import LoopLocal

__all__ = ["ConnectionClosedError", "HTTPClient", "HTTPResponse"]

_USER_AGENT = b"llmops"
# A stream's reader is behind by this much: stop reading from the socket until it catches up.
_HIGH_WATER = 1 << 20


class ConnectionClosedError(ConnectionError):
    """The server closed the connection before the response was complete."""


@dataclass(frozen=True)
class HTTPResponse:
    """A whole response. ``headers``: lower-case names; a repeated header keeps its last value."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; its parser feeds the response of the request in flight into this object."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writes: WriteBatch) -> None:
        self._loop = loop
        self._writes = writes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.complete = False
        self.received = False  # any byte of the response arrived
        self.error: BaseException | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._wake_on_body = False
        self._paused = False
        self._delimited_by_close = False
        self._interim = False
        self._reusable = False

    # ---- asyncio.Protocol -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return False  # let the transport close itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.status is not None and not self.complete and self._delimited_by_close and exc is None:
            self.complete = True  # a body without a length or chunks ends where the connection does
        elif not self.complete:
            self._fail(exc or ConnectionClosedError("the server closed the connection before the response ended"))
        self._wake()

    # ---- httptools callbacks ------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim response (103 Early Hints): the real one follows
            self._interim = True
            self.headers = {}
            return
        self.status = status
        headers = self.headers
        self._delimited_by_close = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._wake_on_body:
            if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self._reusable = self._parser.should_keep_alive()  # read here: the parser resets once this returns
        self._wake()

    # ---- the request in flight ----------------------------------------------------------------------------------

    def send(self, request: bytes) -> None:
        self._reset()
        if self.transport is None or not self.usable:
            raise ConnectionClosedError("the connection was closed before the request was sent")
        self._writes.write(self.transport, request)  # with the other requests of this turn (``llmops._writes``)

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request: its response was read to the end."""
        return self.complete and self._reusable and not self._chunks and self.usable

    async def headers_received(self) -> None:
        while self.status is None:
            await self._wait()

    async def body(self) -> bytes:
        while not self.complete:
            await self._wait()
        chunks = self._chunks
        body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        chunks.clear()
        return body

    async def next_piece(self) -> bytes | None:
        """The next received piece of the body, or None at its end."""
        self._wake_on_body = True
        while True:
            if self._chunks:
                piece = self._chunks.popleft()
                self._buffered -= len(piece)
                if self._paused and self._buffered < _HIGH_WATER // 2 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return piece
            if self.complete:
                return None
            await self._wait()

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self.error is not None and not self.complete:
            raise self.error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Keep-alive connections to one origin, for one event loop."""

    def __init__(self, client: HTTPClient, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._client = client
        self._writes = WriteBatch(loop)
        self._idle: list[_Connection] = []  # most recently used last: reused first, so the rest can expire
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()

    async def acquire(self) -> _Connection:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.usable and time.monotonic() - connection.idle_since < self._client.keepalive_s:
                connection.reused = True
                return connection
            self._discard(connection)
        if self._open < self._client.limit:
            self._open += 1
            return await self._connect()
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except BaseException:
            if not waiter.done():
                self._waiters.remove(waiter)
            elif not waiter.cancelled():  # something was handed over just as this caller gave up: pass it on
                if (given := waiter.result()) is not None:
                    self.release(given, reusable=True)
                else:
                    self._open -= 1
                    self._wake_one()
            raise
        if handed is None:  # a free slot: this caller opens the connection
            return await self._connect()
        handed.reused = True
        return handed

    async def _connect(self) -> _Connection:
        """A new connection, in a slot already counted in ``_open``."""
        client = self._client
        connection = _Connection(self.loop, self._writes)
        try:
            async with asyncio.timeout(client.connect_timeout):
                await self.loop.create_connection(
                    lambda: connection,
                    client.host,
                    client.port,
                    ssl=client.ssl_context,
                    server_hostname=client.host if client.ssl_context is not None else None,
                )
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        return connection

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        if not (reusable and connection.keep_alive):
            self._discard(connection)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """Hand a free slot to the first caller waiting for one (it opens its own connection)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class HTTPClient:
    """Requests to one origin (``base_url``'s scheme, host and port), over keep-alive connections.

    >>> client = HTTPClient("https://api.openai.com/v1", headers={"authorization": "Bearer sk-..."})  # doctest: +SKIP
    >>> response = await client.request("POST", "/chat/completions", body)  # doctest: +SKIP
    >>> response.status, orjson.loads(response.body)  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 5.0,
        limit: int = 512,
        keepalive_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: for https, instead of the default one (the system's CA store, hostnames checked)."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        self.ssl_context = (ssl_context or _ssl_context()) if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.limit = limit
        self.keepalive_s = keepalive_s
        self._base_path = parts.path.rstrip("/")
        self._base_query = parts.query
        host = f"[{self.host}]" if ":" in self.host else self.host
        all_headers = {
            "host": host if self.port == default_port else f"{host}:{self.port}",
            "user-agent": _USER_AGENT.decode(),
            "accept": "*/*",
            **({"authorization": _basic_auth(parts.username, parts.password)} if parts.username else {}),
            **{name.lower(): value for name, value in (headers or {}).items()},
        }
        for name, value in all_headers.items():
            if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
                raise ValueError(f"invalid HTTP header {name!r}")
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in all_headers.items()).encode("latin-1")
        self._heads: dict[tuple[str, str], bytes] = {}
        self._pools: LoopLocal[_Pool] = LoopLocal(lambda loop: _Pool(self, loop))

    def _pool(self) -> _Pool:
        return self._pools.get()

    def _head(self, method: str, path: str) -> bytes:
        """The request line and headers up to the body's length, built once per method and path."""
        head = self._heads.get((method, path))
        if head is None:
            target = self._base_path + path
            if self._base_query:
                target += ("&" if "?" in target else "?") + self._base_query
            head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + self._headers + b"content-length: "
            self._heads[(method, path)] = head
        return head

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> HTTPResponse:
        """Send a request and read the whole response."""
        request = self._encode(method, path, body, content_type)
        pool = self._pool()
        connection = await self._send(pool, request)
        try:
            data = await connection.body()
        except BaseException:
            pool.release(connection, reusable=False)
            raise
        pool.release(connection, reusable=True)
        status = connection.status
        assert status is not None
        return HTTPResponse(status, connection.headers, _decoded(data, connection.headers))

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> AsyncIterator[StreamingResponse]:
        """Send a request; the response's body is read piece by piece as it arrives.

        Leaving the block before the body ended closes the connection (it is not reused)."""
        request = self._encode(method, path, body, content_type)
        pool = self._pool()
        connection = await self._send(pool, request)
        response = StreamingResponse(connection)
        try:
            yield response
        finally:
            pool.release(connection, reusable=True)

    def _encode(self, method: str, path: str, body: bytes, content_type: str) -> bytes:
        head = self._head(method, path)
        return b"%s%d\r\ncontent-type: %s\r\n\r\n%s" % (head, len(body), content_type.encode("latin-1"), body)

    async def _send(self, pool: _Pool, request: bytes) -> _Connection:
        """Send on a pooled connection and wait for the response's headers."""
        for _attempt in range(2):
            connection = await pool.acquire()
            try:
                connection.send(request)
                await connection.headers_received()
            except BaseException as exc:
                pool.release(connection, reusable=False)
                stale = connection.reused and not connection.received and isinstance(exc, ConnectionError)
                if stale and _attempt == 0:
                    continue  # the server dropped the idle connection before reading this request
                raise
            return connection
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for pool in self._pools:
            with contextlib.suppress(RuntimeError):  # its event loop is gone already
                pool.close()
        self._pools.clear()


class StreamingResponse:
    """A response whose body is read as it arrives (``HTTPClient.stream``)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        status = connection.status
        assert status is not None
        self.status = status
        self.headers: Mapping[str, str] = connection.headers
        encoding = connection.headers.get("content-encoding", "identity").lower()
        self._decoder = _decoder(encoding)

    async def read(self) -> bytes:
        """The rest of the body."""
        pieces = [piece async for piece in self.pieces()]
        return b"".join(pieces)

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in (decoded)."""
        connection, decoder = self._connection, self._decoder
        while (piece := await connection.next_piece()) is not None:
            if decoder is not None:
                piece = decoder.decompress(piece)
            if piece:
                yield piece
        if decoder is not None and (rest := decoder.flush()):
            yield rest

    async def lines(self) -> AsyncIterator[bytes]:
        """The body's lines, each with its line ending (the last one may have none)."""
        pending = b""
        async for piece in self.pieces():
            if pending:
                piece = pending + piece
            start = 0
            while (end := piece.find(b"\n", start)) >= 0:
                yield piece[start : end + 1]
                start = end + 1
            pending = piece[start:]
        if pending:
            yield pending


def _decoder(encoding: str) -> Any:
    if encoding in ("identity", ""):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    raise ConnectionError(f"unsupported content encoding {encoding!r}")


def _decoded(body: bytes, headers: Mapping[str, str]) -> bytes:
    decoder = _decoder(headers.get("content-encoding", "identity").lower())
    if decoder is None:
        return body
    return bytes(decoder.decompress(body) + decoder.flush())


def _basic_auth(user: str, password: str | None) -> str:
    token = f"{unquote(user)}:{unquote(password or '')}".encode()
    return "Basic " + base64.b64encode(token).decode("ascii")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One default context per process: building one loads the CA store (milliseconds)."""
    return ssl.create_default_context()
