"""The four chunkers and their configuration: sentence boundaries, exact offsets and token counts in the embedding
model's own tokenizer (MiniLM WordPiece, tiktoken BPE, the test hash tokenizer), full coverage, order, overlap, and
topic cuts with the real embedding model. Properties are checked with hypothesis on adversarial text."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops.knowledge._chunker import Chunk, Chunker, RecursiveTokenChunker
from llmops.knowledge._chunkers import FixedTokenChunker, SemanticChunker, SentenceChunker
from llmops.knowledge._chunking_config import ChunkingConfig, build_chunker
from llmops.knowledge._embedder import Embedder, MiniLMEmbedder, Tokenizer
from llmops.knowledge._openai_embedder import TiktokenTokenizer
from llmops.knowledge._sentences import split_sentences
from llmops.testing import HashEmbedder

from ..conftest import SAMPLES


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def tiktoken_cl100k() -> TiktokenTokenizer:
    return TiktokenTokenizer("cl100k_base")


def _handbook() -> str:
    return "\n\n".join(p.read_text() for p in sorted(SAMPLES.glob("*.md")))


def _sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


# ---- sentence boundaries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It costs $3.5 per day. Pay it.", ["It costs $3.5 per day.", "Pay it."]),
        ("Ask Dr. Smith, e.g. by mail. Mr. Jones agrees.", ["Ask Dr. Smith, e.g. by mail.", "Mr. Jones agrees."]),
        ("Read i.e. this one. Then cf. Fig. 3 and No. 5 below.",
         ["Read i.e. this one.", "Then cf. Fig. 3 and No. 5 below."]),
        ("Wait... and then it came. Wait... Then it left.", ["Wait... and then it came.", "Wait...", "Then it left."]),
        ("Really?! Yes. Yahoo! is a site.", ["Really?!", "Yes.", "Yahoo! is a site."]),
        ('He said "Stop." Then he left. (Yes.) Done', ['He said "Stop."', "Then he left.", "(Yes.)", "Done"]),
        ("J. R. R. Tolkien wrote it. Fine.", ["J. R. R. Tolkien wrote it.", "Fine."]),
        ("See llmops.knowledge for v1.2.3 now. Next", ["See llmops.knowledge for v1.2.3 now.", "Next"]),
        ("Wrapped prose\ncontinues here. Yes.", ["Wrapped prose\ncontinues here.", "Yes."]),
        ("# Title\nIntro line\n- one\n- two\n1. first\n\nNext paragraph",
         ["# Title", "Intro line", "- one", "- two", "1. first", "Next paragraph"]),
        ("No full stop at the end\n\n\n  ", ["No full stop at the end"]),
        ("Etc… Über alles. Ça va.", ["Etc…", "Über alles.", "Ça va."]),
    ],
)  # fmt: skip
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    assert _sentences(text) == expected


# ---- properties of every chunker -------------------------------------------------------------------------------------

_WORDS = ["policy", "the", "Dr.", "e.g.", "3.5", "...", "Über", "naïve", "日本語", "🙂", "x" * 40, "co-op", "don't",
          "Yes!", "(see", "below)", "$100.", "#", "-", "|", "\t", "\u200b", "\x00", "ﬁ", "İ"]  # fmt: skip
_SEPARATORS = [" ", " ", " ", ". ", "\n", "\n\n", "\n- ", "? ", "  \n \n"]

texts = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(_WORDS), st.sampled_from(_SEPARATORS)).map("".join), min_size=0, max_size=300
    ).map("".join),
    st.text(max_size=600),
    st.text(alphabet=st.sampled_from("ab .\n,;"), max_size=600),
)


def _check_chunks(text: str, chunks: list[Chunk], tokenizer: Tokenizer, size: int, name: str = "") -> None:
    if not text.strip():
        assert chunks == []
        return
    covered = np.zeros(len(text), dtype=bool)
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text, f"{name}: offsets do not give back the text"
        assert chunk.text and chunk.text == chunk.text.strip(), f"{name}: chunks are trimmed and never empty"
        assert chunk.token_count == tokenizer.count_tokens(chunk.text) <= size, name
        covered[chunk.start : chunk.end] = True
    missed = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missed, f"{name}: characters in no chunk: {[text[i] for i in missed[:10]]}"
    for before, after in itertools.pairwise(chunks):
        # A window may start where the one before does, when the tokens between are whitespace only.
        assert after.start >= before.start and after.end > before.end, f"{name}: chunks out of reading order"


def _chunkers(tokenizer: Tokenizer, size: int, overlap: int) -> dict[str, Chunker]:
    chunkers: dict[str, Chunker] = {
        "fixed": FixedTokenChunker(tokenizer, size=size, overlap=overlap),
        "sentence": SentenceChunker(tokenizer, size=size, overlap=overlap),
        "recursive": RecursiveTokenChunker(tokenizer, size=size, overlap=overlap),
    }
    if isinstance(tokenizer, HashEmbedder):  # the real model's semantic cuts are tested below, on real text
        chunkers["semantic"] = SemanticChunker(tokenizer, size=size, overlap=overlap, percentile=70)
    return chunkers


sizes = st.integers(min_value=8, max_value=64).flatmap(lambda s: st.tuples(st.just(s), st.integers(0, s - 1)))
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(text=texts, size_overlap=sizes)
def test_properties_with_the_hash_tokenizer(text: str, size_overlap: tuple[int, int]) -> None:
    tokenizer = HashEmbedder()
    for name, chunker in _chunkers(tokenizer, *size_overlap).items():
        _check_chunks(text, chunker.split(text), tokenizer, size_overlap[0], name)


@PROPERTY
@given(text=texts, size_overlap=sizes)
def test_properties_with_minilm_wordpiece(minilm: MiniLMEmbedder, text: str, size_overlap: tuple[int, int]) -> None:
    for name, chunker in _chunkers(minilm, *size_overlap).items():
        _check_chunks(text, chunker.split(text), minilm, size_overlap[0], name)


@PROPERTY
@given(text=texts, size_overlap=sizes)
def test_properties_with_tiktoken_bpe(
    tiktoken_cl100k: TiktokenTokenizer, text: str, size_overlap: tuple[int, int]
) -> None:
    for name, chunker in _chunkers(tiktoken_cl100k, *size_overlap).items():
        _check_chunks(text, chunker.split(text), tiktoken_cl100k, size_overlap[0], name)


@pytest.mark.parametrize("strategy", ["fixed", "sentence", "recursive", "semantic"])
def test_every_strategy_on_the_handbook_with_the_real_model(minilm: MiniLMEmbedder, strategy: str) -> None:
    text = _handbook()
    config = ChunkingConfig(strategy=strategy, size=96, overlap=16)
    chunks = build_chunker(config, minilm).split(text)
    assert len(chunks) >= 8
    _check_chunks(text, chunks, minilm, 96)


# ---- fixed -----------------------------------------------------------------------------------------------------------


def test_fixed_windows_have_exactly_size_tokens_and_overlap_exactly() -> None:
    tokenizer = HashEmbedder()  # one word, one token: window arithmetic is visible
    text = " ".join(f"w{i}" for i in range(100))
    chunks = FixedTokenChunker(tokenizer, size=30, overlap=10).split(text)
    assert [c.token_count for c in chunks] == [30, 30, 30, 30, 20]
    assert [c.text.split()[0] for c in chunks] == ["w0", "w20", "w40", "w60", "w80"]
    for before, after in itertools.pairwise(chunks):
        assert before.text.split()[-10:] == after.text.split()[:10]


def test_fixed_windows_in_wordpiece_tokens(minilm: MiniLMEmbedder) -> None:
    text = _handbook()
    chunks = FixedTokenChunker(minilm, size=64, overlap=0).split(text)
    assert all(c.token_count <= 64 for c in chunks)
    # A window cut inside a word re-tokenizes ("##ing" -> "ing"), so a few windows may hold a token less.
    assert sum(c.token_count for c in chunks[:-1]) >= 63 * (len(chunks) - 1)
    assert sum(c.token_count for c in chunks) == pytest.approx(minilm.count_tokens(text), abs=len(chunks))


# ---- sentence --------------------------------------------------------------------------------------------------------


def test_sentence_chunks_hold_whole_sentences_and_overlap_by_whole_sentences(minilm: MiniLMEmbedder) -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60))
    starts = {s for s, _ in split_sentences(text)}
    ends = {e for _, e in split_sentences(text)}
    chunks = SentenceChunker(minilm, size=64, overlap=20).split(text)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.start in starts and chunk.end in ends
    for before, after in itertools.pairwise(chunks):
        shared = text[after.start : before.end]
        assert after.start < before.end and 0 < minilm.count_tokens(shared) <= 20


def test_sentence_chunks_end_at_paragraphs_but_absorb_short_ones() -> None:
    tokenizer = HashEmbedder()
    heading = "Travel"
    para1 = " ".join(["Book flights through the portal."] * 4)  # 20 tokens
    para2 = " ".join(["Hotels are capped per night."] * 4)  # 20 tokens
    text = f"{heading}\n\n{para1}\n\n{para2}"
    chunks = SentenceChunker(tokenizer, size=40, overlap=5).split(text)
    assert [c.text for c in chunks] == [f"{heading}\n\n{para1}", para2]


def test_a_sentence_longer_than_size_is_cut_by_the_recursive_splitter() -> None:
    tokenizer = HashEmbedder()
    long = "This sentence goes on, " + ", ".join(f"clause {i} adds words" for i in range(30)) + "."
    text = f"Short one. {long} Short two."
    chunks = SentenceChunker(tokenizer, size=20, overlap=0).split(text)
    assert chunks[0].text == "Short one."
    assert chunks[-1].text == "Short two."
    assert all(c.token_count <= 20 for c in chunks) and len(chunks) > 4
    _check_chunks(text, chunks, tokenizer, 20)


# ---- semantic --------------------------------------------------------------------------------------------------------

COOKING = [
    "Preheat the oven to two hundred degrees before you start.",
    "Mix the flour, butter and sugar in a large bowl.",
    "Knead the dough until it is smooth and elastic.",
    "Bake the bread for forty minutes until the crust is golden.",
    "Let the loaf cool on a rack before slicing it.",
]
ASTRONOMY = [
    "Jupiter is the largest planet in the solar system.",
    "Its moons Io and Europa were discovered by Galileo.",
    "The Great Red Spot is a storm larger than the Earth.",
    "Saturn's rings are made mostly of ice particles.",
    "Telescopes reveal the bands of clouds on both gas giants.",
]


def test_semantic_chunks_cut_where_the_topic_changes(minilm: MiniLMEmbedder) -> None:
    text = " ".join(COOKING + ASTRONOMY)
    chunks = SemanticChunker(minilm, size=200, percentile=90).split(text)
    assert [c.text for c in chunks] == [" ".join(COOKING), " ".join(ASTRONOMY)]


def test_semantic_groups_longer_than_size_are_packed_by_sentence(minilm: MiniLMEmbedder) -> None:
    text = " ".join(COOKING + ASTRONOMY)
    chunks = SemanticChunker(minilm, size=40, overlap=0, percentile=90).split(text)
    assert all(c.token_count <= 40 for c in chunks)
    boundary = text.index(ASTRONOMY[0])
    assert any(c.start == boundary for c in chunks), "the topic change is still a cut"
    assert not any(c.start < boundary < c.end for c in chunks)


def test_semantic_chunker_embeds_in_batches() -> None:
    calls: list[int] = []

    class Counting(HashEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            return super().embed(texts)

    text = " ".join(f"Sentence {i} is here." for i in range(50))
    SemanticChunker(Counting(), size=30, batch_size=16).split(text)
    assert calls == [16, 16, 16, 2]


# ---- configuration ---------------------------------------------------------------------------------------------------


def test_config_id_is_stable_and_content_addressed() -> None:
    config = ChunkingConfig(strategy="sentence", size=200, overlap=32)
    # Pinned: an id that changes between releases would make every stored snapshot look re-chunked.
    assert config.canonical_json() == (
        '{"overlap":32,"semantic_buffer":null,"semantic_percentile":null,"size":200,"strategy":"sentence"}'
    )
    assert config.config_id == "b246e0ef4d019846"
    assert ChunkingConfig.from_json(config.canonical_json()) == config
    assert ChunkingConfig.from_json(json.loads(config.canonical_json())).config_id == config.config_id
    assert ChunkingConfig(strategy="sentence", size=200, overlap=31).config_id != config.config_id
    semantic = ChunkingConfig(strategy="semantic", size=200, overlap=0)
    assert (semantic.semantic_percentile, semantic.semantic_buffer) == (95.0, 1)
    assert semantic.config_id == ChunkingConfig(strategy="semantic", size=200, overlap=0, semantic_percentile=95,
                                                semantic_buffer=1).config_id  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": 100, "overlap": 100}, "overlap .100. must be smaller than size .100."),
        ({"size": 0, "overlap": 0}, "size"),
        ({"strategy": "words"}, "strategy"),
        ({"strategy": "fixed", "semantic_percentile": 90}, "only apply to the semantic strategy"),
        ({"strategy": "semantic", "semantic_percentile": 101}, "semantic_percentile"),
        ({"chunk_size": 100}, "chunk_size"),
    ],
)
def test_bad_configs_are_refused_clearly(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkingConfig.model_validate(fields)


def test_build_chunker_refuses_a_size_the_model_would_truncate(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(ValueError, match=r"larger than what all-MiniLM-L6-v2-int8 embeds \(256 tokens\)"):
        build_chunker(ChunkingConfig(size=300, overlap=0), minilm)


@pytest.mark.parametrize(
    ("strategy", "kind"),
    [("fixed", FixedTokenChunker), ("sentence", SentenceChunker), ("recursive", RecursiveTokenChunker),
     ("semantic", SemanticChunker)],
)  # fmt: skip
def test_build_chunker_builds_each_strategy(strategy: str, kind: Callable[..., Chunker]) -> None:
    embedder: Embedder = HashEmbedder()
    chunker = build_chunker(ChunkingConfig(strategy=strategy, size=50, overlap=5), embedder)
    assert isinstance(chunker, kind)  # type: ignore[arg-type]
    assert chunker.split("One sentence here. Another one there.")[0].start == 0
