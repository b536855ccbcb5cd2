"""The platform's own REST API: ask, traces, health and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from llmops._platform import Platform
from llmops.gateway import ProviderError
from llmops.observability import TraceNotFoundError

__all__ = ["api_router"]


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=8000)
    app: str | None = Field(default=None, description="RAG app name; the first configured app when omitted")


def api_router(platform: Platform) -> APIRouter:
    router = APIRouter()

    @router.post("/api/ask")
    async def ask(body: AskRequest, response: Response) -> dict[str, Any]:
        try:
            pipeline = platform.rag(body.app)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        try:
            answer = await pipeline.ask(body.question)
        except ProviderError as exc:
            raise HTTPException(502, f"the model failed: {exc}") from exc
        response.headers["x-request-id"] = answer.request_id
        return answer.to_dict()

    @router.get("/api/traces")
    async def recent_traces(
        limit: int = Query(default=20, ge=1, le=500),
        q: str | None = Query(default=None, max_length=200, description="part of a request id, trace id or name"),
        status: str | None = Query(default=None, pattern="^(ok|error)$"),
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(lambda: platform.traces.recent(limit, q=q, status=status, app=app))

    @router.get("/api/traces/{request_id}")
    async def get_trace(request_id: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(platform.traces.get, request_id)
        except TraceNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        stats = await asyncio.to_thread(platform.knowledge.stats)
        return {"status": "ok", "models": platform.served_models(), "knowledge": stats}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(platform.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
