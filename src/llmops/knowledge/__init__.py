"""Knowledge: parse documents, chunk them, embed the chunks, index and search them."""

from llmops.knowledge._base import IngestReport, KnowledgeBase, RetrievedChunk
from llmops.knowledge._chunker import Chunk, Chunker, RecursiveTokenChunker
from llmops.knowledge._embedder import Embedder, MiniLMEmbedder, TokenCounter
from llmops.knowledge._index import ExactVectorIndex, VectorIndex
from llmops.knowledge._parsers import (
    HtmlParser,
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

__all__ = [
    "Chunk",
    "Chunker",
    "Embedder",
    "ExactVectorIndex",
    "HtmlParser",
    "IngestReport",
    "KnowledgeBase",
    "MarkdownParser",
    "MiniLMEmbedder",
    "ParseError",
    "ParsedDocument",
    "Parser",
    "PdfParser",
    "RecursiveTokenChunker",
    "RetrievedChunk",
    "Section",
    "TextParser",
    "TokenCounter",
    "VectorIndex",
    "clean_text",
    "default_parsers",
]
