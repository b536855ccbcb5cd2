"""REST API of the prompt registry: versions, stages, labels, history, diff, approvals, checks, experiments, roles.

The acting user is named by the ``X-LLMOps-User`` header on every change (until API keys arrive with the governance
issue, this identity is asserted by the caller, not authenticated).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from llmops._platform import Platform
from llmops.prompts import (
    ApprovalRequiredError,
    ExperimentSettings,
    PromptNotFoundError,
    PromptTemplateError,
    PromptVersion,
    ReviewRefusedError,
)
from llmops.server._access_guard import ProjectView

__all__ = ["prompts_router"]

T = TypeVar("T")
Actor = Annotated[str | None, Header(alias="X-LLMOps-User", description="who makes the change")]


class NewVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, str]]
    variables: dict[str, str] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    commit_message: str = ""
    description: str = ""


class RenderBody(BaseModel):
    variables: dict[str, Any]


class StageBody(BaseModel):
    stage: str


class LabelMove(BaseModel):
    version: int
    environment: str | None = None
    reason: str = ""


class RollbackBody(BaseModel):
    environment: str | None = None
    reason: str = ""


class CheckBody(BaseModel):
    version: int
    name: str = Field(min_length=1, max_length=100)
    passed: bool
    details: dict[str, Any] = Field(default_factory=dict)


class PolicyBody(BaseModel):
    prompt_name: str = "*"
    environment: str
    label: str
    required_approvals: int = Field(ge=1)
    required_check: str | None = None
    name: str | None = None


class ChangeRequestBody(BaseModel):
    prompt_name: str
    label: str
    version: int
    environment: str | None = None
    reason: str = ""


class ReviewBody(BaseModel):
    comment: str = ""


class ExperimentBody(BaseModel):
    prompt_name: str
    label: str = "production"
    environment: str | None = None
    variants: dict[int, float]
    settings: ExperimentSettings = Field(default_factory=ExperimentSettings)


class OutcomeBody(BaseModel):
    request_id: str
    metric: str = Field(min_length=1, max_length=100)
    value: float


def _version(v: PromptVersion) -> dict[str, Any]:
    data = asdict(v)
    data["created_at"] = v.created_at.isoformat()
    return data


def _actor(actor: str | None) -> str:
    if not actor or not actor.strip():
        raise HTTPException(400, "say who makes this change in the X-LLMOps-User header")
    return actor.strip()


async def _call(fn: Callable[[], T]) -> T:
    """Run a registry call off the event loop and map its errors to HTTP statuses."""
    try:
        return await asyncio.to_thread(fn)
    except (PromptNotFoundError, LookupError) as exc:
        raise HTTPException(404, str(exc.args[0]) if len(exc.args) == 1 else str(exc)) from exc
    except ApprovalRequiredError as exc:
        raise HTTPException(409, str(exc)) from exc
    except (ReviewRefusedError, PermissionError) as exc:
        raise HTTPException(403, str(exc)) from exc
    except (PromptTemplateError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from exc


def prompts_router(platform: Platform) -> APIRouter:  # noqa: C901 - one small closure per route
    router = APIRouter(prefix="/api", tags=["prompts"])
    prompts = platform.prompts

    @router.get("/prompts")
    async def list_prompts(request: Request) -> list[dict[str, Any]]:
        found = await _call(prompts.list_prompts)
        return await ProjectView(request).keep("prompt", found, lambda p: str(p["name"]))

    @router.get("/prompts/{name}")
    async def prompt_detail(name: str) -> dict[str, Any]:
        versions = await _call(lambda: prompts.versions(name))
        labels = await _call(lambda: {env: prompts.labels(name, env) for env in prompts.environments})
        return {"name": name, "versions": [asdict(v) for v in versions], "labels": labels}

    @router.post("/prompts/{name}/versions", status_code=201)
    async def create_version(name: str, body: NewVersion, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        return _version(
            await _call(
                lambda: prompts.create(
                    name,
                    body.messages,
                    author=who,
                    variables=body.variables,
                    params=body.params,
                    examples=body.examples,
                    tags=body.tags,
                    commit_message=body.commit_message,
                    description=body.description,
                )
            )
        )

    @router.get("/prompts/{name}/versions/{version}")
    async def get_version(name: str, version: int) -> dict[str, Any]:
        return _version(await _call(lambda: prompts.get_version(name, version)))

    @router.get("/prompts/{name}/resolve")
    async def resolve(name: str, label: str = "production", environment: str | None = None) -> dict[str, Any]:
        return _version(await _call(lambda: prompts.get(name, label=label, environment=environment)))

    @router.post("/prompts/{name}/versions/{version}/render")
    async def render_preview(name: str, version: int, body: RenderBody) -> dict[str, Any]:
        """Preview a version with sample variables, in the same sandbox as serving."""
        messages = await _call(lambda: prompts.render(prompts.get_version(name, version), body.variables))
        return {"messages": messages}

    @router.post("/prompts/{name}/versions/{version}/stage")
    async def set_stage(name: str, version: int, body: StageBody, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        await _call(lambda: prompts.set_stage(name, version, body.stage, by=who))
        return {"name": name, "version": version, "stage": body.stage}

    @router.post("/prompts/{name}/versions/{version}/archive")
    async def archive(name: str, version: int, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        await _call(lambda: prompts.archive(name, version, by=who))
        return {"name": name, "version": version, "archived": True}

    @router.get("/prompts/{name}/diff")
    async def diff(name: str, a: int = Query(), b: int = Query()) -> dict[str, Any]:
        return {"name": name, "a": a, "b": b, "diff": await _call(lambda: prompts.diff(name, a, b))}

    @router.put("/prompts/{name}/labels/{label}")
    async def move_label(name: str, label: str, body: LabelMove, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        await _call(
            lambda: prompts.move_label(
                name, label, body.version, environment=body.environment, by=who, reason=body.reason
            )
        )
        return {"name": name, "label": label, "version": body.version}

    @router.post("/prompts/{name}/labels/{label}/rollback")
    async def rollback(name: str, label: str, body: RollbackBody, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        version = await _call(
            lambda: prompts.rollback(name, label, environment=body.environment, by=who, reason=body.reason)
        )
        return {"name": name, "label": label, "version": version}

    @router.get("/prompts/{name}/history")
    async def history(name: str) -> list[dict[str, Any]]:
        return [asdict(h) for h in await _call(lambda: prompts.history(name))]

    @router.post("/prompts/{name}/checks", status_code=201)
    async def record_check(name: str, body: CheckBody, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        await _call(
            lambda: prompts.approvals.record_check(
                name, body.version, body.name, passed=body.passed, by=who, details=body.details
            )
        )
        return {"name": name, "version": body.version, "check": body.name, "passed": body.passed}

    @router.get("/prompt-policies")
    async def policies(request: Request) -> list[dict[str, Any]]:
        """Approval policies of the project's prompts and those for every prompt (``*``)."""
        found = [asdict(p) for p in await _call(prompts.approvals.policies)]
        mine = await ProjectView(request).keep("prompt", found, lambda p: str(p["prompt_name"]))
        return [p for p in found if p["prompt_name"] == "*" or p in mine]

    @router.post("/prompt-policies", status_code=201)
    async def set_policy(body: PolicyBody, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        if "admin" not in platform.roles.roles_of(who):
            raise HTTPException(403, f"{who} does not hold the 'admin' role needed to change approval policies")
        policy = await _call(
            lambda: prompts.approvals.set_policy(
                body.prompt_name,
                body.environment,
                body.label,
                required_approvals=body.required_approvals,
                required_check=body.required_check,
                name=body.name,
                by=who,
            )
        )
        return asdict(policy)

    @router.get("/prompt-requests")
    async def change_requests(request: Request, status: str | None = "pending") -> list[dict[str, Any]]:
        found = [asdict(r) for r in await _call(lambda: prompts.approvals.requests(status=status or None))]
        return await ProjectView(request).keep("prompt", found, lambda r: str(r["prompt_name"]))

    @router.post("/prompt-requests", status_code=201)
    async def open_request(body: ChangeRequestBody, request: Request, actor: Actor = None) -> dict[str, Any]:
        await ProjectView(request).check("prompt", body.prompt_name)
        who = _actor(actor)
        change = await _call(
            lambda: prompts.approvals.request(
                body.prompt_name, body.label, body.version, environment=body.environment, by=who, reason=body.reason
            )
        )
        return asdict(change)

    @router.post("/prompt-requests/{request_id}/approve")
    async def approve(request_id: int, body: ReviewBody, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        return asdict(await _call(lambda: prompts.approvals.approve(request_id, by=who, comment=body.comment)))

    @router.post("/prompt-requests/{request_id}/reject")
    async def reject(request_id: int, body: ReviewBody, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        return asdict(await _call(lambda: prompts.approvals.reject(request_id, by=who, comment=body.comment)))

    @router.post("/prompt-requests/{request_id}/apply")
    async def apply(request_id: int) -> dict[str, Any]:
        return asdict(await _call(lambda: prompts.approvals.apply(request_id)))

    @router.get("/prompt-experiments")
    async def experiments(
        request: Request, prompt_name: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        found = await _call(lambda: prompts.experiments.list_experiments(prompt_name=prompt_name, status=status))
        mine = await ProjectView(request).keep("prompt", found, lambda e: str(e.prompt_name))
        return [_experiment(e) for e in mine]

    @router.post("/prompt-experiments", status_code=201)
    async def start_experiment(body: ExperimentBody, request: Request, actor: Actor = None) -> dict[str, Any]:
        await ProjectView(request).check("prompt", body.prompt_name)
        who = _actor(actor)
        experiment = await _call(
            lambda: prompts.experiments.start(
                body.prompt_name,
                body.label,
                body.variants,
                environment=body.environment,
                by=who,
                settings=body.settings,
            )
        )
        return _experiment(experiment)

    @router.get("/prompt-experiments/{experiment_id}")
    async def experiment_detail(experiment_id: str, metric: str | None = None) -> dict[str, Any]:
        experiment = await _call(lambda: prompts.experiments.get(experiment_id))
        comparisons = await _call(lambda: prompts.experiments.compare(experiment_id, metric))
        outcomes = await _call(lambda: prompts.experiments.outcomes(experiment_id))
        return {
            **_experiment(experiment),
            "samples": {str(v): {m: len(vals) for m, vals in metrics.items()} for v, metrics in outcomes.items()},
            "comparisons": [
                {"version": version, **asdict(c), "significant": c.significant, "improved": c.improved,
                 "regressed": c.regressed}
                for version, c in comparisons
            ],
        }  # fmt: skip

    @router.post("/prompt-experiments/{experiment_id}/evaluate")
    async def evaluate(experiment_id: str, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        return await _call(lambda: prompts.experiments.evaluate(experiment_id, by=who))

    @router.post("/prompt-experiments/{experiment_id}/stop")
    async def stop(experiment_id: str, body: ReviewBody, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        return _experiment(await _call(lambda: prompts.experiments.stop(experiment_id, by=who, reason=body.comment)))

    @router.post("/outcomes", status_code=201)
    async def record_outcome(body: OutcomeBody, request: Request) -> dict[str, Any]:
        """Attach an outcome (thumbs up = 1, a score) to a request served by a prompt experiment."""
        await ProjectView(request).check("request", body.request_id)
        experiment = await _call(lambda: prompts.experiments.record_outcome(body.request_id, body.metric, body.value))
        return {"experiment": experiment.id, "request_id": body.request_id, "metric": body.metric}

    return router


def _experiment(e: Any) -> dict[str, Any]:
    data = asdict(e)
    data["variants"] = [{"version": v, "weight": w} for v, w in e.variants]
    data["settings"] = e.settings.model_dump()
    return data
