"""Recursive, token-aware chunking with overlap.

Text is cut at the coarsest separator that makes pieces small enough (blank line > line > sentence > word), then
neighbouring pieces are merged back into chunks of at most ``size`` tokens that share about ``overlap`` tokens with the
previous chunk. Sizes are counted in the embedding model's own tokenizer, so no chunk is silently truncated when it is
embedded. Chunks are character spans of the section text, so each keeps exact offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from llmops.knowledge._embedder import Embedder

__all__ = ["Chunk", "Chunker", "RecursiveTokenChunker"]


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    token_count: int


class Chunker(Protocol):
    def split(self, text: str) -> list[Chunk]:
        """Cut ``text`` into chunks in reading order; offsets index into ``text``."""
        ...


# Each level is a pattern matched at the END of a piece, so separators stay with the text before them.
_SEPARATORS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n\s*\n"),  # paragraph
    re.compile(r"\n"),  # line
    re.compile(r"(?<=[.!?;:])\s+"),  # sentence
    re.compile(r"\s+"),  # word
)


class RecursiveTokenChunker:
    """Chunks of at most ``size`` tokens with ``overlap`` tokens carried over, cut at the coarsest boundary that fits.

    >>> chunker = RecursiveTokenChunker(embedder, size=200, overlap=32)  # doctest: +SKIP
    >>> [c.token_count <= 200 for c in chunker.split(text)]              # doctest: +SKIP
    """

    def __init__(self, tokenizer: Embedder, *, size: int, overlap: int) -> None:
        if not 0 <= overlap < size:
            raise ValueError(f"overlap ({overlap}) must be at least 0 and smaller than size ({size})")
        self._tokenizer = tokenizer
        self.size = size
        self.overlap = overlap

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        pieces = self._pieces(text, 0, len(text), 0)
        return [self._chunk(text, start, end) for start, end in self._merge(pieces)]

    def _count(self, text: str) -> int:
        return self._tokenizer.count_tokens(text)

    def _pieces(self, text: str, start: int, end: int, level: int) -> list[tuple[int, int, int]]:
        """Spans (start, end, tokens), each at most ``size`` tokens, covering text[start:end] in order."""
        tokens = self._count(text[start:end])
        if tokens <= self.size:
            return [(start, end, tokens)]
        if level >= len(_SEPARATORS):
            return self._cut_by_tokens(text, start, end)
        cuts = [m.end() for m in _SEPARATORS[level].finditer(text, start, end) if start < m.end() < end]
        if not cuts:
            return self._pieces(text, start, end, level + 1)
        out: list[tuple[int, int, int]] = []
        for piece_start, piece_end in zip([start, *cuts], [*cuts, end], strict=True):
            out.extend(self._pieces(text, piece_start, piece_end, level + 1))
        return out

    def _cut_by_tokens(self, text: str, start: int, end: int) -> list[tuple[int, int, int]]:
        """Last resort for a run with no whitespace longer than a chunk: cut between tokens."""
        offsets = self._tokenizer.token_offsets(text[start:end])
        out: list[tuple[int, int, int]] = []
        for i in range(0, len(offsets), self.size):
            window = offsets[i : i + self.size]
            piece_start = start if i == 0 else start + window[0][0]
            piece_end = end if i + self.size >= len(offsets) else start + offsets[i + self.size][0]
            out.append((piece_start, piece_end, len(window)))
        return out

    def _merge(self, pieces: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        window: list[tuple[int, int, int]] = []
        total = 0
        for piece in pieces:
            if window and total + piece[2] > self.size:
                spans.append((window[0][0], window[-1][1]))
                # Keep trailing pieces as overlap, but never so many that the next piece no longer fits.
                while window and (total > self.overlap or total + piece[2] > self.size):
                    total -= window.pop(0)[2]
            window.append(piece)
            total += piece[2]
        if window:
            spans.append((window[0][0], window[-1][1]))
        return spans

    def _chunk(self, text: str, start: int, end: int) -> Chunk:
        # Trim whitespace at the edges but keep offsets exact.
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        body = text[start:end]
        return Chunk(text=body, start=start, end=end, token_count=self._count(body))
