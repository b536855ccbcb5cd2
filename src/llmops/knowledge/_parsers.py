"""Parsers turn a file into a title and a list of sections (text with its heading path or page).

A parser never guesses at a broken file: it raises `ParseError` with the reason, and ingestion reports the file by
name and goes on with the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "HtmlParser",
    "MarkdownParser",
    "ParseError",
    "ParsedDocument",
    "Parser",
    "PdfParser",
    "Section",
    "TextParser",
    "clean_text",
    "default_parsers",
]


class ParseError(ValueError):
    """The file cannot be read as its type says; the message says why."""


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (``"Time off > Vacation"``) or on one page."""

    text: str
    heading: str | None = None
    page: int | None = None


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]
    parser: str
    meta: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Parser(Protocol):
    """Reads one kind of file. Register more through the ``llmops.parsers`` entry point."""

    name: str
    suffixes: tuple[str, ...]

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        """Parse the bytes of the file at ``path``; raise `ParseError` when they are not what the suffix claims."""
        ...


_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Join words hyphenated across lines, collapse runs of spaces and of blank lines, trim each line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _decode_utf8(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text (byte {exc.start} is invalid)") from exc


class TextParser:
    name = "text"
    suffixes: tuple[str, ...] = (".txt", ".text")

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        text = clean_text(_decode_utf8(data, path))
        if not text:
            raise ParseError("the file has no text")
        first_line = text.split("\n", 1)[0].strip()
        title = first_line if 0 < len(first_line) <= 120 else path.stem
        return ParsedDocument(title=title, sections=[Section(text=text)], parser=self.name)


class MarkdownParser:
    """Splits at ATX and setext headings (found by markdown-it, so ``#`` inside code blocks is not a heading)."""

    name = "markdown"
    suffixes: tuple[str, ...] = (".md", ".markdown")

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        from markdown_it import MarkdownIt

        source = _decode_utf8(data, path).replace("\r\n", "\n")
        lines = source.split("\n")
        tokens = MarkdownIt("commonmark").parse(source)
        headings: list[tuple[int, int, int, str]] = []  # (first line, line after heading, level, text)
        for i, token in enumerate(tokens):
            if token.type == "heading_open" and token.map is not None:
                headings.append((token.map[0], token.map[1], int(token.tag[1]), tokens[i + 1].content.strip()))

        sections: list[Section] = []
        path_stack: list[tuple[int, str]] = []
        preamble = clean_text("\n".join(lines[: headings[0][0]] if headings else lines))
        if preamble:
            sections.append(Section(text=preamble))
        for n, (_start, body_start, level, text) in enumerate(headings):
            while path_stack and path_stack[-1][0] >= level:
                path_stack.pop()
            path_stack.append((level, text))
            body_end = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
            body = clean_text("\n".join(lines[body_start:body_end]))
            if body:
                sections.append(Section(text=body, heading=" > ".join(t for _, t in path_stack)))
        if not sections:
            raise ParseError("the file has no text")
        title = next((text for _, _, level, text in headings if level == 1), None) or path.stem
        return ParsedDocument(title=title, sections=sections, parser=self.name)


_HTML_DROP = "script, style, noscript, nav, header, footer, aside, form, template, svg, iframe"
_HTML_BLOCKS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "td", "th", "dt", "dd")


class HtmlParser:
    """Main text of a page: navigation, headers, footers, scripts and forms removed; headings start sections."""

    name = "html"
    suffixes: tuple[str, ...] = (".html", ".htm")

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        from selectolax.lexbor import LexborHTMLParser

        tree = LexborHTMLParser(data.decode("utf-8", errors="replace"))
        root = tree.css_first("main") or tree.css_first("article") or tree.body
        if root is None:
            raise ParseError("no <body> in the HTML")
        for node in root.css(_HTML_DROP):
            node.decompose()
        title_node = tree.css_first("title")
        title = title_node.text(strip=True) if title_node is not None else ""

        sections: list[Section] = []
        heading_stack: list[tuple[int, str]] = []
        buffer: list[str] = []

        def flush() -> None:
            text = clean_text("\n\n".join(buffer))
            if text:
                sections.append(Section(text=text, heading=" > ".join(t for _, t in heading_stack) or None))
            buffer.clear()

        for node in root.css(", ".join(_HTML_BLOCKS)):
            if _inside_block(node):
                continue
            # HTML collapses whitespace (source line breaks are not text), except inside <pre>.
            text = node.text(separator=" ", strip=True)
            if node.tag != "pre":
                text = " ".join(text.split())
            if not text:
                continue
            if node.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                flush()
                level = int(node.tag[1])
                while heading_stack and heading_stack[-1][0] >= level:
                    heading_stack.pop()
                heading_stack.append((level, text))
                title = title or text
            else:
                buffer.append(("- " + text) if node.tag == "li" else text)
        flush()
        if not sections:
            raise ParseError("the HTML has no readable text")
        return ParsedDocument(title=title or path.stem, sections=sections, parser=self.name)


def _inside_block(node: object) -> bool:
    parent = getattr(node, "parent", None)
    while parent is not None:
        if getattr(parent, "tag", None) in _HTML_BLOCKS:
            return True
        parent = getattr(parent, "parent", None)
    return False


class PdfParser:
    """The text layer of each page, through PDFium (pypdfium2, Apache-2.0/BSD); one section per page."""

    name = "pdf"
    suffixes: tuple[str, ...] = (".pdf",)

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        import pypdfium2 as pdfium

        if not data.startswith(b"%PDF-"):
            raise ParseError("not a PDF file (no %PDF- header)")
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise ParseError(f"corrupt or unreadable PDF: {exc}") from exc
        try:
            sections: list[Section] = []
            for number in range(len(pdf)):
                page = pdf[number]
                textpage = page.get_textpage()
                text = clean_text(textpage.get_text_bounded())
                textpage.close()
                page.close()
                if text:
                    sections.append(Section(text=text, page=number + 1))
            metadata = pdf.get_metadata_dict(skip_empty=True)
        except pdfium.PdfiumError as exc:
            raise ParseError(f"corrupt or unreadable PDF: {exc}") from exc
        finally:
            pdf.close()
        if not sections:
            raise ParseError("the PDF has no text layer (scanned pages need OCR, which is not configured)")
        title = metadata.get("Title") or path.stem
        meta = {k.lower(): v for k, v in metadata.items() if k in ("Author", "CreationDate", "ModDate")}
        return ParsedDocument(title=title, sections=sections, parser=self.name, meta=meta)


def default_parsers() -> list[Parser]:
    return [MarkdownParser(), TextParser(), HtmlParser(), PdfParser()]
