"""REST API of the closed loop and of monitoring: feedback, metric aggregates, drift, trigger rules and firings,
runbooks, review items, and the audit log."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from llmops._platform import Platform
from llmops.loop import FeedbackError, RuleError, RunbookError, UnknownRequestError
from llmops.observability import DIMENSIONS, METRICS, UnknownMetricError
from llmops.server._access_guard import ProjectView, record_read

__all__ = ["loop_router"]

Actor = Annotated[str | None, Header(alias="X-LLMOps-User", description="who acts")]


class FeedbackBody(BaseModel):
    request_id: str = Field(min_length=1, max_length=40)
    kind: str = Field(description="thumbs | rating | correction | flag")
    value: float | str | bool | None = None
    comment: str | None = None
    correction: str | None = None
    flag: str | None = None
    user: str | None = None


class RunbookBody(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict)


class DecisionBody(BaseModel):
    reason: str = ""


class ResolveBody(BaseModel):
    resolution: str = ""
    dismiss: bool = False
    verdict: Literal["release", "withhold"] | None = Field(default=None, description="for a held answer")
    answer: str | None = Field(default=None, min_length=1, description="release this edited answer instead")


def loop_router(platform: Platform) -> APIRouter:
    router = APIRouter(tags=["loop"])
    _feedback_routes(router, platform)
    _monitoring_routes(router, platform)
    _trigger_routes(router, platform)
    _runbook_routes(router, platform)
    return router


def _feedback_routes(router: APIRouter, platform: Platform) -> None:
    @router.post("/api/feedback", status_code=201)
    async def give_feedback(body: FeedbackBody, request: Request) -> dict[str, Any]:
        await ProjectView(request).check("request", body.request_id)
        try:
            feedback = await asyncio.to_thread(
                platform.feedback.record,
                body.request_id,
                kind=body.kind,
                value=body.value,
                comment=body.comment,
                correction=body.correction,
                flag=body.flag,
                user=body.user,
            )
        except FeedbackError as exc:
            raise HTTPException(422, str(exc)) from exc
        except UnknownRequestError as exc:
            raise HTTPException(404, str(exc)) from exc
        return feedback.to_dict()

    @router.get("/api/feedback")
    async def list_feedback(
        request: Request,
        request_id: str | None = None,
        app: str | None = None,
        kind: str | None = None,
        negative: bool | None = None,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        items = await asyncio.to_thread(
            platform.feedback.find, request_id=request_id, app=app, kind=kind, negative=negative, limit=limit
        )
        mine = await ProjectView(request).keep("app", items, lambda f: f.app or "")
        return [f.to_dict() for f in mine]


def _monitoring_routes(router: APIRouter, platform: Platform) -> None:
    @router.get("/api/metrics/catalog")
    async def metric_catalog() -> dict[str, Any]:
        return {
            "metrics": {name: about for name, (about, _) in METRICS.items()},
            "extra": [n for n in platform.request_metrics.names() if n not in METRICS and "<" not in n],
            "online": [f"online:{name}" for name in platform.settings.evaluation.online_metrics],
            "dimensions": list(DIMENSIONS),
        }

    @router.get("/api/metrics/series")
    async def metric_series(
        request: Request,
        metric: str,
        app: str | None = None,
        window_s: float = Query(default=3600.0, gt=0, le=90 * 86_400),
        bucket_s: float = Query(default=60.0, gt=0),
        group_by: str | None = None,
    ) -> dict[str, Any]:
        ProjectView(request).all_apps(app)
        try:
            points = await asyncio.to_thread(
                platform.request_metrics.series,
                metric,
                app=app,
                window_s=window_s,
                bucket_s=bucket_s,
                group_by=group_by,
            )
        except UnknownMetricError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"metric": metric, "app": app, "window_s": window_s, "bucket_s": bucket_s, "points": points}

    @router.get("/api/metrics/value")
    async def metric_value(
        request: Request,
        metric: str,
        app: str | None = None,
        window_s: float = Query(default=3600.0, gt=0, le=90 * 86_400),
    ) -> dict[str, Any]:
        ProjectView(request).all_apps(app)
        try:
            value = await asyncio.to_thread(platform.request_metrics.value, metric, app=app, window_s=window_s)
        except UnknownMetricError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"metric": metric, "app": app, "window_s": window_s, **value.to_dict()}

    @router.get("/api/drift")
    async def drift_reports(
        request: Request, app: str | None = None, limit: int = Query(default=20, ge=1, le=500)
    ) -> dict[str, Any]:
        view = ProjectView(request)
        reports = await asyncio.to_thread(platform.drift.reports, app, limit)
        return {"apps": view.apps, "reports": await view.keep("app", reports, lambda r: str(r.get("app") or ""))}

    @router.post("/api/drift/{app}/check")
    async def drift_check(app: str) -> dict[str, Any]:
        _known_app(platform, app)
        await asyncio.to_thread(platform.drift.flush)
        result = await asyncio.to_thread(platform.drift.check, app)
        if result is None:
            return {"app": app, "result": None, "reason": "not enough observed queries yet"}
        return {"app": app, "result": result.to_dict()}

    @router.get("/api/drift/{app}/retrieval")
    async def retrieval_health(app: str, window_s: float = Query(default=3600.0, gt=0)) -> dict[str, Any]:
        _known_app(platform, app)
        return await asyncio.to_thread(platform.drift.retrieval_health, app, window_s=window_s)

    @router.get("/api/audit")
    async def audit_entries(
        action: str | None = None, object_id: str | None = None, limit: int = Query(default=200, ge=1, le=10_000)
    ) -> list[dict[str, Any]]:
        entries = await asyncio.to_thread(platform.audit.entries, action=action, object_id=object_id)
        return entries[-limit:]

    @router.get("/api/audit/verify")
    async def audit_verify() -> dict[str, Any]:
        return (await asyncio.to_thread(platform.audit.verify)).to_dict()

    @router.get("/api/audit/export")
    async def audit_export(request: Request) -> Response:
        """The whole audit log as JSONL (the export is itself recorded in it, after the entries it holds)."""
        data = await asyncio.to_thread(lambda: b"".join(platform.audit.export_jsonl()))
        await record_read(request, platform.audit.record, "audit.export", "audit_log", "*")
        return Response(data, media_type="application/x-ndjson")


def _trigger_routes(router: APIRouter, platform: Platform) -> None:
    triggers = platform.triggers

    @router.get("/api/triggers")
    async def list_rules(request: Request) -> list[dict[str, Any]]:
        rules = await ProjectView(request).keep("trigger", await asyncio.to_thread(triggers.rules), lambda r: r.name)
        return [{**r.model_dump(mode="json"), "condition": r.when.describe()} for r in rules]

    @router.post("/api/triggers", status_code=201)
    async def save_rule(spec: dict[str, Any], request: Request, actor: Actor = None) -> dict[str, Any]:
        if isinstance(spec.get("name"), str) and spec["name"]:
            await ProjectView(request).claim("trigger", spec["name"])
        try:
            rule = await asyncio.to_thread(triggers.add_rule, spec, by=actor or "api")
        except RuleError as exc:
            raise HTTPException(422, str(exc)) from exc
        return rule.model_dump(mode="json")

    @router.delete("/api/triggers/{name}", status_code=204)
    async def delete_rule(name: str, actor: Actor = None) -> Response:
        try:
            await asyncio.to_thread(triggers.remove_rule, name, by=actor or "api")
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except RuleError as exc:
            raise HTTPException(409, str(exc)) from exc
        return Response(status_code=204)

    @router.post("/api/triggers/evaluate")
    async def evaluate_now() -> list[dict[str, Any]]:
        return await asyncio.to_thread(triggers.evaluate)

    @router.get("/api/triggers/firings")
    async def list_firings(
        request: Request, rule: str | None = None, limit: int = Query(default=50, ge=1, le=500)
    ) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(lambda: triggers.firings(rule=rule, limit=limit))
        return await ProjectView(request).keep("firing", found, lambda f: str(f["id"]))

    @router.get("/api/triggers/firings/{firing_id}")
    async def get_firing(firing_id: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(triggers.firing, firing_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post("/api/triggers/firings/{firing_id}/approve")
    async def approve(firing_id: str, actor: Actor = None) -> dict[str, Any]:
        return await _decide(lambda: triggers.approve(firing_id, by=_required(actor)))

    @router.post("/api/triggers/firings/{firing_id}/reject")
    async def reject(firing_id: str, body: DecisionBody, actor: Actor = None) -> dict[str, Any]:
        return await _decide(lambda: triggers.reject(firing_id, by=_required(actor), reason=body.reason))


def _runbook_routes(router: APIRouter, platform: Platform) -> None:
    @router.get("/api/runbooks")
    async def list_runbooks() -> list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in platform.runbooks.values()]

    @router.post("/api/runbooks/{name}/run")
    async def run_runbook(name: str, body: RunbookBody, actor: Actor = None) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(platform.run_runbook, name, body.params, by=actor or "api")
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except RunbookError as exc:
            raise HTTPException(422, str(exc)) from exc

    @router.get("/api/reviews")
    async def list_reviews(
        request: Request, status: str | None = "open", limit: int = Query(default=100, ge=1, le=1000)
    ) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(lambda: platform.reviews.list(status=status or None, limit=limit))
        return await ProjectView(request).keep("review", found, lambda r: str(r["id"]))

    @router.post("/api/reviews/{item_id}/resolve")
    async def resolve_review(item_id: str, body: ResolveBody, actor: Actor = None) -> dict[str, Any]:
        by = _required(actor)
        try:
            item = await asyncio.to_thread(
                platform.reviews.resolve,
                item_id,
                by=by,
                resolution=body.resolution,
                dismiss=body.dismiss,
                verdict=body.verdict,
                answer=body.answer,
            )
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        platform.audit.record(by, "review.resolve", "review_item", item_id, details={"status": item["status"]})
        return item


async def _decide(decide: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await asyncio.to_thread(decide)
    except PermissionError as exc:
        raise HTTPException(403, str(exc)) from exc
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    return result


def _required(actor: str | None) -> str:
    if not actor:
        raise HTTPException(401, "say who you are: the X-LLMOps-User header is required for this action")
    return actor


def _known_app(platform: Platform, app: str) -> None:
    if app not in platform.rag_apps:
        raise HTTPException(404, f"no RAG app {app!r}; apps: {', '.join(platform.rag_apps)}")
