"""The platform's own REST API: ask, held answers, traces, health and metrics.

Every answer carries the AI disclosure (an ``ai_disclosure`` field and the ``X-LLMOps-AI-*`` headers). An answer the
app holds for human review comes back with ``status: pending_review`` and a review id instead of its text; its caller
fetches the outcome from ``GET /api/answers/{request_id}`` once a reviewer has decided.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from llmops._platform import Platform
from llmops.gateway import ProviderError
from llmops.observability import TraceNotFoundError
from llmops.rag import AIDisclosure
from llmops.server._access_guard import ProjectView

__all__ = ["api_router"]


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=8000)
    app: str | None = Field(default=None, description="RAG app name; the first configured app when omitted")


def api_router(platform: Platform) -> APIRouter:
    router = APIRouter()
    disclosure = AIDisclosure(platform.settings.transparency.disclosure)

    @router.post("/api/ask")
    async def ask(body: AskRequest, request: Request, response: Response) -> dict[str, Any]:
        view = ProjectView(request)
        try:
            pipeline = platform.rag(body.app or (view.apps[0] if view.apps else None))
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        view.app(pipeline.config.name)
        # A key's principal is the asker (its questions are theirs: costs, erasure); the operator may name anyone.
        user = view.identity.principal if view.identity.key is not None else None
        try:
            answer = await pipeline.ask(body.question, user=user)
        except ProviderError as exc:
            raise HTTPException(502, f"the model failed: {exc}") from exc
        response.headers["x-request-id"] = answer.request_id
        response.headers.update(disclosure.headers)
        return {**answer.to_dict(), "ai_disclosure": disclosure.to_dict()}

    @router.get("/api/answers/{request_id}")
    async def held_answer(request_id: str, response: Response) -> dict[str, Any]:
        """The outcome of an answer held for review: ``pending_review``, ``released`` (with the answer and its
        citations) or ``withheld``; who decided and when."""
        outcome = await asyncio.to_thread(platform.reviews.answer, request_id)
        if outcome is None:
            raise HTTPException(404, f"no answer of request {request_id!r} is held for review")
        response.headers.update(disclosure.headers)
        return {**outcome, "ai_disclosure": disclosure.to_dict()}

    @router.get("/api/traces")
    async def recent_traces(
        request: Request,
        limit: int = Query(default=20, ge=1, le=500),
        q: str | None = Query(default=None, max_length=200, description="part of a request id, trace id or name"),
        status: str | None = Query(default=None, pattern="^(ok|error)$"),
        app: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest traces of the caller's project (its apps' requests)."""
        found = await asyncio.to_thread(lambda: platform.traces.recent(limit, q=q, status=status, app=app))
        return await ProjectView(request).keep("request", found, lambda t: str(t["request_id"]))

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
