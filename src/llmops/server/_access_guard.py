"""The access guard: an ASGI middleware in front of every route that says who the caller is and whether they may.

For each request it finds the route's `Rule`, identifies the caller (an ``Authorization: Bearer llmops_...`` key,
or the web session cookie of an OIDC sign-in, see ``_login.py``; without either, the local operator when keys are
not required), checks the permission in the caller's project (or on
every project for platform routes) and, when the path names an object, that the object belongs to the caller's
project. A refusal is a JSON error with the header ``x-llmops-denied`` (401 no or bad key, 403 missing permission,
404 another project's object, reported exactly as a missing one). An admitted request carries the `Identity` in
``scope["state"]["identity"]``, and its ``x-llmops-user`` header is replaced by the key's principal, so handlers
that record an actor record the authenticated one, never a name the caller typed.

Keys of ``gateway.api_keys`` in the settings (hash-configured, without a project) stay gateway keys: on ``/v1``
routes they are left to the gateway, which checks them itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import orjson
from fastapi import HTTPException
from fastapi.routing import iter_route_contexts
from starlette.requests import Request
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from llmops.governance import AccessControl, Identity, InvalidKeyError
from llmops.governance._keys import KEY_PREFIX
from llmops.server._access_rules import ROUTE_RULES, ObjectResolver, Rule
from llmops.server._login import session_key
from llmops.server._shared import authorization_of
from llmops.store import AuditHook, Journal

__all__ = ["AccessGuard", "ProjectView", "identity_of", "missing_rules", "record_read", "route_keys"]

T = TypeVar("T")
_DENIED = b"x-llmops-denied"
_NO_KEY = "an API key is required: send Authorization: Bearer <key>"
_NO_KEY_SESSION = "the web session has ended: sign in again at /auth/login"
_HOT_PATH = ("POST", "/v1/chat/completions")  # served before FastAPI's router (see ChatCompletions)
# Kinds owned through another object (a request through its app, a firing through its rule): resolved one by one.
_DERIVED = frozenset({"review", "request", "firing", "experiment", "prompt_request", "prompt_experiment"})


def missing_rules(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """The (method, path) of every route without an access rule."""
    missing = []
    for method, path in route_keys(routes):
        if (method, path) not in ROUTE_RULES:
            missing.append((method, path))
    return missing


def identity_of(request: Request) -> Identity:
    """The identity the guard admitted ``request`` as."""
    identity = request.scope.get("state", {}).get("identity")
    if not isinstance(identity, Identity):
        raise RuntimeError("no identity on this request: is the AccessGuard in front of the app?")
    return identity


async def record_read(request: Request, audit: AuditHook, action: str, object_type: str, object_id: str) -> None:
    """Record a sensitive read (an export, a request's full lineage) in the audit log, as the caller."""
    identity = identity_of(request)
    details = {"project": identity.project, **({"key": identity.key.id} if identity.key else {})}
    await asyncio.to_thread(audit, identity.principal, action, object_type, object_id, details=details)


class ProjectView:
    """The caller's project as a handler sees it: check, claim and filter objects named in request bodies and
    listed in responses (objects named in the path are checked by the guard before the handler runs).

    ``request.app.state.objects`` holds the app's `ObjectResolver` (set by ``create_app``)."""

    def __init__(self, request: Request) -> None:
        self.identity = identity_of(request)
        self.project = self.identity.project
        self._objects: ObjectResolver = request.app.state.objects

    async def check(self, kind: str, key: str) -> None:
        """404, as for a missing object, when ``key`` belongs to another project."""
        owner = await asyncio.to_thread(self._objects.owner, kind, key)
        if owner is not None and owner != self.project:
            raise HTTPException(404, f"no {kind.replace('_', ' ')} {key!r} in project {self.project}")

    async def claim(self, kind: str, key: str) -> None:
        """Make a new object the project's (before creating it); 404 when it is another project's."""
        owner = await asyncio.to_thread(self._objects.owner, kind, key)
        if owner is None:
            owner = await asyncio.to_thread(self._objects.ownership.claim, kind, key, self.project)
        if owner != self.project:
            raise HTTPException(404, f"no {kind.replace('_', ' ')} {key!r} in project {self.project}")

    async def keep(self, kind: str, items: Iterable[T], key: Callable[[T], str]) -> list[T]:
        """Those of ``items`` whose object (``key(item)``) belongs to the project."""
        items = list(items)
        names = {key(item) for item in items}
        if kind == "app":
            mine = {name for name in names if self._objects.app_project(name) == self.project}
        elif kind in _DERIVED:
            mine = await asyncio.to_thread(
                lambda: {name for name in names if self._objects.owner(kind, name) in (self.project, None)}
            )
        else:
            mine = await asyncio.to_thread(self._objects.ownership.visible, kind, names, self.project)
        return [item for item in items if key(item) in mine]

    def all_apps(self, app: str | None) -> None:
        """For aggregates over every app (``app`` None): 422 when some apps are another project's."""
        if app is None and set(self.apps) != set(self._objects.apps_of_all()):
            raise HTTPException(422, f"name the app: project {self.project}'s are {', '.join(self.apps) or 'none'}")
        if app is not None:
            self.app(app)

    @property
    def apps(self) -> list[str]:
        """The RAG apps of the project."""
        return self._objects.apps_of(self.project)

    def app(self, name: str | None) -> None:
        """404 unless the app ``name`` belongs to the project (an app missing from settings is the default
        project's)."""
        if self._objects.app_project(name) != self.project:
            raise HTTPException(404, f"no app {name!r} in project {self.project}")


class AccessGuard:
    """See the module doc. ``routes``: the FastAPI app's routes (the hot path's route is known here)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[BaseRoute],
        access: AccessControl,
        resolver: ObjectResolver,
        journal: Journal,
        keys_required: bool,
    ) -> None:
        self.app = app
        self._access = access
        self._resolver = resolver
        self._journal = journal
        self._required = keys_required
        self._gateway_key = Identity("gateway-key", access.default_project, frozenset({"invoke"}), frozenset())
        if missing := missing_rules(routes):
            listed = ", ".join(f"{m} {p}" for m, p in missing)
            raise RuntimeError(f"routes without an access rule in server/_access_rules.py: {listed}")
        if unknown := {r.kind for r in ROUTE_RULES.values() if r.kind} - resolver.kinds:
            raise RuntimeError(f"access rules name unknown object kinds: {', '.join(sorted(unknown))}")
        self._exact: dict[tuple[str, str], Rule] = {}
        self._templated: list[tuple[str, re.Pattern[str], Rule]] = []
        for (method, path), rule in ROUTE_RULES.items():
            if "{" in path:
                regex, _format, _convertors = compile_path(path)
                self._templated.append((method, regex, rule))
            else:
                self._exact[(method, path)] = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        found = self._match(method, scope)
        if found is None:  # no such route: the app answers 404 or 405 itself
            await self.app(scope, receive, send)
            return
        rule, params = found
        if rule.scope == "public":
            await self.app(scope, receive, send)
            return
        bearer = _bearer(authorization_of(scope["headers"]) or "")
        if bearer is not None and not bearer.startswith(KEY_PREFIX) and scope["path"].startswith("/v1/"):
            # A key of gateway.api_keys: the gateway checks it; it calls models in the default project.
            scope.setdefault("state", {})["identity"] = self._gateway_key
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        session = session_key(headers.get("cookie", "")) if bearer is None else None
        try:
            identity = await self._identify(bearer or session, headers)
        except InvalidKeyError as exc:
            if session is None:
                await _deny(send, 401, str(exc), "authentication")
                return
            identity = await self._identify(None, headers)  # an ended web session: as if there were no cookie
        if identity is None:
            await _deny(send, 401, _NO_KEY_SESSION if session else _NO_KEY, "authentication")
            return
        if session is not None and identity.key is not None and not _same_origin(method, headers):
            # A cookie rides along with any request the browser makes, including one another site's page causes:
            # changes made with a session must come from this server's own pages.
            await _deny(send, 403, "a cross-site request with a web session is refused", "csrf")
            return
        if rule.scope == "platform" and not identity.can_everywhere(rule.permission or ""):
            await _deny(send, 403, f"{identity.principal} lacks {rule.permission!r} on every project", "permission")
            return
        if rule.scope == "project" and not identity.can(rule.permission or ""):
            await _deny(
                send, 403, f"{identity.principal} lacks {rule.permission!r} in project {identity.project}", "permission"
            )
            return
        if rule.kind and rule.param:
            key = str(params.get(rule.param, ""))
            if not await self._owned(rule, key, identity):
                await _deny(
                    send, 404, f"no {rule.kind.replace('_', ' ')} {key!r} in project {identity.project}", "object"
                )
                return
        scope.setdefault("state", {})["identity"] = identity
        if identity.key is not None:
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"x-llmops-user"]
            scope["headers"].append((b"x-llmops-user", identity.principal.encode()))
        await self.app(scope, receive, send)

    def _match(self, method: str, scope: Scope) -> tuple[Rule, Mapping[str, Any]] | None:
        path = scope["path"]
        rule = self._exact.get((method, path))
        if rule is not None:
            return rule, {}
        for route_method, regex, templated in self._templated:
            if route_method == method and (match := regex.match(path)):
                return templated, match.groupdict()
        return None

    async def _identify(self, bearer: str | None, headers: Mapping[str, str]) -> Identity | None:
        if bearer is None:
            if self._required:
                return None
            project = headers.get("x-llmops-project") or self._access.default_project
            return Identity.operator(headers.get("x-llmops-user") or "local", project)
        if not bearer.startswith(KEY_PREFIX):
            raise InvalidKeyError("unknown API key")
        return await self._access.identify_async(bearer)

    async def _owned(self, rule: Rule, key: str, identity: Identity) -> bool:
        """Whether ``key`` may be touched by ``identity``: it is the project's, or it does not exist and the route
        may create it (then it becomes the project's now)."""
        assert rule.kind is not None
        kind = rule.kind
        owner = self._resolver.cached_owner(kind, key) or await asyncio.to_thread(self._resolver.owner, kind, key)
        if owner is None and kind == "request":  # its record may still be on its way from the journal
            await asyncio.to_thread(self._journal.flush)
            owner = await asyncio.to_thread(self._resolver.owner, kind, key)
        if owner is None:
            if rule.creates:
                owner = await asyncio.to_thread(self._access.ownership.claim, kind, key, identity.project)
                return owner == identity.project
            return True  # nothing to protect: the route answers "not found" itself
        return owner == identity.project


def route_keys(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path template) of every route, those of included routers too, and of the hot path."""
    keys = [_HOT_PATH]
    for context in iter_route_contexts(list(routes)):
        if context.path is None:
            continue
        keys.extend((method, context.path) for method in sorted(context.methods or ()) if method != "HEAD")
    return keys


def _same_origin(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request may act with the session cookie it carries: reads always; changes only with an Origin
    header (browsers send it on every cross-origin and every non-GET fetch) naming this server."""
    if method in ("GET", "OPTIONS"):
        return True
    origin, host = headers.get("origin"), headers.get("host")
    if not origin or not host:
        return False
    return origin.split("://", 1)[-1] == host and origin.startswith(("http://", "https://"))


def _bearer(authorization: str) -> str | None:
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


async def _deny(send: Send, status: int, message: str, reason: str) -> None:
    body = orjson.dumps({"detail": message, "error": {"message": message, "type": "access_denied", "code": reason}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (_DENIED, reason.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
