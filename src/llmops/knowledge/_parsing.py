"""What every parser shares: the `Parser` protocol, the parsed-document shape, cleaning, dates and language.

Parsers differ in how they read a format; they must not differ in what a document's metadata means. So each parser
ends with `build_document`, which fills the metadata every format gets (title, language, parser name and version)
in one place, and the text rules (`clean_text`, `strip_page_furniture`) live here rather than in each parser.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

__all__ = [
    "ParseError",
    "ParsedDocument",
    "Parser",
    "RecordValue",
    "Section",
    "build_document",
    "clean_text",
    "decode_utf8",
    "detect_language",
    "first_line_title",
    "iso_date",
    "strip_page_furniture",
]

# What a record field may hold as section metadata: the same scalar types a metadata filter compares.
RecordValue = str | int | float | bool


class ParseError(ValueError):
    """The file cannot be read as its type says; the message says why."""


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (``"Time off > Vacation"``), on one page, or one record of a table.

    ``meta`` holds per-section fields that a filter may use: the scalar fields of a CSV row or JSON record, under
    keys prefixed ``field.`` so that they cannot collide with the metadata ingestion puts on every chunk.
    """

    text: str
    heading: str | None = None
    page: int | None = None
    meta: Mapping[str, RecordValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedDocument:
    """A parsed file. ``meta`` always has ``title``, ``language``, ``parser`` and ``parser_version``; ``author``,
    ``created`` and ``modified`` (ISO 8601) when the format records them."""

    title: str
    sections: list[Section]
    parser: str
    meta: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Parser(Protocol):
    """Reads one kind of file. Register more through the ``llmops.parsers`` entry point.

    ``version`` changes whenever the parser's output for the same bytes changes, so that ingestion can tell which
    documents an upgrade should re-parse; it is recorded as the ``parser_version`` metadata of every document.

    >>> class RtfParser:
    ...     name, version, suffixes = "rtf", "1", (".rtf",)
    ...     def parse(self, data: bytes, path: Path) -> ParsedDocument:
    ...         return build_document(self, title=path.stem, sections=[Section(text=rtf_to_text(data))])
    """

    name: str
    version: str
    suffixes: tuple[str, ...]

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        """Parse the bytes of the file at ``path``; raise `ParseError` when they are not what the suffix claims.

        ``path`` names the document (its stem is the fallback title); for a fetched URL it is a pseudo-path made
        from the URL, so a parser must not read the file system through it.
        """
        ...


# ---- cleaning ----------------------------------------------------------------------------------------------------

_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
# Control characters are never text. PDFium in particular marks a word it joined across a line break with \x02
# where the hyphen was ("infor\x02mation"); a soft hyphen (U+00AD) is likewise only a place a word may break.
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u00ad]")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Join words hyphenated across lines, drop control characters and soft hyphens, collapse runs of spaces and of
    blank lines, trim each line."""
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


# "3", "- 3 -", "[3]", "Page 3", "Page 3 of 10", "3 / 10", "p. 3", and the same words in de/fr/es/sv.
_PAGE_NUMBER = re.compile(
    r"(?:(?:page|p\.|seite|página|pagina|sida|sidan)\s*)?[-–—(\[]?\s*\d{1,4}\s*[-–—)\]]?"
    r"(?:\s*(?:of|/|von|de|sur|av)\s*\d{1,4})?",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"\d+")
_EDGE_LINES = 2  # how many lines at the top and at the bottom of a page may be running headers or footers


def strip_page_furniture(pages: list[str]) -> list[str]:
    """Remove running headers, footers and page numbers from the pages of one document.

    A line counts as a running header or footer when it is among the first or last two lines of a page and the same
    line (digits ignored, so "Report 2024 · 3" matches "Report 2024 · 4") sits at the edge of more than half of the
    pages; that needs at least three pages of evidence. A line that is only a page number ("Page 3 of 10", "- 3 -")
    is removed from the edge of any page of a document with two or more pages.
    """
    if len(pages) < 2:
        return pages
    split = [[line.strip() for line in page.splitlines() if line.strip()] for page in pages]
    counts: Counter[str] = Counter()
    for lines in split:
        counts.update({_furniture_key(line) for line in lines[:_EDGE_LINES] + lines[-_EDGE_LINES:]})
    needed = math.floor(len(pages) / 2) + 1
    repeated = {key for key, seen in counts.items() if seen >= needed} if len(pages) >= 3 else set()

    def is_furniture(line: str) -> bool:
        return _PAGE_NUMBER.fullmatch(line) is not None or _furniture_key(line) in repeated

    cleaned: list[str] = []
    for lines in split:
        start, end = 0, len(lines)
        while start < min(_EDGE_LINES, end) and is_furniture(lines[start]):
            start += 1
        while end > max(start, len(lines) - _EDGE_LINES) and is_furniture(lines[end - 1]):
            end -= 1
        cleaned.append("\n".join(lines[start:end]))
    return cleaned


def _furniture_key(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.lower().split()))


def decode_utf8(data: bytes) -> str:
    """The bytes as UTF-8 text (a byte-order mark is dropped); `ParseError` names the first invalid byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text (byte {exc.start} is invalid)") from exc


# ---- dates -------------------------------------------------------------------------------------------------------

_PDF_DATE = re.compile(r"(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?\s*(?:(Z)|([+-])(\d{2})'?(\d{2})?'?)?")


def iso_date(value: object) -> str | None:
    """An ISO 8601 string for a date in any of the forms documents use, or None when it is not a date.

    Accepts `datetime` / `date` objects, ISO 8601 strings, PDF dates (``D:20240131120000+01'00'``) and RFC 2822
    dates (``Wed, 31 Jan 2024 12:00:00 GMT``). Naive date-times stay naive: a document's local time is not UTC.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text).isoformat()
    except ValueError:
        pass
    match = _PDF_DATE.fullmatch(text)
    if match is not None and (text.startswith("D:") or len(text) >= 8):
        return _pdf_date(match)
    try:
        return parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError):
        return None


def _pdf_date(match: re.Match[str]) -> str | None:
    year, month, day, hour, minute, second, zulu, sign, tz_hours, tz_minutes = match.groups()
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if zulu:
        return moment.replace(tzinfo=UTC).isoformat()
    if sign:
        offset = f"{sign}{tz_hours}:{tz_minutes or '00'}"
        try:
            return datetime.fromisoformat(moment.isoformat() + offset).isoformat()
        except ValueError:
            return moment.isoformat()
    return moment.isoformat()


# ---- language ----------------------------------------------------------------------------------------------------

UNDETERMINED = "und"  # ISO 639-2 for "undetermined": too little text, or no language clearly ahead
_MIN_LETTERS = 20
_MIN_CONFIDENCE = 0.5
_SAMPLE_CHARS = 4000  # the detector is linear in text length; a few paragraphs decide as well as the whole file
_LETTER = re.compile(r"[^\W\d_]")


@cache
def _identifier() -> LanguageIdentifier:
    # py3langid bundles its model (no download); loading it takes about a second, so it happens once, on first use.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str:
    """The ISO 639-1 code of the text's language (639-3 for the few languages without one), or ``"und"``.

    ``"und"`` when the text has fewer than 20 letters or no language has probability 0.5: short strings such as
    "Page 3" or "Hello" get confident-sounding wrong answers from any n-gram model.

    >>> detect_language("Anställda får arbeta på distans upp till tre dagar per vecka.")
    'sv'
    """
    sample = text[:_SAMPLE_CHARS]
    if len(_LETTER.findall(sample)) < _MIN_LETTERS:
        return UNDETERMINED
    language, confidence = _identifier().classify(sample)
    if confidence < _MIN_CONFIDENCE or language == "zxx":  # zxx: "no linguistic content"
        return UNDETERMINED
    return str(language)


# ---- the document ------------------------------------------------------------------------------------------------


class _Named(Protocol):
    name: str
    version: str


def build_document(
    parser: _Named,
    *,
    title: str,
    sections: list[Section],
    meta: Mapping[str, str | None] | None = None,
    empty_message: str = "the file has no text",
) -> ParsedDocument:
    """The `ParsedDocument` every parser returns: sections without text dropped, standard metadata filled in.

    Raises `ParseError` with ``empty_message`` when no section has text, so an empty file never becomes a document.
    """
    kept = [section for section in sections if section.text.strip()]
    if not kept:
        raise ParseError(empty_message)
    title = " ".join(title.split())[:512]
    document_meta = {key: value for key, value in (meta or {}).items() if value}
    document_meta["title"] = title
    document_meta["language"] = detect_language(_language_sample(kept))
    document_meta["parser"] = parser.name
    document_meta["parser_version"] = parser.version
    return ParsedDocument(title=title, sections=kept, parser=parser.name, meta=document_meta)


def _language_sample(sections: Iterable[Section]) -> str:
    parts: list[str] = []
    size = 0
    for section in sections:
        parts.append(section.text)
        size += len(section.text)
        if size >= _SAMPLE_CHARS:
            break
    return "\n".join(parts)


def first_line_title(text: str, path: Path) -> str:
    """The first line of ``text`` when it is short enough to be a title, else the file's stem."""
    first_line = text.split("\n", 1)[0].strip()
    return first_line if 0 < len(first_line) <= 120 else path.stem
