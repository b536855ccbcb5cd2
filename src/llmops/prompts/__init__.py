"""Prompt registry: immutable versions, labels, and sandboxed templates."""

from llmops.prompts._defaults import DEFAULT_RAG_PROMPT, DEFAULT_RAG_PROMPT_NAME
from llmops.prompts._registry import PromptNotFoundError, PromptRegistry, PromptVersion
from llmops.prompts._template import PromptTemplateError, TemplateRenderer

__all__ = [
    "DEFAULT_RAG_PROMPT",
    "DEFAULT_RAG_PROMPT_NAME",
    "PromptNotFoundError",
    "PromptRegistry",
    "PromptTemplateError",
    "PromptVersion",
    "TemplateRenderer",
]
