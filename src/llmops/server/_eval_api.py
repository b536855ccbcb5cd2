"""REST API of evaluation: datasets (versions, drafts, review), experiments and their comparison.

Running an experiment is a batch job (minutes of generation), so it is started from the CLI or CI
(``llmops eval run``), not through a request that would hold a connection open; the API reads what runs stored.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from llmops._platform import Platform
from llmops.evaluation import (
    DatasetFileError,
    DatasetNotFoundError,
    ExperimentNotFoundError,
    examples_from_records,
)
from llmops.server._access_guard import ProjectView

__all__ = ["eval_router"]

Actor = Annotated[str | None, Header(alias="X-LLMOps-User", description="who makes the change")]


class DatasetBody(BaseModel):
    examples: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)
    message: str = ""
    drafts: bool = Field(default=False, description="queue the examples for review instead of saving a version")


class ReviewBody(BaseModel):
    accept: list[int] = Field(default_factory=list)
    reject: list[int] = Field(default_factory=list)
    note: str = ""


def eval_router(platform: Platform) -> APIRouter:
    router = APIRouter(prefix="/api/eval", tags=["evaluation"])
    _dataset_routes(router, platform)
    _experiment_routes(router, platform)
    return router


def _dataset_routes(router: APIRouter, platform: Platform) -> None:
    datasets = platform.datasets

    @router.get("/datasets")
    async def list_datasets(request: Request) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(datasets.list_datasets)
        return await ProjectView(request).keep("dataset", found, lambda d: str(d["name"]))

    @router.get("/datasets/{name}")
    async def get_dataset(name: str, version: int | None = None) -> dict[str, Any]:
        try:
            found = await asyncio.to_thread(datasets.get, name, version)
        except DatasetNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {**found.info(), "examples": [e.to_dict() for e in found.examples]}

    @router.post("/datasets/{name}", status_code=201)
    async def save_dataset(name: str, body: DatasetBody, actor: Actor = None) -> dict[str, Any]:
        try:
            examples = examples_from_records((f"examples[{n}]", r) for n, r in enumerate(body.examples))
            if body.drafts:
                ids = await asyncio.to_thread(datasets.add_drafts, name, examples, origin=f"api:{actor or 'api'}")
                return {"drafts": ids}
            version = await asyncio.to_thread(
                datasets.save, name, examples, author=actor or "api", message=body.message, origin="api"
            )
        except (DatasetFileError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return version.info()

    @router.get("/datasets/{name}/drafts")
    async def drafts(name: str) -> list[dict[str, Any]]:
        pending = await asyncio.to_thread(datasets.drafts, name)
        return [{"id": d.id, "origin": d.origin, "example": d.example.to_dict()} for d in pending]

    @router.post("/datasets/{name}/review")
    async def review(name: str, body: ReviewBody, actor: Actor = None) -> dict[str, Any]:
        try:
            version = await asyncio.to_thread(
                datasets.review, name, accept=body.accept, reject=body.reject, by=actor or "api", note=body.note
            )
        except DatasetNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"version": version.info() if version else None}


def _experiment_routes(router: APIRouter, platform: Platform) -> None:
    experiments = platform.evaluator.experiments

    @router.get("/experiments")
    async def list_experiments(
        request: Request, name: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` experiments, those on the project's datasets."""
        found = await asyncio.to_thread(experiments.list_experiments, name=name, limit=limit)
        return await ProjectView(request).keep("dataset", found, lambda e: str(e["dataset"]))

    @router.get("/experiments/{experiment_id}")
    async def get_experiment(experiment_id: str) -> dict[str, Any]:
        try:
            record = await asyncio.to_thread(experiments.get, experiment_id)
        except ExperimentNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        return record.to_dict()

    @router.get("/compare")
    async def compare(
        request: Request, baseline: str, candidate: str, alpha: Annotated[float, Query(gt=0, lt=0.5)] = 0.05
    ) -> dict[str, Any]:
        view = ProjectView(request)
        for experiment_id in (baseline, candidate):
            await view.check("experiment", experiment_id)
        try:
            result = await asyncio.to_thread(platform.evaluator.compare, baseline, candidate, alpha=alpha)
        except ExperimentNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"baseline": baseline, "candidate": candidate, "metrics": [m.to_dict() for m in result.metrics]}
