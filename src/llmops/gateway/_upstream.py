"""Authenticated HTTP clients for upstreams, split from the wire formats they carry.

`HTTPProvider` = a wire format (`OpenAIChatFormat`, `AnthropicMessagesFormat`) + an `Upstream` (base URL,
credentials, connection pool, timeouts). One OpenAI-format provider thus serves OpenAI, Azure OpenAI, vLLM, Ollama
or llama.cpp's server, each with its own upstream.

The HTTP client is the gateway's own (`HTTPClient`, ``_http.py``): keep-alive connections on asyncio Protocols parsed
by httptools. Every gateway call pays its client's CPU: aiohttp cost ~0.2 ms per call here, httpx's async client more
under concurrency (encode/httpx#3215), and the gateway's own overhead is the thing its benchmark measures.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from llmops.gateway._http import HTTPClient
from llmops.gateway._tokens import TokenCounter, counter_for
from llmops.gateway._types import ChatRequest, ProviderError, StreamEvent
from llmops.gateway._wire_anthropic import AnthropicMessagesFormat
from llmops.gateway._wire_openai import OpenAIChatFormat

__all__ = [
    "AnthropicProvider",
    "HTTPProvider",
    "OpenAICompatibleProvider",
    "Timeouts",
    "Upstream",
    "check_base_url",
]

_RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504, 529}


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    first_token: float = 30.0  # from sending the request to the first event of the answer
    total: float = 300.0


def check_base_url(url: str, *, allowed: list[str]) -> str:
    """Refuse a base URL a client supplied unless the operator allowlisted it (by prefix).

    Client-supplied URLs are how SSRF happens: the gateway would call an internal address on the client's behalf.
    Operator-configured URLs (in settings) are trusted and never pass through here.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(f"base URL {url!r} is not an http(s) URL", status=400)
    if not any(url.rstrip("/").startswith(prefix.rstrip("/")) for prefix in allowed):
        raise ProviderError(
            f"base URL {url!r} is not in the operator's allowlist (gateway.allowed_base_urls)", status=400
        )
    return url


class WireFormat(Protocol):
    path: str

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]: ...

    def parse(self, data: dict[str, Any], *, upstream: str, model: str) -> list[StreamEvent]: ...

    def events(
        self,
        sse: AsyncIterator[tuple[str | None, bytes]],
        *,
        upstream: str,
        model: str,
        estimate: Callable[[str], int],
        prompt_text: str,
    ) -> AsyncIterator[StreamEvent]: ...


class Upstream:
    """One upstream: base URL, auth headers, a keep-alive connection pool (per event loop), timeouts."""

    def __init__(
        self, base_url: str, *, headers: dict[str, str] | None = None, timeouts: Timeouts | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.timeouts = timeouts or Timeouts()
        extra = {k: v for k, v in self.headers.items() if k.lower() != "content-type"}
        self._client = HTTPClient(self.base_url, headers=extra, connect_timeout=self.timeouts.connect)

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.request("POST", path, orjson.dumps(body))
        except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
            raise self._failed(exc) from exc
        _raise_for_status(response.status, response.body, self.base_url)
        try:
            result: dict[str, Any] = orjson.loads(response.body)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(
                f"{self.base_url} sent a malformed response: {response.body[:200]!r}", retryable=True
            ) from exc
        return result

    async def sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[tuple[str | None, bytes]]:
        """POST and yield the response's server-sent events as (event name, data) pairs."""
        try:
            async with self._client.stream("POST", path, orjson.dumps(body)) as response:
                if response.status >= 300:
                    _raise_for_status(response.status, await response.read(), self.base_url)
                event: str | None = None
                async for raw in response.lines():
                    line = raw.rstrip(b"\r\n")
                    if line.startswith(b"data:"):
                        yield event, line[5:].strip()
                        event = None
                    elif line.startswith(b"event:"):
                        event = line[6:].strip().decode()
        except (OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> ProviderError:
        kind = "ConnectionTimeoutError" if isinstance(exc, TimeoutError) else type(exc).__name__
        return ProviderError(f"{self.base_url} failed: {kind}: {exc}", retryable=True)

    async def aclose(self) -> None:
        await self._client.aclose()


def _raise_for_status(status: int, body: bytes, upstream: str) -> None:
    if status < 300:
        return
    if status < 400:  # redirects are not followed: an API upstream does not redirect
        raise ProviderError(f"{upstream} answered {status} (a redirect, not followed)", status=status)
    detail = body.decode("utf-8", "replace")[:500]
    raise ProviderError(f"{upstream} answered {status}: {detail}", status=status, retryable=status in _RETRYABLE)


class HTTPProvider:
    """A provider that reaches an upstream over HTTP in a given wire format."""

    def __init__(self, name: str, wire: WireFormat, upstream: Upstream, tokens: TokenCounter | None = None) -> None:
        self.name = name
        self.wire = wire
        self.upstream = upstream
        self._tokens = tokens

    def count_tokens(self, model: str, text: str) -> int:
        return (self._tokens or counter_for(model)).count(text)

    async def complete(self, model: str, request: ChatRequest) -> list[StreamEvent]:
        """The answer in one response instead of an event stream (less work on both sides): its events, `Finish`
        last. The gateway calls this for requests that do not stream (``request.stream`` false)."""
        data = await self.upstream.post_json(self.wire.path, self.wire.body(model, request))
        return self.wire.parse(data, upstream=self.upstream.base_url, model=model)

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        if not request.stream:
            for event in await self.complete(model, request):
                yield event
            return
        prompt_text = "\n".join(str(m.get("content") or "") for m in request.messages)
        sse = self.upstream.sse(self.wire.path, self.wire.body(model, request))
        async for event in self.wire.events(
            sse,
            upstream=self.upstream.base_url,
            model=model,
            estimate=lambda text: self.count_tokens(model, text),
            prompt_text=prompt_text,
        ):
            yield event

    async def embed(self, model: str, texts: list[str]) -> tuple[list[list[float]], int]:
        """OpenAI-format embeddings: (vectors, input tokens)."""
        data = await self.upstream.post_json("/embeddings", {"model": model, "input": texts})
        vectors = [item["embedding"] for item in sorted(data["data"], key=lambda d: d["index"])]
        return vectors, int((data.get("usage") or {}).get("prompt_tokens", 0))

    async def aclose(self) -> None:
        await self.upstream.aclose()


def _api_key(config: Any) -> str | None:
    """The model's key: from the environment variable it names, else from its secrets file. Never from a request."""
    if config.api_key_env and os.environ.get(config.api_key_env):
        return os.environ[config.api_key_env]
    if config.api_key_file:
        try:
            return Path(config.api_key_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ValueError(f"model {config.name!r}: cannot read api_key_file: {exc}") from exc
    return None


def _timeouts(settings: Any) -> Timeouts:
    gateway = getattr(settings, "gateway", None)
    if gateway is None:
        return Timeouts()
    return Timeouts(gateway.connect_timeout_s, gateway.first_token_timeout_s, gateway.total_timeout_s)


class OpenAICompatibleProvider(HTTPProvider):
    """Any ``/v1/chat/completions`` server. ``base_url`` ends in ``/v1``; the key comes from settings."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeouts: Timeouts | None = None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(
            "openai-compatible", OpenAIChatFormat(), Upstream(base_url, headers=headers, timeouts=timeouts)
        )

    @classmethod
    def from_config(cls, config: Any, settings: Any) -> OpenAICompatibleProvider:
        if not config.base_url:
            raise ValueError(f"model {config.name!r}: an openai-compatible provider needs base_url")
        return cls(config.base_url, api_key=_api_key(config), timeouts=_timeouts(settings))


class AnthropicProvider(HTTPProvider):
    """Anthropic's Messages API. ``base_url`` defaults to https://api.anthropic.com."""

    def __init__(
        self,
        base_url: str = "https://api.anthropic.com",
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        headers = {"anthropic-version": "2023-06-01", **({"x-api-key": api_key} if api_key else {})}
        super().__init__("anthropic", AnthropicMessagesFormat(), Upstream(base_url, headers=headers, timeouts=timeouts))

    @classmethod
    def from_config(cls, config: Any, settings: Any) -> AnthropicProvider:
        return cls(
            config.base_url or "https://api.anthropic.com", api_key=_api_key(config), timeouts=_timeouts(settings)
        )
