"""Index snapshots: list, diff, roll back, and keep the vector and keyword indexes caught up with the store.

A snapshot is immutable: the chunk rows visible in it (``snapshot_from <= S < snapshot_until``) never change. A
rollback to T does not rewrite history; it builds a new snapshot R whose content equals T's (rows of T that are no
longer live are copied into R, live rows that T did not have are closed at R), so every earlier snapshot stays
pinnable and the log of what happened stays whole.

The indexes hold every row version and filter by snapshot on each query. `IndexSync.catch_up` brings them to the
newest ready snapshot: it upserts rows that appeared since the snapshot the index last recorded and patches the
``snapshot_until`` of rows closed since. It is idempotent, so a crash anywhere is repaired by running it again; the
recorded snapshot moves only after the indexes committed, and readers follow that record, not the store's newest.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update

from llmops.knowledge._filters import MetadataValue
from llmops.knowledge._index import KeywordIndex, VectorIndex
from llmops.knowledge._ingest import ingest_lock, manifest
from llmops.knowledge._tables import LIVE, ChunkRow, DocumentRow, IndexSnapshotRow, IndexStateRow, SnapshotChangeRow
from llmops.store import Store

__all__ = ["IndexSync", "SnapshotDiff", "SnapshotError", "SnapshotInfo", "Snapshots", "chunk_metadata"]

_BATCH = 1000


class SnapshotError(ValueError):
    """A snapshot operation cannot be done; the message says why."""


@dataclass(frozen=True)
class SnapshotInfo:
    id: int
    status: str
    kind: str
    created_at: datetime
    embedding_model: str
    chunking_config_id: str | None
    parent_id: int | None
    documents: int
    chunks: int
    stats: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class SnapshotDiff:
    base: int
    target: int
    added: list[str]
    changed: list[str]
    removed: list[str]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _info(row: IndexSnapshotRow) -> SnapshotInfo:
    return SnapshotInfo(
        id=row.id,
        status=row.status,
        kind=row.kind,
        created_at=row.created_at,
        embedding_model=row.embedding_model,
        chunking_config_id=row.chunking_config_id,
        parent_id=row.parent_id,
        documents=row.documents,
        chunks=row.chunks,
        stats=dict(row.stats or {}),
    )


class Snapshots:
    def __init__(self, store: Store, lock_path: Path) -> None:
        self._store = store
        self._lock_path = lock_path

    def list(self, *, limit: int = 50) -> list[SnapshotInfo]:
        with self._store.session() as session:
            rows = session.scalars(select(IndexSnapshotRow).order_by(IndexSnapshotRow.id.desc()).limit(limit))
            return [_info(row) for row in rows]

    def get(self, snapshot_id: int) -> SnapshotInfo:
        with self._store.session() as session:
            row = session.get(IndexSnapshotRow, snapshot_id)
            if row is None:
                raise SnapshotError(f"no index snapshot {snapshot_id}")
            return _info(row)

    def latest(self) -> SnapshotInfo | None:
        with self._store.session() as session:
            row = session.scalar(
                select(IndexSnapshotRow).where(IndexSnapshotRow.status == "ready").order_by(IndexSnapshotRow.id.desc())
            )
            return _info(row) if row is not None else None

    def ready(self, snapshot_id: int) -> SnapshotInfo:
        info = self.get(snapshot_id)
        if info.status != "ready":
            raise SnapshotError(f"index snapshot {snapshot_id} is still being built (an ingestion run is unfinished)")
        return info

    def diff(self, base: int, target: int) -> SnapshotDiff:
        """Documents added, changed and removed going from snapshot ``base`` to ``target`` (by source)."""
        self.ready(base)
        self.ready(target)
        old, new = manifest(self._store, base), manifest(self._store, target)
        sources = self._sources(set(old) | set(new))
        return SnapshotDiff(
            base=base,
            target=target,
            added=sorted(sources[d] for d in new.keys() - old.keys()),
            changed=sorted(sources[d] for d in new.keys() & old.keys() if new[d] != old[d]),
            removed=sorted(sources[d] for d in old.keys() - new.keys()),
        )

    def rollback(self, target: int, *, actor: str = "") -> SnapshotInfo:
        """Make the newest snapshot's content equal snapshot ``target``'s, as a new snapshot. Returns it."""
        with ingest_lock(self._store, self._lock_path):
            goal = self.ready(target)
            head = self.latest()
            assert head is not None  # target is ready, so there is a head
            if head.id == target:
                raise SnapshotError(f"snapshot {target} is already the newest")
            if goal.embedding_model != head.embedding_model:
                raise SnapshotError(
                    f"snapshot {target} was embedded with {goal.embedding_model} and the index now uses "
                    f"{head.embedding_model}; re-ingest instead of rolling back across embedding models"
                )
            old, new = manifest(self._store, head.id), manifest(self._store, target)
            sources = self._sources(set(old) | set(new))
            with self._store.session() as session:
                snapshot = IndexSnapshotRow(
                    created_at=datetime.now(UTC),
                    embedding_model=goal.embedding_model,
                    documents=0,
                    chunks=0,
                    stats={},
                    status="building",
                    kind="rollback",
                    parent_id=head.id,
                    chunking_config_id=goal.chunking_config_id,
                )
                session.add(snapshot)
                session.flush()
                rid = snapshot.id
                leaving = [d for d in old if new.get(d) != old[d]]
                arriving = [d for d in new if old.get(d) != new[d]]
                for start in range(0, len(leaving), _BATCH):
                    session.execute(
                        update(ChunkRow)
                        .where(
                            ChunkRow.document_id.in_(leaving[start : start + _BATCH]),
                            ChunkRow.snapshot_until == LIVE,
                            ChunkRow.snapshot_from < rid,
                        )
                        .values(snapshot_until=rid)
                    )
                for doc_id in arriving:
                    rows = session.scalars(
                        select(ChunkRow).where(
                            ChunkRow.document_id == doc_id,
                            ChunkRow.snapshot_from <= target,
                            ChunkRow.snapshot_until > target,
                        )
                    ).all()
                    session.add_all(_copy(row, rid) for row in rows)
                    session.add(
                        SnapshotChangeRow(
                            snapshot_id=rid,
                            document_id=doc_id,
                            change="changed" if doc_id in old else "added",
                            content_hash=new[doc_id],
                            source=sources[doc_id][:1024],
                        )
                    )
                for doc_id in (d for d in old if d not in new):
                    session.add(
                        SnapshotChangeRow(
                            snapshot_id=rid,
                            document_id=doc_id,
                            change="removed",
                            content_hash=old[doc_id],
                            source=sources[doc_id][:1024],
                        )
                    )
                live_rows = (ChunkRow.snapshot_from <= rid) & (ChunkRow.snapshot_until > rid)
                session.flush()
                snapshot.documents = (
                    session.scalar(select(func.count(func.distinct(ChunkRow.document_id))).where(live_rows)) or 0
                )
                snapshot.chunks = session.scalar(select(func.count()).select_from(ChunkRow).where(live_rows)) or 0
                snapshot.stats = {"rolled_back_to": target, "from": head.id, "actor": actor}
                snapshot.status = "ready"
                snapshot.finished_at = datetime.now(UTC)
            return self.get(rid)

    def _sources(self, doc_ids: set[str]) -> dict[str, str]:
        ids = list(doc_ids)
        found: dict[str, str] = {}
        with self._store.session() as session:
            for start in range(0, len(ids), _BATCH):
                rows = session.execute(
                    select(DocumentRow.id, DocumentRow.source).where(DocumentRow.id.in_(ids[start : start + _BATCH]))
                )
                found.update((doc_id, source) for doc_id, source in rows)
        return {d: found.get(d, d) for d in ids}


def _copy(row: ChunkRow, snapshot_id: int) -> ChunkRow:
    return ChunkRow(
        id=hashlib.sha256(f"{row.id}@{snapshot_id}".encode()).hexdigest()[:40],
        document_id=row.document_id,
        ordinal=row.ordinal,
        text=row.text,
        token_count=row.token_count,
        heading=row.heading,
        page=row.page,
        start_char=row.start_char,
        end_char=row.end_char,
        embedding_model=row.embedding_model,
        embedding=row.embedding,
        content_hash=row.content_hash,
        snapshot_from=snapshot_id,
        snapshot_until=LIVE,
        meta=dict(row.meta or {}),
    )


def chunk_metadata(row: ChunkRow) -> dict[str, MetadataValue]:
    """What the indexes filter on: the chunk's own fields plus its document's (title, source, language, user's)."""
    meta: dict[str, MetadataValue] = {
        k: v for k, v in (row.meta or {}).items() if isinstance(v, str | int | float | bool)
    }
    meta["document_id"] = row.document_id
    meta["snapshot_from"] = row.snapshot_from
    meta["snapshot_until"] = row.snapshot_until
    if row.page is not None:
        meta["page"] = row.page
    if row.heading:
        meta["section"] = row.heading
    return meta


class IndexSync:
    """Keeps one vector index and one keyword index caught up with the store's ready snapshots."""

    def __init__(self, store: Store, vector: VectorIndex, keyword: KeywordIndex, backend_key: str) -> None:
        self._store = store
        self._vector = vector
        self._keyword = keyword
        self.backend_key = backend_key[:1024]

    def synced(self) -> int | None:
        """The newest snapshot both indexes hold (what readers following 'latest' search)."""
        with self._store.session() as session:
            row = session.get(IndexStateRow, self.backend_key)
            return row.snapshot_id if row is not None else None

    def catch_up(self) -> int | None:
        with self._store.session() as session:
            latest = session.scalar(select(func.max(IndexSnapshotRow.id)).where(IndexSnapshotRow.status == "ready"))
        synced = self.synced() or 0
        if synced and not len(self._vector):
            synced = 0  # the record outlived the index (its files were deleted): rebuild it from the store
        if latest is None or synced >= latest:
            return latest
        self._upsert_new(synced, latest)
        self._patch_closed(synced, latest)
        self._vector.commit()
        self._keyword.commit()
        with self._store.session() as session:
            state = session.get(IndexStateRow, self.backend_key) or IndexStateRow(backend=self.backend_key)
            state.snapshot_id = latest
            state.updated_at = datetime.now(UTC)
            session.add(state)
        return latest

    def _upsert_new(self, synced: int, latest: int) -> None:
        query = (
            select(ChunkRow)
            .where(ChunkRow.snapshot_from > synced, ChunkRow.snapshot_from <= latest)
            .order_by(ChunkRow.snapshot_from, ChunkRow.id)
            .execution_options(yield_per=_BATCH)
        )
        with self._store.session() as session:
            batch: list[ChunkRow] = []
            for row in session.scalars(query):
                batch.append(row)
                if len(batch) == _BATCH:
                    self._write(batch)
                    batch = []
            if batch:
                self._write(batch)

    def _write(self, rows: Sequence[ChunkRow]) -> None:
        ids = [row.id for row in rows]
        metadata = [chunk_metadata(row) for row in rows]
        vectors = np.frombuffer(b"".join(row.embedding for row in rows), dtype=np.float32).reshape(
            len(rows), self._vector.dimensions
        )
        self._vector.upsert(ids, vectors, metadata)
        self._keyword.upsert(ids, [_keyword_text(row) for row in rows], metadata)

    def _patch_closed(self, synced: int, latest: int) -> None:
        by_until: dict[int, list[str]] = defaultdict(list)
        with self._store.session() as session:
            rows = session.execute(
                select(ChunkRow.id, ChunkRow.snapshot_until).where(
                    ChunkRow.snapshot_until > synced, ChunkRow.snapshot_until <= latest
                )
            )
            for chunk_id, until in rows:
                by_until[until].append(chunk_id)
        for until, ids in by_until.items():
            patch: Mapping[str, MetadataValue] = {"snapshot_until": until}
            for start in range(0, len(ids), _BATCH):
                self._vector.patch_metadata(ids[start : start + _BATCH], patch)
                self._keyword.patch_metadata(ids[start : start + _BATCH], patch)


def _keyword_text(row: ChunkRow) -> str:
    title = (row.meta or {}).get("title")
    context = " ".join(str(part) for part in (title, row.heading) if part)
    return f"{context}\n{row.text}" if context else row.text
