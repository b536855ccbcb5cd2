"""The rest of the OpenAI-compatible surface: ``/v1/models``, ``/v1/completions`` and ``/v1/embeddings``.

``/v1/chat/completions``, the hot path, is a bare ASGI handler of its own (`ChatCompletions`). Completions carry the
AI disclosure headers.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from llmops._platform import Platform
from llmops.gateway import ChatRequest
from llmops.rag import AIDisclosure, new_request_id
from llmops.server._access_guard import ProjectView
from llmops.server._shared import GATEWAY_ERRORS, caller_from, gateway_error, openai_error, usage_dict

__all__ = ["openai_router"]


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    user: str | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    user: str | None = None
    encoding_format: Literal["float", "base64"] = "float"  # the openai SDK asks for base64 (float32 bytes)


def _json(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


def openai_router(platform: Platform) -> APIRouter:
    router = APIRouter(prefix="/v1")
    disclosure = AIDisclosure(platform.settings.transparency.disclosure)

    @router.get("/models")
    async def list_models(http: Request) -> dict[str, Any]:
        """The models and embedding models, and the RAG apps of the caller's project."""
        view = ProjectView(http)
        apps = set(platform.rag_apps)
        served = [n for n in platform.served_models() if n not in apps or n in view.apps]
        names = [*served, *platform.gateway.embedding_model_names()]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "llmops"} for n in names],
        }

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest, http: Request) -> Response:
        """The legacy completions API, answered by the chat model with the prompt as one user message."""
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            return openai_error(400, "one prompt per request", kind="invalid_request_error").fastapi()
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        request = ChatRequest(
            model=body.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(stop),
            user=body.user,
        )
        request_id = new_request_id()
        try:
            caller = caller_from(platform, http.headers.get("authorization"), body.user, None)
            result = await platform.gateway.complete(request, request_id=request_id, caller=caller)
        except GATEWAY_ERRORS as exc:
            return gateway_error(exc).fastapi()
        choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
        return _json(
            {
                "id": "cmpl-" + request_id.removeprefix("req_"),
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.model,
                "choices": [choice],
                "usage": usage_dict(result.usage),
            },
            {"x-request-id": request_id, **disclosure.headers},
        )

    @router.post("/embeddings", response_model=None)
    async def embeddings(body: EmbeddingRequest, http: Request) -> Response:
        texts = [body.input] if isinstance(body.input, str) else body.input
        try:
            caller_from(platform, http.headers.get("authorization"), body.user, None)
            result = await platform.gateway.embed(body.model, texts)
        except GATEWAY_ERRORS as exc:
            return gateway_error(exc).fastapi()
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(result.vectors)
        ]
        usage = {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens}
        return _json({"object": "list", "data": data, "model": body.model, "usage": usage})

    return router
