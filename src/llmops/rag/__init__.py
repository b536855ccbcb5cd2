"""RAG: the request pipeline that joins knowledge, prompts, guardrails and the gateway, with citations, AI
disclosure and human review of high-stakes answers."""

from llmops.rag._disclosure import AIDisclosure
from llmops.rag._guarding import GuardedGateway, GuardrailStop
from llmops.rag._pipeline import (
    ABSTAIN_ANSWER,
    AnswerHook,
    AnswerStatus,
    Citation,
    RagAnswer,
    RagPipeline,
    new_request_id,
)
from llmops.rag._review import PENDING_REVIEW_ANSWER, AnswerReviews, HeldAnswer, hold_reasons, may_hold

__all__ = [
    "ABSTAIN_ANSWER",
    "PENDING_REVIEW_ANSWER",
    "AIDisclosure",
    "AnswerHook",
    "AnswerReviews",
    "AnswerStatus",
    "Citation",
    "GuardedGateway",
    "GuardrailStop",
    "HeldAnswer",
    "RagAnswer",
    "RagPipeline",
    "hold_reasons",
    "may_hold",
    "new_request_id",
]
