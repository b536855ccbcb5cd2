from __future__ import annotations

import datetime
import io
import json
import re
import time
import tomllib
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path

import docx
import docx.document
import pytest

from llmops.knowledge import _parsers as parsers_module
from llmops.knowledge._parsers import (
    CsvParser,
    DocxParser,
    HtmlParser,
    JsonParser,
    MarkdownParser,
    ParsedDocument,
    ParseError,
    Parser,
    PdfParser,
    TextParser,
    clean_text,
    default_parsers,
    detect_language,
    installed_parsers,
    iso_date,
    strip_page_furniture,
)
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


# ---- shared: protocol, metadata, language, cleaning ---------------------------------------------------------------


def test_every_built_in_parser_satisfies_the_protocol_and_owns_its_suffixes() -> None:
    parsers = default_parsers()
    assert all(isinstance(parser, Parser) for parser in parsers)
    assert all(parser.version and parser.name for parser in parsers)
    suffixes = [suffix for parser in parsers for suffix in parser.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert {".md", ".txt", ".html", ".pdf", ".docx", ".csv", ".json", ".jsonl"} <= set(suffixes)


def test_installed_parsers_add_entry_point_plugins_after_the_built_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    class RtfParser:
        name, version, suffixes = "rtf", "1", (".rtf",)

        def parse(self, data: bytes, path: Path) -> ParsedDocument:
            raise ParseError("not implemented")

    class NotAParser:
        pass

    class Entry:
        def __init__(self, name: str, target: object) -> None:
            self.name, self.value, self._target = name, f"tests:{name}", target

        def load(self) -> object:
            return self._target

    entries = [Entry("rtf", RtfParser), Entry("pdf", PdfParser)]  # a built-in registered again is not doubled
    monkeypatch.setattr(parsers_module, "entry_points", lambda group: entries if group == "llmops.parsers" else [])
    found = installed_parsers()
    assert [p.name for p in found] == [p.name for p in default_parsers()] + ["rtf"]
    entries.append(Entry("broken", NotAParser))
    with pytest.raises(TypeError, match=r"'broken'.*does not make a Parser"):
        installed_parsers()


LANGUAGE_SAMPLES = {
    "en": "Employees may work remotely up to three days per week, in agreement with their manager. "
    "Fully remote arrangements need approval from the department head.",
    "de": "Mitarbeiter dürfen bis zu drei Tage pro Woche von zu Hause aus arbeiten, in Absprache mit ihrer "
    "Führungskraft. Vollständig mobile Arbeit muss von der Abteilungsleitung genehmigt werden.",
    "fr": "Les salariés peuvent travailler à distance jusqu'à trois jours par semaine, en accord avec leur "
    "responsable. Le télétravail complet doit être approuvé par le chef de département.",
    "es": "Los empleados pueden trabajar a distancia hasta tres días por semana, de acuerdo con su responsable. "
    "El trabajo totalmente remoto necesita la aprobación del jefe de departamento.",
    "sv": "Anställda får arbeta på distans upp till tre dagar per vecka, i samråd med sin chef. Helt distansarbete "
    "kräver godkännande från avdelningschefen.",
}


@pytest.mark.parametrize(("language", "text"), sorted(LANGUAGE_SAMPLES.items()))
def test_the_language_of_a_document_is_detected_offline(language: str, text: str) -> None:
    doc = TextParser().parse(text.encode(), Path("policy.txt"))
    assert doc.meta["language"] == language
    assert detect_language(text) == language


def test_too_little_text_has_undetermined_language() -> None:
    for short in ("Page 3", "Hello", "Guten Tag", "1234 5678 9012 3456 7890", "---"):
        assert detect_language(short) == "und", short
    assert TextParser().parse(b"Vacation days", Path("v.txt")).meta["language"] == "und"


def test_language_detection_is_fast_once_loaded() -> None:
    detect_language(LANGUAGE_SAMPLES["en"])  # loads the bundled model once per process
    long_text = " ".join(LANGUAGE_SAMPLES.values()) * 10
    started = time.perf_counter()
    for _ in range(50):
        detect_language(long_text)
    assert (time.perf_counter() - started) / 50 < 0.02  # measured about 0.7 ms for the 4,000 characters it reads


def test_every_document_records_title_language_parser_and_version() -> None:
    doc = MarkdownParser().parse(b"# Leave\n\n" + LANGUAGE_SAMPLES["en"].encode(), Path("leave.md"))
    assert doc.meta == {"title": "Leave", "language": "en", "parser": "markdown", "parser_version": "2"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("D:20240131120000+01'00'", "2024-01-31T12:00:00+01:00"),
        ("D:20240131120000Z", "2024-01-31T12:00:00+00:00"),
        ("D:20240131", "2024-01-31T00:00:00"),
        ("D:2024", "2024-01-01T00:00:00"),
        ("2024-03-01T10:00:00Z", "2024-03-01T10:00:00+00:00"),
        ("2024-03-01", "2024-03-01T00:00:00"),
        ("Wed, 31 Jan 2024 12:00:00 GMT", "2024-01-31T12:00:00+00:00"),
        (datetime.date(2024, 5, 6), "2024-05-06"),
        ("D:20241399", None),
        ("last Tuesday", None),
        ("", None),
        (None, None),
    ],
)
def test_dates_become_iso_strings(value: object, expected: str | None) -> None:
    assert iso_date(value) == expected


def test_page_numbers_are_removed_from_page_edges_only() -> None:
    pages = ["Intro text.\nPage 1 of 3", "- 2 -\nMore text about 2 things.", "Closing text.\n3"]
    assert strip_page_furniture(pages) == ["Intro text.", "More text about 2 things.", "Closing text."]
    assert strip_page_furniture(["1\nA lone page keeps its number."]) == ["1\nA lone page keeps its number."]
    middle = ["Top line.\n12\nBottom line.\nMore.\nEnd.", "Other.\nText.\nHere.\nAnd.\nThere."]
    assert strip_page_furniture(middle)[0] == "Top line.\n12\nBottom line.\nMore.\nEnd."


def test_running_headers_and_footers_need_most_pages_to_agree() -> None:
    bodies = ["Leave starts here.", "Travel is booked early.", "Expenses need receipts.", "Laptops are encrypted.",
              "Reviews happen yearly."]  # fmt: skip
    pages = [
        f"ACME Handbook\n{body}\nAsk {name}.\nacme.example · {n}"
        for n, (body, name) in enumerate(
            zip(bodies, ["HR", "Travel", "Finance", "IT", "your manager"], strict=True), start=1
        )
    ]
    pages[2] = "Expenses need receipts.\nacme.example · 3"  # one page lacks the header: 4 of 5 still agree
    cleaned = strip_page_furniture(pages)
    assert cleaned[0] == "Leave starts here.\nAsk HR."
    assert cleaned[2] == "Expenses need receipts."
    # A line at the edge of only two of five pages is content, not a running header.
    pages = [f"Note\n{body}" if n < 2 else body for n, body in enumerate(bodies)]
    assert strip_page_furniture(pages) == pages
    # Two pages are too little evidence for repetition (only page numbers go).
    assert strip_page_furniture(["Same\nA.", "Same\nB."]) == ["Same\nA.", "Same\nB."]


# ---- PDF -----------------------------------------------------------------------------------------------------------


def _with_info(pdf: bytes, entries: bytes) -> bytes:
    """``make_pdf``'s output with more entries in its info dictionary (the last object, so only startxref moves)."""
    patched = pdf.replace(b"/Producer (llmops.testing)", b"/Producer (llmops.testing) " + entries)
    head, _, _ = patched.rpartition(b"startxref\n")
    return head + b"startxref\n%d\n%%%%EOF\n" % (patched.rindex(b"\nxref\n") + 1)


HANDBOOK_PAGES = [
    "Leave. Employees receive 25 days of paid vacation per calendar year, booked in the HR portal.",
    "Travel. Book flights through the travel desk at least two weeks ahead; economy class for trips under six hours.",
    "Expenses. Submit receipts within 30 days. Meals are reimbursed up to 50 EUR per day while travelling.",
    "Security. Laptops use full-disk encryption and lock after five minutes. Report lost devices within 24 hours.",
]


def test_pdf_running_headers_footers_and_page_numbers_are_removed() -> None:
    pages = [
        f"Northwind Labs - Employee Handbook\nInternal - do not distribute\n{body}\nnorthwind.example/handbook\n"
        f"Page {n} of {len(HANDBOOK_PAGES)}"
        for n, body in enumerate(HANDBOOK_PAGES, start=1)
    ]
    doc = PdfParser().parse(make_pdf(pages, width_chars=200), Path("handbook.pdf"))
    assert [(s.page, s.text) for s in doc.sections] == [(n, b) for n, b in enumerate(HANDBOOK_PAGES, start=1)]


def test_pdf_metadata_comes_from_the_info_dictionary() -> None:
    data = _with_info(
        make_pdf(HANDBOOK_PAGES[:2], title="Employee Handbook"),
        b"/Author (Ada Lovelace) /CreationDate (D:20240131120000+01'00') /ModDate (D:20240301083000Z)",
    )
    doc = PdfParser().parse(data, Path("handbook.pdf"))
    assert doc.meta == {
        "title": "Employee Handbook",
        "author": "Ada Lovelace",
        "created": "2024-01-31T12:00:00+01:00",
        "modified": "2024-03-01T08:30:00+00:00",
        "language": "en",
        "parser": "pdf",
        "parser_version": "2",
    }


def test_pdf_words_hyphenated_across_lines_are_joined() -> None:
    doc = PdfParser().parse(make_pdf(["The infor-\nmation is kept for seven years."]), Path("h.pdf"))
    assert doc.sections[0].text == "The information is kept for seven years."


# ---- DOCX ----------------------------------------------------------------------------------------------------------


def _docx_bytes(document: docx.document.Document) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _travel_policy() -> docx.document.Document:
    document = docx.Document()
    core = document.core_properties
    core.author, core.title = "Grace Hopper", "Travel Policy"
    core.created = datetime.datetime(2024, 1, 31, 12, 0, tzinfo=datetime.UTC)
    core.modified = datetime.datetime(2024, 2, 5, 9, 30, tzinfo=datetime.UTC)
    document.add_paragraph("Travel Policy", style="Title")
    document.add_paragraph("This policy covers business travel for all employees.")
    document.add_heading("Booking", level=1)
    document.add_paragraph("Book flights through the travel desk at least two weeks ahead.")
    document.add_paragraph("Economy class for flights under six hours", style="List Bullet")
    document.add_heading("Hotels", level=2)
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([["City", "Nightly limit", "Currency"], ["Berlin", "150", "EUR"], ["Oslo", "", ""]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(2, 1).merge(table.cell(2, 2)).text = "1800 NOK"
    document.add_heading("Meals", level=1)
    document.add_paragraph("A per diem of 50 EUR covers meals while travelling.")
    return document


def test_docx_headings_give_section_paths_and_tables_read_as_rows() -> None:
    doc = DocxParser().parse(_docx_bytes(_travel_policy()), Path("travel.docx"))
    assert [(s.heading, s.text) for s in doc.sections] == [
        (None, "This policy covers business travel for all employees."),
        ("Booking", "Book flights through the travel desk at least two weeks ahead.\n\n"
                    "- Economy class for flights under six hours"),
        ("Booking > Hotels", "City | Nightly limit | Currency\nBerlin | 150 | EUR\nOslo | 1800 NOK"),
        ("Meals", "A per diem of 50 EUR covers meals while travelling."),
    ]  # fmt: skip
    assert doc.title == "Travel Policy"
    assert doc.meta == {
        "title": "Travel Policy",
        "author": "Grace Hopper",
        "created": "2024-01-31T12:00:00+00:00",
        "modified": "2024-02-05T09:30:00+00:00",
        "language": "en",
        "parser": "docx",
        "parser_version": "1",
    }


def test_docx_title_falls_back_to_the_title_style_then_the_file_name() -> None:
    document = docx.Document()
    document.core_properties.title = ""
    document.add_paragraph("Onboarding Guide", style="Title")
    document.add_paragraph("Welcome to the team. Your manager prepares your first week.")
    assert DocxParser().parse(_docx_bytes(document), Path("o.docx")).title == "Onboarding Guide"
    plain = docx.Document()
    plain.core_properties.title = ""
    plain.add_paragraph("Just a paragraph of body text without any heading at all.")
    assert DocxParser().parse(_docx_bytes(plain), Path("notes.docx")).title == "notes"


def test_a_docx_zip_bomb_is_refused_before_python_docx_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    good = _docx_bytes(_travel_policy())
    buffer = io.BytesIO(good)
    with (
        zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("word/media/image1.png", "w") as entry,
    ):
        for _ in range(50):
            entry.write(bytes(1024 * 1024))  # 50 MB of zeros: a few hundred KB compressed
    bomb = buffer.getvalue()
    assert len(bomb) < 1024 * 1024

    def must_not_open(*args: object) -> None:
        raise AssertionError("python-docx was handed a zip bomb")

    monkeypatch.setattr(docx, "Document", must_not_open)
    with pytest.raises(ParseError, match=r"zip bomb: word/media/image1\.png inflates \d+×"):
        DocxParser().parse(bomb, Path("bomb.docx"))
    with pytest.raises(ParseError, match=r"zip bomb: \d+ bytes uncompressed \(limit 10000\)"):
        DocxParser(max_uncompressed_bytes=10_000).parse(good, Path("t.docx"))


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"Dear team, this is plain text.", "not a DOCX file (a DOCX is a zip archive"),
        (_zip({"notes.txt": b"hello"}), "not a DOCX file (the archive has no word/document.xml)"),
        (_zip({"word/document.xml": b"<w:document"}), "corrupt or unreadable DOCX"),
    ],
)
def test_broken_docx_files_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=re.escape(message)):
        DocxParser().parse(data, Path("broken.docx"))


def test_a_docx_with_broken_xml_inside_is_refused() -> None:
    good = zipfile.ZipFile(io.BytesIO(_docx_bytes(_travel_policy())))
    entries = {name: good.read(name) for name in good.namelist()}
    entries["word/document.xml"] = entries["word/document.xml"][:300]
    with pytest.raises(ParseError, match="corrupt or unreadable DOCX: XMLSyntaxError"):
        DocxParser().parse(_zip(entries), Path("cut.docx"))


def test_a_docx_without_text_is_refused() -> None:
    with pytest.raises(ParseError, match="no text"):
        DocxParser().parse(_docx_bytes(docx.Document()), Path("empty.docx"))


# ---- HTML ----------------------------------------------------------------------------------------------------------

BOILERPLATE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="iso-8859-1">
<title>Expenses | Northwind Intranet</title>
<meta property="og:title" content="Expense Policy">
<meta name="author" content="Finance Team">
<meta property="article:published_time" content="2024-03-01T10:00:00Z">
<meta property="article:modified_time" content="2024-04-02">
<script>track('page')</script><style>.x { color: red }</style>
</head><body>
<div class="cookie-banner">We use cookies. <button>Accept</button></div>
<header class="site"><a href="/">Northwind Intranet</a></header>
<div role="navigation"><a href="/a">Home</a> <a href="/b">Policies</a></div>
<div class="layout">
<aside>Popular: Parking rules</aside>
<div id="sidebar">Quick links</div>
<article>
<header><h1>Expense Policy</h1><p class="byline">Updated by Finance</p></header>
<div>Submit receipts within 30 days of purchase.<br>Late receipts need approval.</div>
<h2>Meals</h2>
<p>Meals are reimbursed up to <b>50 EUR</b> per day.</p>
<table><tr><th>Country</th><th>Daily limit</th></tr><tr><td>Germany</td><td>50 EUR</td></tr></table>
<ul><li>Keep the itemised bill.</li><li>Alcohol is not reimbursed.</li></ul>
<form><input name="q"> Search expenses</form>
<div class="share">Share on social media</div>
<p hidden>Draft paragraph</p>
<p>Caf\xe9 visits with clients count as meals.</p>
</article>
</div>
<footer>\xa9 Northwind Labs <a href="/privacy">Privacy</a></footer>
</body></html>
""".encode("latin-1")


def test_html_main_content_is_extracted_and_boilerplate_removed() -> None:
    doc = HtmlParser().parse(BOILERPLATE_PAGE, Path("expenses.html"))
    assert doc.title == "Expense Policy"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Expense Policy", "Updated by Finance\n\nSubmit receipts within 30 days of purchase.\n"
                           "Late receipts need approval."),
        ("Expense Policy > Meals", "Meals are reimbursed up to 50 EUR per day.\n\n"
                                   "Country | Daily limit\nGermany | 50 EUR\n\n"
                                   "- Keep the itemised bill.\n\n- Alcohol is not reimbursed.\n\n"
                                   "Café visits with clients count as meals."),
    ]  # fmt: skip
    assert doc.meta == {
        "title": "Expense Policy",
        "author": "Finance Team",
        "created": "2024-03-01T10:00:00+00:00",
        "modified": "2024-04-02T00:00:00",
        "language": "en",
        "parser": "html",
        "parser_version": "2",
    }


def test_html_without_main_or_article_uses_the_body_without_its_chrome() -> None:
    page = (
        b"<html><head><title>Parking</title></head><body><header>Intranet</header><nav>Menu</nav>"
        b"<div><div>Parking spaces are assigned by the facilities team each quarter.</div></div>"
        b"<footer>Contact facilities</footer></body></html>"
    )
    doc = HtmlParser().parse(page, Path("parking.html"))
    assert doc.title == "Parking"
    assert [s.text for s in doc.sections] == ["Parking spaces are assigned by the facilities team each quarter."]


def test_deeply_nested_html_does_not_exhaust_the_stack() -> None:
    page = b"<html><body>" + b"<div>" * 5000 + b"Deep text." + b"</div>" * 5000 + b"</body></html>"
    assert HtmlParser().parse(page, Path("deep.html")).sections[0].text == "Deep text."


# ---- Markdown and text ---------------------------------------------------------------------------------------------


def test_markdown_front_matter_gives_title_author_and_dates_and_is_not_text() -> None:
    source = (
        b"---\ntitle: Onboarding Guide\nauthor: [Ada, Grace]\ndate: 2024-01-15\nupdated: 2024-02-01T08:00:00Z\n---\n"
        b"# Welcome\n\nYour first week starts with a laptop setup.\n\n## Accounts\n\nIT creates them.\n"
    )
    doc = MarkdownParser().parse(source, Path("onboarding.md"))
    assert doc.title == "Onboarding Guide"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Welcome", "Your first week starts with a laptop setup."),
        ("Welcome > Accounts", "IT creates them."),
    ]
    assert doc.meta["author"] == "Ada, Grace"
    assert doc.meta["created"] == "2024-01-15"
    assert doc.meta["modified"] == "2024-02-01T08:00:00+00:00"


def test_a_leading_rule_that_is_not_front_matter_stays_text() -> None:
    doc = MarkdownParser().parse(b"---\n- first point\n- second point\n\n---\nMore text.\n", Path("r.md"))
    assert doc.sections[0].text == "---\n- first point\n- second point\n\n---\nMore text."
    assert "author" not in doc.meta


def test_text_title_is_the_first_short_line() -> None:
    doc = TextParser().parse(b"Code of Conduct\n\nBe kind to each other.\n", Path("coc.txt"))
    assert doc.title == "Code of Conduct"
    assert TextParser().parse(b"x" * 200, Path("long.txt")).title == "long"


# ---- CSV -----------------------------------------------------------------------------------------------------------


def test_csv_rows_become_sections_with_field_value_text() -> None:
    data = (
        b"name;team;office;start\n"
        b"Ada Lovelace;Research;Berlin;2024-01-02\n"
        b"Grace Hopper;;Oslo;2023-05-01\n"
        b"\n"
        b'"Linus\nTorvalds";Kernel;"Portland; OR";2022\n'
    )
    doc = CsvParser().parse(data, Path("people.csv"))
    assert doc.title == "people"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("row 2", "name: Ada Lovelace; team: Research; office: Berlin; start: 2024-01-02"),
        ("row 3", "name: Grace Hopper; office: Oslo; start: 2023-05-01"),
        ("row 6", "name: Linus\nTorvalds; team: Kernel; office: Portland; OR; start: 2022"),
    ]
    assert doc.sections[0].meta == {
        "field.name": "Ada Lovelace",
        "field.team": "Research",
        "field.office": "Berlin",
        "field.start": "2024-01-02",
    }


@pytest.mark.parametrize(
    ("data", "delimiter_word"),
    [
        (b"city,limit\nBerlin,150\n", "Berlin"),
        (b"city\tlimit\nBerlin\t150\n", "Berlin"),
        (b"city|limit\nOslo|1\n", "Oslo"),
    ],
)
def test_csv_delimiters_are_sniffed(data: bytes, delimiter_word: str) -> None:
    doc = CsvParser().parse(data, Path("limits.csv"))
    assert doc.sections[0].text.startswith(f"city: {delimiter_word}; limit: ")


def test_csv_rows_beyond_the_cap_are_not_read_and_the_document_says_so() -> None:
    data = b"n\n" + b"".join(b"%d\n" % i for i in range(10))
    doc = CsvParser(max_rows=3).parse(data, Path("n.csv"))
    assert [s.text for s in doc.sections] == ["n: 0", "n: 1", "n: 2"]
    assert doc.meta["truncated"] == "only the first 3 rows were read"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no text"),
        (b"a,b\n1,2,3\n", "row 2 has 3 fields but the header has 2"),
        (b"a,a\n1,2\n", "the header row names a column twice: a"),
        (b",\n1,2\n", "the first row must be a header row"),
        (b"a,,c\n1,2,3\n", "the header row has no name for column 2"),
        (b'a,b\n"1,2\n', "broken CSV at line 2: unexpected end of data"),
        (b"name\nJos\xe9\n", "not UTF-8"),
        (b"name,team\n", "the CSV has no rows"),
    ],
)
def test_broken_csv_files_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=re.escape(message)):
        CsvParser().parse(data, Path("broken.csv"))


# ---- JSON ----------------------------------------------------------------------------------------------------------


def test_json_records_are_flattened_into_sections() -> None:
    data = json.dumps(
        {
            "total": 2,
            "items": [
                {
                    "name": "Ada",
                    "team": {"name": "Research", "size": 4},
                    "tags": ["ml", "ops"],
                    "remote": True,
                    "manager": None,
                },
                {"name": "Grace", "roles": [{"title": "Admiral"}, {"title": "Teacher"}], "score": 9.5},
            ],
        }
    ).encode()
    doc = JsonParser().parse(data, Path("people.json"))
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("record 1", "name: Ada; team.name: Research; team.size: 4; tags: ml, ops; remote: true"),
        ("record 2", "name: Grace; roles.0.title: Admiral; roles.1.title: Teacher; score: 9.5"),
    ]
    assert doc.sections[0].meta == {
        "field.name": "Ada",
        "field.team.name": "Research",
        "field.team.size": 4,
        "field.tags": "ml, ops",
        "field.remote": True,
    }


def test_json_top_level_lists_single_objects_and_json_lines() -> None:
    assert [s.text for s in JsonParser().parse(b'["First note.", "Second note."]', Path("n.json")).sections] == [
        "First note.",
        "Second note.",
    ]
    single = JsonParser().parse(b'{"question": "How many PTO days?", "answer": "25"}', Path("faq.json"))
    assert [s.text for s in single.sections] == ["question: How many PTO days?; answer: 25"]
    lines = JsonParser().parse(b'{"q": "a"}\n\n{"q": "b"}\n', Path("faq.jsonl"))
    assert [(s.heading, s.text) for s in lines.sections] == [("line 1", "q: a"), ("line 3", "q: b")]
    capped = JsonParser(max_records=1).parse(b"[1, 2, 3]", Path("n.json"))
    assert [s.text for s in capped.sections] == ["1"]
    assert capped.meta["truncated"] == "only the first 1 records were read"


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (b'{"a": 1,\n  "b": }', "x.json", "invalid JSON at line 2, column 8: Expecting value"),
        (b"[1, 2", "x.json", "invalid JSON at line 1, column 6: Expecting ',' delimiter"),
        (b'{"a": 1}\n{"a": \n', "x.jsonl", "invalid JSON at line 2, column 7: Expecting value"),
        (b'{"a": [{"x": 1}], "b": [{"y": 2}]}', "x.json", "the JSON object has 2 lists of records (a, b)"),
        (b'"just a string"', "x.json", "the JSON holds a single str, not records"),
        (b"[" * 100_000 + b"]" * 100_000, "x.json", "invalid JSON: nested too deeply"),
        (b"   ", "x.json", "no text"),
        (b'[{}, {"a": null}]', "x.json", "the JSON has no records with values"),
        (b"\xff\xfe{}", "x.json", "not UTF-8"),
    ],
)
def test_broken_json_files_are_refused_with_the_reason(data: bytes, path: str, message: str) -> None:
    with pytest.raises(ParseError, match=re.escape(message)):
        JsonParser().parse(data, Path(path))


def test_record_fields_cannot_overwrite_the_metadata_ingestion_sets() -> None:
    doc = CsvParser().parse(b"source,title,language,team\nhttp://evil.example,Fake,xx,Ops\n", Path("t.csv"))
    assert doc.sections[0].meta == {
        "field.source": "http://evil.example",
        "field.title": "Fake",
        "field.language": "xx",
        "field.team": "Ops",
    }


def test_the_entry_points_in_pyproject_name_the_built_in_parsers() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["llmops.parsers"]
    loaded = {name: EntryPoint(name, value, "llmops.parsers").load() for name, value in declared.items()}
    assert {name: factory().name for name, factory in loaded.items()} == {name: name for name in declared}
    assert set(loaded.values()) == {type(parser) for parser in default_parsers()}
