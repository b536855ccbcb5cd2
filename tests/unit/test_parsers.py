from __future__ import annotations

from pathlib import Path

import pytest

from llmops.knowledge._parsers import HtmlParser, MarkdownParser, ParseError, PdfParser, TextParser, clean_text
from llmops.testing import make_pdf

from ..conftest import SAMPLES


def test_markdown_sections_follow_the_heading_tree_and_ignore_code_blocks() -> None:
    source = (
        b"# Guide\n\nIntro.\n\n## Setup\n\n```sh\n# not a heading\nmake run\n```\n\n"
        b"### Linux\n\nApt.\n\n## Use\n\nAsk.\n"
    )
    doc = MarkdownParser().parse(source, Path("guide.md"))
    assert doc.title == "Guide"
    assert [s.heading for s in doc.sections] == ["Guide", "Guide > Setup", "Guide > Setup > Linux", "Guide > Use"]
    assert "# not a heading" in doc.sections[1].text


def test_markdown_without_headings_is_one_section_titled_by_file() -> None:
    doc = MarkdownParser().parse(b"Just text.\n", Path("notes.md"))
    assert doc.title == "notes"
    assert [s.text for s in doc.sections] == ["Just text."]


def test_html_keeps_main_content_and_drops_boilerplate() -> None:
    doc = HtmlParser().parse((SAMPLES / "security.html").read_bytes(), Path("security.html"))
    text = " ".join(s.text for s in doc.sections)
    assert doc.title == "Information Security Policy"
    assert "at least 14 characters" in text
    for boilerplate in ("Intranet", "All policies", "Internal use only", "window.analytics", "font-family"):
        assert boilerplate not in text
    headings = [s.heading for s in doc.sections]
    assert "Information Security Policy > Laptops and devices" in headings
    assert "- Report a lost or stolen device to IT within 24 hours." in text


def test_pdf_pages_title_and_text_layer(tmp_path: Path) -> None:
    data = make_pdf(["First page about leave.", "Second page about travel."], title="Policies")
    doc = PdfParser().parse(data, Path("p.pdf"))
    assert doc.title == "Policies"
    assert [(s.page, s.text) for s in doc.sections] == [
        (1, "First page about leave."),
        (2, "Second page about travel."),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not a pdf", "not a PDF file"),
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "corrupt or unreadable PDF"),
        (make_pdf(["x"])[:200], "corrupt or unreadable PDF"),
        (make_pdf([""]), "no text layer"),
    ],
)
def test_broken_pdfs_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        PdfParser().parse(data, Path("broken.pdf"))


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ParseError, match="not UTF-8"):
        TextParser().parse(b"caf\xe9 \xff\xfe", Path("latin1.txt"))


@pytest.mark.parametrize("parser", [TextParser(), MarkdownParser()])
def test_empty_files_are_refused(parser: TextParser | MarkdownParser) -> None:
    with pytest.raises(ParseError, match="no text"):
        parser.parse(b"  \n\n ", Path("empty.txt"))


def test_html_without_text_is_refused() -> None:
    with pytest.raises(ParseError):
        HtmlParser().parse(b"<html><body><nav>menu</nav><script>x()</script></body></html>", Path("e.html"))


def test_clean_text_joins_hyphenation_and_collapses_space() -> None:
    assert clean_text("infor-\nmation  is\t\tkey\r\n\n\n\nnext") == "information is key\n\nnext"
    assert clean_text("  a\x00b  ") == "ab"
