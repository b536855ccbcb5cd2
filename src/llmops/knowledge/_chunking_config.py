"""Chunking configuration as a versioned artifact: validated, content-addressed, and turned into a chunker.

An index snapshot records the ``config_id`` of the configuration that cut its chunks, so two snapshots can be compared
("were these chunked the same way?") and a change of configuration is visible as a change of id. The id is a hash of
the canonical JSON of the configuration, so equal configurations get equal ids on every machine and in every process.

>>> config = ChunkingConfig(strategy="sentence", size=200, overlap=32)
>>> config.config_id  # doctest: +SKIP
'3c2f0b6e1a9d4e27'
>>> chunker = build_chunker(config, embedder)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmops.knowledge._chunker import Chunker, RecursiveTokenChunker
from llmops.knowledge._chunkers import FixedTokenChunker, SemanticChunker, SentenceChunker
from llmops.knowledge._embedder import Embedder

__all__ = ["ChunkingConfig", "ChunkingStrategy", "build_chunker"]

ChunkingStrategy = Literal["fixed", "sentence", "recursive", "semantic"]


class ChunkingConfig(BaseModel):
    """How documents are cut into chunks. Sizes are in tokens of the embedding model's tokenizer.

    ``semantic_percentile`` and ``semantic_buffer`` apply to the ``semantic`` strategy only (and default to 95 and 1
    there, like LangChain's and LlamaIndex's semantic splitters); setting them for another strategy is an error
    rather than silently ignored, because the id would change for a setting that does nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: ChunkingStrategy = "recursive"
    size: int = Field(default=200, ge=1, description="largest chunk, in tokens of the embedding model")
    overlap: int = Field(default=32, ge=0, description="tokens repeated from the end of the chunk before")
    semantic_percentile: float | None = Field(
        default=None, ge=0.0, le=100.0, description="semantic: cut at gaps more distant than this percentile of all"
    )
    semantic_buffer: int | None = Field(
        default=None, ge=0, le=8, description="semantic: sentences on each side of a gap besides the nearest one"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ChunkingConfig:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        if self.strategy == "semantic":
            # Fill the defaults in, so the stored artifact (and its id) says what actually ran.
            if self.semantic_percentile is None:
                object.__setattr__(self, "semantic_percentile", 95.0)
            if self.semantic_buffer is None:
                object.__setattr__(self, "semantic_buffer", 1)
        else:
            extra = [n for n in ("semantic_percentile", "semantic_buffer") if getattr(self, n) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to the semantic strategy, not {self.strategy!r}")
        return self

    def canonical_json(self) -> str:
        """The configuration as JSON with sorted keys and no whitespace: what ``config_id`` hashes and what to store."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def config_id(self) -> str:
        """16 hex digits of the SHA-256 of `canonical_json`; stable across processes, machines and releases."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> ChunkingConfig:
        """Read a stored configuration back (from `canonical_json` or its parsed dict)."""
        if isinstance(data, dict):
            return cls.model_validate(data)
        return cls.model_validate_json(data)

    def check_fits(self, embedder: Embedder) -> None:
        """Refuse a size the embedding model would truncate: chunks longer than ``max_tokens`` lose their tail."""
        if self.size > embedder.max_tokens:
            raise ValueError(
                f"chunk size ({self.size} tokens) is larger than what {embedder.name} embeds "
                f"({embedder.max_tokens} tokens); the rest of each chunk would be cut off: use size <= "
                f"{embedder.max_tokens}"
            )


def build_chunker(config: ChunkingConfig, embedder: Embedder) -> Chunker:
    """The chunker ``config`` describes, counting tokens with ``embedder``'s tokenizer (and embedding sentences with
    it for the semantic strategy). Raises ValueError if the size does not fit the embedding model."""
    config.check_fits(embedder)
    if config.strategy == "fixed":
        return FixedTokenChunker(embedder, size=config.size, overlap=config.overlap)
    if config.strategy == "sentence":
        return SentenceChunker(embedder, size=config.size, overlap=config.overlap)
    if config.strategy == "recursive":
        return RecursiveTokenChunker(embedder, size=config.size, overlap=config.overlap)
    assert config.semantic_percentile is not None and config.semantic_buffer is not None  # filled in by validation
    return SemanticChunker(
        embedder,
        size=config.size,
        overlap=config.overlap,
        percentile=config.semantic_percentile,
        buffer=config.semantic_buffer,
    )
