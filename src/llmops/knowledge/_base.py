"""The knowledge base: sources, ingestion runs, snapshots, and retrieval over the vector and keyword indexes.

The relational store is the source of truth (documents, chunk versions with their embeddings, snapshots); the indexes
are caught up from it after every run and on start, so the two never disagree for long and a lost index is rebuilt.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from sqlalchemy import func, select

from llmops._spans import mark_error
from llmops.knowledge._chunking_config import ChunkingConfig, build_chunker
from llmops.knowledge._embedder import Embedder
from llmops.knowledge._embedding_cache import CachedEmbedder
from llmops.knowledge._filters import MetadataFilter
from llmops.knowledge._index import KeywordIndex, VectorIndex
from llmops.knowledge._ingest import (
    DocumentProcessor,
    IngestBusyError,
    Ingestor,
    IngestReport,
    LocalProcessor,
    ProgressCallback,
    ingest_lock,
)
from llmops.knowledge._parallel import AutoProcessor, available_cpus, parsers_factory
from llmops.knowledge._parsers import Parser
from llmops.knowledge._pool import EmbedderFactory, LocalPoolProcessor, worker_embedder_factory
from llmops.knowledge._rerank import Reranker
from llmops.knowledge._retrieval import ChunkCatalog, Fusion, RetrievalMode, RetrievedChunk, Retriever
from llmops.knowledge._snapshots import IndexSync, SnapshotError, Snapshots
from llmops.knowledge._sources import SourceRegistry
from llmops.knowledge._store_cache import StoreEmbeddingCache
from llmops.knowledge._tables import LIVE, ChunkingConfigRow, ChunkRow, IndexSnapshotRow
from llmops.store import AuditHook, Store

__all__ = ["EmbeddingModelMismatchError", "KnowledgeBase"]


class EmbeddingModelMismatchError(SnapshotError):
    """The snapshot was embedded with another model than the one this process queries with."""


class KnowledgeBase:
    """Documents, their chunk versions, the snapshots over them, and search.

    >>> kb.ingest("samples/handbook").added                        # doctest: +SKIP
    >>> kb.search("How many PTO days?", k=4, mode="hybrid")         # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        chunking: ChunkingConfig,
        parsers: Iterable[Parser],
        *,
        data_dir: Path,
        vector: VectorIndex,
        keyword: KeywordIndex,
        backend_key: str,
        fetch: Any = None,
        rerankers: Mapping[str, Reranker] | None = None,
        tracer: trace.Tracer | None = None,
        audit: AuditHook | None = None,
        ingest_workers: int | None = None,
        worker_embedder: EmbedderFactory | None = None,
    ) -> None:
        """``tracer`` records each ingestion run as a trace (``ingest``), like a request; ``audit`` is told of each
        new index snapshot and rollback.

        ``ingest_workers`` is how many processes parse, chunk and embed a run's documents: 0 or None, one per CPU
        when a run has enough new documents to pay for starting them, else this process; 1, always this process; N,
        N worker processes. Workers rebuild the embedder with ``worker_embedder`` (by default, the bundled MiniLM
        model is rebuilt; any other embedder keeps ingestion in this process, and N > 1 is refused).
        """
        self._audit = audit
        chunking.check_fits(embedder)
        self._store = store
        self._tracer = tracer or trace.NoOpTracer()
        self.embedder = embedder
        self.chunking = chunking
        self._chunker = build_chunker(chunking, embedder)
        self._parsers = {suffix: parser for parser in parsers for suffix in parser.suffixes}
        #: The embedder behind the store's embedding cache (keyed by model and text hash), for anyone who embeds
        #: the same texts again and again (ingestion re-runs, evaluation datasets).
        self.cached_embedder = CachedEmbedder(embedder, StoreEmbeddingCache(store))
        self._lock_path = data_dir / "ingest.lock"
        self._fetch = fetch or _no_fetch
        self.vector_index = vector
        self.keyword_index = keyword
        self.sources = SourceRegistry(store)
        self.snapshots = Snapshots(store, self._lock_path)
        self._sync = IndexSync(store, vector, keyword, backend_key)
        self._catalog = ChunkCatalog(self._load_chunks)
        self._retriever = Retriever(embedder, vector, keyword, self._catalog)
        self.rerankers: dict[str, Reranker] = dict(rerankers or {})
        self._served: int | None = None
        self._served_checked = 0.0
        self._loaded: int | None = None
        self._last_searched: int | None = None
        self._models: dict[int, str] = {}
        self._refresh_lock = threading.Lock()
        self.worker_embedder = worker_embedder or worker_embedder_factory(embedder)
        self.ingest_workers = self._check_workers(ingest_workers)
        self._save_chunking_config()

    @property
    def supported_suffixes(self) -> list[str]:
        return sorted(self._parsers)

    @property
    def parsers(self) -> dict[str, Parser]:
        return dict(self._parsers)

    @property
    def chunker(self) -> Any:
        return self._chunker

    # ---- ingestion -------------------------------------------------------------------------------------------

    def ingest(
        self,
        location: str | Path | Sequence[str | Path] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        processor: DocumentProcessor | None = None,
        workers: int | None = None,
        metadata: Mapping[str, str | int | float | bool] | None = None,
        actor: str = "system",
    ) -> IngestReport:
        """Register ``location`` (a folder, file, glob or URL; several allowed) and ingest it, or every source.

        A run over given locations adds and updates their documents and removes the ones they no longer hold; a run
        over every source also removes the documents of sources that were unregistered. ``metadata`` goes on every
        chunk of the registered locations (e.g. ``{"project": "support"}``, which retrieval isolates by).

        Documents are parsed, chunked and embedded by ``processor`` when given (a `RayProcessor`, a
        `LocalPoolProcessor` the caller manages); otherwise in this process or in worker processes, as
        ``workers`` says (default: the knowledge base's ``ingest_workers``; see `__init__`).
        """
        # A caller's processor is the caller's to close. The run's own pool (if it starts one) is closed when the run
        # ends, before the index catch-up; after an error or Ctrl-C without waiting for the workers' current batch.
        closing: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if processor is None:  # checked before anything is registered: a refused run changes nothing
            processor = closing = self._default_processor(
                self.ingest_workers if workers is None else self._check_workers(workers)
            )
        if location is None:
            sources = self.sources.list()
            all_sources = True
        else:
            locations = [location] if isinstance(location, str | Path) else list(location)
            extra = {"metadata": dict(metadata)} if metadata is not None else {}
            sources = [self.sources.add(str(item), **extra) for item in locations]
            all_sources = False
        ingestor = Ingestor(
            self._store, self.cached_embedder, self.chunking.config_id, self._parsers, self._fetch, self._lock_path
        )
        with self._tracer.start_as_current_span("ingest", kind=trace.SpanKind.INTERNAL) as span:
            span.set_attributes(
                {
                    "llmops.request_id": "ing_" + secrets.token_hex(8),
                    "llmops.ingest.sources": [s.location for s in sources][:50],
                    "llmops.ingest.all_sources": all_sources,
                    "llmops.ingest.processor": type(processor).__name__,
                    "gen_ai.request.model": self.embedder.name,
                }
            )
            try:
                with closing:
                    report = ingestor.run(sources, processor, all_sources=all_sources, on_progress=on_progress)
                report.processor, report.workers = _used(processor)
                with self._tracer.start_as_current_span("index.catch_up"):
                    self.catch_up()
            except BaseException as exc:
                mark_error(span, exc)
                raise
            span.set_attributes(
                {
                    "llmops.index.snapshot": report.snapshot_id if report.snapshot_id is not None else -1,
                    "llmops.ingest.added": len(report.added),
                    "llmops.ingest.updated": len(report.updated),
                    "llmops.ingest.unchanged": len(report.unchanged),
                    "llmops.ingest.removed": len(report.removed),
                    "llmops.ingest.failed": len(report.failed),
                    "llmops.ingest.chunks_written": report.chunks_written,
                    "llmops.ingest.chunks_embedded": report.chunks_embedded,
                    "llmops.ingest.near_duplicates": len(report.near_duplicates),
                    "llmops.ingest.resumed": report.resumed,
                    "llmops.ingest.processor": report.processor,
                    "llmops.ingest.workers": report.workers,
                    **{f"llmops.ingest.{phase}_s": round(seconds, 4) for phase, seconds in report.timings.items()},
                }
            )
            for source, reason in report.failed[:100]:
                span.add_event("ingest.document_failed", {"source": source, "reason": reason[:500]})
        if self._audit is not None and report.changed and report.snapshot_id is not None:
            counts = {k: len(getattr(report, k)) for k in ("added", "updated", "removed")}
            self._audit(actor, "index.snapshot", "index_snapshot", str(report.snapshot_id),
                        details={**counts, "sources": [s.location for s in sources][:50]})  # fmt: skip
        return report

    def _check_workers(self, workers: int | None) -> int:
        if workers is None:
            return 0
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"ingest workers is 0 (one per CPU when it pays), 1 (in-process) or more, not {workers!r}")
        if workers > 1 and self.worker_embedder is None:
            raise ValueError(
                f"{workers} ingest workers need an embedding model worker processes can rebuild (the bundled MiniLM); "
                f"{self.embedder.name} embeds in this process only: use 0 or 1 workers"
            )
        return workers

    def _default_processor(self, workers: int) -> AutoProcessor:
        """In-process, or a pool of ``workers`` processes (0: one per CPU) started if the run is worth it."""
        local = LocalProcessor(self._parsers, self._chunker)
        count = workers or available_cpus()
        if workers == 1 or count < 2 or self.worker_embedder is None:
            return AutoProcessor(local, None)
        pool = LocalPoolProcessor(
            self.chunking,
            workers=count,
            embedder_factory=self.worker_embedder,
            parsers_factory=parsers_factory(list(self._parsers.values())),
            expected_model=self.embedder.name,
            import_main=False,
            batch_size=1,  # a task per document: the workers stay evenly loaded, which IPC (~ms) costs nothing to
        )
        return AutoProcessor(local, pool, always=workers > 1)

    def catch_up(self, *, wait: bool = True) -> int | None:
        """Bring the indexes up to the newest ready snapshot (after a run, a rollback, or a crash).

        Index writes hold the ingest lock, so two processes never write one embedded index. With ``wait=False`` a
        busy lock means another process is ingesting (and will catch the index up itself): nothing is done.
        """
        with self._refresh_lock:
            try:
                with ingest_lock(self._store, self._lock_path, wait=wait):
                    self._sync.catch_up()
            except IngestBusyError:
                if wait:
                    raise
            served = self._sync.synced()
            if served is not None and served != self._loaded:
                self.vector_index.reload()
                self.keyword_index.reload()
            self._served, self._served_checked, self._loaded = served, time.monotonic(), served
            return served

    def rollback(self, snapshot_id: int, *, actor: str = "") -> int:
        """Make the index's content that of ``snapshot_id`` again, as a new snapshot; returns the new id."""
        info = self.snapshots.rollback(snapshot_id, actor=actor)
        self.catch_up()
        if self._audit is not None:
            self._audit(actor or "unknown", "index.rollback", "index_snapshot", str(info.id),
                        details={"restored": snapshot_id})  # fmt: skip
        return info.id

    # ---- retrieval -------------------------------------------------------------------------------------------

    @property
    def loaded_snapshot(self) -> int | None:
        """The snapshot the last search ran against (or the newest served one before any search)."""
        return self._last_searched if self._last_searched is not None else self.served_snapshot()

    @property
    def snapshot_id(self) -> int | None:
        return self.served_snapshot()

    def served_snapshot(self, *, max_age_s: float = 1.0) -> int | None:
        """The newest snapshot the indexes hold; other processes' runs show up within ``max_age_s``."""
        if self._served is None or time.monotonic() - self._served_checked > max_age_s:
            self.refresh()
        return self._served

    def refresh(self) -> int | None:
        """Pick up snapshots other processes indexed (reloading the indexes), and repair an index left behind.

        An index is behind when a run finished its snapshot but died before catching the index up, or when the index
        lives in memory (or lost its files): the first reader to notice catches it up.
        """
        with self._refresh_lock:
            served = self._sync.synced()
            if served is not None and served != self._loaded:
                self.vector_index.reload()
                self.keyword_index.reload()
                self._loaded = served
            self._served, self._served_checked = served, time.monotonic()
        latest = self.snapshots.latest()
        if latest is not None and (served is None or latest.id > served or not len(self.vector_index)):
            return self.catch_up(wait=False)
        return served

    def search(
        self,
        query: str,
        *,
        k: int,
        min_similarity: float | None = None,
        mode: RetrievalMode = "dense",
        where: Mapping[str, Any] | MetadataFilter | None = None,
        snapshot: int | None = None,
        fusion: Fusion = "rrf",
        mmr_lambda: float | None = None,
        reranker: str | Reranker | None = None,
        candidates: int = 50,
    ) -> list[RetrievedChunk]:
        """The ``k`` best chunks for ``query`` in ``snapshot`` (the newest by default) that match ``where``."""
        snapshot_id = snapshot if snapshot is not None else self.served_snapshot()
        if snapshot_id is None:
            return []
        self._check_model(snapshot_id)
        if snapshot is not None and (self._served is None or snapshot > self._served):
            self.refresh()
            if self._served is None or snapshot > self._served:
                raise SnapshotError(f"index snapshot {snapshot} is not indexed yet (the newest is {self._served})")
        if isinstance(reranker, str):
            if reranker not in self.rerankers:
                raise ValueError(f"no reranker named {reranker!r}; configured: {', '.join(self.rerankers) or 'none'}")
            reranker = self.rerankers[reranker]
        self._last_searched = snapshot_id
        return self._retriever.search(
            query,
            k=k,
            snapshot_id=snapshot_id,
            mode=mode,
            where=MetadataFilter.parse(where),
            min_similarity=min_similarity,
            fusion=fusion,
            mmr_lambda=mmr_lambda,
            reranker=reranker,
            candidates=candidates,
        )

    def _check_model(self, snapshot_id: int) -> None:
        model = self._models.get(snapshot_id)
        if model is None:
            info = self.snapshots.ready(snapshot_id)
            model = self._models[snapshot_id] = info.embedding_model
        if model != self.embedder.name:
            raise EmbeddingModelMismatchError(
                f"index snapshot {snapshot_id} was embedded with {model}; queries here are embedded with "
                f"{self.embedder.name}. Re-ingest to re-embed with {self.embedder.name}, or configure {model}."
            )

    def sample_chunks(self, count: int, *, seed: int = 0, min_tokens: int = 30) -> list[RetrievedChunk]:
        """Up to ``count`` chunks of the newest snapshot, drawn at random (reproducibly, by ``seed``), skipping
        fragments shorter than ``min_tokens`` (what synthetic question generation works from)."""
        with self._store.session() as session:
            ids = sorted(
                session.scalars(
                    select(ChunkRow.id).where(ChunkRow.snapshot_until == LIVE, ChunkRow.token_count >= min_tokens)
                )
            )
        chosen = random.Random(seed).sample(ids, min(count, len(ids)))
        found = self._load_chunks(chosen)
        return [found[i] for i in chosen if i in found]

    def _load_chunks(self, ids: Sequence[str]) -> dict[str, RetrievedChunk]:
        found: dict[str, RetrievedChunk] = {}
        with self._store.session() as session:
            rows = session.execute(
                select(
                    ChunkRow.id,
                    ChunkRow.document_id,
                    ChunkRow.text,
                    ChunkRow.heading,
                    ChunkRow.page,
                    ChunkRow.meta,
                ).where(ChunkRow.id.in_(list(ids)))
            )
            for chunk_id, doc_id, text, heading, page, meta in rows:
                meta = dict(meta or {})
                found[chunk_id] = RetrievedChunk(
                    chunk_id=chunk_id,
                    document_id=doc_id,
                    text=text,
                    title=str(meta.get("title", "")),
                    source=str(meta.get("source", "")),
                    heading=heading,
                    page=page,
                    score=0.0,
                    metadata=meta,
                )
        return found

    # ---- bookkeeping -----------------------------------------------------------------------------------------

    def _save_chunking_config(self) -> None:
        with self._store.session() as session:
            if session.get(ChunkingConfigRow, self.chunking.config_id) is None:
                session.add(
                    ChunkingConfigRow(
                        id=self.chunking.config_id,
                        config=self.chunking.model_dump(mode="json"),
                        created_at=datetime.now(UTC),
                    )
                )

    def stats(self) -> dict[str, int | None]:
        served = self.served_snapshot()
        with self._store.session() as session:
            latest = session.get(IndexSnapshotRow, served) if served is not None else None
            documents = latest.documents if latest is not None else 0
            chunks = latest.chunks if latest is not None else 0
            versions = session.scalar(select(func.count()).select_from(ChunkRow)) or 0
        return {"documents": documents, "chunks": chunks, "chunk_versions": versions, "snapshot_id": served}

    def pending_changes(self, location: str | None = None) -> dict[str, Any]:
        """What the next ingestion run of a registered file source (or of every one) would pick up, without
        reading documents: files not ingested yet, files modified (size or mtime) since they were, and documents
        whose file is gone. URL sources are not polled (fetching is the expensive part); they are counted apart."""
        from llmops.knowledge._sources import SourceError, list_documents
        from llmops.knowledge._tables import DocumentRow

        sources = [self.sources.get(location)] if location is not None else self.sources.list()
        if location is not None and sources[0] is None:
            raise LookupError(f"no registered source {location!r}")
        new: list[str] = []
        modified: list[str] = []
        removed: list[str] = []
        unpolled: list[str] = []
        suffixes = set(self.supported_suffixes)
        for source in sources:
            assert source is not None
            if source.kind == "url":
                unpolled.append(source.location)
                continue
            try:
                listed, _skipped = list_documents(source, suffixes, self._fetch)
            except SourceError:
                continue  # a vanished folder removes nothing (as in ingestion)
            with self._store.session() as session:
                known = {
                    row.source: (row.size_bytes, row.ingested_at)
                    for row in session.scalars(select(DocumentRow).where(DocumentRow.source_id == source.id))
                }
            present = set()
            for document in listed:
                present.add(document.uri)
                state = known.get(document.uri)
                if state is None:
                    new.append(document.uri)
                    continue
                stat = Path(document.uri).stat()
                ingested = state[1] if state[1].tzinfo else state[1].replace(tzinfo=UTC)
                if stat.st_size != state[0] or datetime.fromtimestamp(stat.st_mtime, UTC) > ingested:
                    modified.append(document.uri)
            removed.extend(uri for uri in known if uri not in present)
        return {"new": new, "modified": modified, "removed": removed, "unpolled_urls": unpolled,
                "changes": len(new) + len(modified) + len(removed)}  # fmt: skip

    def close(self) -> None:
        self.vector_index.close()
        self.keyword_index.close()


def _used(processor: DocumentProcessor) -> tuple[str, int]:
    """Which processor did a run's work, and in how many processes (or Ray actors)."""
    if isinstance(processor, AutoProcessor):
        return processor.used, processor.used_workers
    workers = getattr(processor, "worker_count", None) or getattr(processor, "workers", None)
    return type(processor).__name__, workers if isinstance(workers, int) and workers > 0 else 1


def _no_fetch(url: str) -> tuple[Path, bytes]:
    raise ValueError(f"URL sources are not enabled in this knowledge base: {url}")
