"""Synthetic examples: a model reads a chunk and writes a question it answers, the answer and the key fact.

Each generated example names its chunk's document as the expected source and the fact as a snippet that must be in
the retrieved chunk, so the same example scores retrieval and answers. With the bundled 135M model the questions
are weak (it copies sentences, asks vague questions); point ``model`` at a stronger provider. Generated examples are
never written into a version directly: they go to the review queue (`DatasetRegistry.add_drafts`) and a person
accepts, edits or rejects each one.

An output that does not hold a usable question (no JSON object, an empty or non-question field, an answer that the
chunk does not contain at all) is dropped and counted, never guessed at.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from llmops.evaluation._retrieval import RelevantPassage
from llmops.evaluation._types import Example
from llmops.evaluation._verdicts import json_objects
from llmops.gateway import ChatRequest, Gateway, ProviderError
from llmops.knowledge import RetrievedChunk

__all__ = ["SynthesisReport", "synthesize_examples"]

_SYSTEM = (
    "You write evaluation questions for a document search assistant. Read the passage and write one question a "
    "user could ask that the passage answers, the short answer, and the exact phrase from the passage that "
    'proves it. Reply with JSON only: {"question": "...", "answer": "...", "evidence": "..."}'
)
_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "answer": {"type": "string"},
        "evidence": {"type": "string"},
    },
    "required": ["question", "answer", "evidence"],
}


@dataclass
class SynthesisReport:
    examples: list[Example]
    attempted: int
    dropped: dict[str, int]


def _example(chunk: RetrievedChunk, question: str, answer: str, evidence: str, model: str) -> Example:
    """The evidence becomes the passage snippet only when it is really in the chunk (models paraphrase)."""
    snippet = evidence if evidence and evidence.lower() in chunk.text.lower() else None
    digest = hashlib.sha256(f"{chunk.chunk_id}/{question}".encode()).hexdigest()[:12]
    return Example(
        id=f"syn_{digest}",
        input=question,
        expected=answer,
        facts=(answer,) if answer else (),
        sources=(RelevantPassage(chunk.source.rsplit("/", 1)[-1] or chunk.source, snippet),),
        tags=("synthetic",),
        metadata={"chunk_id": chunk.chunk_id, "generated_by": model},
    )


async def synthesize_examples(
    chunks: Sequence[RetrievedChunk], gateway: Gateway, model: str, *, concurrency: int = 4, max_tokens: int = 160
) -> SynthesisReport:
    """One candidate example per chunk (those the model answered usably)."""
    semaphore = asyncio.Semaphore(concurrency)
    dropped: dict[str, int] = {}
    out: list[Example | None] = [None] * len(chunks)

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    async def one(index: int, chunk: RetrievedChunk) -> None:
        request = ChatRequest(
            model=model,
            messages=[
                {"role": "system", "content": _SYSTEM},
                {"role": "user", "content": f"Passage:\n{chunk.text}"},
            ],
            max_tokens=max_tokens,
            temperature=0.0,
            response_format={"type": "json_schema", "json_schema": {"name": "example", "schema": _SCHEMA}},
            user="llmops-eval-synth",
        )
        async with semaphore:
            try:
                result = await gateway.complete(request)
            except ProviderError as exc:
                drop(f"provider error: {exc}"[:120])
                return
        found = next(iter(json_objects(result.text)), None)
        if found is None:
            drop("no JSON object")
            return
        question = str(found.get("question") or "").strip()
        answer = str(found.get("answer") or "").strip()
        evidence = str(found.get("evidence") or "").strip()
        if len(question) < 8 or not question.endswith("?"):
            drop("not a question")
            return
        out[index] = _example(chunk, question, answer, evidence, model)

    await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks)))
    examples = [e for e in out if e is not None]
    unique = list({e.id: e for e in examples}.values())
    return SynthesisReport(unique, len(chunks), dropped)
