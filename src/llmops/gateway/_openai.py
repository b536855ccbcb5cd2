"""Any server that speaks OpenAI's ``/v1/chat/completions`` (OpenAI, vLLM, Ollama, llama.cpp server, llmops itself).

Always streams from the upstream (``stream_options.include_usage`` asks for token counts in the last chunk), so time
to first token is measured the same way for every provider. A stream that ends without a ``finish_reason`` is an error,
never a short answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from llmops.gateway._types import ChatRequest, Finish, ProviderError, StreamEvent, TextDelta, Usage

__all__ = ["OpenAICompatibleProvider"]

_RETRYABLE = {408, 409, 429, 500, 502, 503, 504}


class OpenAICompatibleProvider:
    """``base_url`` ends in ``/v1``; the API key, if any, comes from settings, never from a request."""

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout or httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=10.0),
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: Any, settings: Any) -> OpenAICompatibleProvider:
        if not config.base_url:
            raise ValueError(f"model {config.name!r}: an openai-compatible provider needs base_url")
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        return cls(config.base_url, api_key=api_key)

    def count_tokens(self, model: str, text: str) -> int:
        # The upstream's tokenizer is unknown here; about four characters per token is the usual English estimate.
        return max(1, (len(text) + 3) // 4)

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        body: dict[str, Any] = {
            "model": model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:500]
                    raise ProviderError(
                        f"{self.base_url} answered {response.status_code}: {detail}",
                        status=response.status_code,
                        retryable=response.status_code in _RETRYABLE,
                    )
                async for event in self._events(response, request, model):
                    yield event
        except httpx.TimeoutException as exc:
            raise ProviderError(f"{self.base_url} timed out: {type(exc).__name__}", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"{self.base_url} failed: {type(exc).__name__}: {exc}", retryable=True) from exc

    async def _events(self, response: httpx.Response, request: ChatRequest, model: str) -> AsyncIterator[StreamEvent]:
        finish_reason: str | None = None
        usage: Usage | None = None
        response_model = model
        produced: list[str] = []
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ProviderError(f"{self.base_url} sent a malformed stream chunk: {data[:200]!r}") from exc
            if "error" in chunk:
                raise ProviderError(f"{self.base_url} failed mid-stream: {chunk['error']}", retryable=False)
            response_model = chunk.get("model") or response_model
            if chunk.get("usage"):
                u = chunk["usage"]
                usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    produced.append(text)
                    yield TextDelta(text)
                finish_reason = choice.get("finish_reason") or finish_reason
        if finish_reason is None:
            raise ProviderError(f"{self.base_url} ended the stream before the answer was complete", retryable=False)
        if usage is None:
            prompt = "\n".join(m.get("content", "") for m in request.messages)
            usage = Usage(self.count_tokens(model, prompt), self.count_tokens(model, "".join(produced)), estimated=True)
        yield Finish(reason=finish_reason, usage=usage, response_model=response_model)

    async def aclose(self) -> None:
        await self._client.aclose()
