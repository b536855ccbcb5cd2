"""Incremental ingestion over sources, immutable snapshots (pin, diff, rollback) and retrieval options, per store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmops import Platform, Settings
from llmops.knowledge import EmbeddingModelMismatchError, FilterError, SnapshotError
from llmops.knowledge._tables import LIVE, ChunkRow, EmbeddingCacheRow
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL, SAMPLES


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(SAMPLES, target)
    return target


def _names(items: list[str]) -> list[str]:
    return sorted(Path(item).name for item in items)


def _live_chunks(platform: Platform) -> list[tuple[str, int, str]]:
    with platform.store.session() as session:
        rows = session.execute(
            sa.select(ChunkRow.document_id, ChunkRow.ordinal, ChunkRow.text).where(ChunkRow.snapshot_until == LIVE)
        ).all()
    return sorted((d, o, t) for d, o, t in rows)


def test_a_run_adds_changes_and_removes_and_does_nothing_else(platform: Platform, corpus: Path) -> None:
    first = platform.knowledge.ingest(corpus)
    assert len(first.added) == 6 and first.snapshot_id == 1
    (corpus / "pto.md").write_text("# Time Off\n\nEveryone gets 40 days of vacation.\n")
    (corpus / "security.html").unlink()
    (corpus / "travel.md").write_text("# Travel\n\nBook trains for trips under four hours.\n")
    second = platform.knowledge.ingest(corpus)
    assert _names(second.added) == ["travel.md"]
    assert _names(second.updated) == ["pto.md"]
    assert _names(second.removed) == ["security.html"]
    assert len(second.unchanged) == 4 and second.snapshot_id == 2
    # Only the changed document was embedded again (its chunks; the cache knows the rest).
    assert second.chunks_embedded <= second.chunks_written
    hits = platform.knowledge.search("vacation days", k=3, min_similarity=0.0, mode="keyword")
    assert any("40 days" in h.text for h in hits)
    assert not platform.knowledge.search("password manager phishing", k=5, mode="keyword", where={"parser": "html"})
    third = platform.knowledge.ingest(corpus)
    assert third.snapshot_id == 2 and not third.changed and third.chunks_written == 0


def test_snapshots_are_immutable_pinnable_and_diffable(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    (corpus / "pto.md").write_text("# Time Off\n\nEveryone gets 40 days of vacation.\n")
    (corpus / "security.html").unlink()
    (corpus / "travel.md").write_text("# Travel\n\nBook trains for trips under four hours.\n")
    platform.knowledge.ingest(corpus)
    old = platform.knowledge.search("PTO days new employees", k=3, min_similarity=0.0, snapshot=1, mode="keyword")
    assert any("15 days of paid time off" in h.text for h in old)
    new = platform.knowledge.search("PTO days new employees", k=3, min_similarity=0.0, mode="keyword")
    assert not any("15 days of paid time off" in h.text for h in new)
    assert platform.knowledge.search("phishing", k=3, snapshot=1, mode="keyword")
    assert not platform.knowledge.search("phishing", k=3, mode="keyword")

    diff = platform.knowledge.snapshots.diff(1, 2)
    assert _names(diff.added) == ["travel.md"]
    assert _names(diff.changed) == ["pto.md"]
    assert _names(diff.removed) == ["security.html"]
    with pytest.raises(SnapshotError, match="no index snapshot 9"):
        platform.knowledge.snapshots.diff(1, 9)


def test_rollback_returns_to_an_earlier_snapshot_as_a_new_one(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    before = _live_chunks(platform)
    (corpus / "pto.md").write_text("# Time Off\n\nEveryone gets 40 days of vacation.\n")
    (corpus / "security.html").unlink()
    platform.knowledge.ingest(corpus)
    rolled = platform.knowledge.rollback(1, actor="ops")
    assert rolled == 3
    assert _live_chunks(platform) == before  # the same texts, documents and order as snapshot 1
    info = platform.knowledge.snapshots.get(3)
    assert (
        info.kind == "rollback"
        and info.stats["rolled_back_to"] == 1
        and info.chunks == platform.knowledge.snapshots.get(1).chunks
    )
    assert platform.knowledge.search("phishing", k=3, mode="keyword")  # security.html is back
    again = platform.knowledge.snapshots.diff(1, 3)
    assert again.added == again.changed == again.removed == []
    assert platform.knowledge.search("40 days vacation", k=3, snapshot=2, mode="keyword")  # 2 is still pinnable
    with pytest.raises(SnapshotError, match="already the newest"):
        platform.knowledge.rollback(3)
    # The next run works from the rolled-back content: pto.md differs from it again, so it is updated.
    report = platform.knowledge.ingest(corpus)
    assert _names(report.updated) == ["pto.md"] and _names(report.removed) == ["security.html"]


def test_filters_are_applied_inside_the_search(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    for mode in ("dense", "keyword", "hybrid"):
        hits = platform.knowledge.search("policy", k=20, mode=mode, where={"parser": {"$in": ["pdf"]}})  # type: ignore[arg-type]
        assert hits and all(h.source.endswith(".pdf") for h in hits)
        pages = platform.knowledge.search("policy work", k=20, mode=mode, where={"page": {"$gte": 2}})  # type: ignore[arg-type]
        assert pages and all(h.page is not None and h.page >= 2 for h in pages)
    with pytest.raises(FilterError, match="unknown operator"):
        platform.knowledge.search("x", k=3, where={"page": {"$regex": ".*"}})


def test_hybrid_finds_what_either_retriever_finds_and_respects_the_floor(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    hybrid = platform.knowledge.search("PTO carry over", k=4, mode="hybrid", min_similarity=0.0)
    assert hybrid and all(h.similarity is not None for h in hybrid)
    assert platform.knowledge.search("zyzzyva quokka", k=4, mode="hybrid", min_similarity=0.5) == []
    diverse = platform.knowledge.search("PTO", k=4, mode="hybrid", mmr_lambda=0.3)
    assert len({h.chunk_id for h in diverse}) == len(diverse)


def test_querying_with_another_embedding_model_is_refused_and_reingest_re_embeds(
    tmp_path: Path, corpus: Path, scripted: ScriptedProvider
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: scripted})
    first.knowledge.ingest(corpus)
    first.close()

    class OtherEmbedder(HashEmbedder):
        name = "other-embedder"

    second = Platform(settings, embedder=OtherEmbedder(), providers={LOCAL_MODEL: scripted})
    try:
        with pytest.raises(EmbeddingModelMismatchError, match="embedded with hash-embedder"):
            second.knowledge.search("PTO", k=3, snapshot=1)
        report = second.knowledge.ingest(corpus)
        assert report.full_rebuild is not None and "embedding model changed" in report.full_rebuild
        assert len(report.updated) == 6
        hits = second.knowledge.search("PTO days", k=3, mode="dense", min_similarity=0.0)
        assert hits
        with second.store.session() as session:
            models = set(session.scalars(sa.select(ChunkRow.embedding_model).where(ChunkRow.snapshot_until == LIVE)))
            cached = session.scalar(sa.select(sa.func.count()).select_from(EmbeddingCacheRow))
        assert models == {"other-embedder"} and cached
    finally:
        second.close()


def test_changing_the_chunking_configuration_rechunks_everything(
    tmp_path: Path, corpus: Path, scripted: ScriptedProvider
) -> None:
    first = Platform(Settings(data_dir=tmp_path / "data"), embedder=HashEmbedder(), providers={LOCAL_MODEL: scripted})
    first.knowledge.ingest(corpus)
    first.close()
    settings = Settings.model_validate(
        {"data_dir": tmp_path / "data", "knowledge": {"chunking": {"strategy": "sentence", "size": 60, "overlap": 0}}}
    )
    second = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: scripted})
    try:
        report = second.knowledge.ingest(corpus)
        assert report.full_rebuild is not None and "chunking configuration changed" in report.full_rebuild
        info = second.knowledge.snapshots.get(report.snapshot_id or 0)
        assert info.chunking_config_id == second.knowledge.chunking.config_id
        assert all(tokens <= 60 for tokens in _token_counts(second))
    finally:
        second.close()


def _token_counts(platform: Platform) -> list[int]:
    with platform.store.session() as session:
        return list(session.scalars(sa.select(ChunkRow.token_count).where(ChunkRow.snapshot_until == LIVE)))


def test_near_duplicates_are_reported(platform: Platform, corpus: Path) -> None:
    text = (corpus / "pto.md").read_text()
    (corpus / "pto-copy.md").write_text(text.replace("15 days", "fifteen days") + "\n\nFooter: printed copy.\n")
    report = platform.knowledge.ingest(corpus)
    pairs = {(Path(d.source).name, Path(d.duplicate_of).name) for d in report.near_duplicates}
    assert pairs in ({("pto-copy.md", "pto.md")}, {("pto.md", "pto-copy.md")})


def test_sources_are_registered_and_an_unregistered_source_leaves_the_index(
    platform: Platform, corpus: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "faq.md").write_text("# FAQ\n\nThe office opens at eight.\n")
    platform.knowledge.ingest([corpus, other])
    assert {s.kind for s in platform.knowledge.sources.list()} == {"folder"}
    assert platform.knowledge.search("office opens eight", k=1, mode="keyword")[0].source.endswith("faq.md")
    # A run over one source never removes another source's documents.
    report = platform.knowledge.ingest(corpus)
    assert report.removed == []
    platform.knowledge.sources.remove(str(other))
    report = platform.knowledge.ingest()  # every registered source
    assert _names(report.removed) == ["faq.md"]
    hits = platform.knowledge.search("office opens eight", k=20, mode="keyword")
    assert not any(h.source.endswith("faq.md") for h in hits)


def test_a_vanished_source_folder_removes_nothing(platform: Platform, corpus: Path) -> None:
    platform.knowledge.ingest(corpus)
    shutil.rmtree(corpus)
    report = platform.knowledge.ingest()
    assert report.removed == [] and report.failed and "gone" in report.failed[0][1]
    assert platform.knowledge.search("PTO", k=1, mode="keyword")


def test_a_private_url_source_is_refused(platform: Platform) -> None:
    report = platform.knowledge.ingest("http://169.254.169.254/latest/meta-data/")
    assert report.failed and "169.254.169.254" in report.failed[0][1]
    assert report.added == []


def test_a_url_source_is_fetched_parsed_by_content_type_and_updated(tmp_path: Path, scripted: ScriptedProvider) -> None:
    import http.server
    import threading

    html = "<html><head><title>Wiki</title></head><body><main><p>The canteen opens at noon.</p></main></body></html>"
    page = {"body": html.encode()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page["body"])))
            self.end_headers()
            self.wfile.write(page["body"])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/wiki/canteen"
    settings = Settings.model_validate({"data_dir": tmp_path / "data", "knowledge": {"url_allow_private": True}})
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: scripted})
    try:
        report = platform.knowledge.ingest(url)
        assert report.added == [url], report.failed
        hits = platform.knowledge.search("canteen noon", k=1, mode="keyword")
        assert hits[0].source == url and hits[0].title == "Wiki"
        page["body"] = page["body"].replace(b"noon", b"eleven")
        assert platform.knowledge.ingest(url).updated == [url]
        assert "eleven" in platform.knowledge.search("canteen", k=1, mode="keyword")[0].text
    finally:
        platform.close()
        server.shutdown()
