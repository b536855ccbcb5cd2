"""REST API of lineage: explain an answer by its request id, and replay it with the same inputs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi import Path as PathParam

from llmops._platform import Platform
from llmops.gateway import LimitExceededError, ProviderError, UnknownModelError
from llmops.governance._lineage import NotReplayableError
from llmops.server._access_guard import record_read

__all__ = ["lineage_router"]

Actor = Annotated[str | None, Header(alias="X-LLMOps-User", description="who asks for the replay")]
RequestId = Annotated[str, PathParam(min_length=1, max_length=64, description="a request id or trace id")]


def lineage_router(platform: Platform) -> APIRouter:
    router = APIRouter(tags=["governance"])
    lineage = platform.lineage

    @router.get("/api/explain/{request_id}")
    async def explain(request_id: RequestId, request: Request) -> dict[str, Any]:
        """Everything behind one answer: prompt version and approvals, chunks and scores, index snapshot, guardrail
        decisions, model, parameters, tokens, cost, evaluation scores and feedback. The read is audited."""
        try:
            found = await asyncio.to_thread(lineage.explain, request_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        await record_read(request, platform.audit.record, "request.explain", "request", request_id)
        return found

    @router.post("/api/replay/{request_id}")
    async def replay(request_id: RequestId, actor: Actor = None) -> dict[str, Any]:
        """Ask a RAG request's question again with what it used (prompt version, snapshot, model, parameters,
        guardrail policy) and diff the answers. 404 for an unknown request, 409 when it cannot be re-run."""
        try:
            return await platform.replay(request_id, by=actor)
        except NotReplayableError as exc:
            raise HTTPException(409, str(exc)) from exc
        except LimitExceededError as exc:
            raise HTTPException(429, str(exc)) from exc
        except (ProviderError, UnknownModelError) as exc:  # UnknownModelError is a LookupError, yet not a 404 here
            raise HTTPException(502, f"the model failed: {exc}") from exc
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc

    return router
