"""Incremental, resumable ingestion runs.

A run builds one snapshot S. It lists its sources; a document whose bytes hash like its live version is left alone;
a new or changed one is parsed, chunked and embedded, and its chunk rows (visible from S on) are written together with
a change record in ONE transaction; a document its source no longer holds gets a ``removed`` change record. Finally,
in one more transaction, the superseded rows are closed at S and S becomes ``ready``.

Readers only ever see ready snapshots, so a half-built S is invisible. When a run is killed (kill -9, power loss) S
stays ``building``; the next run resumes it: documents with a change record in S are done, the rest are processed.
Nothing is written twice (one transaction per document) and nothing is missed (S is only closed by a run that
listed every source). Embeddings are cached by (model, text hash), so the resumed run re-embeds nothing it had
already embedded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select, text, update

from llmops.knowledge._chunker import Chunker
from llmops.knowledge._dedupe import NearDuplicate, NearDuplicateIndex, signature
from llmops.knowledge._embedding_cache import CachedEmbedder, text_hash
from llmops.knowledge._parsers import ParseError, Parser
from llmops.knowledge._processing import ProcessedDocument, process_document
from llmops.knowledge._sources import SourceDocument, SourceError, document_id, list_documents
from llmops.knowledge._tables import (
    LIVE,
    ChunkRow,
    DocumentRow,
    IndexSnapshotRow,
    SnapshotChangeRow,
    SourceRow,
)
from llmops.store import Store

__all__ = [
    "RESERVED_METADATA",
    "DocumentProcessor",
    "IngestBusyError",
    "IngestReport",
    "Ingestor",
    "LocalProcessor",
    "ProgressCallback",
    "WorkItem",
    "ingest_lock",
    "manifest",
]

ProgressCallback = Callable[[int, int, str, str], None]  # (done, total, document uri, status)
#: Metadata only a source's registration sets (never a document's own front matter, columns or properties):
#: ``project`` is what retrieval isolates projects by.
RESERVED_METADATA = frozenset({"project"})
_BATCH = 500


@dataclass
class IngestReport:
    """What one ingestion run did, by document address."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    chunks_written: int = 0
    chunks_embedded: int = 0  # the rest came from the embedding cache
    snapshot_id: int | None = None
    resumed: bool = False
    full_rebuild: str | None = None  # why every document was re-processed, when it was
    seconds: float = 0.0
    processor: str = ""  # what parsed, chunked and embedded: LocalProcessor, LocalPoolProcessor, RayProcessor...
    workers: int = 1  # processes (or Ray actors) that did it
    timings: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "process": 0.0, "embed": 0.0, "write": 0.0})

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "added": self.added,
            "updated": self.updated,
            "unchanged": len(self.unchanged),
            "removed": self.removed,
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "failed": [{"source": s, "reason": r} for s, r in self.failed],
            "near_duplicates": [d.__dict__ for d in self.near_duplicates],
            "chunks_written": self.chunks_written,
            "chunks_embedded": self.chunks_embedded,
            "resumed": self.resumed,
            "full_rebuild": self.full_rebuild,
            "processor": self.processor,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class WorkItem:
    uri: str
    name: Path
    data: bytes
    #: An earlier version of this document is live, embedded with the same model and cut with the same chunking:
    #: the embedding cache likely holds most of its chunks' vectors, so it is cheap to process in-process.
    likely_cached: bool = False


class DocumentProcessor(Protocol):
    """Parses, chunks and (optionally) embeds documents: in this process, in worker processes, or on a Ray cluster.

    A result that comes back with vectors is written with them (and they go into the embedding cache); one without
    is embedded by the ingestor through the cache.
    """

    embeds: bool  # whether results (may) come back with vectors

    def process(self, items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, ProcessedDocument | ParseError]]:
        """Results in any order, one per item."""
        ...


class LocalProcessor:
    """Processes documents one by one in this process; the ingestor embeds them through its cache."""

    embeds = False

    def __init__(self, parsers: Mapping[str, Parser], chunker: Chunker) -> None:
        self._parsers = parsers
        self._chunker = chunker

    def process(self, items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, ProcessedDocument | ParseError]]:
        for item in items:
            try:
                yield item, process_document(item.name, item.data, self._parsers, self._chunker)
            except ParseError as exc:
                yield item, exc


class Ingestor:
    def __init__(
        self,
        store: Store,
        embedder: CachedEmbedder,
        chunking_config_id: str,
        parsers: Mapping[str, Parser],
        fetch: Callable[[str], tuple[Path, bytes]],
        lock_path: Path,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._config_id = chunking_config_id
        self._parsers = parsers
        self._fetch = fetch
        self._lock_path = lock_path
        self._source_meta: dict[int, dict[str, Any]] = {}  # per source of the run: metadata every chunk gets

    # ---- the run ---------------------------------------------------------------------------------------------

    def run(
        self,
        sources: Sequence[SourceRow],
        processor: DocumentProcessor,
        *,
        all_sources: bool,
        on_progress: ProgressCallback | None = None,
        near_duplicate_threshold: float = 0.8,
    ) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport()
        self._source_meta = {s.id: dict((s.options or {}).get("metadata") or {}) for s in sources}
        with self._lock():
            head = self._head()
            snapshot_id, resumed = self._open_snapshot(head)
            report.snapshot_id, report.resumed = snapshot_id, resumed
            rebuild = self._rebuild_reason(head)
            report.full_rebuild = rebuild
            live = self._manifest(head.id) if head is not None else {}
            done = self._done(snapshot_id)
            duplicates = NearDuplicateIndex(near_duplicate_threshold)
            duplicates.add_many(self._signatures(set(live) | set(done)))

            listed: dict[int, list[SourceDocument]] = {}
            for source in sources:
                try:
                    documents, skipped = list_documents(source, set(self._parsers), self._fetch)
                except (SourceError, OSError) as exc:
                    report.failed.append((source.location, str(exc)))
                    continue
                listed[source.id] = documents
                report.skipped.extend(skipped)
            total = sum(len(documents) for documents in listed.values())
            seen: set[str] = set()
            progress = _Progress(total, on_progress)
            for source_id, documents in listed.items():
                pending: list[tuple[WorkItem, str | None]] = []
                for document in documents:
                    doc_id = document_id(document.uri)
                    seen.add(doc_id)
                    t0 = time.perf_counter()
                    try:
                        name, data = document.read()
                    except (SourceError, OSError, ValueError) as exc:
                        report.failed.append((document.uri, str(exc)))
                        progress.step(document.uri, "failed")
                        continue
                    report.timings["read"] += time.perf_counter() - t0
                    content_hash = hashlib.sha256(data).hexdigest()
                    if doc_id in done:
                        if done[doc_id] == content_hash:
                            report.unchanged.append(document.uri)
                            progress.step(document.uri, "done before the interruption")
                            continue
                        self._forget(snapshot_id, doc_id)  # it changed again since: redo it
                    if rebuild is None and live.get(doc_id) == content_hash:
                        report.unchanged.append(document.uri)
                        self._adopt(doc_id, source_id)
                        progress.step(document.uri, "unchanged")
                        continue
                    earlier = live.get(doc_id)
                    item = WorkItem(document.uri, name, data, likely_cached=earlier is not None and rebuild is None)
                    pending.append((item, earlier))
                self._process(pending, processor, source_id, snapshot_id, duplicates, report, progress)
            self._record_removals(snapshot_id, live, seen, listed, all_sources, rebuild is not None, report)
            report.snapshot_id = self._finish(snapshot_id, head, rebuild is not None, report)
        report.seconds = time.perf_counter() - started
        return report

    def _process(
        self,
        pending: list[tuple[WorkItem, str | None]],
        processor: DocumentProcessor,
        source_id: int,
        snapshot_id: int,
        duplicates: NearDuplicateIndex,
        report: IngestReport,
        progress: _Progress,
    ) -> None:
        previous = {item.uri: old_hash for item, old_hash in pending}
        t0 = time.perf_counter()
        for item, result in processor.process([item for item, _ in pending]):
            report.timings["process"] += time.perf_counter() - t0
            if isinstance(result, ParseError):
                report.failed.append((item.uri, str(result)))
                progress.step(item.uri, "failed")
                t0 = time.perf_counter()
                continue
            t1 = time.perf_counter()
            if result.vectors is not None:  # embedded where it was processed
                vectors = result.vectors
                self._cache_put(result.embedding_texts(), vectors)
                report.chunks_embedded += len(result.chunks)
            else:
                vectors = self._embed(result.embedding_texts(), report)
            report.timings["embed"] += time.perf_counter() - t1
            t2 = time.perf_counter()
            doc_id = document_id(item.uri)
            minhash = signature(result.text)
            duplicate = duplicates.check(doc_id, minhash)
            if duplicate is not None:
                report.near_duplicates.append(
                    NearDuplicate(item.uri, self._source_of(duplicate.duplicate_of), duplicate.similarity)
                )
            duplicates.add(doc_id, minhash)
            change = "added" if previous[item.uri] is None else "changed"
            self._write(snapshot_id, source_id, item, result, vectors, minhash, change)
            report.timings["write"] += time.perf_counter() - t2
            report.chunks_written += len(result.chunks)
            (report.added if change == "added" else report.updated).append(item.uri)
            progress.step(item.uri, change)
            t0 = time.perf_counter()

    # ---- embedding with the cache ----------------------------------------------------------------------------

    def _embed(self, texts: list[str], report: IngestReport) -> npt.NDArray[np.float32]:
        misses = self._embedder.misses
        vectors = self._embedder.embed(texts)
        report.chunks_embedded += self._embedder.misses - misses
        return vectors

    def _cache_put(self, texts: list[str], vectors: npt.NDArray[np.float32]) -> None:
        self._embedder.cache.put_many(
            self._embedder.name, {text_hash(t): v for t, v in zip(texts, vectors, strict=True)}
        )

    # ---- store writes ----------------------------------------------------------------------------------------

    def _write(
        self,
        snapshot_id: int,
        source_id: int,
        item: WorkItem,
        result: ProcessedDocument,
        vectors: npt.NDArray[np.float32],
        minhash: bytes,
        change: str,
    ) -> None:
        doc_id = document_id(item.uri)
        content_hash = hashlib.sha256(item.data).hexdigest()
        language = str(result.meta.get("language", "")) or None
        # The source's metadata (its project, for one) is set by whoever registered it; a document cannot claim it.
        fixed = self._source_meta.get(source_id, {})
        base_meta: dict[str, Any] = {
            k: v
            for k, v in result.meta.items()
            if isinstance(v, str | int | float | bool) and k != "title" and k not in RESERVED_METADATA
        }
        base_meta.update({"title": result.title[:512], "source": item.uri, "parser": result.parser})
        base_meta.update(fixed)
        if language:
            base_meta["language"] = language
        with self._store.session() as session:
            document = session.get(DocumentRow, doc_id) or DocumentRow(id=doc_id, source=item.uri)
            document.title = result.title[:512]
            document.content_hash = content_hash
            document.parser = result.parser
            document.size_bytes = len(item.data)
            document.ingested_at = datetime.now(UTC)
            document.meta = dict(result.meta)
            document.source_id = source_id
            document.minhash = minhash
            session.add(document)
            session.flush()  # the document row must exist before its chunks reference it
            session.add_all(
                ChunkRow(
                    id=hashlib.sha256(
                        f"{doc_id}:{content_hash}:{self._config_id}:{chunk.ordinal}:{snapshot_id}".encode()
                    ).hexdigest()[:40],
                    document_id=doc_id,
                    ordinal=chunk.ordinal,
                    text=chunk.text,
                    token_count=chunk.token_count,
                    heading=chunk.heading[:1024] if chunk.heading else None,
                    page=chunk.page,
                    start_char=chunk.start,
                    end_char=chunk.end,
                    embedding_model=self._embedder.name,
                    embedding=vector.astype(np.float32).tobytes(),
                    content_hash=content_hash,
                    snapshot_from=snapshot_id,
                    snapshot_until=LIVE,
                    meta={
                        **base_meta,
                        **{
                            k: v
                            for k, v in chunk.meta.items()
                            if isinstance(v, str | int | float | bool) and k not in RESERVED_METADATA
                        },
                        **fixed,
                    },
                )
                for chunk, vector in zip(result.chunks, vectors, strict=True)
            )
            session.add(
                SnapshotChangeRow(
                    snapshot_id=snapshot_id,
                    document_id=doc_id,
                    change=change,
                    content_hash=content_hash,
                    source=item.uri[:1024],
                )
            )

    def _adopt(self, doc_id: str, source_id: int) -> None:
        """A document first ingested before sources existed now belongs to the source that lists it."""
        with self._store.session() as session:
            session.execute(
                update(DocumentRow)
                .where(DocumentRow.id == doc_id, DocumentRow.source_id.is_(None))
                .values(source_id=source_id)
            )

    def _record_removals(
        self,
        snapshot_id: int,
        live: dict[str, str],
        seen: set[str],
        listed: dict[int, list[SourceDocument]],
        all_sources: bool,
        rebuild: bool,
        report: IngestReport,
    ) -> None:
        gone = [doc_id for doc_id in live if doc_id not in seen]
        if not gone:
            return
        with self._store.session() as session:
            owners = dict(
                session.execute(select(DocumentRow.id, DocumentRow.source_id).where(DocumentRow.id.in_(gone))).all()
            )
            sources = {source_id for (source_id,) in session.execute(select(SourceRow.id))}
            done = set(
                session.scalars(
                    select(SnapshotChangeRow.document_id).where(SnapshotChangeRow.snapshot_id == snapshot_id)
                )
            )
            for doc_id in gone:
                owner = owners.get(doc_id)
                listed_by_its_source = owner in listed
                unregistered = all_sources and owner is not None and owner not in sources
                if not (listed_by_its_source or unregistered or rebuild) or doc_id in done:
                    continue
                source = session.scalar(select(DocumentRow.source).where(DocumentRow.id == doc_id)) or doc_id
                session.add(
                    SnapshotChangeRow(
                        snapshot_id=snapshot_id,
                        document_id=doc_id,
                        change="removed",
                        content_hash=live[doc_id],
                        source=source[:1024],
                    )
                )
                report.removed.append(source)

    def _finish(
        self, snapshot_id: int, head: IndexSnapshotRow | None, rebuild: bool, report: IngestReport
    ) -> int | None:
        with self._store.session() as session:
            changes = list(
                session.execute(
                    select(SnapshotChangeRow.document_id, SnapshotChangeRow.change).where(
                        SnapshotChangeRow.snapshot_id == snapshot_id
                    )
                )
            )
            if not changes and not rebuild:
                # Nothing changed: no new snapshot; the run's answer is the snapshot it found.
                session.execute(delete(IndexSnapshotRow).where(IndexSnapshotRow.id == snapshot_id))
                return head.id if head is not None else None
            superseded = [doc_id for doc_id, change in changes if change in ("changed", "removed")]
            close = update(ChunkRow).where(ChunkRow.snapshot_from < snapshot_id, ChunkRow.snapshot_until == LIVE)
            if rebuild:
                session.execute(close.values(snapshot_until=snapshot_id))
            else:
                for start in range(0, len(superseded), _BATCH):
                    batch = superseded[start : start + _BATCH]
                    session.execute(close.where(ChunkRow.document_id.in_(batch)).values(snapshot_until=snapshot_id))
            live_rows = (ChunkRow.snapshot_from <= snapshot_id) & (ChunkRow.snapshot_until > snapshot_id)
            snapshot = session.get(IndexSnapshotRow, snapshot_id)
            assert snapshot is not None
            snapshot.documents = (
                session.scalar(select(func.count(func.distinct(ChunkRow.document_id))).where(live_rows)) or 0
            )
            snapshot.chunks = session.scalar(select(func.count()).select_from(ChunkRow).where(live_rows)) or 0
            snapshot.stats = {
                "added": sum(1 for _, c in changes if c == "added"),
                "changed": sum(1 for _, c in changes if c == "changed"),
                "removed": sum(1 for _, c in changes if c == "removed"),
                "failed": len(report.failed),
                "near_duplicates": len(report.near_duplicates),
                "full_rebuild": report.full_rebuild,
            }
            snapshot.status = "ready"
            snapshot.finished_at = datetime.now(UTC)
            return snapshot_id

    # ---- snapshot bookkeeping --------------------------------------------------------------------------------

    def _head(self) -> IndexSnapshotRow | None:
        with self._store.session() as session:
            head = session.scalar(
                select(IndexSnapshotRow).where(IndexSnapshotRow.status == "ready").order_by(IndexSnapshotRow.id.desc())
            )
            if head is not None:
                session.expunge(head)
            return head

    def _rebuild_reason(self, head: IndexSnapshotRow | None) -> str | None:
        if head is None or head.chunks == 0:
            return None
        if head.embedding_model != self._embedder.name:
            return f"the embedding model changed from {head.embedding_model} to {self._embedder.name}"
        if head.chunking_config_id not in (None, self._config_id):
            return f"the chunking configuration changed from {head.chunking_config_id} to {self._config_id}"
        return None

    def _open_snapshot(self, head: IndexSnapshotRow | None) -> tuple[int, bool]:
        """Resume the interrupted run's snapshot when it was built the same way, else start a new one."""
        with self._store.session() as session:
            building = session.scalar(
                select(IndexSnapshotRow)
                .where(IndexSnapshotRow.status == "building")
                .order_by(IndexSnapshotRow.id.desc())
            )
            if building is not None:
                if building.embedding_model == self._embedder.name and building.chunking_config_id == self._config_id:
                    return building.id, True
                # Built with another model or chunking: its rows are useless; drop them (no reader ever saw them).
                session.execute(delete(ChunkRow).where(ChunkRow.snapshot_from == building.id))
                session.execute(delete(SnapshotChangeRow).where(SnapshotChangeRow.snapshot_id == building.id))
                session.delete(building)
                session.flush()
            snapshot = IndexSnapshotRow(
                created_at=datetime.now(UTC),
                embedding_model=self._embedder.name,
                documents=0,
                chunks=0,
                stats={},
                status="building",
                kind="ingest",
                parent_id=head.id if head is not None else None,
                chunking_config_id=self._config_id,
            )
            session.add(snapshot)
            session.flush()
            return snapshot.id, False

    def _manifest(self, snapshot_id: int) -> dict[str, str]:
        return manifest(self._store, snapshot_id)

    def _done(self, snapshot_id: int) -> dict[str, str]:
        """Documents the (resumed) snapshot already holds a new version of, with that version's hash."""
        with self._store.session() as session:
            rows = session.execute(
                select(SnapshotChangeRow.document_id, SnapshotChangeRow.content_hash).where(
                    SnapshotChangeRow.snapshot_id == snapshot_id, SnapshotChangeRow.change != "removed"
                )
            )
            return {doc_id: content_hash for doc_id, content_hash in rows}

    def _forget(self, snapshot_id: int, doc_id: str) -> None:
        with self._store.session() as session:
            session.execute(
                delete(ChunkRow).where(ChunkRow.snapshot_from == snapshot_id, ChunkRow.document_id == doc_id)
            )
            session.execute(
                delete(SnapshotChangeRow).where(
                    SnapshotChangeRow.snapshot_id == snapshot_id, SnapshotChangeRow.document_id == doc_id
                )
            )

    def _signatures(self, doc_ids: set[str]) -> Iterator[tuple[str, bytes]]:
        ids = list(doc_ids)
        with self._store.session() as session:
            for start in range(0, len(ids), _BATCH):
                rows = session.execute(
                    select(DocumentRow.id, DocumentRow.minhash).where(
                        DocumentRow.id.in_(ids[start : start + _BATCH]), DocumentRow.minhash.is_not(None)
                    )
                )
                yield from ((doc_id, data) for doc_id, data in rows if data)

    def _source_of(self, doc_id: str) -> str:
        with self._store.session() as session:
            return session.scalar(select(DocumentRow.source).where(DocumentRow.id == doc_id)) or doc_id

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return ingest_lock(self._store, self._lock_path)


# One lock per schema: deployments (and test runs) that share a database in separate schemas do not block each other.
_LOCK_KEY = "hashtext(current_schema() || '/llmops-ingest')"


class IngestBusyError(RuntimeError):
    """Another ingestion run (or rollback, or index catch-up) holds the ingest lock."""


@contextlib.contextmanager
def ingest_lock(store: Store, lock_path: Path, *, wait: bool = False) -> Iterator[None]:
    """One writer at a time: a file lock on this machine, plus an advisory lock when the store is PostgreSQL.

    A second ingestion run fails at once (``wait=False``) with `IngestBusyError`; index catch-ups wait their turn.
    The locks die with their process, so a killed run never leaves a stale lock behind.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise IngestBusyError("another ingestion run is in progress (it holds the ingest lock)") from None
        with store.engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                lock = f"SELECT {'pg_advisory_lock' if wait else 'pg_try_advisory_lock'}({_LOCK_KEY})"
                got = connection.execute(text(lock)).scalar()
                if not wait and not got:
                    raise IngestBusyError("another ingestion run is in progress on this database")
            try:
                yield
            finally:
                if postgres:
                    connection.execute(text(f"SELECT pg_advisory_unlock({_LOCK_KEY})"))


def manifest(store: Store, snapshot_id: int) -> dict[str, str]:
    """document id -> content hash of every document live in ``snapshot_id``."""
    with store.session() as session:
        rows = session.execute(
            select(ChunkRow.document_id, ChunkRow.content_hash)
            .where(ChunkRow.snapshot_from <= snapshot_id, ChunkRow.snapshot_until > snapshot_id)
            .group_by(ChunkRow.document_id, ChunkRow.content_hash)
        )
        return {doc_id: content_hash for doc_id, content_hash in rows}


class _Progress:
    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback

    def step(self, uri: str, status: str) -> None:
        self.done += 1
        if self._callback is not None:
            self._callback(self.done, self.total, uri, status)
