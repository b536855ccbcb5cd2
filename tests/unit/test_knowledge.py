"""Ingestion and search over each store, with the hash embedder (fast, deterministic)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmops import Platform
from llmops.knowledge import ChunkingConfig, KnowledgeBase, SourceError, default_parsers, open_indexes
from llmops.knowledge._tables import ChunkRow, IndexSnapshotRow
from llmops.testing import HashEmbedder, make_pdf

from ..conftest import SAMPLES


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(SAMPLES, target)
    return target


def _chunk_count(platform: Platform) -> int:
    with platform.store.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(ChunkRow)) or 0


def test_ingest_reads_every_format_with_metadata(platform: Platform, corpus: Path) -> None:
    report = platform.knowledge.ingest(corpus)
    assert sorted(Path(s).name for s in report.added) == sorted(p.name for p in SAMPLES.iterdir())
    assert report.failed == [] and report.snapshot_id == 1
    hits = platform.knowledge.search("work from another country abroad days", k=3, min_similarity=0.0)
    assert hits and hits[0].source.endswith("remote-work.pdf") and hits[0].page == 2
    assert hits[0].title == "Remote Work Policy"
    hits = platform.knowledge.search("paid time off new employees PTO days", k=3, min_similarity=0.0)
    assert hits[0].source.endswith("pto.md")
    assert hits[0].heading == "Time Off Policy > Paid time off (PTO)"


def test_rerun_on_unchanged_files_does_no_work(platform: Platform, corpus: Path) -> None:
    first = platform.knowledge.ingest(corpus)
    chunks = _chunk_count(platform)
    second = platform.knowledge.ingest(corpus)
    assert second.added == second.updated == [] and len(second.unchanged) == len(first.added)
    assert second.chunks_written == 0 and second.snapshot_id == first.snapshot_id  # no change, no new snapshot
    assert _chunk_count(platform) == chunks
    with platform.store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(IndexSnapshotRow)) == 1


def test_a_changed_file_replaces_its_chunks(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    before = _chunk_count(platform)
    (corpus / "code-of-conduct.txt").write_text("Code of Conduct\n\nBe kind to the zebras in the office.\n")
    (corpus / "pto.md").write_text("# Time Off\n\nAsk your manager.\n")
    report = platform.knowledge.ingest(corpus)
    assert sorted(Path(s).name for s in report.updated) == ["code-of-conduct.txt", "pto.md"]
    assert report.snapshot_id == 2
    hits = platform.knowledge.search("zebras kind", k=1, min_similarity=0.0)
    assert "zebras" in hits[0].text
    assert _chunk_count(platform) > before  # old versions stay: snapshot 1 is immutable and can still be searched
    with platform.store.session() as session:
        live = session.scalars(sa.select(ChunkRow.text).where(ChunkRow.snapshot_until > 2)).all()
    assert not any("Respect at work" in t or "15 days of paid time off" in t for t in live)
    old = platform.knowledge.search("Respect at work", k=3, min_similarity=0.0, snapshot=1)
    assert any("Respect at work" in hit.text for hit in old)
    new = platform.knowledge.search("Respect at work", k=10, min_similarity=0.0)
    assert not any("Respect at work" in hit.text for hit in new)


def test_a_broken_file_is_reported_by_name_and_the_rest_ingested(platform: Platform, corpus: Path) -> None:
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    (corpus / "truncated.pdf").write_bytes(make_pdf(["Truncated document"])[:150])
    (corpus / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    (corpus / "image.png").write_bytes(b"\x89PNG\r\n")
    report = platform.knowledge.ingest(corpus)
    failed = {Path(source).name: reason for source, reason in report.failed}
    assert set(failed) == {"corrupt.pdf", "truncated.pdf", "binary.txt"}
    assert "corrupt or unreadable PDF" in failed["corrupt.pdf"]
    assert "not UTF-8" in failed["binary.txt"]
    assert [Path(s).name for s, _ in report.skipped] == ["image.png"]
    assert len(report.added) == len(list(SAMPLES.iterdir()))


def test_a_file_that_breaks_keeps_its_previous_version(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    (corpus / "remote-work.pdf").write_bytes(b"%PDF-1.4 broken now")
    report = platform.knowledge.ingest(corpus)
    assert [Path(s).name for s, _ in report.failed] == ["remote-work.pdf"]
    hits = platform.knowledge.search("work from another country abroad", k=1, min_similarity=0.0)
    assert hits[0].source.endswith("remote-work.pdf")  # the last good version is still searchable


def test_missing_path_is_a_clear_error(platform: Platform, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        platform.knowledge.ingest(tmp_path / "nope")


def test_another_process_sees_new_snapshots(platform: Platform, corpus: Path, tmp_path: Path) -> None:
    # A second knowledge base on the same store stands in for the server while `llmops ingest` runs elsewhere.
    embedder = HashEmbedder()
    vector, keyword, key = open_indexes(
        "memory", data_dir=tmp_path, model=embedder.name, dimensions=embedder.dimensions
    )
    reader = KnowledgeBase(
        platform.store,
        embedder,
        ChunkingConfig(),
        default_parsers(),
        data_dir=tmp_path / "data",
        vector=vector,
        keyword=keyword,
        backend_key=key,
    )
    assert reader.search("paid time off", k=3, min_similarity=0.0) == []
    platform.knowledge.ingest(corpus)
    assert reader.search("paid time off", k=3, min_similarity=0.0)
    assert reader.loaded_snapshot == 1


def test_similarity_threshold_filters_unrelated_chunks(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    assert platform.knowledge.search("zyzzyva quokka", k=5, min_similarity=0.5) == []
