"""REST API of cost allocation: spend by any attribution and period, the chargeback CSV, budgets against spend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from llmops._platform import Platform
from llmops.governance._costs import CostReport, budget_status, chargeback_csv, parse_moment
from llmops.server._access_guard import record_read

__all__ = ["costs_router"]

By = Annotated[list[str], Query(description="key, user, team, app, model, tag, tag:NAME, cost_centre, day, month")]
Moment = Annotated[str | None, Query(description="2026-11, 2026-11-03 or an ISO datetime (UTC when naive)")]


def costs_router(platform: Platform) -> APIRouter:
    router = APIRouter(tags=["governance"])

    def report(by: list[str], since: str | None, until: str | None) -> CostReport:
        try:
            start = parse_moment(since) if since else None
            end = parse_moment(until) if until else None
            return platform.cost_report(by, start, end)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @router.get("/api/costs")
    async def costs(by: By = [], since: Moment = None, until: Moment = None) -> dict[str, Any]:  # noqa: B006
        """``{"by", "since", "until", "rows": [{<dimension>: value, "calls", "input_tokens", "output_tokens",
        "cost_usd"}], "total", "expands", "notes"}``; ``until`` is exclusive. Grouped by ``tag``, a call counts under
        each of its tags (``expands``: the rows may add up to more than the total)."""
        result = await asyncio.to_thread(report, by, since, until)
        return result.to_dict()

    @router.get("/api/costs/chargeback.csv")
    async def chargeback(
        request: Request,
        by: By = [],  # noqa: B006
        period: Annotated[str, Query(pattern="^(month|day|none)$")] = "month",
        since: Moment = None,
        until: Moment = None,
    ) -> Response:
        """The chargeback as CSV (``?by=team&period=month``): a header, one row per group and period, a TOTAL row."""
        dims = [*([period] if period != "none" else []), *(by or ["team"])]
        result = await asyncio.to_thread(report, dims, since, until)
        try:
            text = chargeback_csv(result)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        await record_read(request, platform.audit.record, "costs.chargeback.export", "cost_report", ",".join(dims))
        filename = f"chargeback-{'-'.join(d.replace(':', '_') for d in dims)}.csv"
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{filename}"'})  # fmt: skip

    @router.get("/api/costs/budgets")
    async def budgets() -> dict[str, Any]:
        """``{"budgets": [{"limit", "scope", "value", "period", "window_start", "window_end", "budget_usd",
        "soft_budget_usd", "spent_usd", "calls", "remaining_usd", "share", "soft_crossed", "hard_reached"}]}``."""
        statuses = await asyncio.to_thread(
            budget_status, platform.gateway.limits.limits, platform.store, flush=platform.journal.flush
        )
        return {"budgets": [s.to_dict() for s in statuses], "at": datetime.now(UTC).isoformat()}

    return router
