"""Parsers for text formats: plain text, Markdown (heading structure, front matter) and HTML (main content)."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmops.knowledge._parsing import (
    ParsedDocument,
    ParseError,
    Section,
    build_document,
    clean_text,
    decode_utf8,
    first_line_title,
    iso_date,
)

__all__ = ["HtmlParser", "MarkdownParser", "TextParser"]


class TextParser:
    """Plain text: one section; the first line is the title when it is short enough to be one."""

    name = "text"
    version = "2"
    suffixes: tuple[str, ...] = (".txt", ".text")

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        text = clean_text(decode_utf8(data))
        return build_document(self, title=first_line_title(text, path), sections=[Section(text=text)])


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)


class MarkdownParser:
    """Splits at ATX and setext headings (found by markdown-it, so ``#`` inside code blocks is not a heading).

    YAML front matter (``---`` … ``---`` at the very top) gives the title, author and dates when it has them, and is
    not indexed as text.
    """

    name = "markdown"
    version = "2"
    suffixes: tuple[str, ...] = (".md", ".markdown")

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        from markdown_it import MarkdownIt

        source = decode_utf8(data).replace("\r\n", "\n")
        front, source = _split_front_matter(source)
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
        h1 = next((text for _, _, level, text in headings if level == 1), None)
        title = _scalar(front.get("title")) or h1 or path.stem
        meta = {
            "author": _scalar(front.get("author")),
            "created": iso_date(front.get("date") or front.get("created")),
            "modified": iso_date(front.get("modified") or front.get("updated") or front.get("lastmod")),
        }
        return build_document(self, title=title, sections=sections, meta=meta)


def _split_front_matter(source: str) -> tuple[dict[str, Any], str]:
    """The front matter as a mapping and the text after it; ``({}, source)`` when there is none.

    A leading ``---`` block that is not a YAML mapping is a thematic break followed by text, not front matter, so
    it stays in the document.
    """
    import yaml

    match = _FRONT_MATTER.match(source)
    if match is None:
        return {}, source
    try:
        front = yaml.safe_load(match.group(1) or "")
    except yaml.YAMLError:
        return {}, source
    if not isinstance(front, dict):
        return {}, source
    # Keep the line count, so that markdown-it's line numbers still index the text after the front matter.
    return front, "\n" * match.group(0).count("\n") + source[match.end() :]


def _scalar(value: object) -> str | None:
    # Only scalars: a YAML alias bomb is cheap to load but explodes when a nested value is turned into a string.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = " ".join(str(value).split())
        return text or None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value[:20]):
        return ", ".join(" ".join(v.split()) for v in value[:20])  # authors: [Ann, Bo]
    return None


# ---- HTML --------------------------------------------------------------------------------------------------------

# Removed wherever they are: never the text of the page.
_HTML_DROP = (
    "script, style, noscript, template, svg, canvas, iframe, object, embed, form, button, select, dialog, "
    "nav, aside, [hidden], [aria-hidden=true], [role=navigation], [role=banner], [role=contentinfo], "
    "[role=complementary], [role=search]"
)
# Site chrome outside the main content; inside <main> or <article>, a <header> holds the article's own title.
_HTML_DROP_OUTSIDE_MAIN = "header, footer"
# Class or id words that mark navigation, consent banners and widgets rather than content.
_BOILERPLATE_WORDS = (
    "nav",
    "navbar",
    "navigation",
    "menu",
    "sidebar",
    "breadcrumb",
    "breadcrumbs",
    "cookie",
    "cookies",
    "cookie-banner",
    "cookie-consent",
    "consent",
    "skip-link",
    "share",
    "social",
    "newsletter",
    "advert",
    "ads",
    "pagination",
    "related",
    "comments",
)
_HTML_BOILERPLATE = ", ".join(f'[class~="{word}"], [id="{word}"]' for word in _BOILERPLATE_WORDS)
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BLOCKS = frozenset(
    {
        "address", "article", "blockquote", "body", "dd", "details", "div", "dl", "dt", "fieldset", "figcaption",
        "figure", "header", "footer", "hr", "li", "main", "ol", "p", "pre", "section", "summary", "table", "tbody",
        "thead", "tfoot", "ul", "caption",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_META_AUTHOR = ("author", "article:author", "dc.creator", "dcterms.creator", "byl")
_META_CREATED = (
    "article:published_time",
    "datepublished",
    "dcterms.created",
    "dc.date.created",
    "dcterms.date",
    "dc.date",
    "date",
    "pubdate",
    "publish_date",
)
_META_MODIFIED = ("article:modified_time", "datemodified", "dcterms.modified", "og:updated_time", "last-modified")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class HtmlParser:
    """Main text of a page: navigation, headers, footers, scripts and forms removed; headings start sections.

    The content root is ``<main>`` (or ``role=main``), else the page's only ``<article>``, else ``<body>``. Text in
    any element counts (not only in ``<p>``), block elements separate paragraphs, list items start with ``- ``,
    table rows read ``cell | cell``. The title is ``og:title``, else ``<title>``, else the first heading.
    """

    name = "html"
    version = "2"
    suffixes: tuple[str, ...] = (".html", ".htm", ".xhtml")

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        from selectolax.lexbor import LexborHTMLParser

        if not data.strip():
            raise ParseError("the file has no text")
        tree = LexborHTMLParser(_decode_html(data))
        metas = _meta_tags(tree)
        body = tree.body
        if body is None:
            raise ParseError("no <body> in the HTML")
        articles = body.css("article")
        root = (
            body.css_first("main")
            or body.css_first("[role=main]")
            or (articles[0] if len(articles) == 1 else None)
            or body
        )
        drop = _HTML_DROP if root is not body else f"{_HTML_DROP}, {_HTML_DROP_OUTSIDE_MAIN}"
        for selector in (drop, _HTML_BOILERPLATE):
            for node in root.css(selector):
                node.decompose()

        walker = _HtmlText()
        walker.walk(root)
        title_node = tree.css_first("title")
        title = (
            metas.get("og:title")
            or (title_node.text(strip=True) if title_node is not None else "")
            or walker.first_heading
            or path.stem
        )
        meta = {
            "author": next((metas[k] for k in _META_AUTHOR if metas.get(k)), None),
            "created": next((d for k in _META_CREATED if (d := iso_date(metas.get(k))) is not None), None),
            "modified": next((d for k in _META_MODIFIED if (d := iso_date(metas.get(k))) is not None), None),
        }
        return build_document(
            self, title=title, sections=walker.sections, meta=meta, empty_message="the HTML has no readable text"
        )


def _decode_html(data: bytes) -> str:
    """Decode as a browser would: a byte-order mark first, then ``<meta charset>``, else UTF-8 (bad bytes replaced)."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    match = _META_CHARSET.search(data[:4096])
    encoding = "utf-8"
    if match is not None:
        try:
            encoding = codecs.lookup(match.group(1).decode("ascii")).name
        except LookupError:
            encoding = "utf-8"
        if encoding.startswith("utf-16"):  # a page that says UTF-16 in ASCII bytes is not UTF-16
            encoding = "utf-8"
    return data.decode(encoding, errors="replace")


def _meta_tags(tree: Any) -> dict[str, str]:
    metas: dict[str, str] = {}
    for node in tree.css("meta"):
        attributes = node.attributes
        key = attributes.get("name") or attributes.get("property") or attributes.get("itemprop")
        content = attributes.get("content")
        if key and content and content.strip():
            metas.setdefault(key.strip().lower(), " ".join(content.split()))
    return metas


class _HtmlText:
    """Walks an element tree (iteratively: hostile pages nest deeper than Python recurses) into sections."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_heading = ""
        self._headings: list[tuple[int, str]] = []
        self._paragraphs: list[str] = []
        self._line: list[str] = []
        self._pre_depth = 0
        self._row_cells: list[int] = []

    def walk(self, root: Any) -> None:
        stack: list[tuple[bool, Any]] = [(True, root)]
        while stack:
            entering, node = stack.pop()
            if entering:
                if self._enter(node):
                    stack.append((False, node))
                    stack.extend((True, child) for child in reversed(list(_children(node))))
            else:
                self._exit(node)
        self._end_section()

    def _enter(self, node: Any) -> bool:
        """Handle the start of ``node``; True when its children should be walked."""
        tag = node.tag
        if tag == "-text":
            text = node.text_content or ""
            self._line.append(text if self._pre_depth else re.sub(r"\s+", " ", text))
            return False
        if tag in _HEADINGS:
            self._heading(int(tag[1]), " ".join(node.text(separator=" ").split()))
            return False
        if tag == "br":
            self._line.append("\n")
            return False
        if tag in _BLOCKS:
            self._end_paragraph()
            if tag == "pre":
                self._pre_depth += 1
            elif tag == "li":
                self._line.append("- ")
        elif tag == "tr":  # rows of one table are lines of one paragraph
            if self._line and not "".join(self._line).endswith("\n"):
                self._line.append("\n")
            self._row_cells.append(0)
        elif tag in _CELLS and self._row_cells:
            if self._row_cells[-1]:
                self._line.append(" | ")
            self._row_cells[-1] += 1
        return not tag.startswith("_")  # comments (_comment) and other non-elements have no text to walk

    def _exit(self, node: Any) -> None:
        tag = node.tag
        if tag in _BLOCKS:
            self._end_paragraph()
            if tag == "pre":
                self._pre_depth -= 1
        elif tag == "tr" and self._row_cells:
            self._row_cells.pop()
            self._line.append("\n")

    def _heading(self, level: int, text: str) -> None:
        if not text:
            return
        self._end_section()
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self.first_heading = self.first_heading or text

    def _end_paragraph(self) -> None:
        text = "".join(self._line)
        self._line.clear()
        lines = [line.strip() for line in text.split("\n")]
        paragraph = "\n".join(line for line in lines if line and line != "-")
        if paragraph:
            self._paragraphs.append(paragraph)

    def _end_section(self) -> None:
        self._end_paragraph()
        text = clean_text("\n\n".join(self._paragraphs))
        self._paragraphs.clear()
        if text:
            heading = " > ".join(t for _, t in self._headings) or None
            self.sections.append(Section(text=text, heading=heading))


def _children(node: Any) -> Iterator[Any]:
    return iter(node.iter(include_text=True))
