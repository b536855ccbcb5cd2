"""What an experiment runs each example through: a RAG app with overrides, or a gateway model with a prompt.

A target is resolved once, at the start of an experiment, to exact versions: the prompt version a label pointed at,
the index snapshot being served, the guardrail policy version, the model's provider and upstream id. The run uses
those pinned versions throughout (a label moving mid-run changes nothing), and their description is the
configuration hash that decides whether an earlier result can be reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace

from llmops._settings import RagConfig
from llmops.evaluation._config import TargetSpec
from llmops.evaluation._types import Example, RetrievedContext, Sample
from llmops.gateway import ChatRequest, Gateway
from llmops.guardrails import Guardrails
from llmops.knowledge import KnowledgeBase
from llmops.prompts import PromptRegistry, PromptVersion
from llmops.rag import RagPipeline, new_request_id

__all__ = ["ModelTarget", "RagTarget", "Target", "TargetDeps", "TargetError", "build_target"]


class TargetError(ValueError):
    """The target cannot be built: an unknown app, model, prompt version or policy; the message says which."""


class Target(Protocol):
    """Produces a sample for an example. ``resolved`` is the exact configuration (JSON-able) it runs."""

    resolved: dict[str, Any]

    async def run(self, example: Example) -> Sample:
        """Answer the example; failures become ``Sample.error``, never an exception."""
        ...


@dataclass
class TargetDeps:
    knowledge: KnowledgeBase
    prompts: PromptRegistry
    gateway: Gateway
    guardrails: Guardrails
    tracer: trace.Tracer
    rag_apps: dict[str, RagConfig]
    embedder_name: str
    environment: str


def build_target(spec: TargetSpec, deps: TargetDeps) -> Target:
    if spec.app is not None:
        return RagTarget.build(spec, deps)
    return ModelTarget.build(spec, deps)


def _pin_prompt(
    deps: TargetDeps, name: str, version: int | None, label: str | None, environment: str | None
) -> PromptVersion:
    try:
        if version is not None:
            return deps.prompts.get_version(name, version)
        return deps.prompts.get(name, label=label or "production", environment=environment or deps.environment)
    except LookupError as exc:
        raise TargetError(f"prompt {name!r}: {exc}") from exc


def _pin_policy(deps: TargetDeps, route: str, spec: str | None) -> str:
    """``name@version`` of the policy the route would use (or ``none``)."""
    try:
        resolved = deps.guardrails.policy_version(route, policy=spec)
    except (LookupError, ValueError) as exc:
        raise TargetError(f"guardrail policy {spec or route!r}: {exc}") from exc
    if resolved is None:
        return "none"
    name, found = resolved
    return f"{name}@{found.version}"


def _model_identity(deps: TargetDeps, alias: str) -> dict[str, Any]:
    try:
        config = deps.gateway.model(alias)
    except LookupError as exc:
        raise TargetError(str(exc)) from exc
    return config.model_dump(mode="json", exclude={"api_key", "api_key_env"})


class RagTarget:
    """A RAG app's pipeline with the spec's overrides and every version pinned."""

    def __init__(self, pipeline: RagPipeline, resolved: dict[str, Any]) -> None:
        self._pipeline = pipeline
        self.resolved = resolved

    @classmethod
    def build(cls, spec: TargetSpec, deps: TargetDeps) -> RagTarget:
        assert spec.app is not None
        base = deps.rag_apps.get(spec.app)
        if base is None:
            raise TargetError(f"no RAG app {spec.app!r}; configured: {', '.join(deps.rag_apps) or 'none'}")
        r = spec.retrieval
        updates: dict[str, Any] = {
            "model": spec.model,
            "prompt": spec.prompt,
            "prompt_label": spec.prompt_label,
            "retrieval": r.mode,
            "top_k": r.top_k,
            "min_similarity": r.min_similarity,
            "filter": r.filter,
            "mmr_lambda": r.mmr_lambda,
            "reranker": r.reranker,
            "context_token_budget": r.context_token_budget,
            "max_answer_tokens": spec.max_answer_tokens,
            "temperature": spec.temperature,
        }
        config = base.model_copy(update={k: v for k, v in updates.items() if v is not None})
        prompt = _pin_prompt(deps, config.prompt, spec.prompt_version, config.prompt_label, config.environment)
        snapshot = r.snapshot if r.snapshot is not None else config.index_snapshot
        if snapshot is None:
            snapshot = deps.knowledge.served_snapshot()
        if config.reranker is not None and config.reranker not in deps.knowledge.rerankers:
            raise TargetError(f"no reranker {config.reranker!r} in knowledge.rerankers")
        policy = _pin_policy(deps, config.name, spec.guardrail_policy)
        config = config.model_copy(
            update={
                "prompt_version": prompt.version,
                "index_snapshot": snapshot,
                "guardrail_policy": policy,
                "online_eval_rate": 0.0,
            }
        )
        pipeline = RagPipeline(
            config,
            knowledge=deps.knowledge,
            prompts=deps.prompts,
            gateway=deps.gateway,
            guardrails=deps.guardrails,
            tracer=deps.tracer,
        )
        resolved = {
            "kind": "rag",
            "app": config.model_dump(mode="json", exclude={"online_eval_rate", "environment", "prompt_label"}),
            "prompt": {"name": prompt.name, "version": prompt.version, "content_hash": prompt.content_hash},
            "model": _model_identity(deps, config.model),
            "embedder": deps.embedder_name,
        }
        return cls(pipeline, resolved)

    async def run(self, example: Example) -> Sample:
        started = time.perf_counter()
        try:
            answer = await self._pipeline.ask(example.input, request_id=new_request_id(), user="llmops-eval")
        except Exception as exc:  # a failed item is recorded and scored as errored; the run goes on
            return Sample(example, "", error=f"{type(exc).__name__}: {exc}", latency_ms=_ms(started))
        usage = answer.usage
        return Sample(
            example,
            answer.answer,
            contexts=tuple(RetrievedContext(h.source, h.text, h.score, h.chunk_id) for h in answer.retrieved),
            latency_ms=answer.duration_ms,
            cost_usd=answer.cost_usd,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            abstained=answer.abstained,
            trace_id=answer.trace_id,
        )


class ModelTarget:
    """A gateway model answering the example's input, through a pinned prompt version when one is given."""

    def __init__(
        self, gateway: Gateway, prompts: PromptRegistry, spec: TargetSpec, prompt: PromptVersion | None, resolved: Any
    ) -> None:
        self._gateway = gateway
        self._prompts = prompts
        self._spec = spec
        self._prompt = prompt
        self.resolved = resolved

    @classmethod
    def build(cls, spec: TargetSpec, deps: TargetDeps) -> ModelTarget:
        assert spec.model is not None
        identity = _model_identity(deps, spec.model)
        prompt = None
        if spec.prompt is not None:
            prompt = _pin_prompt(deps, spec.prompt, spec.prompt_version, spec.prompt_label, None)
            usable = {"input", "question"}
            unknown = set(prompt.variables) - usable
            if unknown:
                raise TargetError(
                    f"prompt {spec.prompt!r} needs variables {sorted(unknown)}; a model target fills only input and "
                    "question"
                )
        resolved = {
            "kind": "model",
            "model": identity,
            "prompt": {"name": prompt.name, "version": prompt.version, "content_hash": prompt.content_hash}
            if prompt
            else None,
            "max_tokens": spec.max_answer_tokens,
            "temperature": spec.temperature or 0.0,
        }
        return cls(deps.gateway, deps.prompts, spec, prompt, resolved)

    async def run(self, example: Example) -> Sample:
        started = time.perf_counter()
        try:
            if self._prompt is None:
                messages = [{"role": "user", "content": example.input}]
            else:
                values = {v: example.input for v in self._prompt.variables}
                messages = self._prompts.render(self._prompt, values)
            assert self._spec.model is not None
            result = await self._gateway.complete(
                ChatRequest(
                    model=self._spec.model,
                    messages=messages,
                    max_tokens=self._spec.max_answer_tokens,
                    temperature=self._spec.temperature or 0.0,
                    user="llmops-eval",
                )
            )
        except Exception as exc:  # recorded as an errored item
            return Sample(example, "", error=f"{type(exc).__name__}: {exc}", latency_ms=_ms(started))
        return Sample(
            example,
            result.text,
            latency_ms=_ms(started),
            cost_usd=result.cost_usd,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            trace_id=result.trace_id,
        )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
