"""Knowledge: sources, parsing, chunking, embedding, versioned vector and keyword indexes, and retrieval."""

from llmops.knowledge._backends import open_indexes
from llmops.knowledge._base import EmbeddingModelMismatchError, KnowledgeBase
from llmops.knowledge._chunker import Chunk, Chunker, RecursiveTokenChunker
from llmops.knowledge._chunkers import FixedTokenChunker, SemanticChunker, SentenceChunker
from llmops.knowledge._chunking_config import ChunkingConfig, build_chunker
from llmops.knowledge._embedder import Embedder, MiniLMEmbedder, TokenCounter
from llmops.knowledge._embedding_cache import CachedEmbedder, EmbeddingCache, InMemoryEmbeddingCache
from llmops.knowledge._fetch import FetchError, apost_json, fetch_url
from llmops.knowledge._filters import FilterError, MetadataFilter
from llmops.knowledge._hnsw import HnswVectorIndex
from llmops.knowledge._index import ExactVectorIndex, KeywordIndex, VectorIndex
from llmops.knowledge._ingest import DocumentProcessor, IngestBusyError, IngestReport, LocalProcessor
from llmops.knowledge._openai_embedder import OpenAICompatibleEmbedder
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
    Section,
    TextParser,
    clean_text,
    default_parsers,
)
from llmops.knowledge._pgfts import PgKeywordIndex
from llmops.knowledge._pgvector import PgVectorIndex
from llmops.knowledge._rerank import HttpReranker, LlamaReranker, Reranker, RerankError
from llmops.knowledge._retrieval import RetrievalMode, RetrievedChunk
from llmops.knowledge._snapshots import SnapshotDiff, SnapshotError, SnapshotInfo
from llmops.knowledge._sources import SourceError
from llmops.knowledge._tantivy import TantivyKeywordIndex

__all__ = [
    "CachedEmbedder",
    "Chunk",
    "Chunker",
    "ChunkingConfig",
    "CsvParser",
    "DocumentProcessor",
    "DocxParser",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingModelMismatchError",
    "ExactVectorIndex",
    "FetchError",
    "FilterError",
    "FixedTokenChunker",
    "HnswVectorIndex",
    "HtmlParser",
    "HttpReranker",
    "InMemoryEmbeddingCache",
    "IngestBusyError",
    "IngestReport",
    "JsonParser",
    "KeywordIndex",
    "KnowledgeBase",
    "LlamaReranker",
    "LocalProcessor",
    "MarkdownParser",
    "MetadataFilter",
    "MiniLMEmbedder",
    "OpenAICompatibleEmbedder",
    "ParseError",
    "ParsedDocument",
    "Parser",
    "PdfParser",
    "PgKeywordIndex",
    "PgVectorIndex",
    "RecursiveTokenChunker",
    "RerankError",
    "Reranker",
    "RetrievalMode",
    "RetrievedChunk",
    "Section",
    "SemanticChunker",
    "SentenceChunker",
    "SnapshotDiff",
    "SnapshotError",
    "SnapshotInfo",
    "SourceError",
    "TantivyKeywordIndex",
    "TextParser",
    "TokenCounter",
    "VectorIndex",
    "apost_json",
    "build_chunker",
    "clean_text",
    "default_parsers",
    "fetch_url",
    "open_indexes",
]
