"""``llmops explain`` and ``llmops replay``: why one answer was what it was, and the same request asked again."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from llmops.cli._common import User, actor, console, open_platform
from llmops.governance import render_markdown, render_replay_markdown

__all__ = ["explain", "replay"]

RequestId = Annotated[str, typer.Argument(help="the request id (or trace id) of the answer")]
AsJson = Annotated[bool, typer.Option("--json", help="print the whole result as JSON")]


def explain(request_id: RequestId, as_json: AsJson = False) -> None:
    """Explain one answer: prompt version and who approved it, retrieved chunks and scores, index snapshot, guardrail
    decisions, model and parameters, tokens, cost, evaluation scores and feedback."""
    with open_platform() as platform:
        explanation = platform.lineage.explain(request_id)
    if as_json:
        console.print_json(json.dumps(explanation, default=str))
        return
    console.print(render_markdown(explanation), markup=False, highlight=False, end="")


def replay(request_id: RequestId, as_json: AsJson = False, user: User = None) -> None:
    """Ask a RAG request's question again with the same prompt version, index snapshot, model, parameters and
    guardrail policy, and show what changed."""
    with open_platform() as platform:

        async def run() -> dict[str, Any]:
            try:
                return await platform.replay(request_id, by=actor(user))
            finally:
                await platform.gateway.aclose()

        result = asyncio.run(run())
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    console.print(render_replay_markdown(result), markup=False, highlight=False, end="")
