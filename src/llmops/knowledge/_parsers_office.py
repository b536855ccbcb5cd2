"""Parsers for page and office formats: PDF (PDFium's text layer) and DOCX (python-docx), both Apache/BSD/MIT."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.knowledge._parsing import (
    ParsedDocument,
    ParseError,
    Section,
    build_document,
    clean_text,
    iso_date,
    strip_page_furniture,
)

if TYPE_CHECKING:
    from docx.document import Document as DocxDocument
    from docx.table import Table
    from docx.text.paragraph import Paragraph

__all__ = ["DocxParser", "PdfParser", "check_zip_archive"]


class PdfParser:
    """The text layer of each page, through PDFium (pypdfium2); one section per page.

    Running headers, footers and page numbers are removed (`strip_page_furniture`); title, author and the creation
    and modification dates come from the PDF's info dictionary.
    """

    name = "pdf"
    version = "2"
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
            pages: list[str] = []
            for number in range(len(pdf)):
                page = pdf[number]
                textpage = page.get_textpage()
                pages.append(textpage.get_text_bounded())
                textpage.close()
                page.close()
            metadata = pdf.get_metadata_dict(skip_empty=True)
        except pdfium.PdfiumError as exc:
            raise ParseError(f"corrupt or unreadable PDF: {exc}") from exc
        finally:
            pdf.close()
        sections = [
            Section(text=clean_text(text), page=number)
            for number, text in enumerate(strip_page_furniture(pages), start=1)
        ]
        meta = {
            "author": metadata.get("Author"),
            "created": iso_date(metadata.get("CreationDate")),
            "modified": iso_date(metadata.get("ModDate")),
        }
        return build_document(
            self,
            title=metadata.get("Title") or path.stem,
            sections=sections,
            meta=meta,
            empty_message="the PDF has no text layer (scanned pages need OCR, which is not configured)",
        )


# A DOCX is a zip of XML: about 5-20× compression. Far beyond that, an entry is built to exhaust memory when inflated.
MAX_DOCX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
MAX_ZIP_RATIO = 100
MAX_ZIP_ENTRIES = 10_000
_RATIO_FLOOR_BYTES = 1024 * 1024  # tiny entries may compress absurdly well (a run of spaces) and still be harmless


def check_zip_archive(data: bytes, *, max_uncompressed_bytes: int, max_ratio: int = MAX_ZIP_RATIO) -> zipfile.ZipFile:
    """Open ``data`` as a zip archive after checking it is not a zip bomb; raises `ParseError` when it is.

    Checked from the central directory, before any entry is inflated: the number of entries, their total declared
    size and each entry's compression ratio. Declared sizes can lie, but `zipfile` stops inflating an entry at its
    declared size (and then fails its CRC check), so the declared total bounds what reading can allocate.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ParseError(f"not a zip archive ({exc})") from exc
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise ParseError(f"refused as a possible zip bomb: {len(entries)} entries (limit {MAX_ZIP_ENTRIES})")
    total = sum(entry.file_size for entry in entries)
    if total > max_uncompressed_bytes:
        raise ParseError(f"refused as a possible zip bomb: {total} bytes uncompressed (limit {max_uncompressed_bytes})")
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _RATIO_FLOOR_BYTES and ratio > max_ratio:
            raise ParseError(
                f"refused as a possible zip bomb: {entry.filename} inflates {ratio:.0f}× "
                f"({entry.compress_size} → {entry.file_size} bytes; limit {max_ratio}×)"
            )
    return archive


class DocxParser:
    """Word documents: heading styles give the section path, tables read as ``cell | cell`` rows.

    The archive is checked for zip bombs before python-docx opens it. Title, author and dates come from the core
    properties (the title falls back to the first paragraph styled Title, then to the file name). Page headers and
    footers are not read: they repeat on every page and carry no content.
    """

    name = "docx"
    version = "1"
    suffixes: tuple[str, ...] = (".docx",)

    def __init__(self, *, max_uncompressed_bytes: int = MAX_DOCX_UNCOMPRESSED_BYTES) -> None:
        self.max_uncompressed_bytes = max_uncompressed_bytes

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        if not data:
            raise ParseError("the file is empty")
        try:
            archive = check_zip_archive(data, max_uncompressed_bytes=self.max_uncompressed_bytes)
        except ParseError as exc:
            if str(exc).startswith("not a zip"):
                raise ParseError("not a DOCX file (a DOCX is a zip archive, this is not one)") from exc
            raise
        with archive:
            if "word/document.xml" not in archive.namelist():
                raise ParseError("not a DOCX file (the archive has no word/document.xml)")

        import docx
        from docx.opc.exceptions import OpcError

        try:
            # Parts such as the styles are read lazily, so a broken one surfaces while the body is read.
            return self._read(docx.Document(io.BytesIO(data)), path)
        except ParseError:
            raise
        # lxml's XMLSyntaxError is a SyntaxError; a part missing from the package is a KeyError.
        except (OpcError, SyntaxError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ParseError(f"corrupt or unreadable DOCX: {type(exc).__name__}: {exc}") from exc

    def _read(self, document: DocxDocument, path: Path) -> ParsedDocument:
        from docx.text.paragraph import Paragraph

        sections: list[Section] = []
        headings: list[tuple[int, str]] = []
        blocks: list[str] = []
        styled_title = ""
        styles = _StyleKinds()

        def end_section() -> None:
            text = clean_text("\n\n".join(blocks))
            blocks.clear()
            if text:
                sections.append(Section(text=text, heading=" > ".join(t for _, t in headings) or None))

        for block in document.iter_inner_content():
            if not isinstance(block, Paragraph):
                blocks.append(_table_text(block))
                continue
            text = block.text.strip()
            if not text:
                continue
            level, list_style = styles.of(block)
            if level == 0:
                styled_title = styled_title or text
                continue
            if level is None:
                numbered = block._p.pPr is not None and block._p.pPr.numPr is not None
                blocks.append(("- " + text) if list_style or numbered else text)
                continue
            end_section()
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, text))
        end_section()

        core = document.core_properties
        title = (core.title or "").strip() or styled_title or next((t for _, t in headings), "") or path.stem
        meta = {
            "author": (core.author or "").strip() or None,
            "created": iso_date(core.created),
            "modified": iso_date(core.modified),
        }
        return build_document(self, title=title, sections=sections, meta=meta)


class _StyleKinds:
    """What a paragraph style means here: its heading level and whether it is a list style, cached by style id.

    python-docx resolves ``paragraph.style`` by searching the styles part on every access (milliseconds each in a
    real document's 300 KB styles.xml), and a document uses a handful of styles for thousands of paragraphs.
    """

    def __init__(self) -> None:
        self._by_id: dict[str | None, tuple[int | None, bool]] = {}

    def of(self, paragraph: Paragraph) -> tuple[int | None, bool]:
        """(1-9 for "Heading N", 0 for "Title", None for body text; True for a "List …" style)."""
        style_id = paragraph._p.style
        kind = self._by_id.get(style_id)
        if kind is None:
            names = _style_names(paragraph)
            kind = _heading_level(names), bool(names) and names[0].startswith("list")
            self._by_id[style_id] = kind
        return kind


def _style_names(paragraph: Paragraph) -> list[str]:
    """The paragraph's style name and those it is based on: a custom "Chapter" style based on Heading 1 is one."""
    names: list[str] = []
    style = paragraph.style
    while style is not None and len(names) < 8:
        names.append((style.name or "").lower())
        style = style.base_style
    return names


def _heading_level(style_names: list[str]) -> int | None:
    for name in style_names:
        if name == "title":
            return 0
        if name.startswith("heading ") and name[8:].isdigit():
            return int(name[8:])
    return None


def _table_text(table: Table) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a merged cell is returned once per grid column it spans
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
