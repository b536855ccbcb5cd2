"""Sentence boundaries for detectors that judge a text piece by piece (insults, grounded claims)."""

from __future__ import annotations

import re

__all__ = ["split_sentences"]

# A boundary is end punctuation followed by whitespace and an upper-case letter, digit, quote or bullet, or a line
# break that starts a new line of content (list items, table rows, headings).
_BOUNDARY = re.compile(r"[.!?][\"')\]]*(\s+)(?=[\"'(\[]?[A-Z0-9*•\-])|(\n\s*\n)|(\n)(?=\s*(?:[-*•]|\d+[.)]|#)\s)")
_LIST_NUMBER = re.compile(r"\s*\d{1,3}[.)]")
# Abbreviations whose full stop does not end a sentence.
_ABBREVIATION = re.compile(
    r"(?i)(?:\b(?:mr|mrs|ms|dr|prof|sr|jr|st|mt|vs|etc|inc|ltd|co|corp|no|fig|approx|dept|est|vol|e\.g|i\.e|u\.s|"
    r"jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)|\b[A-Z])\.$"
)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text``, whitespace trimmed, empty pieces dropped.

    Example:
        >>> text = "Dr. Ruiz joined in 2019. She leads the team.\\n\\n- Budget: $2.5M"
        >>> [text[s:e] for s, e in split_sentences(text)]
        ['Dr. Ruiz joined in 2019.', 'She leads the team.', '- Budget: $2.5M']
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        gap = next(group for group in (1, 2, 3) if match.group(group) is not None)
        if gap == 1:
            end = match.start(gap)
            line_start = text.rfind("\n", 0, end) + 1
            if _ABBREVIATION.search(text, max(start, end - 8), end) or _LIST_NUMBER.fullmatch(text, line_start, end):
                continue  # "Dr. Ruiz", "e.g. this", or the "2." that numbers a list item
        spans.append((start, match.start(gap)))
        start = match.end(gap)
    spans.append((start, len(text)))
    out: list[tuple[int, int]] = []
    for begin, end in spans:
        piece = text[begin:end]
        stripped = piece.strip()
        if stripped:
            offset = begin + piece.index(stripped)
            out.append((offset, offset + len(stripped)))
    return out
