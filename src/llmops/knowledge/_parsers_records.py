"""Parsers for record formats: CSV rows and JSON / JSON Lines records, each record one section.

A record becomes text that reads as field-value pairs (``name: Ada; team: Research``), because that is what both an
embedding model and a keyword index match a question against; its scalar fields are also kept as section metadata
so that a filter can select records. Those keys are prefixed with ``field.`` (``field.team``), so that a column named
``source`` or ``title`` can never overwrite the metadata ingestion sets on every chunk.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from llmops.knowledge._parsing import ParsedDocument, ParseError, RecordValue, Section, build_document, decode_utf8

__all__ = ["FIELD_PREFIX", "CsvParser", "JsonParser", "flatten_record"]

MAX_RECORDS = 100_000
_MAX_FIELDS = 200  # per record: beyond this a "record" is a data dump, not a document
_MAX_DEPTH = 12
_META_VALUE_CHARS = 200  # longer values are text to read, not values to filter on
FIELD_PREFIX = "field."
_DELIMITERS = ",;\t|"


class CsvParser:
    """A CSV file with a header row: each row is a section headed ``row N`` (the header is row 1, as a spreadsheet
    shows it) with text ``column: value; column: value``. The delimiter (``, ; tab |``) is sniffed.

    Rows after ``max_rows`` are not read, and the document's ``truncated`` metadata says so.
    """

    name = "csv"
    version = "1"
    suffixes: tuple[str, ...] = (".csv", ".tsv")

    def __init__(self, *, max_rows: int = MAX_RECORDS) -> None:
        self.max_rows = max_rows

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        text = decode_utf8(data)
        if not text.strip():
            raise ParseError("the file has no text")
        delimiter = "\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(text)
        reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, strict=True)
        try:
            header = [" ".join(cell.split()) for cell in next(reader)]
            _check_header(header)
            sections: list[Section] = []
            truncated = False
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(sections) >= self.max_rows:
                    truncated = True
                    break
                number = reader.line_num  # the record's last line: the same as its row number unless a cell spans lines
                if len(row) > len(header):
                    raise ParseError(f"row {number} has {len(row)} fields but the header has {len(header)}")
                pairs: list[tuple[str, RecordValue]] = [
                    (name, value.strip()) for name, value in zip(header, row, strict=False) if value.strip()
                ]
                sections.append(_record_section(f"row {number}", pairs))
        except csv.Error as exc:
            raise ParseError(f"broken CSV at line {reader.line_num}: {exc}") from exc
        meta = {"truncated": f"only the first {self.max_rows} rows were read" if truncated else None}
        return build_document(self, title=path.stem, sections=sections, meta=meta, empty_message="the CSV has no rows")


def _sniff_delimiter(text: str) -> str:
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        # The sniffer wants rows that agree; a header line alone still shows which delimiter separates the columns.
        first = text.splitlines()[0]
        counts = {d: first.count(d) for d in _DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def _check_header(header: list[str]) -> None:
    if not any(header):
        raise ParseError("the first row must be a header row naming the columns, and it is empty")
    missing = [str(i + 1) for i, name in enumerate(header) if not name]
    if missing:
        raise ParseError(f"the header row has no name for column {', '.join(missing)}")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ParseError(f"the header row names a column twice: {', '.join(duplicates)}")


class JsonParser:
    """JSON and JSON Lines: each record is a section headed ``record N``, nested fields flattened as ``a.b: value``.

    A JSON file holds a list of records, an object with exactly one list of records (``{"items": [...], "total":
    3}``), or one object (one record). A JSON Lines file (``.jsonl``, ``.ndjson``) holds one record per line. Records
    after ``max_records`` are not read, and the document's ``truncated`` metadata says so.
    """

    name = "json"
    version = "1"
    suffixes: tuple[str, ...] = (".json", ".jsonl", ".ndjson")

    def __init__(self, *, max_records: int = MAX_RECORDS) -> None:
        self.max_records = max_records

    def parse(self, data: bytes, path: Path) -> ParsedDocument:
        text = decode_utf8(data)
        if not text.strip():
            raise ParseError("the file has no text")
        lines = path.suffix.lower() in (".jsonl", ".ndjson")
        records = _json_lines(text) if lines else _json_records(text)
        sections: list[Section] = []
        truncated = False
        for number, record in records:
            if len(sections) >= self.max_records:
                truncated = True
                break
            sections.append(_record_section(f"{'line' if lines else 'record'} {number}", flatten_record(record)))
        meta = {"truncated": f"only the first {self.max_records} records were read" if truncated else None}
        return build_document(
            self, title=path.stem, sections=sections, meta=meta, empty_message="the JSON has no records with values"
        )


def _json_error(exc: json.JSONDecodeError, line: int | None = None) -> ParseError:
    where = f"line {line}, column {exc.colno}" if line is not None else f"line {exc.lineno}, column {exc.colno}"
    return ParseError(f"invalid JSON at {where}: {exc.msg}")


def _json_lines(text: str) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, line=number) from exc


def _json_records(text: str) -> Iterator[tuple[int, object]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from exc
    except RecursionError as exc:
        raise ParseError("invalid JSON: nested too deeply") from exc
    if isinstance(value, dict):
        lists = [
            key for key, item in value.items() if isinstance(item, list) and any(isinstance(r, dict) for r in item)
        ]
        if len(lists) > 1:
            raise ParseError(
                f"the JSON object has {len(lists)} lists of records ({', '.join(lists[:5])}); "
                "expected a list of records, or an object with one"
            )
        value = value[lists[0]] if lists else [value]
    if not isinstance(value, list):
        raise ParseError(f"the JSON holds a single {type(value).__name__}, not records")
    yield from enumerate(value, start=1)


def flatten_record(record: object) -> list[tuple[str, RecordValue]]:
    """A record's leaf values as ``(dotted.path, value)`` pairs in document order; null and empty values dropped.

    >>> flatten_record({"name": "Ada", "team": {"name": "Research", "size": 4}, "tags": ["ml", "ops"]})
    [('name', 'Ada'), ('team.name', 'Research'), ('team.size', 4), ('tags', 'ml, ops')]
    """
    pairs: list[tuple[str, RecordValue]] = []
    stack: list[tuple[str, object, int]] = [("", record, 0)]
    while stack and len(pairs) < _MAX_FIELDS:
        prefix, value, depth = stack.pop()
        if isinstance(value, dict) and depth < _MAX_DEPTH:
            stack.extend(
                (f"{prefix}.{key}" if prefix else str(key), item, depth + 1) for key, item in reversed(value.items())
            )
        elif isinstance(value, list) and depth < _MAX_DEPTH:
            if all(_is_scalar(item) for item in value):
                joined = ", ".join(_scalar_text(item) for item in value if item is not None and item != "")
                if joined:
                    pairs.append((prefix, joined))
            else:
                stack.extend(
                    (f"{prefix}.{i}" if prefix else str(i), item, depth + 1)
                    for i, item in reversed(list(enumerate(value)))
                )
        elif isinstance(value, str):
            if value.strip():
                pairs.append((prefix, " ".join(value.split())))
        elif isinstance(value, bool | int | float):
            pairs.append((prefix, value))
        elif value is not None:  # a container nested deeper than _MAX_DEPTH: kept as its JSON text
            pairs.append((prefix, json.dumps(value, ensure_ascii=False)[:1000]))
    return pairs


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _record_section(heading: str, pairs: list[tuple[str, RecordValue]]) -> Section:
    # A bare scalar record (a list of strings) has the empty path: its text is just the value.
    text = "; ".join(f"{key}: {_scalar_text(value)}" if key else _scalar_text(value) for key, value in pairs)
    meta = {
        FIELD_PREFIX + key: value
        for key, value in pairs
        if key and (not isinstance(value, str) or len(value) <= _META_VALUE_CHARS)
    }
    return Section(text=text, heading=heading, meta=meta)
