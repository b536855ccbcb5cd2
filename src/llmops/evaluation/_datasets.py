"""Datasets: named, immutable versions of examples, and a review queue for candidates that are not in a version yet.

A version is written once (its items with it) and never changed: a new file, an accepted review, or examples taken
from traces make the next version. Saving content identical to the newest version is a no-op that returns it, so
running the same ``llmops eval dataset push`` twice makes one version. Synthetic and trace-derived examples go to the
review queue first (`DatasetRegistry.add_drafts`); only accepted ones enter a version (`DatasetRegistry.review`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llmops.evaluation._dataset_files import dataset_hash
from llmops.evaluation._tables import DatasetDraftRow, DatasetItemRow, DatasetRow, DatasetVersionRow
from llmops.evaluation._types import Example
from llmops.store import Store

__all__ = ["DatasetNotFoundError", "DatasetRegistry", "DatasetVersion", "Draft"]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class DatasetNotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: int
    content_hash: str
    origin: str
    author: str
    message: str
    created_at: datetime
    examples: tuple[Example, ...]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "items": len(self.examples),
            "content_hash": self.content_hash,
            "origin": self.origin,
            "author": self.author,
            "message": self.message,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Draft:
    """A candidate example in the review queue."""

    id: int
    dataset: str
    origin: str
    example: Example
    status: str
    created_at: datetime
    reviewed_by: str | None
    note: str


def _check_name(name: str) -> str:
    if not name or len(name) > 200 or not set(name) <= _NAME_CHARS or name[0] in "-.":
        raise ValueError(f"dataset name {name!r}: use letters, digits, '-', '_' and '.' (not first), up to 200")
    return name


class DatasetRegistry:
    """Dataset versions and the review queue, in the platform's store.

    >>> version = datasets.save("handbook-golden", load_examples(Path("golden.jsonl")), author="ana")  # doctest: +SKIP
    >>> datasets.get("handbook-golden").version                                                       # doctest: +SKIP
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    # ---- versions ---------------------------------------------------------------------------------------------

    def save(
        self,
        name: str,
        examples: Sequence[Example],
        *,
        author: str,
        message: str = "",
        origin: str = "",
        description: str = "",
    ) -> DatasetVersion:
        """Save ``examples`` as the next version, or return the newest version when its content is identical."""
        _check_name(name)
        if not examples:
            raise ValueError("a dataset version needs at least one example")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            duplicated = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate example ids {duplicated[:5]}")
        digest = dataset_hash(examples)
        for attempt in range(2):
            try:
                with self._store.session() as session:
                    if session.get(DatasetRow, name) is None:
                        session.add(DatasetRow(name=name, description=description, created_at=datetime.now(UTC)))
                        session.flush()
                    latest = self._latest_row(session, name)
                    if latest is not None and latest.content_hash == digest:
                        return self._version(session, latest)
                    row = DatasetVersionRow(
                        dataset=name,
                        version=(latest.version + 1) if latest else 1,
                        content_hash=digest,
                        items=len(examples),
                        origin=origin[:200],
                        author=author,
                        message=message,
                        created_at=datetime.now(UTC),
                    )
                    session.add(row)
                    session.flush()
                    session.add_all(
                        DatasetItemRow(version_id=row.id, position=n, example_id=e.id, data=e.to_dict())
                        for n, e in enumerate(examples)
                    )
                    session.flush()
                    return self._version(session, row)
            except IntegrityError:
                if attempt:  # another writer took the same version number twice in a row: give up loudly
                    raise
        raise AssertionError("unreachable")

    def get(self, name: str, version: int | None = None) -> DatasetVersion:
        """A version (the newest by default) with its examples."""
        with self._store.session() as session:
            if version is None:
                row = self._latest_row(session, name)
            else:
                row = session.scalars(
                    select(DatasetVersionRow).where(
                        DatasetVersionRow.dataset == name, DatasetVersionRow.version == version
                    )
                ).first()
            if row is None:
                what = f"version {version} of dataset {name!r}" if version is not None else f"dataset {name!r}"
                raise DatasetNotFoundError(f"no {what}")
            return self._version(session, row)

    def versions(self, name: str) -> list[dict[str, Any]]:
        with self._store.session() as session:
            rows = session.scalars(
                select(DatasetVersionRow).where(DatasetVersionRow.dataset == name).order_by(DatasetVersionRow.version)
            ).all()
            if not rows:
                raise DatasetNotFoundError(f"no dataset {name!r}")
            return [
                {
                    "version": r.version,
                    "items": r.items,
                    "content_hash": r.content_hash,
                    "origin": r.origin,
                    "author": r.author,
                    "message": r.message,
                    "created_at": r.created_at.isoformat(),
                }
                for r in rows
            ]

    def list_datasets(self) -> list[dict[str, Any]]:
        with self._store.session() as session:
            latest = (
                select(DatasetVersionRow.dataset, func.max(DatasetVersionRow.version).label("version"))
                .group_by(DatasetVersionRow.dataset)
                .subquery()
            )
            rows = session.execute(
                select(DatasetRow.name, DatasetRow.description, latest.c.version).outerjoin(
                    latest, latest.c.dataset == DatasetRow.name
                )
            ).all()
            pending = dict(
                session.execute(
                    select(DatasetDraftRow.dataset, func.count())
                    .where(DatasetDraftRow.status == "pending")
                    .group_by(DatasetDraftRow.dataset)
                ).all()
            )
        names = {r.name for r in rows} | set(pending)
        by_name = {r.name: r for r in rows}
        return [
            {
                "name": n,
                "description": by_name[n].description if n in by_name else "",
                "latest_version": by_name[n].version if n in by_name else None,
                "pending_drafts": int(pending.get(n, 0)),
            }
            for n in sorted(names)
        ]

    def diff(self, name: str, a: int, b: int) -> dict[str, list[str]]:
        """Example ids added, removed and changed from version ``a`` to ``b``."""
        old = {e.id: e for e in self.get(name, a).examples}
        new = {e.id: e for e in self.get(name, b).examples}
        return {
            "added": sorted(new.keys() - old.keys()),
            "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(i for i in old.keys() & new.keys() if old[i] != new[i]),
        }

    # ---- review queue -----------------------------------------------------------------------------------------

    def add_drafts(self, name: str, examples: Iterable[Example], *, origin: str) -> list[int]:
        """Queue candidate examples for review; returns their draft ids."""
        _check_name(name)
        now = datetime.now(UTC)
        with self._store.session() as session:
            rows = [
                DatasetDraftRow(dataset=name, origin=origin[:200], data=e.to_dict(), status="pending", created_at=now)
                for e in examples
            ]
            session.add_all(rows)
            session.flush()
            return [r.id for r in rows]

    def drafts(self, name: str, *, status: str | None = "pending") -> list[Draft]:
        with self._store.session() as session:
            query = select(DatasetDraftRow).where(DatasetDraftRow.dataset == name).order_by(DatasetDraftRow.id)
            if status is not None:
                query = query.where(DatasetDraftRow.status == status)
            return [_draft(r) for r in session.scalars(query).all()]

    def review(
        self,
        name: str,
        *,
        accept: Sequence[int] = (),
        reject: Sequence[int] = (),
        by: str,
        note: str = "",
        edits: dict[int, Example] | None = None,
    ) -> DatasetVersion | None:
        """Accept and reject pending drafts; accepted ones (with the reviewer's ``edits``) are appended to the newest
        version as a new version, which is returned (None when nothing was accepted)."""
        both = set(accept) & set(reject)
        if both:
            raise ValueError(f"drafts {sorted(both)} are both accepted and rejected")
        edits = edits or {}
        now = datetime.now(UTC)
        with self._store.session() as session:
            wanted = [*accept, *reject]
            rows = {
                r.id: r
                for r in session.scalars(select(DatasetDraftRow).where(DatasetDraftRow.id.in_(wanted))).all()
                if r.dataset == name
            }
            missing = [i for i in wanted if i not in rows]
            if missing:
                raise DatasetNotFoundError(f"no drafts {missing} for dataset {name!r}")
            done = [i for i in wanted if rows[i].status != "pending"]
            if done:
                raise ValueError(f"drafts {done} were already reviewed")
            for draft_id in wanted:
                row = rows[draft_id]
                row.status = "accepted" if draft_id in accept else "rejected"
                row.reviewed_by, row.reviewed_at, row.note = by, now, note
                if draft_id in edits:
                    row.data = edits[draft_id].to_dict()
            accepted = [Example.from_dict(rows[i].data) for i in accept]
        if not accepted:
            return None
        try:
            current = list(self.get(name).examples)
        except DatasetNotFoundError:
            current = []
        known = {e.id for e in current}
        added = [e for e in accepted if e.id not in known]
        return self.save(
            name,
            [*current, *added],
            author=by,
            message=note or f"accepted {len(added)} reviewed example(s)",
            origin="review",
        )

    # ---- rows -------------------------------------------------------------------------------------------------

    @staticmethod
    def _latest_row(session: Session, name: str) -> DatasetVersionRow | None:
        return session.scalars(
            select(DatasetVersionRow)
            .where(DatasetVersionRow.dataset == name)
            .order_by(DatasetVersionRow.version.desc())
            .limit(1)
        ).first()

    @staticmethod
    def _version(session: Session, row: DatasetVersionRow) -> DatasetVersion:
        items = session.scalars(
            select(DatasetItemRow).where(DatasetItemRow.version_id == row.id).order_by(DatasetItemRow.position)
        ).all()
        return DatasetVersion(
            name=row.dataset,
            version=row.version,
            content_hash=row.content_hash,
            origin=row.origin,
            author=row.author,
            message=row.message,
            created_at=row.created_at,
            examples=tuple(Example.from_dict(i.data) for i in items),
        )


def _draft(row: DatasetDraftRow) -> Draft:
    return Draft(
        id=row.id,
        dataset=row.dataset,
        origin=row.origin,
        example=Example.from_dict(row.data),
        status=row.status,
        created_at=row.created_at,
        reviewed_by=row.reviewed_by,
        note=row.note,
    )
