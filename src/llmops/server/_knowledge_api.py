"""REST API of the knowledge base: search, sources, snapshots (list, show, diff, rollback)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from llmops._platform import Platform
from llmops.knowledge import FilterError, IngestBusyError, MetadataFilter, SnapshotError
from llmops.server._access_guard import ProjectView

__all__ = ["knowledge_router"]

Actor = Annotated[str | None, Header(alias="X-LLMOps-User", description="who makes the change")]


class SearchBody(BaseModel):
    query: str = Field(min_length=1, max_length=8000)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["dense", "keyword", "hybrid"] = "hybrid"
    filter: dict[str, Any] | None = None
    snapshot: int | None = None
    min_similarity: float | None = Field(default=None, ge=-1.0, le=1.0)
    mmr_lambda: float | None = Field(default=None, ge=0.0, le=1.0)
    reranker: str | None = None


class RollbackBody(BaseModel):
    snapshot: int


def knowledge_router(platform: Platform) -> APIRouter:
    router = APIRouter(prefix="/api/knowledge", tags=["knowledge"])
    knowledge = platform.knowledge

    @router.post("/search")
    async def search(body: SearchBody, request: Request) -> dict[str, Any]:
        """Search the project's documents (a filter cannot reach beyond them: the project's scope is ANDed)."""
        snapshot = body.snapshot if body.snapshot is not None else knowledge.served_snapshot()
        # The same scope the project's RAG apps retrieve under (its project list cached for a few seconds).
        scope = await asyncio.to_thread(platform.access.document_scope, ProjectView(request).project)
        try:
            hits = await asyncio.to_thread(
                knowledge.search,
                body.query,
                k=body.k,
                mode=body.mode,
                where=MetadataFilter.parse(body.filter).and_(scope),
                snapshot=snapshot,
                min_similarity=body.min_similarity,
                mmr_lambda=body.mmr_lambda,
                reranker=body.reranker,
            )
        except (FilterError, SnapshotError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        return {
            "snapshot": snapshot,
            "hits": [
                {
                    "chunk_id": h.chunk_id,
                    "document_id": h.document_id,
                    "title": h.title,
                    "source": h.source,
                    "heading": h.heading,
                    "page": h.page,
                    "score": h.score,
                    "similarity": h.similarity,
                    "keyword_score": h.keyword_score,
                    "rerank_score": h.rerank_score,
                    "text": h.text,
                }
                for h in hits
            ],
        }

    @router.get("/sources")
    async def sources() -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(knowledge.sources.list)
        return [
            {"id": r.id, "kind": r.kind, "location": r.location, "created_at": r.created_at.isoformat()} for r in rows
        ]

    @router.get("/snapshots")
    async def snapshots(limit: int = Query(default=50, ge=1, le=1000)) -> dict[str, Any]:
        items = await asyncio.to_thread(knowledge.snapshots.list, limit=limit)
        return {"served": knowledge.served_snapshot(), "snapshots": [s.to_dict() for s in items]}

    @router.get("/snapshots/{snapshot_id}")
    async def snapshot(snapshot_id: int) -> dict[str, Any]:
        try:
            return (await asyncio.to_thread(knowledge.snapshots.get, snapshot_id)).to_dict()
        except SnapshotError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.get("/diff")
    async def diff(base: int, target: int) -> dict[str, Any]:
        try:
            return (await asyncio.to_thread(knowledge.snapshots.diff, base, target)).to_dict()
        except SnapshotError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post("/rollback")
    async def rollback(body: RollbackBody, user: Actor = None) -> dict[str, Any]:
        try:
            new_id = await asyncio.to_thread(knowledge.rollback, body.snapshot, actor=user or "api")
        except IngestBusyError as exc:
            raise HTTPException(409, str(exc)) from exc
        except SnapshotError as exc:
            raise HTTPException(400, str(exc)) from exc
        return {"snapshot": new_id, "rolled_back_to": body.snapshot}

    return router
