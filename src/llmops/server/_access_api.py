"""REST API of access control: projects, users and service accounts, roles per project, API keys.

Who may call each route is in ``_access_rules.py``; handlers act for the identity the guard admitted. A project
admin manages roles and keys in their own project; projects, principals and grants on every project (``*``) need a
platform admin (the admin role on ``*``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from llmops.governance import ALL_PROJECTS, ROLES, AccessControl
from llmops.server._access_guard import identity_of

__all__ = ["access_router"]


class ProjectBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=1000)


class PrincipalBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["user", "service"] = "user"


class GrantBody(BaseModel):
    user: str = Field(min_length=1, max_length=200)
    role: str = Field(description=f"one of {', '.join(sorted(ROLES))}")
    project: str | None = Field(default=None, description="the caller's project by default; '*' for every project")


class KeyBody(BaseModel):
    principal: str | None = Field(default=None, description="whose key (the caller by default)")
    name: str = Field(default="", max_length=200)
    scopes: list[str] = Field(default_factory=list, description="limit the key to these permissions")
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)
    team: str | None = None
    app: str | None = None
    cost_centre: str | None = None


def access_router(access: AccessControl) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["access"])
    _identity_routes(router, access)
    _role_routes(router, access)
    _key_routes(router, access)
    return router


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except LookupError as exc:
        raise HTTPException(404, str(exc.args[0] if exc.args else exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


def _identity_routes(router: APIRouter, access: AccessControl) -> None:
    @router.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        """Who the caller acts as: principal, project, permissions, and the key (never its secret)."""
        identity = identity_of(request)
        return {
            "principal": identity.principal,
            "project": identity.project,
            "permissions": sorted(identity.permissions),
            "permissions_everywhere": sorted(identity.platform),
            "key": identity.key.id if identity.key else None,
            "key_name": identity.key.name if identity.key else None,
        }

    @router.get("/projects")
    async def projects() -> list[dict[str, Any]]:
        return list(await _call(access.projects.list))

    @router.post("/projects", status_code=201)
    async def create_project(body: ProjectBody, request: Request) -> dict[str, Any]:
        by = identity_of(request).principal
        return dict(await _call(access.projects.create, body.name, by=by, description=body.description))

    @router.get("/principals")
    async def principals() -> list[dict[str, Any]]:
        return list(await _call(access.principals.list))

    @router.post("/principals", status_code=201)
    async def add_principal(body: PrincipalBody, request: Request) -> dict[str, Any]:
        by = identity_of(request).principal
        return dict(await _call(access.principals.add, body.name, kind=body.kind, by=by))

    @router.post("/principals/{name}/disable")
    async def disable_principal(name: str, request: Request) -> dict[str, Any]:
        """Disable a user or service account and revoke every key it holds."""
        return dict(await _call(access.principals.disable, name, by=identity_of(request).principal))


def _role_routes(router: APIRouter, access: AccessControl) -> None:
    @router.get("/roles")
    async def roles(request: Request) -> list[dict[str, str]]:
        """The grants that hold in the caller's project (its own and those on every project)."""
        grants = await _call(access.roles.grants, identity_of(request).project)
        return [{"user": user, "role": role, "project": project} for user, role, project in grants]

    def grant_project(body: GrantBody, request: Request) -> str:
        identity = identity_of(request)
        project = body.project or identity.project
        if project == ALL_PROJECTS and not identity.can_everywhere("admin"):
            raise HTTPException(403, "roles on every project ('*') are granted by platform admins only")
        if project not in (ALL_PROJECTS, identity.project):
            raise HTTPException(403, f"roles in project {project!r} are granted from that project")
        return project

    async def operator_may_grant(request: Request) -> None:
        """Without keys (the local operator, named by X-LLMOps-User), roles are managed by admins once there is
        one; the first admin is granted by anyone (a fresh install has no one to ask)."""
        identity = identity_of(request)
        if identity.key is not None:
            return
        grants = await _call(access.roles.grants)
        has_admins = any(role == "admin" for _user, role, _project in grants)
        if has_admins and "admin" not in await _call(access.roles.roles_of, identity.principal, identity.project):
            raise HTTPException(403, f"{identity.principal} does not hold the 'admin' role needed to grant roles")

    @router.post("/roles", status_code=201)
    async def grant(body: GrantBody, request: Request) -> dict[str, str]:
        project = grant_project(body, request)
        await operator_may_grant(request)
        await _call(access.roles.grant, body.user, body.role, by=identity_of(request).principal, project=project)
        return {"user": body.user, "role": body.role, "project": project}

    @router.delete("/roles")
    async def revoke(body: GrantBody, request: Request) -> dict[str, Any]:
        project = grant_project(body, request)
        await operator_may_grant(request)
        by = identity_of(request).principal
        removed = await _call(access.roles.revoke, body.user, body.role, by=by, project=project)
        return {"user": body.user, "role": body.role, "project": project, "revoked": removed}


def _key_routes(router: APIRouter, access: AccessControl) -> None:
    @router.get("/keys")
    async def keys(request: Request) -> list[dict[str, Any]]:
        """The project's keys (never the keys themselves: only their ids and what they may do)."""
        return list(await _call(access.keys.list, project=identity_of(request).project))

    @router.post("/keys", status_code=201)
    async def create_key(body: KeyBody, request: Request) -> dict[str, Any]:
        """Make a key in the caller's project. The key is in this response only: it is not stored."""
        identity = identity_of(request)
        expires = timedelta(days=body.expires_in_days) if body.expires_in_days else None
        record, secret = await _call(
            access.keys.create,
            body.principal or identity.principal,
            identity.project,
            by=identity.principal,
            name=body.name,
            scopes=body.scopes,
            expires_in=expires,
            team=body.team,
            app=body.app,
            cost_centre=body.cost_centre,
        )
        return {**record, "key": secret}

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
        return dict(await _call(access.keys.revoke, key_id, by=identity_of(request).principal))
