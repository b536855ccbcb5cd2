"""Parsers turn a file into a title, metadata and a list of sections (text with its heading path, page or record).

A parser never guesses at a broken file: it raises `ParseError` with the reason, and ingestion reports the file by
name and goes on with the rest. The shared pieces live in `_parsing` (protocol, document shape, cleaning, dates,
language); the parsers by family in `_parsers_text`, `_parsers_office` and `_parsers_records`. This module is the
one place the rest of the package imports them from.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from llmops.knowledge._parsers_office import DocxParser, PdfParser
from llmops.knowledge._parsers_records import CsvParser, JsonParser
from llmops.knowledge._parsers_text import HtmlParser, MarkdownParser, TextParser
from llmops.knowledge._parsing import (
    ParsedDocument,
    ParseError,
    Parser,
    Section,
    clean_text,
    detect_language,
    iso_date,
    strip_page_furniture,
)

__all__ = [
    "PARSER_ENTRY_POINT_GROUP",
    "CsvParser",
    "DocxParser",
    "HtmlParser",
    "JsonParser",
    "MarkdownParser",
    "ParseError",
    "ParsedDocument",
    "Parser",
    "PdfParser",
    "Section",
    "TextParser",
    "clean_text",
    "default_parsers",
    "detect_language",
    "installed_parsers",
    "iso_date",
    "strip_page_furniture",
]

PARSER_ENTRY_POINT_GROUP = "llmops.parsers"


def default_parsers() -> list[Parser]:
    """The built-in parsers, one per format family."""
    return [
        MarkdownParser(),
        TextParser(),
        HtmlParser(),
        PdfParser(),
        DocxParser(),
        CsvParser(),
        JsonParser(),
    ]


def installed_parsers() -> list[Parser]:
    """The built-ins, then every parser registered under the ``llmops.parsers`` entry point by other packages.

    A package adds a parser by declaring, in its ``pyproject.toml``::

        [project.entry-points."llmops.parsers"]
        rtf = "my_package:RtfParser"   # a class whose no-argument instance satisfies `Parser`

    Later parsers win a suffix they share with earlier ones (a registry built with ``{suffix: parser}`` keeps the
    last), so a plugin can replace a built-in. llmops registers its own parsers there too; those are skipped here,
    being already first in the list.
    """
    parsers = default_parsers()
    builtin = {type(parser) for parser in parsers}
    for entry in sorted(entry_points(group=PARSER_ENTRY_POINT_GROUP), key=lambda e: e.name):
        factory = entry.load()
        if factory in builtin:
            continue
        parser = factory()
        if not isinstance(parser, Parser):
            raise TypeError(
                f"the {PARSER_ENTRY_POINT_GROUP} entry point {entry.name!r} ({entry.value}) does not make a Parser: "
                "it needs name, version, suffixes and parse(data, path)"
            )
        parsers.append(parser)
    return parsers
