"""LLM-as-judge: a model grades answers against a rubric kept in the prompt registry.

Rubrics are prompts (``judge-correctness``, ``judge-faithfulness``, ``judge-relevance``, ``judge-pairwise``), seeded
as version 1 with the label ``production`` and edited, versioned and rolled back like any prompt. A `JudgeMetric`
renders its rubric with each sample, asks the judge model for a JSON verdict (constrained by ``response_format``
where the upstream supports it), reads it with `parse_verdict`, and asks again with a correction when the reply
cannot be read. A sample that still has no verdict gets an explicit error, never NaN and never a dropped item.

`PairwiseJudge` compares two answers twice, once in each order, because judges favour a position; a winner counts
only when both orders agree. `judge_agreement` measures a judge against human labels.

>>> metric = JudgeMetric.from_params({"rubric": "judge-faithfulness"}, deps)   # doctest: +SKIP
>>> scores = await metric.score(samples, ScoringContext(deps))                  # doctest: +SKIP
>>> scores[0].value, scores[0].details["reason"]                               # doctest: +SKIP
(0.75, 'Every claim but the start date is in the context.')
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from llmops.evaluation._results import ItemResult
from llmops.evaluation._types import Example, MetricDeps, RetrievedContext, Sample, Score, ScoringContext
from llmops.evaluation._verdicts import (
    PairwiseChoice,
    Verdict,
    VerdictParseError,
    Winner,
    parse_pairwise_verdict,
    parse_verdict,
)
from llmops.gateway import ChatRequest, Gateway, LimitExceededError, ProviderError, UnknownModelError
from llmops.prompts import (
    ApprovalRequiredError,
    PromptNotFoundError,
    PromptRegistry,
    PromptTemplateError,
    PromptVersion,
)

__all__ = [
    "JUDGE_RUBRICS",
    "Agreement",
    "JudgeMetric",
    "JudgeRubric",
    "PairwiseJudge",
    "PairwiseSummary",
    "PairwiseVerdict",
    "human_agreement",
    "judge_agreement",
    "seed_judge_prompts",
    "summarize_pairwise",
]

T = TypeVar("T")

# ---- rubrics ----------------------------------------------------------------------------------------------------

_REPLY_SCORE = (
    'Reply with only a JSON object: {"score": <a whole number from 1 to {{ scale }}>, "reason": "<one short sentence>"}'
)
_REPLY_WINNER = 'Reply with only a JSON object: {"winner": "a" or "b" or "tie", "reason": "<one short sentence>"}'
# Each section ends with a blank line. The renderer trims the newline right after a block tag, hence the "\n\n".
_REFERENCE = (
    "{% if expected %}Reference answer: {{ expected }}\n\n{% endif %}"
    "{% if facts %}Key facts a correct answer states:\n{% for fact in facts %}- {{ fact }}\n{% endfor %}\n\n{% endif %}"
)
_CONTEXT = "Context:\n{% for passage in context %}[{{ passage['number'] }}] {{ passage['text'] }}\n{% endfor %}\n\n"
_SINGLE_VARIABLES = {
    "input": "str",
    "output": "str",
    "expected": "str",
    "facts": "list",
    "context": "list",
    "scale": "int",
}
_PAIR_VARIABLES = {"input": "str", "output_a": "str", "output_b": "str", "expected": "str", "facts": "list",
                   "context": "list"}  # fmt: skip


@dataclass(frozen=True)
class JudgeRubric:
    """A rubric the platform seeds: its prompt, and what an example must hold to be judged by it.

    ``needs`` names what a sample must have: ``reference`` (an expected answer or facts), ``context`` (retrieved
    chunks). A sample without it scores as errored, with no judge call.
    """

    name: str
    description: str
    messages: tuple[tuple[str, str], ...]  # (role, content template)
    variables: dict[str, str]
    needs: tuple[str, ...] = ()
    pairwise: bool = False

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


# Written for strong judges and readable by the bundled 135M model: the instruction and the JSON shape up front, the
# material labelled line by line, and what the two ends of the scale mean.
JUDGE_RUBRICS: dict[str, JudgeRubric] = {
    rubric.name: rubric
    for rubric in (
        JudgeRubric(
            "judge-correctness",
            "Is the answer correct against the reference answer and key facts?",
            (
                ("system", "You grade answers for correctness against a reference. Ignore style and length. "
                           + _REPLY_SCORE),
                ("user", "Question: {{ input }}\n\n" + _REFERENCE + "Answer to grade: {{ output }}\n\n"
                         "Score 1 if the answer is wrong, contradicts the reference or misses every key fact; "
                         "{{ scale }} if it is fully correct and states every key fact; in between by how much of it "
                         "is right."),
            ),
            _SINGLE_VARIABLES,
            needs=("reference",),
        ),
        JudgeRubric(
            "judge-faithfulness",
            "Is every claim of the answer supported by the retrieved context?",
            (
                ("system", "You check whether an answer is supported by its context. Every claim must be stated in, "
                           "or follow directly from, the context; knowledge from elsewhere does not count. An answer "
                           "that says the context does not hold the answer makes no claim and is faithful. "
                           + _REPLY_SCORE),
                ("user", _CONTEXT + "Question: {{ input }}\n\nAnswer to check: {{ output }}\n\n"
                         "Score 1 if the answer's claims are mostly unsupported or contradicted by the context; "
                         "{{ scale }} if every claim is supported; in between by the share that is supported."),
            ),
            _SINGLE_VARIABLES,
            needs=("context",),
        ),
        JudgeRubric(
            "judge-relevance",
            "Does the answer address the question?",
            (
                ("system", "You check whether an answer addresses the question asked, not whether it is correct. "
                           + _REPLY_SCORE),
                ("user", "Question: {{ input }}\n\nAnswer: {{ output }}\n\n"
                         "Score 1 if the answer is off-topic or evades the question; {{ scale }} if it answers "
                         "exactly what was asked; lower for padding, partial answers and digressions."),
            ),
            _SINGLE_VARIABLES,
        ),
        JudgeRubric(
            "judge-pairwise",
            "Which of two answers to the same question is better?",
            (
                ("system", "You compare two answers to the same question and choose the better one: more correct, "
                           "more complete, more helpful. Use the reference answer and key facts when given. The "
                           "order of the answers and their length must not sway you. " + _REPLY_WINNER),
                ("user", "Question: {{ input }}\n\n" + _REFERENCE + "{% if context %}" + _CONTEXT + "{% endif %}"
                         "Answer A: {{ output_a }}\n\nAnswer B: {{ output_b }}"),
            ),
            _PAIR_VARIABLES,
            pairwise=True,
        ),
    )
}  # fmt: skip


def seed_judge_prompts(registry: PromptRegistry) -> None:
    """Create each rubric of `JUDGE_RUBRICS` as version 1 when missing, and label it ``production`` in every
    environment that has no such label. A protected label is left alone (it moves through a change request)."""
    for rubric in JUDGE_RUBRICS.values():
        try:
            version = registry.latest(rubric.name).version
        except PromptNotFoundError:
            version = registry.create(
                rubric.name,
                rubric.message_dicts(),
                author="llmops",
                variables=dict(rubric.variables),
                tags=["judge"],
                commit_message="default judge rubric",
                description=rubric.description,
            ).version
        for environment in registry.environments:
            if "production" in registry.labels(rubric.name, environment):
                continue
            try:
                registry.move_label(rubric.name, "production", version, environment=environment, by="llmops",
                                    reason="seed")  # fmt: skip
            except ApprovalRequiredError:
                continue


# ---- calling the judge ------------------------------------------------------------------------------------------

_RAW_LIMIT = 2000  # characters of a failed reply kept in the score's details
_REASON_CHARS = 200  # about 50 tokens: a small local model that loops stops here
_JudgeError = (ProviderError, LimitExceededError, UnknownModelError, TimeoutError)


@dataclass
class _Reply(Generic[T]):
    """What asking the judge (with retries) came to."""

    parsed: T | None = None
    error: str | None = None
    raw: str = ""
    attempts: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0

    def usage(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "cost_usd": round(self.cost_usd, 8),
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}  # fmt: skip


@dataclass(frozen=True)
class _Judge:
    """A judge model behind the gateway, with its rubric version and retry policy."""

    gateway: Gateway
    prompts: PromptRegistry
    rubric: PromptVersion
    model: str
    retries: int
    max_tokens: int
    response_format: dict[str, Any]
    correction: str  # what to reply with, shown after a reply that could not be read

    async def ask(self, values: dict[str, Any], parse: Callable[[str], T], metric: str) -> _Reply[T]:
        """Render the rubric with ``values`` (those it declares) and ask until a reply parses, at most
        ``1 + retries`` times. Each retry shows the judge its unreadable reply and why it was refused."""
        reply: _Reply[T] = _Reply()
        declared = self.rubric.variables
        try:
            messages = self.prompts.render(self.rubric, {k: v for k, v in values.items() if k in declared})
        except PromptTemplateError as exc:  # an edited rubric that declares a variable with another type
            reply.error = f"the rubric {self.rubric.name} v{self.rubric.version} cannot be rendered: {exc}"
            return reply
        problem: VerdictParseError | None = None
        for _ in range(self.retries + 1):
            reply.attempts += 1
            request = ChatRequest(
                model=self.model,
                messages=messages,
                temperature=0.0,
                max_tokens=self.max_tokens,
                response_format=self.response_format,
                metadata={"app": "llmops-eval", "tags": f"judge,{metric}"},  # attributed in cost reports
                stream=False,
            )
            try:
                result = await self.gateway.complete(request)
            except _JudgeError as exc:
                reply.error = f"judge call failed: {exc}"
                return reply
            reply.raw = result.text
            reply.cost_usd += result.cost_usd
            reply.input_tokens += result.usage.input_tokens
            reply.output_tokens += result.usage.output_tokens
            try:
                reply.parsed = parse(result.text)
                return reply
            except VerdictParseError as exc:
                problem = exc
            cut = " (your reply was cut off: keep the reason short)" if result.finish_reason == "length" else ""
            messages = [
                *messages,
                {"role": "assistant", "content": result.text[:_RAW_LIMIT] or "(no reply)"},
                {"role": "user", "content": f"That reply cannot be used: {problem}{cut}. {self.correction}"},
            ]
        tries = f"{reply.attempts} attempt" + ("s" if reply.attempts > 1 else "")
        reply.error = f"judge output unparseable after {tries}: {problem}"
        return reply


def _context_variable(contexts: Sequence[RetrievedContext]) -> list[dict[str, Any]]:
    return [{"number": n, "source": c.source, "text": c.text} for n, c in enumerate(contexts, 1)]


def _int_param(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _build_judge(
    params: dict[str, Any], deps: MetricDeps, *, allowed: frozenset[str], default_rubric: str, pairwise: bool
) -> tuple[_Judge, str, dict[str, Any]]:
    """The judge ``params`` describe, checked against ``deps``: (judge, rubric name, the other checked params)."""
    unknown = sorted(params.keys() - allowed)
    if unknown:
        raise ValueError(f"unknown judge parameters {unknown}; the parameters are {sorted(allowed)}")
    if deps.gateway is None or deps.prompts is None:
        raise ValueError("a judge metric needs the gateway and the prompt registry (MetricDeps.gateway, .prompts)")
    rubric_name = str(params.get("rubric", default_rubric))
    if "version" in params and "label" in params:
        raise ValueError("give the rubric's version or its label, not both")
    try:
        if "version" in params:
            rubric = deps.prompts.get_version(rubric_name, _int_param(params, "version", 1, 1, 10**9))
        else:
            label = str(params.get("label", "production"))
            rubric = deps.prompts.get(rubric_name, label=label, environment=params.get("environment"))
    except PromptNotFoundError as exc:
        raise ValueError(f"judge rubric not found: {exc} (the platform seeds the judge-* rubrics on start)") from exc
    known = _PAIR_VARIABLES if pairwise else _SINGLE_VARIABLES
    strange = sorted(rubric.variables.keys() - known.keys())
    if strange:
        raise ValueError(f"rubric {rubric_name!r} v{rubric.version} uses variables {strange}; a judge fills only "
                         f"{sorted(known)}")  # fmt: skip
    model = params.get("model") or deps.judge_model or rubric.params.get("model")
    if not model:
        raise ValueError("no judge model: give the metric a 'model' or set the run's judge_model")
    try:
        deps.gateway.model(str(model))
    except UnknownModelError as exc:
        raise ValueError(f"judge model: {exc}") from exc
    scale = _int_param(params, "scale", 5, 2, 100)
    # The verdict first and a bounded reason: a reply cut short by max_tokens still holds the verdict, and the
    # enum makes a grammar-constrained model (the local one) unable to write a score off the scale.
    reason = {"type": "string", "maxLength": _REASON_CHARS}
    if pairwise:
        verdict: dict[str, Any] = {"winner": {"type": "string", "enum": ["a", "b", "tie"]}}
        example = '{"winner": "a", "reason": "..."}'
    else:
        verdict = {"score": {"type": "integer", "enum": list(range(1, scale + 1))}}
        example = f'{{"score": <1 to {scale}>, "reason": "..."}}'
    properties = {**verdict, "reason": reason}
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    judge = _Judge(
        gateway=deps.gateway,
        prompts=deps.prompts,
        rubric=rubric,
        model=str(model),
        retries=_int_param(params, "retries", 2, 0, 10),
        max_tokens=_int_param(params, "max_tokens", 256, 16, 8192),
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
        correction=f"Reply with only the JSON object {example}.",
    )
    checked = {"scale": scale, "concurrency": _int_param(params, "concurrency", 4, 1, 64)}
    return judge, rubric_name, checked


# ---- single-answer judge ----------------------------------------------------------------------------------------


class JudgeMetric:
    """Grades each sample on a 1..``scale`` rubric; the score's value is ``(score - 1) / (scale - 1)`` in [0, 1].

    Details hold ``score`` (the judge's whole number), ``scale``, ``reason``, ``attempts``, the rubric and its
    version, the judge model, its tokens and cost, and ``human_score`` when the example's metadata has one (for
    `judge_agreement`). An unreadable verdict (after ``retries`` corrections) or a failed call is an error score
    with the judge's last reply in ``details["raw"]``.
    """

    higher_is_better = True
    PARAMS = frozenset({"rubric", "version", "label", "environment", "model", "name", "scale", "retries",
                        "concurrency", "max_tokens"})  # fmt: skip

    def __init__(self, judge: _Judge, *, name: str, scale: int, concurrency: int, needs: tuple[str, ...]) -> None:
        self._judge = judge
        self.name = name
        self.scale = scale
        self.concurrency = concurrency
        self.needs = needs

    @classmethod
    def from_params(cls, params: dict[str, Any], deps: MetricDeps) -> JudgeMetric:
        """Build from a config's parameters.

        Args:
            params: ``rubric`` (a prompt name, default ``judge-correctness``); ``version`` or ``label`` (default
                ``production``) and ``environment`` (default the registry's) choosing the rubric's version;
                ``model`` (default ``deps.judge_model``); ``name`` (default ``judge_`` + the rubric's suffix);
                ``scale`` (5); ``retries`` after an unreadable reply (2); ``concurrency`` (4); ``max_tokens`` (256).
            deps: Must hold the gateway and the prompt registry.

        Raises:
            ValueError: An unknown parameter, a bad value, a rubric or model that does not exist.
        """
        judge, rubric_name, checked = _build_judge(
            params, deps, allowed=cls.PARAMS, default_rubric="judge-correctness", pairwise=False
        )
        name = params.get("name") or "judge_" + rubric_name.removeprefix("judge-").replace("-", "_")
        builtin = JUDGE_RUBRICS.get(rubric_name)
        needs = builtin.needs if builtin is not None and not builtin.pairwise else ()
        return cls(judge, name=str(name), scale=checked["scale"], concurrency=checked["concurrency"], needs=needs)

    @property
    def rubric(self) -> PromptVersion:
        return self._judge.rubric

    async def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        """One score per sample, in order; at most ``concurrency`` judge calls at a time."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(sample: Sample) -> Score:
            async with gate:
                return await self.score_one(sample)

        return list(await asyncio.gather(*(one(s) for s in samples)))

    async def score_one(self, sample: Sample) -> Score:
        example = sample.example
        base: dict[str, Any] = {"rubric": self._judge.rubric.name, "rubric_version": self._judge.rubric.version}
        if "human_score" in example.metadata:
            base["human_score"] = example.metadata["human_score"]
        if sample.error:
            return Score.failed(self.name, f"the system errored: {sample.error}", **base)
        if "reference" in self.needs and not (example.expected or example.facts):
            return Score.failed(self.name, "the example has no reference answer or facts to judge against", **base)
        if "context" in self.needs and not sample.contexts:
            return Score.failed(self.name, "the sample has no retrieved context to judge against", **base)
        values = {
            "input": example.input,
            "output": sample.output,
            "expected": example.expected or "",
            "facts": list(example.facts),
            "context": _context_variable(sample.contexts),
            "scale": self.scale,
        }
        reply = await self._judge.ask(values, lambda text: parse_verdict(text, self.scale), self.name)
        details = {**base, "model": self._judge.model, **reply.usage()}
        if reply.parsed is None:
            return Score.failed(self.name, reply.error or "no verdict", raw=reply.raw[:_RAW_LIMIT], **details)
        verdict: Verdict = reply.parsed
        details |= {"score": verdict.score, "scale": self.scale, "reason": verdict.reason}
        return Score(self.name, round(verdict.value, 6), details=details)


# ---- pairwise judge ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairwiseVerdict:
    """The outcome of comparing answer A with answer B on one example, judged in both orders.

    ``winner`` is ``a`` or ``b`` only when both orders agree; when they disagree it is ``tie`` and
    ``position_inconsistent`` is true. ``first`` is the verdict with A shown first, ``second`` the one with B shown
    first, translated back to A/B. ``winner`` is None when either call failed (``error`` says why).
    """

    example_id: str
    winner: Winner | None
    position_inconsistent: bool = False
    first: Winner | None = None
    second: Winner | None = None
    reasons: tuple[str, ...] = ()
    attempts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class PairwiseSummary:
    """Wins, losses and ties of A against B over many examples. Rates are over the judged (non-errored) ones."""

    n: int
    a_wins: int
    b_wins: int
    ties: int
    errors: int
    position_inconsistent: int

    @property
    def judged(self) -> int:
        return self.n - self.errors

    @property
    def a_win_rate(self) -> float | None:
        """A's wins plus half the ties, over the judged examples (0.5 means no difference)."""
        return (self.a_wins + self.ties / 2) / self.judged if self.judged else None

    @property
    def inconsistency_rate(self) -> float | None:
        """The share of judged examples on which the two orders disagreed: how much position sways the judge."""
        return self.position_inconsistent / self.judged if self.judged else None


def summarize_pairwise(verdicts: Sequence[PairwiseVerdict]) -> PairwiseSummary:
    winners = [v.winner for v in verdicts]
    return PairwiseSummary(
        n=len(verdicts),
        a_wins=winners.count("a"),
        b_wins=winners.count("b"),
        ties=winners.count("tie"),
        errors=winners.count(None),
        position_inconsistent=sum(1 for v in verdicts if v.winner is not None and v.position_inconsistent),
    )


_SWAPPED: dict[Winner, Winner] = {"a": "b", "b": "a", "tie": "tie"}


class PairwiseJudge:
    """Compares two answers to the same example, in both orders, with the ``judge-pairwise`` rubric.

    >>> judge = PairwiseJudge.from_params({}, deps)                                        # doctest: +SKIP
    >>> verdicts = await judge.compare_samples(baseline_samples, candidate_samples)        # doctest: +SKIP
    >>> summarize_pairwise(verdicts).a_win_rate                                            # doctest: +SKIP
    """

    name = "pairwise_judge"
    PARAMS = frozenset({"rubric", "version", "label", "environment", "model", "retries", "concurrency", "max_tokens"})

    def __init__(self, judge: _Judge, *, concurrency: int) -> None:
        self._judge = judge
        self.concurrency = concurrency

    @classmethod
    def from_params(cls, params: dict[str, Any], deps: MetricDeps) -> PairwiseJudge:
        """Parameters as for `JudgeMetric.from_params` (``rubric`` defaults to ``judge-pairwise``; no name or scale)."""
        judge, _, checked = _build_judge(
            params, deps, allowed=cls.PARAMS, default_rubric="judge-pairwise", pairwise=True
        )
        return cls(judge, concurrency=checked["concurrency"])

    async def compare(
        self, example: Example, output_a: str, output_b: str, *, contexts: Sequence[RetrievedContext] = ()
    ) -> PairwiseVerdict:
        """Judge (A, B) and (B, A); a winner only when both orders pick it."""
        return await self._compare(example, output_a, output_b, contexts, asyncio.Semaphore(self.concurrency))

    async def compare_samples(self, a: Sequence[Sample], b: Sequence[Sample]) -> list[PairwiseVerdict]:
        """Compare two runs over the same examples (paired by example id, in ``a``'s order), ``concurrency`` judge
        calls at a time. A pair where either run errored, or an example only ``b`` lacks, is an errored verdict."""
        by_id = {s.example.id: s for s in b}
        gate = asyncio.Semaphore(self.concurrency)

        async def one(left: Sample) -> PairwiseVerdict:
            right = by_id.get(left.example.id)
            if right is None:
                return PairwiseVerdict(left.example.id, None, error="the other run has no sample for this example")
            if left.error or right.error:
                return PairwiseVerdict(left.example.id, None, error=f"the system errored: {left.error or right.error}")
            return await self._compare(left.example, left.output, right.output, (), gate)

        return list(await asyncio.gather(*(one(s) for s in a)))

    async def _compare(
        self,
        example: Example,
        output_a: str,
        output_b: str,
        contexts: Sequence[RetrievedContext],
        gate: asyncio.Semaphore,
    ) -> PairwiseVerdict:
        base = {"input": example.input, "expected": example.expected or "", "facts": list(example.facts),
                "context": _context_variable(contexts)}  # fmt: skip

        async def ask(first: str, second: str) -> _Reply[PairwiseChoice]:
            async with gate:
                return await self._judge.ask({**base, "output_a": first, "output_b": second}, parse_pairwise_verdict,
                                             self.name)  # fmt: skip

        shown_a_first, shown_b_first = await asyncio.gather(ask(output_a, output_b), ask(output_b, output_a))
        attempts = shown_a_first.attempts + shown_b_first.attempts
        if shown_a_first.parsed is None or shown_b_first.parsed is None:
            failed = shown_a_first if shown_a_first.parsed is None else shown_b_first
            return PairwiseVerdict(example.id, None, attempts=attempts, error=failed.error or "no verdict")
        first: Winner = shown_a_first.parsed.winner
        second: Winner = _SWAPPED[shown_b_first.parsed.winner]
        agreed = first == second
        return PairwiseVerdict(
            example.id,
            first if agreed else "tie",
            position_inconsistent=not agreed,
            first=first,
            second=second,
            reasons=(shown_a_first.parsed.reason, shown_b_first.parsed.reason),
            attempts=attempts,
        )


# ---- agreement with people --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How far a judge agrees with human labels on the items both labelled.

    Attributes:
        n: Items with both a judge and a human score.
        exact: Share of those with equal scores.
        kappa: Cohen's kappa, weighted (quadratic by default: a 5 against a 4 disagrees less than a 5 against a 1);
            None when undefined (both raters gave one value throughout).
        spearman: Spearman's rank correlation; None when either side is constant.
        skipped: Items missing a score on either side.
    """

    n: int
    exact: float
    kappa: float | None
    spearman: float | None
    skipped: int = 0
    weights: str = "quadratic"


def judge_agreement(
    judge_scores: Sequence[float | None],
    human_scores: Sequence[float | None],
    *,
    weights: Literal["quadratic", "linear", "none"] = "quadratic",
) -> Agreement:
    """Agreement between a judge's scores and human labels, item by item, on the same scale (for a `JudgeMetric`
    that is the raw ``details["score"]`` against ``details["human_score"]``).

    Kappa weights disagreements by the distance between the two values (squared for ``quadratic``), so the labels
    should be numbers on an ordinal scale; with two values every weighting is Cohen's plain kappa.

    Raises:
        ValueError: The sequences differ in length, or fewer than 2 items have both scores.
    """
    if weights not in ("quadratic", "linear", "none"):
        raise ValueError(f"weights must be 'quadratic', 'linear' or 'none', got {weights!r}")
    if len(judge_scores) != len(human_scores):
        raise ValueError(f"{len(judge_scores)} judge scores but {len(human_scores)} human scores")
    pairs = [(float(j), float(h)) for j, h in zip(judge_scores, human_scores, strict=True)
             if j is not None and h is not None]  # fmt: skip
    if len(pairs) < 2:
        raise ValueError(f"agreement needs at least 2 items scored by both the judge and a person, got {len(pairs)}")
    if any(math.isnan(x) for pair in pairs for x in pair):
        raise ValueError("a score is NaN; give None for a missing score")
    judge = np.array([round(j, 9) for j, _ in pairs])
    human = np.array([round(h, 9) for _, h in pairs])
    exact = float(np.mean(judge == human))
    return Agreement(
        n=len(pairs),
        exact=round(exact, 6),
        kappa=_weighted_kappa(judge, human, weights),
        spearman=_spearman(judge, human),
        skipped=len(judge_scores) - len(pairs),
        weights=weights,
    )


def human_agreement(items: Sequence[ItemResult]) -> dict[str, Agreement]:
    """Per judge metric of an experiment, its agreement with the human labels its examples carry (``human_score``
    in the example's metadata, which the judge copies into each score's details). Metrics with fewer than two
    labelled items are left out."""
    out: dict[str, Agreement] = {}
    names = {name for item in items for name, score in item.scores.items() if "human_score" in score.details}
    for name in sorted(names):
        judged = [item.scores[name] for item in items if name in item.scores]
        try:
            out[name] = judge_agreement(
                [s.details.get("score") for s in judged], [s.details.get("human_score") for s in judged]
            )
        except ValueError:
            continue
    return out


def _weighted_kappa(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], weights: str) -> float | None:
    """``1 - sum(w * observed) / sum(w * expected)`` over the table of value pairs, ``w`` growing with the distance
    between the two values (0 on the diagonal)."""
    values = np.unique(np.concatenate([a, b]))
    index = {v: i for i, v in enumerate(values.tolist())}
    observed = np.zeros((len(values), len(values)))
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        observed[index[x], index[y]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    distance = np.abs(values[:, None] - values[None, :])
    w = {"quadratic": distance**2, "linear": distance, "none": (distance > 0).astype(float)}[weights]
    disagreement_by_chance = float((w * expected).sum())
    if disagreement_by_chance == 0.0:
        return None
    return round(1.0 - float((w * observed).sum()) / disagreement_by_chance, 6)


def _spearman(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float | None:
    if np.all(a == a[0]) or np.all(b == b[0]):
        return None
    from scipy.stats import spearmanr

    rho = float(spearmanr(a, b).statistic)
    return None if math.isnan(rho) else round(rho, 6)
