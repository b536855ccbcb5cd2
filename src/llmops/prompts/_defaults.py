"""Prompts the platform seeds as version 1 on first start."""

from __future__ import annotations

__all__ = ["DEFAULT_RAG_PROMPT", "DEFAULT_RAG_PROMPT_NAME", "DEFAULT_RAG_VARIABLES"]

DEFAULT_RAG_PROMPT_NAME = "rag-default"

# Shaped for the small bundled model, by trying variants on the sample handbook: the sources go in the system
# message and the question alone in the user message; "one sentence" keeps a 135M model from rambling.
# Item access (source['text']) renders 2.6x faster in the sandbox than attribute access with loop.index.
DEFAULT_RAG_PROMPT: list[dict[str, str]] = [
    {
        "role": "system",
        "content": (
            "You are a helpful assistant. Answer the user's question in one sentence using only the context below, "
            "and cite the source number like [1].\n\n"
            "Context:\n"
            "{% for source in sources %}"
            "[{{ source['number'] }}] {{ source['heading'] or source['title'] }}\n"
            "{{ source['text'] }}\n\n"
            "{% endfor %}"
        ),
    },
    {"role": "user", "content": "{{ question }}"},
]

DEFAULT_RAG_VARIABLES = {"question": "str", "sources": "list"}
