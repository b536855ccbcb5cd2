"""Who holds which role in which project, and what each role may do.

Roles are granted per project; a grant on ``*`` holds in every project (a platform administrator, or a viewer
of everything for an auditor). A role is a set of permissions: ``read`` (see objects), ``invoke`` (call apps and
models, send feedback), ``write`` (change prompts, policies, datasets, documents, rules), ``approve`` (approve and
release: prompt changes, held actions, held answers) and ``admin`` (keys, roles, erasure, audit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy import delete, or_, select

from llmops.governance._tables import RoleGrantRow
from llmops.store import AuditHook, Store

__all__ = ["ALL_PROJECTS", "PERMISSIONS", "ROLES", "RoleDirectory", "permissions_of"]

ALL_PROJECTS = "*"

PERMISSIONS: Mapping[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "app": frozenset({"invoke"}),
    "editor": frozenset({"read", "invoke", "write"}),
    "approver": frozenset({"read", "approve"}),
    "admin": frozenset({"read", "invoke", "write", "approve", "admin"}),
}
ROLES = frozenset(PERMISSIONS)


def permissions_of(roles: frozenset[str]) -> frozenset[str]:
    """The permissions a set of roles gives."""
    return frozenset().union(*(PERMISSIONS[role] for role in roles if role in PERMISSIONS))


class RoleDirectory:
    """Grants and revokes roles (each change audited); ``roles_of(user, project)`` is what permission checks use."""

    def __init__(
        self, store: Store, *, audit: AuditHook | None = None, on_change: Callable[[], None] | None = None
    ) -> None:
        """``on_change`` is called after each grant or revocation (to drop cached permissions)."""
        self._store = store
        self._audit = audit
        self._on_change = on_change or (lambda: None)

    def grant(self, user: str, role: str, *, by: str, project: str = ALL_PROJECTS) -> None:
        """Give ``user`` ``role`` in ``project`` (every project by default); granting a held role is a no-op."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(sorted(ROLES))}")
        if not user.strip():
            raise ValueError("a user name cannot be empty")
        if not project.strip():
            raise ValueError("a project name cannot be empty")
        with self._store.session() as session:
            if session.get(RoleGrantRow, (user, project, role)) is not None:
                return
            row = RoleGrantRow(user=user, project=project, role=role, granted_by=by, granted_at=datetime.now(UTC))
            session.add(row)
        self._on_change()
        if self._audit is not None:
            self._audit(by, "role.grant", "principal", user, details={"role": role, "project": project})

    def revoke(self, user: str, role: str, *, by: str, project: str = ALL_PROJECTS) -> bool:
        """Take ``role`` in ``project`` from ``user``; False when it was not held."""
        with self._store.session() as session:
            result = session.execute(
                delete(RoleGrantRow).where(
                    RoleGrantRow.user == user, RoleGrantRow.role == role, RoleGrantRow.project == project
                )
            )
            removed = bool(getattr(result, "rowcount", 0))
        self._on_change()
        if removed and self._audit is not None:
            self._audit(by, "role.revoke", "principal", user, details={"role": role, "project": project})
        return removed

    def roles_of(self, user: str, project: str | None = None) -> frozenset[str]:
        """``user``'s roles in ``project`` (its own grants and ``*`` grants); in any project when None."""
        query = select(RoleGrantRow.role).where(RoleGrantRow.user == user)
        if project is not None:
            query = query.where(or_(RoleGrantRow.project == project, RoleGrantRow.project == ALL_PROJECTS))
        with self._store.session() as session:
            return frozenset(session.scalars(query))

    def grants(self, project: str | None = None) -> list[tuple[str, str, str]]:
        """(user, role, project) of every grant, or of those that hold in ``project``."""
        query = select(RoleGrantRow.user, RoleGrantRow.role, RoleGrantRow.project)
        if project is not None:
            query = query.where(or_(RoleGrantRow.project == project, RoleGrantRow.project == ALL_PROJECTS))
        with self._store.session() as session:
            rows = session.execute(query.order_by(RoleGrantRow.user, RoleGrantRow.project, RoleGrantRow.role))
            return [(user, role, where) for user, role, where in rows]
