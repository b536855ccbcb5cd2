"""The RAG request pipeline: input rails, retrieve, pack context, render prompt, generate, output rails, cite,
and hold for human review when the app says so.

Each stage is a span of the request's trace. When nothing relevant is retrieved (no chunk reaches the similarity
threshold) the pipeline answers that it does not know, without asking the model: a small model asked anyway invents.

An app whose `HumanReviewConfig` can hold answers does not stream them as they are generated: whether an answer must
wait for a person is known only once the output rails and the grounding check have seen all of it, so its text is
released at the end (or, when it is held, never: the caller gets `PENDING_REVIEW_ANSWER` and the review id).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai

from llmops._settings import RagConfig
from llmops._spans import mark_error
from llmops.gateway import Caller, ChatRequest, ChatResult, Gateway, TextDelta, Usage
from llmops.guardrails import (
    GuardrailEngine,
    Guardrails,
    GuardResult,
    Pseudonymizer,
    RailDecision,
    StreamGuard,
    StreamStep,
)
from llmops.knowledge import KnowledgeBase, MetadataFilter, RetrievedChunk
from llmops.prompts import Experiment, PromptRegistry, PromptVersion
from llmops.rag._guarding import GuardrailStop, record_check
from llmops.rag._review import PENDING_REVIEW_ANSWER, AnswerReviews, HeldAnswer, hold_reasons, may_hold

__all__ = ["ABSTAIN_ANSWER", "AnswerHook", "AnswerStatus", "Citation", "RagAnswer", "RagPipeline", "new_request_id"]

ABSTAIN_ANSWER = "I don't know. None of the documents I can search covers this question."
_REASK = "Your previous answer was not accepted: {problem}. Answer again with only the corrected answer."
_CITATION = re.compile(r"\[(\d{1,3})\]")
# Chat templates add a few tokens per message (role markers); counted generously.
_MESSAGE_OVERHEAD_TOKENS = 8


def new_request_id() -> str:
    """``req_``, the time in milliseconds (12 hex digits), 80 random bits: ids that sort by time, so the store's
    indexes on request ids grow at their end instead of at a random page per row (see ``_light.py``)."""
    return f"req_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


@dataclass(frozen=True)
class Citation(RetrievedChunk):
    """Source ``[number]`` of the answer's context (the chunk the model read), and whether the answer cited it."""

    number: int = 0
    cited: bool = False


#: ``pending_review``: the answer waits for a person; ``answer`` is `PENDING_REVIEW_ANSWER`, ``citations`` are empty.
AnswerStatus = Literal["answered", "abstained", "blocked", "pending_review"]


@dataclass
class RagAnswer:
    request_id: str
    trace_id: str
    app: str
    answer: str
    citations: list[Citation]
    abstained: bool
    blocked: bool
    model: str
    prompt_name: str
    prompt_version: int | None
    index_snapshot: int | None
    usage: Usage | None
    cost_usd: float
    ttft_ms: float | None
    duration_ms: float
    stages_ms: dict[str, float] = field(default_factory=dict)
    guardrail: GuardrailStop | None = None  # the rail that blocked or replaced the answer
    grounding_score: float | None = None
    status: AnswerStatus = "answered"
    review_id: str | None = None  # the review a held answer waits for (``GET /api/answers/{request_id}``)
    # Every chunk retrieval returned, best first (citations are the ones that fit the context). For evaluation
    # and online scoring; not part of the API response.
    retrieved: list[RetrievedChunk] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, retrieved=[]))  # not deep-copied only to be dropped
        del data["retrieved"]
        data["guardrail"] = self.guardrail.to_dict() if self.guardrail else None
        data["usage"] = (
            {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
                "estimated": self.usage.estimated,
            }
            if self.usage
            else None
        )
        return data


class RagPipeline:
    """One RAG application (``config.name`` is the model name clients use for it).

    >>> answer = await pipeline.ask("How many PTO days do new employees get?")  # doctest: +SKIP
    >>> answer.answer, [c.source for c in answer.citations]                       # doctest: +SKIP
    """

    def __init__(
        self,
        config: RagConfig,
        *,
        knowledge: KnowledgeBase,
        prompts: PromptRegistry,
        gateway: Gateway,
        guardrails: Guardrails,
        tracer: trace.Tracer,
        record_content: bool = True,
        on_answer: AnswerHook | None = None,
        reviews: AnswerReviews | None = None,
        document_scope: Callable[[], MetadataFilter] | None = None,
    ) -> None:
        """``record_content`` stores the question (as the model saw it, after the input rails' redaction) and the
        model's answer (before pseudonyms are restored) on the request's trace; ``on_answer`` is called with every
        finished answer and the question, after its trace is written (online evaluation samples from it, and sees
        a held answer as it was generated). ``reviews`` is where answers the app's ``human_review`` holds go; without
        it nothing is held (offline evaluation and replays, whose answers reach operators, not callers).
        ``document_scope`` gives the filter every retrieval ANDs to the app's own (its project's documents)."""
        self.config = config
        self._knowledge = knowledge
        self._prompts = prompts
        self._gateway = gateway
        self._guardrails = guardrails
        self._tracer = tracer
        self._record_content = record_content
        self._on_answer = on_answer
        self._reviews = reviews
        self._document_scope = document_scope

    def _where(self) -> MetadataFilter:
        where = MetadataFilter.parse(self.config.filter)
        return where.and_(self._document_scope()) if self._document_scope is not None else where

    async def ask(self, question: str, *, request_id: str | None = None, user: str | None = None) -> RagAnswer:
        answer: RagAnswer | None = None
        async for event in self.stream(question, request_id=request_id, user=user):
            if isinstance(event, RagAnswer):
                answer = event
        assert answer is not None  # stream() always ends with the answer or raises
        return answer

    async def stream(
        self,
        question: str,
        *,
        request_id: str | None = None,
        user: str | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> AsyncIterator[TextDelta | GuardrailStop | RagAnswer]:
        """Yields the answer's text as it is generated and passes the output rails, then the complete `RagAnswer`.

        When a rail ends the answer, a `GuardrailStop` comes before the `RagAnswer`. The request's trace is stored
        before the `RagAnswer` is yielded, so an answer in hand always has its trace. ``user`` (a user or session id)
        keeps the caller on one variant while a prompt experiment runs, and is what the rate rail counts;
        ``pseudonymizer`` keeps a conversation's placeholders stable across turns.
        """
        request_id = request_id or new_request_id()
        root = self._tracer.start_span(f"rag {self.config.name}", kind=trace.SpanKind.SERVER)
        root.set_attributes({"llmops.request_id": request_id, "llmops.rag.app": self.config.name})
        if user:
            root.set_attribute("llmops.caller.user", user)  # metrics, erasure and lineage find the user by it
        variant = _Variant(key=user or request_id, user=user)
        answer: RagAnswer | None = None
        started = time.perf_counter()
        try:
            async for event in self._run(question, request_id, root, variant, user, pseudonymizer):
                if isinstance(event, RagAnswer):
                    answer = event
                else:
                    yield event
        except BaseException as exc:
            mark_error(root, exc)
            raise
        finally:
            root.end()
            if variant.experiment is not None:
                await self._record_outcomes(variant, request_id, answer, started)
        assert answer is not None
        if self._on_answer is not None:
            self._on_answer(variant.generated or answer, variant.question, variant.model_answer)
        yield answer

    async def _record_outcomes(
        self, variant: _Variant, request_id: str, answer: RagAnswer | None, started: float
    ) -> None:
        """What an experiment compares variants on, recorded for every request it served."""
        experiment = variant.experiment
        assert experiment is not None and variant.version is not None
        values = {"latency_ms": (time.perf_counter() - started) * 1000, "error": 0.0 if answer else 1.0}
        if answer is not None:
            values.update(
                cost_usd=answer.cost_usd,
                guardrail_blocked=float(answer.blocked),
                abstained=float(answer.abstained),
                output_tokens=float(answer.usage.output_tokens if answer.usage else 0),
            )
        experiments = self._prompts.experiments
        await asyncio.to_thread(experiments.record_outcomes, experiment.id, variant.version, request_id, values)
        if experiments.count_request(experiment):
            await asyncio.to_thread(experiments.evaluate, experiment.id)

    def _prompt(self, variant: _Variant) -> PromptVersion:
        """The labelled version, or the variant an experiment on that label assigns to this caller."""
        config = self.config
        if config.prompt_version is not None:
            return self._prompts.get_version(config.prompt, config.prompt_version)
        env = config.environment or self._prompts.default_environment
        experiment = self._prompts.experiments.active(config.prompt, env, config.prompt_label)
        if experiment is None:
            return self._prompts.get(config.prompt, label=config.prompt_label, environment=env)
        variant.experiment, variant.version = experiment, experiment.assign(variant.key)
        return self._prompts.get_version(config.prompt, variant.version)

    async def _run(
        self,
        question: str,
        request_id: str,
        root: trace.Span,
        variant: _Variant,
        user: str | None,
        pseudonymizer: Pseudonymizer | None,
    ) -> AsyncIterator[TextDelta | GuardrailStop | RagAnswer]:
        config = self.config
        started = time.perf_counter()
        ctx = trace.set_span_in_context(root)
        stages: dict[str, float] = {}
        engine = self._guardrails.engine(config.name, policy=config.guardrail_policy)
        with self._stage("guardrails.input", ctx, stages) as span:
            checked = None
            if engine is not None and engine.has("input"):
                checked = await asyncio.to_thread(engine.check_input, question, user=user, pseudonymizer=pseudonymizer)
            record_check(span, checked)
        if checked is not None:
            variant.decisions.extend(checked.decisions)
            if not checked.allowed:
                for event in self._stopped(checked, request_id, root, started, stages):
                    yield event
                return
            question, pseudonymizer = checked.text, checked.pseudonymizer
        variant.question = question
        self._record_text(root, "llmops.rag.question", question)

        hits, snapshot = await self._retrieve(question, ctx, stages)
        if hits and engine is not None and engine.has("context"):
            with self._stage("guardrails.context", ctx, stages) as span:
                context_check = await asyncio.to_thread(engine.check_context, [h.text for h in hits])
                record_check(span, context_check)
            variant.decisions.extend(context_check.decisions)
            if not context_check.allowed:
                for event in self._stopped(context_check, request_id, root, started, stages):
                    yield event
                return
            hits = [h for i, h in enumerate(hits) if i not in context_check.dropped]
        if not hits:
            root.set_attribute("llmops.rag.abstained", True)
            answer = self._answer(request_id, root, ABSTAIN_ANSWER, [], started, stages, abstained=True)
            answer.index_snapshot = snapshot
            variant.model_answer = ABSTAIN_ANSWER
            self._record_text(root, "llmops.rag.answer", ABSTAIN_ANSWER)
            yield TextDelta(answer.answer)
            yield answer
            return

        with self._stage("pack_context", ctx, stages) as span:
            packed = self._pack(hits)
            span.set_attributes(
                {"llmops.context.chunks": len(packed), "llmops.context.dropped": len(hits) - len(packed)}
            )

        with self._stage("render_prompt", ctx, stages) as span:
            prompt = self._prompt(variant)
            messages = self._render_fitting(prompt, question, packed)
            span.set_attributes(
                {
                    genai.GEN_AI_PROMPT_NAME: prompt.name,
                    "llmops.prompt.version": prompt.version,
                    "llmops.prompt.label": config.prompt_label,
                    "llmops.context.chunks": len(packed),
                }
            )
            if variant.experiment is not None:
                root.set_attributes(
                    {"llmops.prompt.experiment": variant.experiment.id, "llmops.prompt.variant": prompt.version}
                )

        generation = _Generation(
            self._chat_request(prompt, messages), Caller(user=user, app=config.name), request_id=request_id
        )
        held_back = self._held_back()
        generated = self._generate_guarded(generation, engine, pseudonymizer, question, packed, ctx, stages)
        async for delta in _kept_back(generated, held_back):
            yield delta
        result, stop, text = generation.result, generation.stop, generation.text
        if stop is not None:
            root.set_attribute("llmops.guardrails.blocked_by", stop.rail)
        elif result is not None and result.finish_reason == "length":
            text = _complete_sentences(text)  # an answer cut by max_tokens ends mid-sentence
        citations = _citations(packed, text) if stop is None else []
        answer = self._answer(request_id, root, text.strip(), citations, started, stages, blocked=stop is not None)
        answer.guardrail = stop
        answer.retrieved = hits
        variant.model_answer = generation.model_text.strip()
        self._record_text(root, "llmops.rag.answer", variant.model_answer)
        if generation.grounding is not None:
            answer.grounding_score = generation.grounding
            root.set_attributes(
                {
                    "llmops.guardrails.grounding_score": generation.grounding,
                    "llmops.guardrails.unsupported_claims": generation.unsupported,
                }
            )
        _record_result(answer, result, prompt, snapshot, root)
        async for event in self._deliver(answer, held_back, generation, variant, root, ctx, stages):
            yield event

    def _held_back(self) -> list[TextDelta] | None:
        """Where the answer's text waits when the app may hold it (the decision is made once the output rails have
        seen all of it); None when it streams as generated."""
        return [] if self._reviews is not None and may_hold(self.config.human_review) else None

    async def _deliver(
        self,
        answer: RagAnswer,
        held_back: list[TextDelta] | None,
        generation: _Generation,
        variant: _Variant,
        root: trace.Span,
        ctx: Context,
        stages: dict[str, float],
    ) -> AsyncIterator[TextDelta | GuardrailStop | RagAnswer]:
        """The text kept back, the stop, the answer; or, when the app holds the answer, the pending text instead."""
        reasons: list[str] = []
        if held_back is not None and generation.stop is None:
            reasons = hold_reasons(
                self.config.human_review,
                decisions=[*variant.decisions, *generation.decisions],
                grounding=generation.grounding,
                unsupported=generation.unsupported if generation.grounding is not None else None,
            )
        if reasons:
            pending = await self._hold(answer, reasons, variant, root, ctx, stages)
            yield TextDelta(pending.answer)
            yield pending
            return
        for delta in held_back or ():
            yield delta
        if generation.stop is not None:
            yield generation.stop
        yield answer

    async def _hold(
        self,
        answer: RagAnswer,
        reasons: list[str],
        variant: _Variant,
        root: trace.Span,
        ctx: Context,
        stages: dict[str, float],
    ) -> RagAnswer:
        """Queue ``answer`` for a person; returns what the caller gets instead (nothing of the answer in it)."""
        assert self._reviews is not None
        held = HeldAnswer(
            request_id=answer.request_id,
            trace_id=answer.trace_id,
            app=answer.app,
            question=variant.question,
            answer=answer.answer,
            citations=[asdict(c) for c in answer.citations],
            reasons=reasons,
            user=variant.user,
            grounding_score=answer.grounding_score,
        )
        with self._stage("review.hold", ctx, stages) as span:
            # A hold that cannot be stored fails the request: the answer is never released in its place.
            review_id = await asyncio.to_thread(self._reviews.hold, held)
            span.set_attributes({"llmops.review.id": review_id, "llmops.review.reasons": reasons})
        root.set_attributes({"llmops.review.held": True, "llmops.review.id": review_id,
                             "llmops.review.reasons": reasons})  # fmt: skip
        variant.generated = answer
        return replace(
            answer,
            answer=PENDING_REVIEW_ANSWER.format(review_id=review_id),
            citations=[],
            retrieved=[],
            status="pending_review",
            review_id=review_id,
            stages_ms=dict(stages),
        )

    def _record_text(self, root: trace.Span, key: str, text: str) -> None:
        """The question or answer on the trace: what the model saw or wrote (pseudonyms not restored), with any
        personal data the route's policy let through scrubbed as well."""
        if self._record_content:
            root.set_attribute(key, self._guardrails.scrub(text))

    async def _retrieve(
        self, question: str, ctx: Context, stages: dict[str, float]
    ) -> tuple[list[RetrievedChunk], int | None]:
        """The retrieve stage: the configured search over the pinned (or served) snapshot."""
        config = self.config
        with self._stage("retrieve", ctx, stages) as span:
            snapshot = config.index_snapshot if config.index_snapshot is not None else self._knowledge.served_snapshot()
            hits = await asyncio.to_thread(
                self._knowledge.search,
                question,
                k=config.top_k,
                min_similarity=config.min_similarity,
                mode=config.retrieval,
                where=self._where(),
                snapshot=snapshot,
                mmr_lambda=config.mmr_lambda,
                reranker=config.reranker,
            )
            span.set_attributes(
                {
                    genai.GEN_AI_OPERATION_NAME: "retrieval",
                    genai.GEN_AI_DATA_SOURCE_ID: "knowledge",
                    "llmops.retrieval.top_k": config.top_k,
                    "llmops.retrieval.min_similarity": config.min_similarity,
                    "llmops.retrieval.mode": config.retrieval,
                    "llmops.retrieval.hits": len(hits),
                    "llmops.retrieval.chunk_ids": [h.chunk_id for h in hits],
                    "llmops.retrieval.scores": [round(h.score, 4) for h in hits],
                    "llmops.index.snapshot": snapshot if snapshot is not None else -1,
                }
            )
        return hits, snapshot

    async def _generate_guarded(
        self,
        generation: _Generation,
        engine: GuardrailEngine | None,
        pseudonymizer: Pseudonymizer | None,
        question: str,
        packed: list[RetrievedChunk],
        ctx: Context,
        stages: dict[str, float],
    ) -> AsyncIterator[TextDelta]:
        """Generate through the output rails, re-asking once when a rail says the answer can be corrected.

        Fills ``generation``: the model's result (None when a rail cut the stream), the stop, the answer's text.
        """
        guard: StreamGuard | None = None
        if engine is not None and (engine.has("output") or engine.restores):
            system = "\n".join(m["content"] for m in generation.request.messages if m["role"] == "system")
            for hit in packed:  # the sources are the context, not the instructions the answer must keep private
                system = system.replace(hit.text, " ")
            guard = engine.stream(supplied=[question], context=[h.text for h in packed], system_prompt=system)
        generate_started = time.perf_counter()
        for attempt in range(2):
            generation.result, generation.stop = None, None
            async for event in self._generate(generation, ctx, guard, engine, pseudonymizer):
                if isinstance(event, ChatResult):
                    generation.result = event
                elif isinstance(event, GuardrailStop):
                    generation.stop = event
                else:
                    yield event
            stages["generate"] = (time.perf_counter() - generate_started) * 1000
            if guard is None:
                if generation.result is None:
                    raise RuntimeError("the model's answer ended without a result")
                generation.text = generation.model_text = generation.result.text
                with self._stage("guardrails.output", ctx, stages) as span:
                    record_check(span, None)
                return
            with self._stage("guardrails.output", ctx, stages) as span:
                step = StreamStep() if generation.stop else await asyncio.to_thread(guard.finish)
                if step.reask is not None and attempt == 0 and generation.result is not None:
                    problem = _REASK.format(problem=step.reask)
                    extra = [
                        {"role": "assistant", "content": generation.result.text},
                        {"role": "user", "content": problem},
                    ]
                    generation.request = replace(generation.request, messages=[*generation.request.messages, *extra])
                    guard.retry()
                    span.set_attribute("llmops.guardrails.reask", True)
                    continue
                if step.reask is not None:
                    generation.stop = GuardrailStop("output", "json_schema", "block", guard.policy, _UNFIXED)
                elif step.stopped is not None:
                    generation.stop = GuardrailStop.of(step.stopped)
                elif step.text:
                    yield TextDelta(self._restore(engine, step.text, pseudonymizer))
                record_check(span, guard.result(""))
            break
        assert guard is not None
        generation.decisions = guard.result("").decisions
        generation.grounding = guard.grounding.score if guard.grounding is not None else None
        if guard.grounding is not None:
            generation.unsupported = sum(1 for claim in guard.grounding.claims if not claim.supported)
        stop = generation.stop
        generation.model_text = stop.message if stop is not None else guard.released
        generation.text = stop.message if stop is not None else self._restore(engine, guard.released, pseudonymizer)

    async def _generate(
        self,
        generation: _Generation,
        ctx: Context,
        guard: StreamGuard | None,
        engine: GuardrailEngine | None,
        pseudonymizer: Pseudonymizer | None,
    ) -> AsyncIterator[TextDelta | GuardrailStop | ChatResult]:
        """The model's answer through the guard: text as the rails release it; a stop ends the upstream call."""
        events = self._gateway.stream(
            generation.request, context=ctx, request_id=generation.request_id, caller=generation.caller
        )
        try:
            async for event in events:
                if isinstance(event, ChatResult):
                    yield event
                elif isinstance(event, TextDelta):
                    if guard is None:
                        yield event
                        continue
                    step = guard.feed(event.text)
                    if step.text:
                        yield TextDelta(self._restore(engine, step.text, pseudonymizer))
                    if step.stopped is not None:
                        yield GuardrailStop.of(step.stopped)
                        return
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    @staticmethod
    def _restore(engine: GuardrailEngine | None, text: str, pseudonymizer: Pseudonymizer | None) -> str:
        return engine.restore(text, pseudonymizer) if engine is not None else text

    def _stopped(
        self, result: GuardResult, request_id: str, root: trace.Span, started: float, stages: dict[str, float]
    ) -> list[TextDelta | GuardrailStop | RagAnswer]:
        """What a request blocked before generation yields: the rail's message, the stop, the answer."""
        stop = GuardrailStop.of(result)
        root.set_attribute("llmops.guardrails.blocked_by", stop.rail)
        answer = self._answer(request_id, root, stop.message, [], started, stages, blocked=True)
        answer.guardrail = stop
        return [TextDelta(stop.message), stop, answer]

    def _chat_request(self, prompt: PromptVersion, messages: list[dict[str, str]]) -> ChatRequest:
        """The app's generation settings, overridden by the prompt version's own parameters where it has them."""
        config, params = self.config, prompt.params
        model = params.get("model") if params.get("model") in self._gateway.model_names() else config.model
        return ChatRequest(
            model=str(model),
            messages=messages,
            max_tokens=int(params.get("max_tokens", config.max_answer_tokens)),
            temperature=float(params.get("temperature", config.temperature)),
            top_p=float(params.get("top_p", 1.0)),
            stop=tuple(params.get("stop") or ()),
        )

    def _stage(self, name: str, ctx: Context, stages: dict[str, float]) -> _Stage:
        return _Stage(self._tracer, name, ctx, stages)

    def _pack(self, hits: list[RetrievedChunk]) -> list[RetrievedChunk]:
        """Most similar first, as many whole chunks as fit the context token budget."""
        budget = self.config.context_token_budget
        packed: list[RetrievedChunk] = []
        used = 0
        for hit in hits:
            tokens = self._gateway.count_tokens(self.config.model, hit.text) + 16  # + the "[n] title / heading" line
            if used + tokens <= budget:
                packed.append(hit)
                used += tokens
        return packed or hits[:1]

    def _render_fitting(
        self, prompt: PromptVersion, question: str, packed: list[RetrievedChunk]
    ) -> list[dict[str, str]]:
        """Render; while the prompt and the answer would overflow the model's window, drop the least similar chunk."""
        window = self._gateway.model(self.config.model).context_window
        answer_tokens = int(prompt.params.get("max_tokens", self.config.max_answer_tokens))
        while True:
            sources = [
                {
                    "number": n,
                    "title": h.title,
                    "heading": h.heading,
                    "text": h.text,
                    "source": h.source,
                    "page": h.page,
                }
                for n, h in enumerate(packed, start=1)
            ]
            messages = self._prompts.render(prompt, {"sources": sources, "question": question})
            tokens = sum(
                self._gateway.count_tokens(self.config.model, m["content"]) + _MESSAGE_OVERHEAD_TOKENS for m in messages
            )
            if tokens + answer_tokens <= window or len(packed) <= 1:
                return messages
            packed.pop()

    def _answer(
        self,
        request_id: str,
        root: trace.Span,
        text: str,
        citations: list[Citation],
        started: float,
        stages: dict[str, float],
        *,
        abstained: bool = False,
        blocked: bool = False,
    ) -> RagAnswer:
        return RagAnswer(
            request_id=request_id,
            trace_id=trace.format_trace_id(root.get_span_context().trace_id),
            app=self.config.name,
            answer=text,
            citations=citations,
            abstained=abstained,
            blocked=blocked,
            status="blocked" if blocked else "abstained" if abstained else "answered",
            model=self.config.model,
            prompt_name=self.config.prompt,
            prompt_version=None,
            index_snapshot=None,
            usage=None,
            cost_usd=0.0,
            ttft_ms=None,
            duration_ms=(time.perf_counter() - started) * 1000,
            stages_ms=dict(stages),
        )


@dataclass
class _Generation:
    """The generation step's request (re-asks extend it) and what came of it."""

    request: ChatRequest
    caller: Caller  # who the gateway attributes the call (its ledger row, limits, cost) to
    request_id: str
    result: ChatResult | None = None
    stop: GuardrailStop | None = None
    text: str = ""
    model_text: str = ""  # the answer as the model wrote it, before pseudonyms are restored
    grounding: float | None = None
    unsupported: int = 0  # claims of the answer its sources do not support
    decisions: list[RailDecision] = field(default_factory=list)  # the output rails'


@dataclass
class _Variant:
    """A request's state the stages fill in: the experiment variant that served it (when the prompt is chosen),
    the question as the model saw it and the answer as the model wrote it."""

    key: str
    user: str | None = None
    experiment: Experiment | None = None
    version: int | None = None
    question: str = ""  # as the model saw it (after the input rails)
    model_answer: str = ""  # as the model wrote it (before pseudonyms are restored)
    decisions: list[RailDecision] = field(default_factory=list)  # the input and context rails'
    generated: RagAnswer | None = None  # a held answer as it was generated (the caller got the pending one)


class _Stage:
    """A child span of the request that also records its duration in ``stages`` (milliseconds)."""

    def __init__(self, tracer: trace.Tracer, name: str, ctx: Context, stages: dict[str, float]) -> None:
        self._tracer, self._name, self._ctx, self._stages = tracer, name, ctx, stages

    def __enter__(self) -> trace.Span:
        self._started = time.perf_counter()
        self._span = self._tracer.start_span(self._name, context=self._ctx)
        return self._span

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            mark_error(self._span, exc)
        self._span.end()
        self._stages[self._name] = (time.perf_counter() - self._started) * 1000


#: Called with each finished answer, the question as the model saw it and the answer as the model wrote it.
AnswerHook = Callable[[RagAnswer, str, str], object]
_UNFIXED = "I couldn't produce an answer in the required format."
_SENTENCE_END = re.compile(r"[.!?](?:\[\d{1,3}\])?(?=\s|$)")


def _record_result(
    answer: RagAnswer, result: ChatResult | None, prompt: PromptVersion, snapshot: int | None, root: trace.Span
) -> None:
    """What the model's finished call adds to the answer and to the request's trace (nothing when a rail cut it)."""
    if result is None:
        return
    answer.prompt_version = prompt.version
    answer.index_snapshot = snapshot
    answer.usage, answer.cost_usd, answer.ttft_ms = result.usage, result.cost_usd, result.ttft_ms
    root.set_attributes(
        {
            "llmops.prompt.name": prompt.name,
            "llmops.prompt.version": prompt.version,
            "llmops.index.snapshot": snapshot if snapshot is not None else -1,
            genai.GEN_AI_USAGE_INPUT_TOKENS: result.usage.input_tokens,
            genai.GEN_AI_USAGE_OUTPUT_TOKENS: result.usage.output_tokens,
            "llmops.cost_usd": result.cost_usd,
            "llmops.citations": [c.chunk_id for c in answer.citations if c.cited],
        }
    )


async def _kept_back(deltas: AsyncIterator[TextDelta], kept: list[TextDelta] | None) -> AsyncIterator[TextDelta]:
    """``deltas`` as they come, or none of them when ``kept`` is a list: they are kept in it."""
    async for delta in deltas:
        if kept is None:
            yield delta
        else:
            kept.append(delta)


def _complete_sentences(text: str) -> str:
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else text


def _citations(packed: list[RetrievedChunk], answer: str) -> list[Citation]:
    cited = {int(n) for n in _CITATION.findall(answer)}
    return [
        Citation(number=i, cited=i in cited, **{**asdict(hit), "score": round(hit.score, 4)})
        for i, hit in enumerate(packed, start=1)
    ]
