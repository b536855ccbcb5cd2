"""Examples from files: JSONL (one object per line), CSV (one row per example), YAML (a list, or ``examples:``).

Every format maps to the same fields (see `Example`); a malformed file is refused whole, with the line or row and
what is wrong, so a half-read dataset never becomes a version. CSV cells hold lists as ``a | b`` (facts, sources,
tags) and columns that are not example fields become metadata.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.evaluation._retrieval import RelevantPassage
from llmops.evaluation._types import Example

__all__ = ["MAX_DATASET_BYTES", "DatasetFileError", "dataset_hash", "examples_from_records", "load_examples"]

#: Files larger than this are refused before parsing (a golden set is thousands of items, not gigabytes).
MAX_DATASET_BYTES = 64 * 1024 * 1024
_LIST_SEPARATOR = "|"


class DatasetFileError(ValueError):
    """The dataset file is malformed; the message names the file, the line or row, and the problem."""


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    contains: str | None = None


class _ExampleSpec(BaseModel):
    """What one record may hold. ``question`` is accepted for ``input`` and ``answer``/``reference`` for
    ``expected``, the names other tools' datasets use."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = Field(default=None, max_length=200)
    input: str = Field(min_length=1, max_length=100_000)
    expected: str | None = Field(default=None, max_length=100_000)
    facts: list[str] = Field(default_factory=list)
    sources: list[_Source] = Field(default_factory=list)
    answerable: bool = True
    assertions: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"source": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("assertions")
    @classmethod
    def _assertions(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for assertion in value:
            if not isinstance(assertion.get("type"), str):
                raise ValueError("each assertion needs a 'type' (contains, not_contains, regex, json_schema, ...)")
        return value


_ALIASES = {"question": "input", "answer": "expected", "reference": "expected", "ground_truth": "expected"}


def load_examples(path: Path) -> list[Example]:
    """Read a dataset file (by extension: .jsonl/.json, .csv, .yaml/.yml); raises `DatasetFileError`."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DatasetFileError(f"cannot read the dataset {path}: {exc.strerror or exc}") from exc
    if size > MAX_DATASET_BYTES:
        raise DatasetFileError(f"{path} is {size:,} bytes; datasets are limited to {MAX_DATASET_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"cannot read the dataset {path} as UTF-8 text: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        records = list(_jsonl(path, text))
    elif suffix == ".json":
        records = _listed(path, _parse_json(path, text), "a JSON list of examples")
    elif suffix == ".csv":
        records = list(_csv(path, text))
    elif suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DatasetFileError(f"{path}: not valid YAML: {exc}") from exc
        if isinstance(data, dict) and "examples" in data:
            data = data["examples"]
        records = _listed(path, data, "a YAML list of examples (or a mapping with 'examples:')")
    else:
        raise DatasetFileError(f"{path}: unknown dataset format {suffix or '(none)'}; use .jsonl, .json, .csv or .yaml")
    return examples_from_records(records)


def examples_from_records(records: Iterable[tuple[str, Any]]) -> list[Example]:
    """Validate ``(where, record)`` pairs into examples; ids are given or derived from the content. Duplicate ids
    are refused with both places named."""
    examples: list[Example] = []
    seen: dict[str, str] = {}
    for where, record in records:
        if not isinstance(record, dict):
            raise DatasetFileError(f"{where}: an example must be an object, not {type(record).__name__}")
        data = {_ALIASES.get(k, k): v for k, v in record.items()}
        try:
            spec = _ExampleSpec.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
            raise DatasetFileError(f"{where}: {problems}") from None
        example = Example(
            id="",
            input=spec.input,
            expected=spec.expected or None,
            facts=tuple(f for f in spec.facts if f.strip()),
            sources=tuple(RelevantPassage(s.source, s.contains or None) for s in spec.sources),
            answerable=spec.answerable,
            assertions=tuple(spec.assertions),
            tags=tuple(spec.tags),
            metadata=spec.metadata,
        )
        example_id = spec.id or "ex_" + example.content_hash()[:12]
        if example_id in seen:
            raise DatasetFileError(f"{where}: duplicate example {example_id!r} (first at {seen[example_id]})")
        seen[example_id] = where
        examples.append(replace(example, id=example_id))
    if not examples:
        raise DatasetFileError("the dataset holds no examples")
    return examples


def dataset_hash(examples: Iterable[Example]) -> str:
    """Hash of a version's content: the examples in order, ids included."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(orjson.dumps(example.to_dict(), option=orjson.OPT_SORT_KEYS))
        digest.update(b"\n")
    return digest.hexdigest()


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetFileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def _listed(path: Path, data: Any, what: str) -> list[tuple[str, Any]]:
    if not isinstance(data, list):
        raise DatasetFileError(f"{path}: expected {what}")
    return [(f"{path} item {n}", record) for n, record in enumerate(data, 1)]


def _jsonl(path: Path, text: str) -> Iterable[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFileError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from exc


_CSV_LISTS = ("facts", "sources", "tags")
_CSV_FIELDS = {"id", "input", "question", "expected", "answer", "reference", "ground_truth", "answerable", *_CSV_LISTS}


def _csv(path: Path, text: str) -> Iterable[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not ({"input", "question"} & set(reader.fieldnames)):
        raise DatasetFileError(f"{path}: the header must name an 'input' (or 'question') column")
    for row in reader:
        where = f"{path} row {reader.line_num}"
        if None in row:
            raise DatasetFileError(f"{where}: more cells than header columns")
        record: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for key, value in row.items():
            value = (value or "").strip()
            if key in _CSV_LISTS:
                record[key] = [v.strip() for v in value.split(_LIST_SEPARATOR) if v.strip()]
            elif key == "answerable":
                if value.lower() not in ("", "true", "false", "yes", "no", "1", "0"):
                    raise DatasetFileError(f"{where}: answerable must be true or false, not {value!r}")
                record[key] = value.lower() not in ("false", "no", "0")
            elif key in _CSV_FIELDS:
                if value:
                    record[key] = value
            elif value:
                metadata[key] = value
        if metadata:
            record["metadata"] = metadata
        yield where, record
