"""REST API of the maturity assessment and the EU AI Act evidence pack (both read only, computed on request)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from llmops._platform import Platform
from llmops.governance._evidence import evidence_pack
from llmops.governance._maturity import assess_maturity

__all__ = ["compliance_router"]


def compliance_router(platform: Platform) -> APIRouter:
    router = APIRouter(tags=["governance"])

    @router.get("/api/maturity")
    async def maturity() -> dict[str, Any]:
        """``{"dimensions": [{"name", "level", "evidence", "next_steps"}, ...]}`` for the six dimensions."""
        report = await asyncio.to_thread(assess_maturity, platform)
        return report.to_dict()

    @router.get("/api/evidence-pack")
    async def get_evidence_pack() -> dict[str, Any]:
        """The EU AI Act evidence pack as JSON (`llmops evidence-pack` also writes it as Markdown)."""
        return await asyncio.to_thread(evidence_pack, platform)

    return router
