"""The knowledge base: ingest a folder into chunks with embeddings, and search them.

Ingestion is per document and transactional: a document's new chunks replace its old ones in one transaction, so a
crash mid-run leaves each document either fully old or fully new. A file whose content hash is unchanged is skipped
before it is parsed, so a re-run over an unchanged folder does no work.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select

from llmops.knowledge._chunker import Chunker
from llmops.knowledge._embedder import Embedder
from llmops.knowledge._index import ExactVectorIndex, VectorIndex
from llmops.knowledge._parsers import ParsedDocument, ParseError, Parser
from llmops.knowledge._tables import ChunkRow, DocumentRow, IndexSnapshotRow
from llmops.store import Store

__all__ = ["IngestReport", "KnowledgeBase", "RetrievedChunk"]

MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass
class IngestReport:
    """What one ingestion run did, by source path."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0
    snapshot_id: int | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    document_id: str
    text: str
    title: str
    source: str
    heading: str | None
    page: int | None
    score: float


ProgressCallback = Callable[[str, str], None]


class KnowledgeBase:
    """Documents, chunks and the vector index over them.

    >>> kb.ingest(Path("samples/handbook")).added  # doctest: +SKIP
    >>> kb.search("How many PTO days?", k=4, min_similarity=0.35)  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        chunker: Chunker,
        parsers: Iterable[Parser],
        index: VectorIndex | None = None,
    ) -> None:
        self._store = store
        self.embedder = embedder
        self._chunker = chunker
        self._parsers = {suffix: parser for parser in parsers for suffix in parser.suffixes}
        self._index: VectorIndex = index or ExactVectorIndex(embedder.dimensions)
        self._chunks: dict[str, RetrievedChunk] = {}  # by id, score 0: what a hit returns besides its score
        self._loaded_snapshot: int | None = -1  # -1: never loaded

    @property
    def supported_suffixes(self) -> list[str]:
        return sorted(self._parsers)

    # ---- ingestion -------------------------------------------------------------------------------------------

    def ingest(self, path: Path, *, on_progress: ProgressCallback | None = None) -> IngestReport:
        """Ingest a file or every supported file under a folder. Broken files are reported in ``failed``."""
        started = time.perf_counter()
        report = IngestReport()
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        for file in _walk(path):
            source = str(file.resolve())
            status = self._ingest_file(file, source, report)
            if on_progress is not None:
                on_progress(source, status)
        if report.changed:
            report.snapshot_id = self._record_snapshot(report)
            self.refresh()
        report.seconds = time.perf_counter() - started
        return report

    def _ingest_file(self, file: Path, source: str, report: IngestReport) -> str:
        parser = self._parsers.get(file.suffix.lower())
        if parser is None:
            report.skipped.append((source, f"unsupported file type {file.suffix or '(none)'}"))
            return "skipped"
        try:
            size = file.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ParseError(f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
            data = file.read_bytes()
        except (OSError, ParseError) as exc:
            report.failed.append((source, str(exc)))
            return "failed"
        content_hash = hashlib.sha256(data).hexdigest()
        document_id = hashlib.sha256(source.encode()).hexdigest()[:32]
        with self._store.session() as session:
            existing = session.get(DocumentRow, document_id)
            if existing is not None and existing.content_hash == content_hash:
                report.unchanged.append(source)
                return "unchanged"
        try:
            parsed = parser.parse(data, file)
        except ParseError as exc:
            report.failed.append((source, str(exc)))
            return "failed"
        except Exception as exc:  # a parser library failing in an unforeseen way must not stop the run
            report.failed.append((source, f"{parser.name} parser failed: {type(exc).__name__}: {exc}"))
            return "failed"
        rows = self._chunk_rows(document_id, content_hash, parsed)
        if not rows:
            report.failed.append((source, "no text to index after cleaning"))
            return "failed"
        self._write_document(document_id, source, content_hash, len(data), parsed, rows)
        report.chunks_written += len(rows)
        (report.updated if existing is not None else report.added).append(source)
        return "updated" if existing is not None else "added"

    def _chunk_rows(self, document_id: str, content_hash: str, parsed: ParsedDocument) -> list[ChunkRow]:
        rows: list[ChunkRow] = []
        for section in parsed.sections:
            for chunk in self._chunker.split(section.text):
                ordinal = len(rows)
                chunk_id = hashlib.sha256(f"{document_id}:{content_hash}:{ordinal}".encode()).hexdigest()[:40]
                rows.append(
                    ChunkRow(
                        id=chunk_id,
                        document_id=document_id,
                        ordinal=ordinal,
                        text=chunk.text,
                        token_count=chunk.token_count,
                        heading=section.heading,
                        page=section.page,
                        start_char=chunk.start,
                        end_char=chunk.end,
                        embedding_model=self.embedder.name,
                        embedding=b"",
                    )
                )
        # The title and heading give a chunk its context ("Expenses > Travel"), which its text alone often lacks.
        vectors = self.embedder.embed([_embedding_text(parsed.title, row) for row in rows])
        for row, vector in zip(rows, vectors, strict=True):
            row.embedding = vector.astype(np.float32).tobytes()
        return rows

    def _write_document(
        self,
        document_id: str,
        source: str,
        content_hash: str,
        size: int,
        parsed: ParsedDocument,
        rows: list[ChunkRow],
    ) -> None:
        with self._store.session() as session:
            session.execute(delete(ChunkRow).where(ChunkRow.document_id == document_id))
            document = session.get(DocumentRow, document_id) or DocumentRow(id=document_id, source=source)
            document.title = parsed.title[:512]
            document.content_hash = content_hash
            document.parser = parsed.parser
            document.size_bytes = size
            document.ingested_at = datetime.now(UTC)
            document.meta = dict(parsed.meta)
            session.add(document)
            session.flush()  # the document row must exist before its chunks reference it
            session.add_all(rows)

    def _record_snapshot(self, report: IngestReport) -> int:
        with self._store.session() as session:
            documents = session.scalar(select(func.count()).select_from(DocumentRow)) or 0
            chunks = session.scalar(select(func.count()).select_from(ChunkRow)) or 0
            snapshot = IndexSnapshotRow(
                created_at=datetime.now(UTC),
                embedding_model=self.embedder.name,
                documents=documents,
                chunks=chunks,
                stats={"added": len(report.added), "updated": len(report.updated), "failed": len(report.failed)},
            )
            session.add(snapshot)
            session.flush()
            return snapshot.id

    # ---- retrieval -------------------------------------------------------------------------------------------

    @property
    def loaded_snapshot(self) -> int | None:
        """The snapshot the in-memory index holds (None before the first ingestion)."""
        return None if self._loaded_snapshot == -1 else self._loaded_snapshot

    @property
    def snapshot_id(self) -> int | None:
        with self._store.session() as session:
            return session.scalar(select(func.max(IndexSnapshotRow.id)))

    def refresh(self) -> int | None:
        """Reload the index if another process (or this one) wrote a newer snapshot. Returns the snapshot id."""
        latest = self.snapshot_id
        if latest == self._loaded_snapshot:
            return latest
        ids: list[str] = []
        vectors: list[bytes] = []
        infos: dict[str, RetrievedChunk] = {}
        with self._store.session() as session:
            query = (
                select(ChunkRow, DocumentRow.title, DocumentRow.source)
                .join(DocumentRow, ChunkRow.document_id == DocumentRow.id)
                .where(ChunkRow.embedding_model == self.embedder.name)
            )
            for chunk, title, source in session.execute(query):
                ids.append(chunk.id)
                vectors.append(chunk.embedding)
                infos[chunk.id] = RetrievedChunk(
                    chunk.id, chunk.document_id, chunk.text, title, source, chunk.heading, chunk.page, score=0.0
                )
        matrix = (
            np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(len(ids), self.embedder.dimensions)
            if ids
            else np.zeros((0, self.embedder.dimensions), dtype=np.float32)
        )
        self._index.replace(ids, matrix)
        self._chunks = infos
        self._loaded_snapshot = latest
        return latest

    def search(self, query: str, *, k: int, min_similarity: float) -> list[RetrievedChunk]:
        """The ``k`` chunks most similar to ``query`` whose cosine similarity is at least ``min_similarity``."""
        self.refresh()
        vector = self.embedder.embed([query])[0]
        chunks = self._chunks
        return [
            replace(chunks[chunk_id], score=score)
            for chunk_id, score in self._index.search(vector, k)
            if score >= min_similarity and chunk_id in chunks
        ]

    def stats(self) -> dict[str, int | None]:
        with self._store.session() as session:
            return {
                "documents": session.scalar(select(func.count()).select_from(DocumentRow)) or 0,
                "chunks": session.scalar(select(func.count()).select_from(ChunkRow)) or 0,
                "snapshot_id": session.scalar(select(func.max(IndexSnapshotRow.id))),
            }


def _embedding_text(title: str, row: ChunkRow) -> str:
    context = " > ".join(part for part in (title, row.heading) if part)
    return f"{context}\n{row.text}" if context else row.text


def _walk(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
