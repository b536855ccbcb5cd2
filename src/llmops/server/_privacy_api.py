"""REST API of the right to erasure: ``DELETE /api/users/{user_id}/data``."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException
from fastapi import Path as PathParam

from llmops._platform import Platform

__all__ = ["privacy_router"]

Actor = Annotated[str | None, Header(alias="X-LLMOps-User", description="who erases (recorded in the audit log)")]
UserId = Annotated[str, PathParam(min_length=1, max_length=200, description="the user id requests named")]


def privacy_router(platform: Platform) -> APIRouter:
    router = APIRouter(tags=["governance"])

    @router.delete("/api/users/{user_id}/data")
    async def erase(user_id: UserId, actor: Actor = None) -> dict[str, int]:
        """Erase the user's content (traces, questions, answers, feedback text, dataset items made from their
        requests), keep metrics, costs and feedback values under a pseudonym, and record one ``privacy.erase`` audit
        entry. Returns the counts and ``audit_seq``. 401 without ``X-LLMOps-User``."""
        if not actor or not actor.strip():
            raise HTTPException(401, "say who you are: the X-LLMOps-User header is required to erase a user's data")
        try:
            return await asyncio.to_thread(platform.erase_user, user_id, by=actor)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    return router
