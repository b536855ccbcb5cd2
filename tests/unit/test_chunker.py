from __future__ import annotations

import itertools

import pytest

from llmops.knowledge import MiniLMEmbedder, RecursiveTokenChunker
from llmops.testing import HashEmbedder

from ..conftest import SAMPLES

TEXT = "\n\n".join(
    f"Paragraph {p}. " + " ".join(f"Sentence {p}.{s} has several words in it." for s in range(6)) for p in range(12)
)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_chunks_respect_the_size_and_keep_exact_offsets() -> None:
    chunker = RecursiveTokenChunker(HashEmbedder(), size=40, overlap=8)
    chunks = chunker.split(TEXT)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.token_count <= 40
        assert TEXT[chunk.start : chunk.end] == chunk.text
    assert chunks[0].start == 0 and chunks[-1].end == len(TEXT)


def test_consecutive_chunks_overlap_and_cover_everything() -> None:
    chunks = RecursiveTokenChunker(HashEmbedder(), size=40, overlap=8).split(TEXT)
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "no overlap between consecutive chunks"
        assert after.start > before.start
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(TEXT) if not ch.isspace())


def test_zero_overlap_means_disjoint_chunks() -> None:
    chunks = RecursiveTokenChunker(HashEmbedder(), size=30, overlap=0).split(TEXT)
    for before, after in itertools.pairwise(chunks):
        assert after.start >= before.end


def test_paragraph_boundaries_are_preferred() -> None:
    text = "Alpha beta gamma.\n\nDelta epsilon zeta.\n\nEta theta iota."
    chunks = RecursiveTokenChunker(HashEmbedder(), size=6, overlap=0).split(text)
    assert [c.text for c in chunks] == ["Alpha beta gamma.\n\nDelta epsilon zeta.", "Eta theta iota."]


def test_a_run_without_spaces_is_cut_between_tokens(minilm: MiniLMEmbedder) -> None:
    text = ",".join(["word"] * 800)  # no whitespace, but 1,599 tokens
    chunks = RecursiveTokenChunker(minilm, size=64, overlap=0).split(text)
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == text
    assert all(c.token_count <= 64 for c in chunks)


def test_sizes_are_counted_in_the_embedding_model_tokens(minilm: MiniLMEmbedder) -> None:
    text = (SAMPLES / "expenses.md").read_text()
    chunks = RecursiveTokenChunker(minilm, size=100, overlap=16).split(text)
    assert all(minilm.count_tokens(c.text) == c.token_count <= 100 for c in chunks)


def test_empty_text_has_no_chunks() -> None:
    assert RecursiveTokenChunker(HashEmbedder(), size=10, overlap=2).split(" \n ") == []


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        RecursiveTokenChunker(HashEmbedder(), size=10, overlap=10)
