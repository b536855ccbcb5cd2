"""Turning one document's bytes into chunks (and optionally their vectors): the pure, picklable unit of ingestion.

`process_document` has no store and no index: the local ingestor calls it in-process and the Ray ingestor in remote
tasks, so both produce identical chunks from identical bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmops.knowledge._chunker import Chunker
from llmops.knowledge._embedder import Embedder
from llmops.knowledge._parsers import ParsedDocument, ParseError, Parser

__all__ = ["ProcessedChunk", "ProcessedDocument", "embedding_text", "parse_document", "process_document"]


@dataclass(frozen=True)
class ProcessedChunk:
    ordinal: int
    text: str
    token_count: int
    heading: str | None
    page: int | None
    start: int
    end: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProcessedDocument:
    title: str
    parser: str
    meta: dict[str, Any]
    text: str  # the whole cleaned text (near-duplicate detection)
    chunks: list[ProcessedChunk]
    vectors: npt.NDArray[np.float32] | None = None  # filled by an ingestor that embeds where it processes

    def embedding_texts(self) -> list[str]:
        return [embedding_text(self.title, chunk.heading, chunk.text) for chunk in self.chunks]


def embedding_text(title: str, heading: str | None, text: str) -> str:
    """What is embedded for a chunk: its title and heading give it context ("Expenses > Travel") its text may lack."""
    context = " > ".join(part for part in (title, heading) if part)
    return f"{context}\n{text}" if context else text


def parse_document(name: Path, data: bytes, parsers: Mapping[str, Parser]) -> ParsedDocument:
    parser = parsers.get(name.suffix.lower())
    if parser is None:
        raise ParseError(f"unsupported file type {name.suffix or '(none)'}")
    try:
        return parser.parse(data, name)
    except ParseError:
        raise
    except Exception as exc:  # a parser library failing in an unforeseen way is this document's error, not the run's
        raise ParseError(f"{parser.name} parser failed: {type(exc).__name__}: {exc}") from exc


def process_document(
    name: Path,
    data: bytes,
    parsers: Mapping[str, Parser],
    chunker: Chunker,
    embedder: Embedder | None = None,
) -> ProcessedDocument:
    """Parse, clean and chunk one document; embed its chunks too when ``embedder`` is given."""
    parsed = parse_document(name, data, parsers)
    chunks: list[ProcessedChunk] = []
    for section in parsed.sections:
        section_meta = dict(getattr(section, "meta", None) or {})
        for chunk in chunker.split(section.text):
            chunks.append(
                ProcessedChunk(
                    ordinal=len(chunks),
                    text=chunk.text,
                    token_count=chunk.token_count,
                    heading=section.heading,
                    page=section.page,
                    start=chunk.start,
                    end=chunk.end,
                    meta=section_meta,
                )
            )
    if not chunks:
        raise ParseError("no text to index after cleaning")
    document = ProcessedDocument(
        title=parsed.title,
        parser=parsed.parser,
        meta=dict(parsed.meta),
        text="\n".join(section.text for section in parsed.sections),
        chunks=chunks,
    )
    if embedder is not None:
        document.vectors = embedder.embed(document.embedding_texts()).astype(np.float32, copy=False)
    return document
