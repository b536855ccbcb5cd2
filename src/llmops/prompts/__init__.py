"""Prompt registry: immutable versions, stages, labels per environment, approvals, experiments, prompt files."""

from llmops.prompts._approvals import ApprovalRequiredError, Approvals, ChangeRequest, Policy, ReviewRefusedError
from llmops.prompts._client import PromptClient
from llmops.prompts._defaults import DEFAULT_RAG_PROMPT, DEFAULT_RAG_PROMPT_NAME, DEFAULT_RAG_VARIABLES
from llmops.prompts._experiments import METRIC_DIRECTIONS, Experiment, Experiments, ExperimentSettings
from llmops.prompts._files import PushReport, pull_prompts, push_prompts
from llmops.prompts._model import ALLOWED_STAGE_MOVES, STAGES, ModelParams, PromptSpec, PromptVersion
from llmops.prompts._registry import HistoryEntry, PromptNotFoundError, PromptRegistry, VersionInfo
from llmops.prompts._stats import Comparison, compare
from llmops.prompts._template import PromptTemplateError, TemplateRenderer

__all__ = [
    "ALLOWED_STAGE_MOVES",
    "DEFAULT_RAG_PROMPT",
    "DEFAULT_RAG_PROMPT_NAME",
    "DEFAULT_RAG_VARIABLES",
    "METRIC_DIRECTIONS",
    "STAGES",
    "ApprovalRequiredError",
    "Approvals",
    "ChangeRequest",
    "Comparison",
    "Experiment",
    "ExperimentSettings",
    "Experiments",
    "HistoryEntry",
    "ModelParams",
    "Policy",
    "PromptClient",
    "PromptNotFoundError",
    "PromptRegistry",
    "PromptSpec",
    "PromptTemplateError",
    "PromptVersion",
    "PushReport",
    "ReviewRefusedError",
    "TemplateRenderer",
    "VersionInfo",
    "compare",
    "pull_prompts",
    "push_prompts",
]
