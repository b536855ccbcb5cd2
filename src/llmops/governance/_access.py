"""Access control: projects, users and service accounts, roles per project, API keys, and which project owns what.

>>> access.projects.create("support", by="ana")                                  # doctest: +SKIP
>>> access.principals.add("support-bot", kind="service", by="ana")               # doctest: +SKIP
>>> access.roles.grant("support-bot", "app", project="support", by="ana")        # doctest: +SKIP
>>> record, key = access.keys.create("support-bot", "support", by="ana")         # doctest: +SKIP
>>> access.identify(key).can("invoke")                                           # doctest: +SKIP
True

Isolation is by ownership: every prompt, guardrail policy, dataset, trigger rule and RAG app belongs to one
project (``project_objects``; objects made before projects, or outside the API, belong to the default project),
and the server answers a request only about objects of the project its key acts in. The domain packages stay
unaware of projects; the HTTP layer (``llmops.server``) enforces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from llmops.governance._keys import ApiKeys, InvalidKeyError, StoredKey
from llmops.governance._roles import ALL_PROJECTS, PERMISSIONS, RoleDirectory, permissions_of
from llmops.governance._tables import ObjectOwnerRow, PrincipalRow, ProjectRow
from llmops.knowledge import MetadataFilter
from llmops.knowledge._filters import Condition
from llmops.store import AuditHook, Store

__all__ = ["AccessControl", "Identity", "Ownership", "Principals", "Projects", "document_scope"]

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_EVERYTHING = frozenset().union(*PERMISSIONS.values())


@dataclass(frozen=True)
class Identity:
    """Who a request acts as: a principal in one project with the permissions its roles (and its key's scopes)
    give there, and those it holds in every project (``platform``)."""

    principal: str
    project: str
    permissions: frozenset[str]
    platform: frozenset[str]
    key: StoredKey | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def can_everywhere(self, permission: str) -> bool:
        return permission in self.platform

    @classmethod
    def operator(cls, name: str, project: str) -> Identity:
        """The local operator of an instance without required keys: every permission in every project."""
        return cls(name, project, _EVERYTHING, _EVERYTHING)


def document_scope(project: str, *, default_project: str, projects: Iterable[str]) -> MetadataFilter:
    """The metadata filter that keeps retrieval inside ``project``, ANDed to any filter a caller sends, so no filter
    can reach another project's chunks. Chunks carry ``project`` from their source (``ingest --project``); those
    without one are the default project's, whose filter therefore excludes every other project."""
    if project != default_project:
        return MetadataFilter((Condition("project", "$eq", project),))
    others = sorted(p for p in projects if p != default_project)
    return MetadataFilter(tuple(Condition("project", "$ne", other) for other in others))


class Projects:
    def __init__(self, store: Store, audit: AuditHook | None, on_change: Callable[[], None] | None = None) -> None:
        self._store, self._audit = store, audit
        self._on_change = on_change or (lambda: None)

    def create(self, name: str, *, by: str, description: str = "") -> dict[str, Any]:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"invalid project name {name!r}: lower-case letters, digits, '.', '_' and '-', at most 100"
            )
        with self._store.session() as session:
            if session.get(ProjectRow, name) is not None:
                raise ValueError(f"project {name!r} exists")
            row = ProjectRow(name=name, description=description, created_by=by, created_at=datetime.now(UTC))
            session.add(row)
            record = _project(row)
        self._on_change()
        if self._audit is not None:
            self._audit(by, "project.create", "project", name, after=record)
        return record

    def ensure(self, name: str, *, by: str) -> None:
        """Create ``name`` unless it exists (the default project, projects named in settings)."""
        with self._store.session() as session:
            if session.get(ProjectRow, name) is not None:
                return
        with contextlib.suppress(ValueError):  # another replica made it first
            self.create(name, by=by)

    def exists(self, name: str) -> bool:
        with self._store.session() as session:
            return session.get(ProjectRow, name) is not None

    def list(self) -> list[dict[str, Any]]:
        with self._store.session() as session:
            return [_project(row) for row in session.scalars(select(ProjectRow).order_by(ProjectRow.name))]


class Principals:
    """Users (people) and service accounts (programs)."""

    def __init__(self, store: Store, audit: AuditHook | None, keys: ApiKeys) -> None:
        self._store, self._audit, self._keys = store, audit, keys

    def add(self, name: str, *, by: str, kind: str = "user") -> dict[str, Any]:
        if kind not in ("user", "service"):
            raise ValueError(f"kind must be 'user' or 'service', not {kind!r}")
        if not name.strip() or len(name) > 200 or any(c.isspace() or not c.isprintable() for c in name):
            raise ValueError(f"invalid name {name!r}: 1-200 printable characters without spaces")
        with self._store.session() as session:
            if session.get(PrincipalRow, name) is not None:
                raise ValueError(f"{name!r} exists")
            row = PrincipalRow(name=name, kind=kind, created_by=by, created_at=datetime.now(UTC))
            session.add(row)
            record = _principal(row)
        if self._audit is not None:
            self._audit(by, f"{kind}.add", "principal", name, after=record)
        return record

    def disable(self, name: str, *, by: str) -> dict[str, Any]:
        """Disable a principal and revoke all of its keys (its history stays)."""
        with self._store.session() as session:
            row = session.get(PrincipalRow, name)
            if row is None:
                raise LookupError(f"no user or service account {name!r}")
            row.disabled_at = row.disabled_at or datetime.now(UTC)
            record = _principal(row)
        revoked = self._keys.revoke_all(name, by=by)
        if self._audit is not None:
            self._audit(by, "principal.disable", "principal", name, after=record, details={"keys_revoked": revoked})
        return {**record, "keys_revoked": revoked}

    def get(self, name: str) -> dict[str, Any] | None:
        with self._store.session() as session:
            row = session.get(PrincipalRow, name)
            return _principal(row) if row is not None else None

    def list(self) -> list[dict[str, Any]]:
        with self._store.session() as session:
            return [_principal(row) for row in session.scalars(select(PrincipalRow).order_by(PrincipalRow.name))]


class Ownership:
    """Which project owns an object, by kind (``prompt``, ``policy``, ``dataset``, ``trigger``, ...) and key."""

    def __init__(self, store: Store, default_project: str) -> None:
        self._store = store
        self.default_project = default_project

    def claim(self, kind: str, key: str, project: str) -> str:
        """Record ``project`` as the owner unless the object has one; returns the owner."""
        with self._store.session() as session:
            row = session.get(ObjectOwnerRow, (kind, key))
            if row is not None:
                return row.project
            session.add(ObjectOwnerRow(kind=kind, key=key, project=project, created_at=datetime.now(UTC)))
        return project

    def owner(self, kind: str, key: str) -> str:
        with self._store.session() as session:
            project = session.scalar(
                select(ObjectOwnerRow.project).where(ObjectOwnerRow.kind == kind, ObjectOwnerRow.key == key)
            )
        return project or self.default_project

    def visible(self, kind: str, keys: Iterable[str], project: str) -> set[str]:
        """Those of ``keys`` that belong to ``project``."""
        wanted = set(keys)
        with self._store.session() as session:
            rows = session.execute(
                select(ObjectOwnerRow.key, ObjectOwnerRow.project).where(ObjectOwnerRow.kind == kind)
            ).all()
        owners = {key: owner for key, owner in rows if key in wanted}
        return {key for key in wanted if owners.get(key, self.default_project) == project}

    def release(self, kind: str, key: str) -> None:
        """Forget the owner of a deleted object, so its name can be used again."""
        with self._store.session() as session:
            row = session.get(ObjectOwnerRow, (kind, key))
            if row is not None:
                session.delete(row)


class AccessControl:
    """Projects, principals, roles, keys and ownership over one store, each change audited."""

    def __init__(
        self,
        store: Store,
        *,
        audit: AuditHook | None = None,
        default_project: str = "default",
        cache_ttl_s: float = 5.0,
    ) -> None:
        self.default_project = default_project
        self._ttl = cache_ttl_s
        self._identities: dict[str, tuple[float, Identity]] = {}  # key id -> (when resolved, identity)
        self._projects_read: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()
        self.projects = Projects(store, audit, on_change=self.forget)
        self.keys = ApiKeys(store, audit=audit)
        self.principals = Principals(store, audit, self.keys)
        self.roles = RoleDirectory(store, audit=audit, on_change=self.forget)
        self.ownership = Ownership(store, default_project)
        self.projects.ensure(default_project, by="llmops")

    def identify(self, secret: str) -> Identity:
        """The identity an API key acts as (InvalidKeyError when it is unknown, revoked or expired)."""
        key = self.keys.authenticate(secret)
        return self._cached(key.id) or self._resolve(key)

    def identify_cached(self, secret: str) -> Identity | None:
        """`identify` from memory only: None when the store would have to be read (no I/O, for event loops)."""
        key = self.keys.peek(secret)
        return self._cached(key.id) if key is not None else None

    async def identify_async(self, secret: str) -> Identity:
        """`identify` for an event loop: a key seen in the last few seconds is answered from memory; only another
        costs a worker thread and a read."""
        cached = self.identify_cached(secret)
        return cached if cached is not None else await asyncio.to_thread(self.identify, secret)

    def _cached(self, key_id: str) -> Identity | None:
        with self._lock:
            cached = self._identities.get(key_id)
        if cached is not None and time.monotonic() - cached[0] <= self._ttl:
            return cached[1]
        return None

    def _resolve(self, key: StoredKey) -> Identity:
        now = time.monotonic()
        identity = self.identity(key.principal, key.project, key=key)
        with self._lock:
            self._identities[key.id] = (now, identity)
        return identity

    def document_scope(self, project: str) -> MetadataFilter:
        """The filter that keeps retrieval inside ``project`` (see `document_scope`); the project list behind it is
        re-read at most every few seconds, so a new project is excluded from the default project's retrieval soon
        after it is made, on every replica."""
        now = time.monotonic()
        with self._lock:
            cached = self._projects_read
        if cached is None or now - cached[0] > self._ttl:
            cached = (now, [p["name"] for p in self.projects.list()])
            with self._lock:
                self._projects_read = cached
        return document_scope(project, default_project=self.default_project, projects=cached[1])

    def sign_in(
        self, principal: str, project: str, *, hours: float, via: str, add_unknown: bool = False
    ) -> tuple[dict[str, Any], str]:
        """A web session for a person an identity provider (``via``) vouched for: a key of theirs in ``project``
        that expires in ``hours``. Refused (ValueError, LookupError) for an unknown or disabled principal, a service
        account, or someone without a role in the project."""
        who = self.principals.get(principal)
        if who is None and add_unknown:
            with contextlib.suppress(ValueError):  # added by a concurrent sign-in
                self.principals.add(principal, by=via)
            who = self.principals.get(principal)
        if who is None:
            raise LookupError(f"{principal!r} is not a user here: an admin adds it first (llmops users add)")
        if who["disabled_at"] is not None or who["kind"] != "user":
            raise ValueError(f"{principal!r} may not sign in ({'disabled' if who['disabled_at'] else 'a service'})")
        if not self.projects.exists(project):
            raise LookupError(f"no project {project!r}")
        if not self.roles.roles_of(principal, project):
            raise ValueError(
                f"{principal!r} has no role in project {project!r}: an admin grants one (llmops roles grant)"
            )
        name = f"web session ({via})"
        return self.keys.create(principal, project, by=principal, name=name, expires_in=timedelta(hours=hours))

    def sign_out(self, secret: str) -> str | None:
        """End the web session ``secret`` (revoke its key); the key id, or None when it was not a live key."""
        try:
            key = self.keys.authenticate(secret)
        except InvalidKeyError:
            return None
        self.keys.revoke(key.id, by=key.principal)  # drops the key from the cache identify_cached reads first
        return key.id

    def forget(self) -> None:
        """Drop cached identities (after a role change in this process; other replicas follow within the TTL)."""
        with self._lock:
            self._identities.clear()
            self._projects_read = None

    def identity(self, principal: str, project: str, *, key: StoredKey | None = None) -> Identity:
        """``principal`` acting in ``project``: its roles there (and everywhere), narrowed to the key's scopes."""
        here = permissions_of(self.roles.roles_of(principal, project))
        everywhere = permissions_of(self.roles.roles_of(principal, ALL_PROJECTS))
        if key is not None and key.scopes:
            here, everywhere = here & key.scopes, everywhere & key.scopes
        return Identity(principal, project, here, everywhere, key)


def _project(row: ProjectRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "description": row.description,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


def _principal(row: PrincipalRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "kind": row.kind,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "disabled_at": row.disabled_at.isoformat() if row.disabled_at else None,
    }
