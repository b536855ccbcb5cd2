"""Rule-based sentence boundaries with exact character offsets, for the sentence and semantic chunkers.

A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or brackets) followed by whitespace, unless
the next word starts in lower case ("... and so on", "Yahoo! is"), the word before the dot is an abbreviation that
never ends a sentence ("e.g.", "Dr.", "vs."), a single capital initial ("J. Smith"), or an abbreviation that stands
before a number ("No. 5", "p. 12", "Fig. 3"). Decimals ("3.5") and dotted names ("llmops.knowledge") hold no
whitespace after the dot, so they are never candidates. Paragraph breaks always end a sentence; a single line break
does when the next line starts a list item, heading, table row or quote, or the line before it is a heading, so
Markdown lists and headings are their own units while soft-wrapped prose lines are joined.

Hand-written rather than a library: pysbd (pure Python) is more thorough but orders of magnitude slower per
character, and NLTK's Punkt needs a data download. The rules are tested in tests/unit/test_chunkers.py.
"""

from __future__ import annotations

import itertools
import re

__all__ = ["paragraph_starts", "split_sentences"]

# Abbreviations (lower case, without the final dot) after which a capitalised word still continues the sentence.
_NEVER_END = frozenset(
    ("mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "rev", "hon", "gen", "col", "lt", "sgt", "capt",
     "cmdr", "gov", "sen", "rep", "pres", "supt", "vs", "e.g", "i.e", "cf", "viz", "approx", "incl", "al", "ca", "esp",
     "resp")
)  # fmt: skip
# Abbreviations that continue the sentence when a number follows: "No. 5", "p. 12", "Fig. 3", "Sec. 4.2".
_BEFORE_NUMBER = frozenset(
    ("no", "nos", "p", "pp", "vol", "vols", "fig", "figs", "sec", "ch", "chap", "eq", "art", "para", "ex", "op", "nr",
     "tab")
)  # fmt: skip

_CANDIDATE = re.compile(r"(?:[.!?]+|…)[\"'”’»)\]]*(?=\s)")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE = re.compile(r"\n")
# A line that starts a unit of its own: bullet, numbered item, heading, table row, block quote, code fence.
_ITEM_START = re.compile(r"[ \t]*(?:[-*+•‣◦]\s|\d{1,3}[.)]\s|#{1,6}\s|\||>|```|~~~)")
_HEADING = re.compile(r"[ \t]*#{1,6}\s")


def _word_before(text: str, end: int) -> str:
    """The whitespace-delimited word that ends at ``end`` (the terminal punctuation excluded), lower case."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end].lstrip("([{\"'“‘«").lower()


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    after = match.end()
    while after < len(text) and text[after].isspace():
        after += 1
    if after >= len(text):
        return True
    following = text[after]
    if following.islower():
        return False
    punctuation = match.group()
    if not punctuation.startswith(".") or punctuation.startswith(".."):
        return True  # "!", "?", an ellipsis: a capital, digit or symbol after it starts a new sentence
    word = _word_before(text, match.start())
    if word in _NEVER_END:
        return False
    if len(word) == 1 and word.isalpha() and text[match.start() - 1].isupper():
        return False  # an initial: "J. R. R. Tolkien"
    return not (word in _BEFORE_NUMBER and (following.isdigit() or following in "(#"))


def _line_breaks(text: str, start: int, end: int) -> list[int]:
    """Positions after single line breaks inside a paragraph that begin a unit of their own."""
    cuts: list[int] = []
    for match in _LINE.finditer(text, start, end):
        cut = match.end()
        if cut >= end:
            continue
        line_start = text.rfind("\n", start, match.start()) + 1 or start
        if _ITEM_START.match(text, cut) or _HEADING.match(text, max(line_start, start)):
            cuts.append(cut)
    return cuts


def paragraph_starts(text: str) -> list[int]:
    """Offsets where paragraphs (separated by a blank line) begin, the first non-space character of each."""
    starts = []
    position = len(text) - len(text.lstrip())
    if position < len(text):
        starts.append(position)
    for match in _PARAGRAPH.finditer(text):
        if match.end() < len(text):
            starts.append(match.end())
    return starts


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` in reading order, trimmed of surrounding whitespace.

    Every non-whitespace character of ``text`` lies in exactly one span.

    >>> text = "Dr. Who paid $3.5 e.g. for tea. Then left!  OK"
    >>> [text[s:e] for s, e in split_sentences(text)]
    ['Dr. Who paid $3.5 e.g. for tea.', 'Then left!', 'OK']
    """
    cuts: set[int] = set()
    paragraphs = [*paragraph_starts(text), len(text)]
    for p_start, p_end in itertools.pairwise(paragraphs):
        cuts.add(p_start)
        cuts.update(m.end() for m in _CANDIDATE.finditer(text, p_start, p_end) if _ends_sentence(text, m))
        cuts.update(_line_breaks(text, p_start, p_end))
    spans: list[tuple[int, int]] = []
    bounds = sorted({0, *cuts, len(text)})
    for start, end in itertools.pairwise(bounds):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            spans.append((start, end))
    return spans
