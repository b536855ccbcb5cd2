"""Recursive, token-aware chunking with overlap, and the packing and token-window cutting every chunker shares.

Text is cut at the coarsest separator that makes pieces small enough (blank line > line > sentence > word), then
neighbouring pieces are merged back into chunks of at most ``size`` tokens that share about ``overlap`` tokens with the
previous chunk. Sizes are counted in the embedding model's own tokenizer, so no chunk is silently truncated when it is
embedded. Chunks are character spans of the section text, so each keeps exact offsets.

Token counts of parts do not add up exactly to the count of their concatenation (BPE merges a space with the next
word; WordPiece re-splits a word cut in the middle), so every chunk is re-counted as a whole before it is emitted and
shrunk if it would exceed ``size``: ``token_count`` is always the true count of ``text``, never an estimate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from llmops.knowledge._embedder import Tokenizer

__all__ = ["Chunk", "Chunker", "RecursiveTokenChunker"]


@dataclass(frozen=True)
class Chunk:
    """``text`` is exactly ``section_text[start:end]``, trimmed of surrounding whitespace; ``token_count`` is the
    embedding model's count of ``text``."""

    text: str
    start: int
    end: int
    token_count: int


class Chunker(Protocol):
    def split(self, text: str) -> list[Chunk]:
        """Cut ``text`` into chunks in reading order; offsets index into ``text``.

        Every non-whitespace character of ``text`` lies in some chunk; chunks start and end further on than the one
        before; whitespace-only text gives no chunks.
        """
        ...


def check_size(size: int, overlap: int) -> None:
    if size < 1:
        raise ValueError(f"size ({size}) must be at least 1 token")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap ({overlap}) must be at least 0 and smaller than size ({size})")


def trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` moved inwards past whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class Unit(NamedTuple):
    """A span that packing never cuts (a sentence, a piece of the recursive splitter) and its token count."""

    start: int
    end: int
    tokens: int


def token_windows(tokenizer: Tokenizer, text: str, start: int, end: int, size: int, overlap: int) -> list[Unit]:
    """``text[start:end]`` in windows of ``size`` tokens, each starting ``size - overlap`` tokens after the one before.

    The span is tokenized once; a window runs from its first token to the start of the token after it, so characters
    no token claims (control characters a tokenizer drops) still land in a window. Windows come back trimmed, with
    their exact token count; a window whose text re-tokenizes into more than ``size`` tokens gives back tokens at its
    end. Only a single token that re-tokenizes into more than ``size`` (possible for sizes of a few tokens) exceeds.
    """
    offsets = tokenizer.token_offsets(text[start:end])
    n = len(offsets)
    if n == 0:  # only characters the tokenizer ignores: one window of no tokens keeps them findable
        s, e = trimmed(text, start, end)
        return [Unit(s, e, tokenizer.count_tokens(text[s:e]))] if s < e else []
    out: list[Unit] = []
    i = 0
    while i < n:
        j = min(i + size, n)
        while True:
            s, e = trimmed(text, start if i == 0 else start + offsets[i][0], end if j == n else start + offsets[j][0])
            tokens = tokenizer.count_tokens(text[s:e])
            if tokens <= size or j == i + 1:
                break
            j -= 1
        if s < e and (not out or e > out[-1].end):
            out.append(Unit(s, e, tokens))
        if j >= n:
            break
        i = max(j - overlap, i + 1)
    return out


# Before unit ``j``, must the chunk end? ``fresh`` counts the tokens of the chunk's units not carried as overlap.
BreakRule = Callable[[int, int], bool]


def pack(
    text: str,
    units: Sequence[Unit],
    *,
    tokenizer: Tokenizer,
    size: int,
    overlap: int,
    split_long: Callable[[str, Unit], list[Chunk]],
    breaks: BreakRule | None = None,
) -> list[Chunk]:
    """Whole ``units`` packed in order into chunks of at most ``size`` tokens.

    After a cut made for size, the next chunk repeats the last units of the one before, up to ``overlap`` tokens. A
    cut made by ``breaks`` (a paragraph, a change of topic) carries no overlap: the text on either side is meant to
    stand apart. A unit of more than ``size`` tokens goes to ``split_long`` and stands alone.
    """
    count = tokenizer.count_tokens
    chunks: list[Chunk] = []
    n = len(units)
    i = new = 0  # the window is units[i:j]; units[i:new] are overlap, already in the chunk before
    while new < n:
        if units[new].tokens > size:
            chunks.extend(split_long(text, units[new]))
            i = new = new + 1
            continue
        carried = sum(u.tokens for u in units[i:new])
        while i < new and carried + units[new].tokens > size:
            carried -= units[i].tokens
            i += 1
        j, fresh, by_rule = new, 0, False
        while j < n and carried + fresh + units[j].tokens <= size:
            if j > new and breaks is not None and breaks(j, fresh):
                by_rule = True
                break
            fresh += units[j].tokens
            j += 1
        start, end = trimmed(text, units[i].start, units[j - 1].end)
        tokens = count(text[start:end])
        while tokens > size and j - i > 1:  # the joined text counts more than its parts: give back overlap first
            if i < new:
                i += 1
            else:
                j, by_rule = j - 1, False
            start, end = trimmed(text, units[i].start, units[j - 1].end)
            tokens = count(text[start:end])
        if start < end:
            chunks.append(Chunk(text[start:end], start, end, tokens))
        if j >= n:
            break
        new = j
        i = j if by_rule or units[j].tokens > size else _overlap_start(units, i, j, overlap)
    return chunks


def _overlap_start(units: Sequence[Unit], i: int, j: int, overlap: int) -> int:
    """The first unit to repeat after a cut before unit ``j``: as many as fit in ``overlap``, never all of them."""
    k, total = j, 0
    while k - 1 > i and total + units[k - 1].tokens <= overlap:
        k -= 1
        total += units[k].tokens
    return k


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

    def __init__(self, tokenizer: Tokenizer, *, size: int, overlap: int) -> None:
        check_size(size, overlap)
        self._tokenizer = tokenizer
        self.size = size
        self.overlap = overlap

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        pieces = [p for p in self._pieces(text, 0, len(text), 0) if not text[p.start : p.end].isspace()]
        return pack(
            text, pieces, tokenizer=self._tokenizer, size=self.size, overlap=self.overlap, split_long=self._as_is
        )

    def _as_is(self, text: str, unit: Unit) -> list[Chunk]:
        # Only a single token that re-tokenizes into more than ``size`` tokens gets here: nothing finer to cut at.
        start, end = trimmed(text, unit.start, unit.end)
        body = text[start:end]
        return [Chunk(body, start, end, self._tokenizer.count_tokens(body))] if body else []

    def _pieces(self, text: str, start: int, end: int, level: int) -> list[Unit]:
        """Spans, each of at most ``size`` tokens, covering text[start:end] in order."""
        tokens = self._tokenizer.count_tokens(text[start:end])
        if tokens <= self.size:
            return [Unit(start, end, tokens)]
        if level >= len(_SEPARATORS):
            # A run with no separator longer than a chunk: cut between tokens.
            return token_windows(self._tokenizer, text, start, end, self.size, 0)
        cuts = [m.end() for m in _SEPARATORS[level].finditer(text, start, end) if start < m.end() < end]
        if not cuts:
            return self._pieces(text, start, end, level + 1)
        out: list[Unit] = []
        for piece_start, piece_end in zip([start, *cuts], [*cuts, end], strict=True):
            out.extend(self._pieces(text, piece_start, piece_end, level + 1))
        return out
