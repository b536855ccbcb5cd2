"""Ingestion through worker processes (`LocalPoolProcessor`) builds the same index as in-process ingestion."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from llmops import Platform, Settings
from llmops.knowledge._ingest import WorkItem
from llmops.knowledge._pool import LocalPoolProcessor, batches
from llmops.knowledge._tables import ChunkRow
from llmops.testing import HashEmbedder, ScriptedProvider, make_pdf

from ..conftest import LOCAL_MODEL, SAMPLES


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(SAMPLES, target)
    (target / "corrupt.pdf").write_bytes(make_pdf(["This file is cut short."])[:180])
    (target / "long.md").write_text(
        "# Long\n\n" + "\n\n".join(f"## Part {n}\n\n" + f"Words about part {n}. " * 80 for n in range(6)),
        encoding="utf-8",
    )
    return target


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[tuple[Platform, Platform]]:
    built = [
        Platform(
            Settings(data_dir=tmp_path / name), embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("")}
        )
        for name in ("local", "pool")
    ]
    try:
        yield built[0], built[1]
    finally:
        for platform in built:
            platform.close()


def _rows(platform: Platform) -> dict[str, tuple[object, ...]]:
    with platform.store.session() as session:
        return {
            row.id: (row.document_id, row.ordinal, row.text, row.heading, row.page, row.start_char, row.end_char,
                     row.meta, row.embedding)
            for row in session.scalars(sa.select(ChunkRow))
        }  # fmt: skip


def test_worker_processes_build_the_same_index(platforms: tuple[Platform, Platform], corpus: Path) -> None:
    local, pooled = platforms
    expected = local.knowledge.ingest(corpus)
    with LocalPoolProcessor(
        pooled.knowledge.chunking,
        workers=2,
        embedder_factory=HashEmbedder,
        expected_model="hash-embedder",
        batch_size=2,
    ) as processor:
        report = pooled.knowledge.ingest(corpus, processor=processor)
    assert sorted(report.added) == sorted(expected.added) and len(report.added) == 7
    assert report.failed == expected.failed and "corrupt.pdf" in report.failed[0][0]
    assert report.chunks_written == expected.chunks_written == report.chunks_embedded
    ours, theirs = _rows(local), _rows(pooled)
    assert ours == theirs and len(ours) == expected.chunks_written
    hits = [p.knowledge.search("paid time off days", k=3, mode="hybrid") for p in (local, pooled)]
    assert [h.chunk_id for h in hits[0]] == [h.chunk_id for h in hits[1]]
    assert np.allclose([h.score for h in hits[0]], [h.score for h in hits[1]])


def test_workers_with_another_model_are_refused(platforms: tuple[Platform, Platform]) -> None:
    local, _ = platforms
    processor = LocalPoolProcessor(local.knowledge.chunking, workers=1, embedder_factory=HashEmbedder,
                                   expected_model="all-MiniLM-L6-v2-int8")  # fmt: skip
    with pytest.raises(ValueError, match="worker processes embed with hash-embedder"):
        processor.start()
    assert list(processor.process([])) == []


def test_batches_bound_documents_and_bytes() -> None:
    items = [WorkItem(f"d{i}", Path(f"d{i}.txt"), b"x" * size) for i, size in enumerate([5, 5, 5, 20, 1, 1, 1])]
    assert list(batches(items, size=3, max_bytes=12)) == [[0, 1], [2], [3], [4, 5, 6]]
    assert list(batches(items, size=2, max_bytes=100)) == [[0, 1], [2, 3], [4, 5], [6]]
