"""RAG: the request pipeline that joins knowledge, prompts, guardrails and the gateway, with citations."""

from llmops.rag._guarding import GuardedGateway, GuardrailStop
from llmops.rag._pipeline import ABSTAIN_ANSWER, AnswerHook, Citation, RagAnswer, RagPipeline, new_request_id

__all__ = [
    "ABSTAIN_ANSWER",
    "AnswerHook",
    "Citation",
    "GuardedGateway",
    "GuardrailStop",
    "RagAnswer",
    "RagPipeline",
    "new_request_id",
]
