"""REST API of the maturity assessment and the EU AI Act evidence pack (both read only, computed on request)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from llmops._platform import Platform
from llmops.governance._evidence import evidence_pack
from llmops.governance._maturity import assess_maturity
from llmops.server._access_guard import record_read

__all__ = ["compliance_router"]


def compliance_router(platform: Platform) -> APIRouter:
    router = APIRouter(tags=["governance"])

    @router.get("/api/maturity")
    async def maturity() -> dict[str, Any]:
        """``{"dimensions": [{"name", "level", "evidence", "next_steps"}, ...]}`` for the six dimensions."""
        report = await asyncio.to_thread(assess_maturity, platform)
        return report.to_dict()

    @router.get("/api/evidence-pack")
    async def get_evidence_pack(request: Request) -> dict[str, Any]:
        """The EU AI Act evidence pack as JSON (`llmops evidence-pack` also writes it as Markdown)."""
        pack = await asyncio.to_thread(evidence_pack, platform)
        await record_read(request, platform.audit.record, "evidence_pack.export", "evidence_pack", "*")
        return pack

    return router
