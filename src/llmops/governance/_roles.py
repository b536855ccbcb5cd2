"""Who holds which role. Roles gate actions such as approving a prompt change (the approver role)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from llmops.governance._tables import RoleGrantRow
from llmops.store import Store

__all__ = ["ROLES", "RoleDirectory"]

ROLES = frozenset({"admin", "approver", "editor", "viewer", "app"})


class RoleDirectory:
    """Grants and revokes roles; ``roles_of(user)`` is what other packages are handed to check permissions."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def grant(self, user: str, role: str, *, by: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(sorted(ROLES))}")
        if not user.strip():
            raise ValueError("a user name cannot be empty")
        with self._store.session() as session:
            if session.get(RoleGrantRow, (user, role)) is None:
                session.add(RoleGrantRow(user=user, role=role, granted_by=by, granted_at=datetime.now(UTC)))

    def revoke(self, user: str, role: str) -> None:
        with self._store.session() as session:
            session.execute(delete(RoleGrantRow).where(RoleGrantRow.user == user, RoleGrantRow.role == role))

    def roles_of(self, user: str) -> frozenset[str]:
        with self._store.session() as session:
            return frozenset(session.scalars(select(RoleGrantRow.role).where(RoleGrantRow.user == user)))

    def grants(self) -> list[tuple[str, str]]:
        with self._store.session() as session:
            rows = session.execute(select(RoleGrantRow.user, RoleGrantRow.role).order_by(RoleGrantRow.user))
            return [(user, role) for user, role in rows]
