"""Fixed-size, sentence and embedding-similarity chunkers, beside the recursive one in ``_chunker.py``.

All of them count ``size`` and ``overlap`` in the embedding model's own tokens, return chunks in reading order whose
``text`` is exactly ``text[start:end]`` (trimmed of surrounding whitespace) with its true token count, and together
cover every non-whitespace character (see `Chunker`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmops.knowledge._chunker import BreakRule, Chunk, RecursiveTokenChunker, Unit, check_size, pack, token_windows
from llmops.knowledge._embedder import Embedder, Tokenizer
from llmops.knowledge._sentences import paragraph_starts, split_sentences

__all__ = ["FixedTokenChunker", "SemanticChunker", "SentenceChunker"]


class FixedTokenChunker:
    """Windows of ``size`` tokens (the last may be shorter), each starting ``size - overlap`` tokens after the last.

    The text is tokenized once and cut between tokens, wherever that falls (mid-sentence, mid-word): the baseline
    the other chunkers are measured against, and the cheapest. A window cut inside a word can re-tokenize into one
    token more than it held; such a window gives a token back, so a few windows hold ``size - 1``.

    >>> chunker = FixedTokenChunker(embedder, size=128, overlap=16)  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Tokenizer, *, size: int, overlap: int) -> None:
        check_size(size, overlap)
        self._tokenizer = tokenizer
        self.size = size
        self.overlap = overlap

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        windows = token_windows(self._tokenizer, text, 0, len(text), self.size, self.overlap)
        return [Chunk(text[w.start : w.end], w.start, w.end, w.tokens) for w in windows]


class _SentencePacker:
    """Sentences as units for `pack`, with the recursive splitter for a sentence longer than ``size``."""

    def __init__(self, tokenizer: Tokenizer, size: int, overlap: int) -> None:
        self.tokenizer = tokenizer
        self.size = size
        self.overlap = overlap
        self._recursive = RecursiveTokenChunker(tokenizer, size=size, overlap=overlap)

    def units(self, text: str) -> list[Unit]:
        count = self.tokenizer.count_tokens
        return [Unit(s, e, count(text[s:e])) for s, e in split_sentences(text)]

    def pack(self, text: str, units: Sequence[Unit], breaks: BreakRule) -> list[Chunk]:
        return pack(text, units, tokenizer=self.tokenizer, size=self.size, overlap=self.overlap,
                    split_long=self._split_long, breaks=breaks)  # fmt: skip

    def _split_long(self, text: str, unit: Unit) -> list[Chunk]:
        pieces = self._recursive.split(text[unit.start : unit.end])
        return [Chunk(p.text, unit.start + p.start, unit.start + p.end, p.token_count) for p in pieces]


class SentenceChunker:
    """Whole sentences packed into chunks of at most ``size`` tokens, overlapping by whole sentences.

    Paragraphs are kept apart: a chunk ends where a paragraph begins once it holds at least half of ``size`` in
    tokens of its own, so a heading or a one-line paragraph joins the text after it instead of standing alone, and
    a long paragraph never drags the first sentences of the next one along. Cuts at a paragraph carry no overlap;
    cuts inside a paragraph repeat up to ``overlap`` tokens of whole sentences. A sentence longer than ``size`` is cut
    by `RecursiveTokenChunker` (at clauses, then words, then tokens).
    """

    def __init__(self, tokenizer: Tokenizer, *, size: int, overlap: int) -> None:
        check_size(size, overlap)
        self._packer = _SentencePacker(tokenizer, size, overlap)
        self.size = size
        self.overlap = overlap

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        units = self._packer.units(text)
        paragraph = set(paragraph_starts(text))
        half = self.size // 2

        def breaks(j: int, fresh: int) -> bool:
            return units[j].start in paragraph and fresh >= half

        return self._packer.pack(text, units, breaks)


class SemanticChunker:
    """Chunks that end where the topic changes, found by embedding the sentences (Greg Kamradt's method, as in
    LangChain's and LlamaIndex's semantic splitters, with the gap scored from both sides).

    Each sentence is embedded once (in batches of ``batch_size``). The gap after sentence k is scored by the cosine
    distance between the mean embedding of sentences k-buffer..k and that of k+1..k+1+buffer; a cut goes into every
    gap scored above the ``percentile``-th percentile of all gaps in the text. (LangChain and LlamaIndex embed each
    sentence joined with its neighbours and compare consecutive windows; such windows overlap the change from both
    sides, which moved the cut a sentence early on our tests, and embedding joined windows costs longer inputs.)
    Groups longer than ``size`` are packed like `SentenceChunker`, with ``overlap``; cuts at topic changes carry no
    overlap. Costs one embedding per sentence, so it is the slowest strategy by far.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        size: int,
        overlap: int = 0,
        percentile: float = 95.0,
        buffer: int = 1,
        batch_size: int = 64,
    ) -> None:
        check_size(size, overlap)
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile ({percentile}) must be between 0 and 100")
        if buffer < 0:
            raise ValueError(f"buffer ({buffer}) must be at least 0")
        if batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) must be at least 1")
        self._embedder = embedder
        self._packer = _SentencePacker(embedder, size, overlap)
        self.size = size
        self.overlap = overlap
        self.percentile = percentile
        self.buffer = buffer
        self.batch_size = batch_size

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        units = self._packer.units(text)
        cuts = self._topic_changes(text, units)
        return self._packer.pack(text, units, lambda j, _fresh: j in cuts)

    def _topic_changes(self, text: str, units: Sequence[Unit]) -> set[int]:
        """Indexes of the sentences that begin a new topic (never 0)."""
        if len(units) < 3:  # with one gap there is nothing to compare it with
            return set()
        sentences = [text[u.start : u.end] for u in units]
        batches = [sentences[b : b + self.batch_size] for b in range(0, len(sentences), self.batch_size)]
        vectors = np.concatenate([self._embedder.embed(batch) for batch in batches]).astype(np.float64)
        # Sums over sliding blocks from a running total: block(k) = sentences k-buffer..k, for every k at once.
        totals = np.vstack([np.zeros((1, vectors.shape[1])), np.cumsum(vectors, axis=0)])
        n, width = len(sentences), self.buffer + 1
        ends = np.arange(1, n)  # gap k lies between sentence k-1 and sentence k
        left = totals[ends] - totals[np.maximum(ends - width, 0)]
        right = totals[np.minimum(ends + width, n)] - totals[ends]
        norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
        distances = 1.0 - np.einsum("ij,ij->i", left, right) / np.maximum(norms, 1e-12)
        threshold = float(np.percentile(distances, self.percentile))
        return {int(ends[k]) for k in np.flatnonzero(distances > threshold)}
