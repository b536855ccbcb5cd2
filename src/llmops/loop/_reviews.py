"""Review items: what a trigger or runbook wants a person to look at (a regressed prompt, a flagged answer)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from llmops.loop._tables import ReviewItemRow
from llmops.store import Store

__all__ = ["ReviewQueue"]


class ReviewQueue:
    def __init__(self, store: Store) -> None:
        self._store = store

    def open(self, title: str, details: dict[str, Any] | None = None, *, firing_id: str | None = None) -> str:
        if not title.strip():
            raise ValueError("a review item needs a title")
        item_id = "rev_" + secrets.token_hex(8)
        with self._store.session() as session:
            session.add(
                ReviewItemRow(
                    id=item_id,
                    created_at=datetime.now(UTC),
                    title=title[:500],
                    details=details or {},
                    status="open",
                    firing_id=firing_id,
                )
            )
        return item_id

    def resolve(self, item_id: str, *, by: str, resolution: str = "", dismiss: bool = False) -> dict[str, Any]:
        with self._store.session() as session:
            row = session.get(ReviewItemRow, item_id)
            if row is None:
                raise LookupError(f"no review item {item_id!r}")
            if row.status != "open":
                raise ValueError(f"review item {item_id} is already {row.status}")
            row.status = "dismissed" if dismiss else "resolved"
            row.resolved_by, row.resolved_at, row.resolution = by, datetime.now(UTC), resolution
            return _as_dict(row)

    def list(self, *, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
        query = select(ReviewItemRow).order_by(ReviewItemRow.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(ReviewItemRow.status == status)
        with self._store.session() as session:
            return [_as_dict(r) for r in session.scalars(query)]


def _as_dict(row: ReviewItemRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "title": row.title,
        "details": row.details,
        "status": row.status,
        "firing_id": row.firing_id,
        "resolved_by": row.resolved_by,
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "resolution": row.resolution,
    }
