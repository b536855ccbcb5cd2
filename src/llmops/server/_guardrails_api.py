"""REST API of the guardrail policy registry: policies, versions, labels, rollback, history, diff.

The acting user is named by the ``X-LLMOps-User`` header on every change, as for prompts (asserted by the caller, not
authenticated, until API keys arrive with the governance work).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request
from pydantic import BaseModel

from llmops._platform import Platform
from llmops.guardrails import GuardrailPolicy, PolicyError, PolicyVersion
from llmops.server._access_guard import ProjectView

__all__ = ["guardrails_router"]

T = TypeVar("T")
Actor = Annotated[str | None, Header(alias="X-LLMOps-User", description="who makes the change")]

_NEW_POLICY_EXAMPLES = {
    "yaml": {"value": {"yaml": "name: support\ninput:\n  - {rail: size, max_chars: 4000}\n", "message": "first"}},
    "json": {"value": {"name": "support", "input": [{"rail": "size", "max_chars": 4000}], "message": "first"}},
}


class LabelMove(BaseModel):
    version: int
    environment: str | None = None
    reason: str = ""


class RollbackBody(BaseModel):
    environment: str | None = None
    reason: str = ""


def _version(v: PolicyVersion) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "source": v.source,
        "policy": v.policy.model_dump(mode="json"),
        "content_hash": v.content_hash,
        "author": v.author,
        "message": v.message,
        "created_at": v.created_at.isoformat(),
    }


def _actor(actor: str | None) -> str:
    if not actor or not actor.strip():
        raise HTTPException(400, "say who makes this change in the X-LLMOps-User header")
    return actor.strip()


async def _call(fn: Callable[[], T]) -> T:
    """Run a registry call off the event loop and map its errors to HTTP statuses."""
    try:
        return await asyncio.to_thread(fn)
    except LookupError as exc:
        raise HTTPException(404, str(exc.args[0]) if len(exc.args) == 1 else str(exc)) from exc
    except PolicyError as exc:
        raise HTTPException(422, str(exc)) from exc
    except ValueError as exc:  # a rollback with nothing to go back to
        raise HTTPException(409, str(exc)) from exc


def _new_policy(body: dict[str, Any]) -> tuple[GuardrailPolicy | str, str]:
    """The policy a POST carries (its YAML under ``yaml``, or the policy itself as JSON) and its ``message``."""
    fields = dict(body)
    message = fields.pop("message", "")
    if not isinstance(message, str):
        raise PolicyError("invalid request: 'message' is a string")
    if "yaml" in fields:
        text = fields.pop("yaml")
        if fields or not isinstance(text, str):
            raise PolicyError("invalid request: send {'yaml': '<the policy>', 'message': '...'} or the policy as JSON")
        return text, message
    return GuardrailPolicy.parse(fields), message


def guardrails_router(platform: Platform) -> APIRouter:
    router = APIRouter(prefix="/api/guardrails", tags=["guardrails"])
    policies = platform.guardrail_policies

    @router.get("/policies")
    async def list_policies(request: Request) -> list[dict[str, Any]]:
        found = await _call(policies.list_policies)
        return await ProjectView(request).keep("policy", found, lambda p: str(p["name"]))

    @router.post("/policies", status_code=201)
    async def create_policy(
        body: Annotated[dict[str, Any], Body(openapi_examples=_NEW_POLICY_EXAMPLES)],
        request: Request,
        actor: Actor = None,
    ) -> dict[str, Any]:
        """A new version of the policy its ``name`` names (the newest one if nothing changed); 422 if invalid."""
        who = _actor(actor)
        if isinstance(body.get("name"), str) and body["name"]:
            await ProjectView(request).claim("policy", body["name"])

        def create() -> PolicyVersion:
            policy, message = _new_policy(body)
            return policies.create(policy, author=who, message=message)

        return _version(await _call(create))

    @router.get("/policies/{name}")
    async def policy_detail(name: str) -> dict[str, Any]:
        latest = await _call(lambda: policies.latest(name))
        labels = await _call(lambda: {env: policies.labels(name, env) for env in policies.environments})
        return {"name": name, "latest": _version(latest), "labels": labels}

    @router.get("/policies/{name}/versions/{version}")
    async def get_version(name: str, version: int) -> dict[str, Any]:
        return _version(await _call(lambda: policies.get_version(name, version)))

    @router.put("/policies/{name}/labels/{label}")
    async def move_label(name: str, label: str, body: LabelMove, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        await _call(
            lambda: policies.move_label(
                name, label, body.version, environment=body.environment, by=who, reason=body.reason
            )
        )
        environment = body.environment or policies.default_environment
        return {"name": name, "environment": environment, "label": label, "version": body.version}

    @router.post("/policies/{name}/labels/{label}/rollback")
    async def rollback(name: str, label: str, body: RollbackBody | None = None, actor: Actor = None) -> dict[str, Any]:
        who = _actor(actor)
        given = body or RollbackBody()
        version = await _call(
            lambda: policies.rollback(name, label, environment=given.environment, by=who, reason=given.reason)
        )
        environment = given.environment or policies.default_environment
        return {"name": name, "environment": environment, "label": label, "version": version}

    @router.get("/policies/{name}/history")
    async def history(name: str) -> list[dict[str, Any]]:
        return [{**asdict(h), "at": h.at.isoformat()} for h in await _call(lambda: policies.history(name))]

    @router.get("/policies/{name}/diff")
    async def diff(name: str, a: int = Query(), b: int = Query()) -> dict[str, Any]:
        return {"name": name, "a": a, "b": b, "diff": await _call(lambda: policies.diff(name, a, b))}

    return router
