"""Evaluation: measure retrieval and answers against labelled datasets."""

from llmops.evaluation._retrieval import (
    QuerySetError,
    RelevantPassage,
    RetrievalQuery,
    RetrievalReport,
    evaluate_retrieval,
    load_query_set,
)

__all__ = [
    "QuerySetError",
    "RelevantPassage",
    "RetrievalQuery",
    "RetrievalReport",
    "evaluate_retrieval",
    "load_query_set",
]
