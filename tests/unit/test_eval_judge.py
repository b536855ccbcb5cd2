"""LLM-as-judge on a scripted model: rubric seeding, verdict parsing, retries with corrections, errors that stay
explicit, pairwise judging in both orders, and agreement with human labels on hand-computed cases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace

from llmops import ModelConfig
from llmops._settings import GatewaySettings
from llmops.evaluation._judge import (
    JUDGE_RUBRICS,
    JudgeMetric,
    PairwiseJudge,
    judge_agreement,
    seed_judge_prompts,
    summarize_pairwise,
)
from llmops.evaluation._types import Example, MetricDeps, RetrievedContext, Sample, Score, ScoringContext
from llmops.evaluation._verdicts import VerdictParseError, parse_pairwise_verdict, parse_verdict
from llmops.gateway import ChatRequest, Gateway, ProviderError
from llmops.prompts import PromptRegistry
from llmops.store import Store
from llmops.testing import ScriptedProvider

JUDGE = "judge-model"
PTO = Example(
    id="pto",
    input="How many PTO days do new employees get?",
    expected="New employees get 15 days of PTO.",
    facts=("15 days",),
    metadata={"human_score": 4},
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromptRegistry]:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('judge') / 'store.db'}")
    store.migrate()
    prompts = PromptRegistry(store)
    seed_judge_prompts(prompts)
    yield prompts
    store.engine.dispose()


def _deps(registry: PromptRegistry, replies: Any) -> tuple[MetricDeps, ScriptedProvider]:
    scripted = ScriptedProvider(replies)
    gateway = Gateway(
        [ModelConfig(name=JUDGE, provider="scripted")],
        {JUDGE: scripted},
        trace.get_tracer("test"),
        settings=GatewaySettings(cache=False, retries=0),
    )
    return MetricDeps(gateway=gateway, prompts=registry, judge_model=JUDGE), scripted


def _score(metric: JudgeMetric, samples: list[Sample]) -> list[Score]:
    # The judge holds what it needs from construction; the context only shares embeddings, which it does not use.
    return asyncio.run(metric.score(samples, ScoringContext(MetricDeps())))


def _one(registry: PromptRegistry, replies: Any, sample: Sample | None = None, **params: Any) -> tuple[Score, Any]:
    deps, scripted = _deps(registry, replies)
    metric = JudgeMetric.from_params(params, deps)
    [score] = _score(metric, [sample or Sample(PTO, "New hires get 15 days.")])
    return score, scripted


# ---- seeding --------------------------------------------------------------------------------------------------


def test_seeding_creates_each_rubric_labelled_production_once(registry: PromptRegistry) -> None:
    for name in ("judge-correctness", "judge-faithfulness", "judge-relevance", "judge-pairwise"):
        assert name in JUDGE_RUBRICS
        assert registry.get(name).version == 1
        for environment in registry.environments:
            assert registry.labels(name, environment) == {"production": 1}
    seed_judge_prompts(registry)  # again: nothing new
    assert [v.version for v in registry.versions("judge-correctness")] == [1]
    pairwise = registry.get("judge-pairwise")
    assert {"output_a", "output_b"} <= pairwise.variables.keys()


def test_the_correctness_rubric_renders_the_sample(registry: PromptRegistry) -> None:
    score, scripted = _one(registry, '{"score": 5, "reason": "States 15 days."}')
    assert score.value == 1.0
    request: ChatRequest = scripted.requests[0]
    system, user = request.messages
    assert '"score"' in system["content"] and "1 to 5" in system["content"]
    assert "Question: How many PTO days" in user["content"]
    assert "Reference answer: New employees get 15 days of PTO." in user["content"]
    assert "- 15 days" in user["content"] and "Answer to grade: New hires get 15 days." in user["content"]
    assert "{{" not in user["content"] and "{%" not in user["content"]
    assert request.temperature == 0.0
    schema = request.response_format["json_schema"]["schema"]  # type: ignore[index]
    assert request.response_format["type"] == "json_schema"  # type: ignore[index]
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4, 5] and schema["required"] == ["score", "reason"]


def test_faithfulness_numbers_the_retrieved_context(registry: PromptRegistry) -> None:
    contexts = (RetrievedContext("pto.md", "Full-time staff accrue 15 days."), RetrievedContext("x.md", "Other."))
    sample = Sample(PTO, "15 days.", contexts=contexts)
    score, scripted = _one(registry, '{"score": 3, "reason": "ok"}', sample, rubric="judge-faithfulness")
    assert score.metric == "judge_faithfulness" and score.value == 0.5
    user = scripted.requests[0].messages[1]["content"]
    assert "[1] Full-time staff accrue 15 days." in user and "[2] Other." in user


# ---- parsing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "score", "reason"),
    [
        ('{"score": 4, "reason": "Mostly right."}', 4, "Mostly right."),
        ('```json\n{"score": 2, "reason": "Wrong year."}\n```', 2, "Wrong year."),
        ('Here is my verdict:\n{"score": 3, "reason": "Partly."}\nI hope this helps!', 3, "Partly."),
        ("{'score': 5, 'reason': 'Exact.',}", 5, "Exact."),
        ('{"score": "4", "reason": "String score."}', 4, "String score."),
        ('{"score": 4.0, "reason": "Whole float."}', 4, "Whole float."),
        ('{"evaluation": {"score": 1, "reason": "Nested."}}', 1, "Nested."),
        ("The answer misses the date.\nScore: 2/5", 2, "The answer misses the date."),
        ("**Score:** 4 - close enough", 4, "close enough"),
        ('{"score": 4, "reason": "The answer is right but it goes on and on and', 4, ""),  # cut by max_tokens
    ],
)
def test_verdicts_are_read_from_what_models_write(text: str, score: int, reason: str) -> None:
    verdict = parse_verdict(text, scale=5)
    assert verdict.score == score and verdict.reason == reason
    assert verdict.value == (score - 1) / 4


@pytest.mark.parametrize(
    ("text", "kind", "says"),
    [
        ("", "empty", "no text"),
        ("   \n ", "empty", "no text"),
        ("I cannot evaluate this answer without more context.", "refusal", "refused"),
        ('{"score": null, "reason": "I\'m sorry, I can\'t judge medical advice."}', "refusal", "refused"),
        ('{"score": 6, "reason": "Great."}', "out_of_range", "outside the rubric's 1..5"),
        ('{"score": 0, "reason": "Bad."}', "out_of_range", "outside the rubric's 1..5"),
        ("Score: 8/10", "out_of_range", "out of 10"),
        ('{"score": 3.5, "reason": "Half."}', "invalid_score", "whole number"),
        ('{"score": "good", "reason": "x"}', "invalid_score", "whole number"),
        ('{"scor": 4, "reason": "typo"}', "no_verdict", "no 'score' field"),
        ('{"score" 4 "reason"', "no_verdict", "no JSON verdict"),
        ("The answer looks fine to me.", "no_verdict", "no JSON verdict"),
    ],
)
def test_unusable_verdicts_are_refused_with_their_cause(text: str, kind: str, says: str) -> None:
    with pytest.raises(VerdictParseError, match=says) as caught:
        parse_verdict(text, scale=5)
    assert caught.value.kind == kind


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ('{"winner": "a", "reason": "More complete."}', "a"),
        ('{"winner": "B", "reason": "x"}', "b"),
        ('```json\n{"winner": "tie", "reason": "Same."}\n```', "tie"),
        ("Both are fine.\nWinner: Answer B", "b"),
        ("Winner: it's a tie", "tie"),
        ("After comparing, [[A]]", "a"),
    ],
)
def test_pairwise_verdicts_are_read(text: str, winner: str) -> None:
    assert parse_pairwise_verdict(text).winner == winner


# ---- the metric -----------------------------------------------------------------------------------------------


def test_prose_around_the_json_scores_with_details(registry: PromptRegistry) -> None:
    score, _ = _one(registry, 'Sure! Here is the grade.\n```json\n{"score": 4, "reason": "Right number."}\n```\nDone.')
    assert score.metric == "judge_correctness" and score.value == 0.75 and score.error is None
    details = score.details
    assert details["score"] == 4 and details["scale"] == 5 and details["reason"] == "Right number."
    assert details["attempts"] == 1 and details["human_score"] == 4 and details["model"] == JUDGE
    assert details["rubric"] == "judge-correctness" and details["rubric_version"] == 1


def test_a_ten_point_scale_maps_onto_zero_to_one(registry: PromptRegistry) -> None:
    score, scripted = _one(registry, '{"score": 7, "reason": "ok"}', scale=10)
    assert score.value == pytest.approx(6 / 9, abs=1e-6)
    assert "1 to 10" in scripted.requests[0].messages[0]["content"]


def test_an_unreadable_reply_is_retried_with_a_correction(registry: PromptRegistry) -> None:
    score, scripted = _one(registry, ["I think it is good", '{"score": 5, "reason": "Correct."}'])
    assert score.value == 1.0 and score.details["attempts"] == 2
    retry = scripted.requests[1].messages
    assert retry[:2] == scripted.requests[0].messages
    assert retry[2] == {"role": "assistant", "content": "I think it is good"}
    assert retry[3]["role"] == "user" and "no JSON verdict" in retry[3]["content"]
    assert '{"score": <1 to 5>' in retry[3]["content"]


def test_retries_exhausted_give_an_error_score_with_the_raw_reply(registry: PromptRegistry) -> None:
    score, scripted = _one(registry, "Looks fine to me." + " really" * 1000, retries=2, max_tokens=2000)
    assert score.value is None and len(scripted.requests) == 3
    assert score.error is not None
    assert score.error.startswith("judge output unparseable after 3 attempts: no JSON verdict")
    assert score.details["raw"].startswith("Looks fine to me.") and len(score.details["raw"]) == 2000
    assert score.details["attempts"] == 3 and score.details["human_score"] == 4


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        ("", "the judge returned no text"),
        ("I'm sorry, but I cannot evaluate answers about employment.", "the judge refused"),
        ('{"score": 9, "reason": "Excellent."}', "the score 9 is outside the rubric's 1..5"),
        ('{"reason": "fine", "verdict": ', "no JSON verdict"),
    ],
)
def test_empty_refused_out_of_range_and_malformed_replies_end_as_errors(
    registry: PromptRegistry, reply: str, says: str
) -> None:
    score, scripted = _one(registry, reply, retries=1)
    assert score.value is None and score.error is not None
    assert score.error.startswith(f"judge output unparseable after 2 attempts: {says}")
    assert len(scripted.requests) == 2


def test_a_provider_error_is_an_error_score(registry: PromptRegistry) -> None:
    def down(request: ChatRequest) -> str:
        raise ProviderError("upstream is down", status=503)

    score, _ = _one(registry, down)
    assert score.value is None and score.error is not None
    assert score.error.startswith("judge call failed:") and "upstream is down" in score.error
    assert score.details["attempts"] == 1


def test_samples_the_rubric_cannot_judge_error_without_a_call(registry: PromptRegistry) -> None:
    deps, scripted = _deps(registry, '{"score": 5, "reason": "x"}')
    correctness = JudgeMetric.from_params({}, deps)
    faithfulness = JudgeMetric.from_params({"rubric": "judge-faithfulness"}, deps)
    bare = Example(id="bare", input="Hi?")
    scores = _score(correctness, [Sample(bare, "Hello"), Sample(PTO, "", error="timeout")])
    assert [s.error for s in scores] == [
        "the example has no reference answer or facts to judge against",
        "the system errored: timeout",
    ]
    [no_context] = _score(faithfulness, [Sample(PTO, "15 days")])
    assert no_context.error == "the sample has no retrieved context to judge against"
    assert scripted.requests == []


def test_every_sample_gets_a_score_in_order(registry: PromptRegistry) -> None:
    def by_output(request: ChatRequest) -> str:
        answer = request.messages[1]["content"].rsplit("Answer to grade: ", 1)[1].split("\n")[0]
        return {"one": '{"score": 1, "reason": "x"}', "three": "Score: 3/5", "five": "nonsense"}[answer]

    deps, scripted = _deps(registry, by_output)
    metric = JudgeMetric.from_params({"retries": 0, "concurrency": 2, "name": "judge"}, deps)
    samples = [
        Sample(Example(id=f"e{n}", input="Q?", expected="A."), text) for n, text in enumerate(["one", "three", "five"])
    ]
    scores = _score(metric, samples)
    assert [s.metric for s in scores] == ["judge"] * 3
    assert [s.value for s in scores] == [0.0, 0.5, None]
    assert scores[2].error is not None and "unparseable after 1 attempt:" in scores[2].error
    assert len(scripted.requests) == 3


def test_parameters_are_checked(registry: PromptRegistry) -> None:
    deps, _ = _deps(registry, "x")
    with pytest.raises(ValueError, match=r"unknown judge parameters \['rubrik', 'temp'\]"):
        JudgeMetric.from_params({"rubrik": "judge-relevance", "temp": 0}, deps)
    with pytest.raises(ValueError, match="judge rubric not found"):
        JudgeMetric.from_params({"rubric": "judge-nope"}, deps)
    with pytest.raises(ValueError, match="unknown model 'gpt-9'"):
        JudgeMetric.from_params({"model": "gpt-9"}, deps)
    with pytest.raises(ValueError, match="no judge model"):
        JudgeMetric.from_params({}, MetricDeps(gateway=deps.gateway, prompts=registry))
    with pytest.raises(ValueError, match="scale must be a whole number from 2"):
        JudgeMetric.from_params({"scale": 1}, deps)
    with pytest.raises(ValueError, match="version or its label, not both"):
        JudgeMetric.from_params({"version": 1, "label": "production"}, deps)
    with pytest.raises(ValueError, match="needs the gateway and the prompt registry"):
        JudgeMetric.from_params({}, MetricDeps(judge_model=JUDGE))
    relevance = JudgeMetric.from_params({"rubric": "judge-relevance", "version": 1}, deps)
    assert relevance.name == "judge_relevance" and relevance.rubric.version == 1 and relevance.higher_is_better


def test_an_edited_rubric_is_used_by_version(registry: PromptRegistry) -> None:
    edited = [{"role": "user", "content": "Q: {{ input }} A: {{ output }}. JSON score 1-{{ scale }} please."}]
    version = registry.create("judge-terse", edited, author="ana").version
    score, scripted = _one(registry, '{"score": 2, "reason": "meh"}', rubric="judge-terse", version=version)
    assert score.metric == "judge_terse" and score.value == 0.25
    assert scripted.requests[0].messages == [
        {"role": "user", "content": "Q: How many PTO days do new employees get? A: New hires get 15 days.. "
                                    "JSON score 1-5 please."}
    ]  # fmt: skip
    typed = [{"role": "user", "content": "{{ input }} {{ facts }}"}]
    registry.create("judge-typed", typed, author="ana", variables={"input": "str", "facts": "str"})
    wrong, scripted = _one(registry, '{"score": 2, "reason": "meh"}', rubric="judge-typed", version=1)
    assert wrong.value is None and scripted.requests == []
    assert wrong.error is not None and wrong.error.startswith("the rubric judge-typed v1 cannot be rendered")
    assert "facts (expected str, got list)" in wrong.error
    sneaky = [{"role": "user", "content": "{{ input }} {{ secret }}"}]
    registry.create("judge-sneaky", sneaky, author="ana")
    registry.move_label("judge-sneaky", "production", 1, environment="dev", by="ana")
    with pytest.raises(ValueError, match=r"uses variables \['secret'\]"):
        JudgeMetric.from_params({"rubric": "judge-sneaky"}, _deps(registry, "x")[0])


# ---- pairwise -------------------------------------------------------------------------------------------------

GOOD, BAD = "New employees get 15 days of PTO.", "New employees get unlimited PTO."


def _answers(request: ChatRequest) -> tuple[str, str]:
    user = request.messages[1]["content"]
    a = user.split("Answer A: ", 1)[1].split("\n\nAnswer B: ")[0]
    b = user.split("Answer B: ", 1)[1]
    return a, b


def _pairwise(registry: PromptRegistry, reply: Callable[[ChatRequest], str]) -> tuple[PairwiseJudge, Any]:
    deps, scripted = _deps(registry, reply)
    return PairwiseJudge.from_params({}, deps), scripted


def test_a_winner_counts_when_both_orders_agree(registry: PromptRegistry) -> None:
    def prefers_15_days(request: ChatRequest) -> str:
        a, _ = _answers(request)
        return json.dumps({"winner": "a" if "15 days" in a else "b", "reason": "states the number"})

    judge, scripted = _pairwise(registry, prefers_15_days)
    verdict = asyncio.run(judge.compare(PTO, GOOD, BAD))
    assert verdict.winner == "a" and not verdict.position_inconsistent
    assert (verdict.first, verdict.second, verdict.attempts) == ("a", "a", 2)
    shown = sorted(_answers(r) for r in scripted.requests)
    assert shown == sorted([(GOOD, BAD), (BAD, GOOD)])  # both orders were judged
    assert asyncio.run(judge.compare(PTO, BAD, GOOD)).winner == "b"


def test_a_judge_that_always_picks_the_first_answer_gets_a_tie(registry: PromptRegistry) -> None:
    judge, _ = _pairwise(registry, lambda request: '{"winner": "a", "reason": "first is best"}')
    verdict = asyncio.run(judge.compare(PTO, GOOD, BAD))
    assert verdict.winner == "tie" and verdict.position_inconsistent
    assert (verdict.first, verdict.second) == ("a", "b")


def test_comparing_two_runs_summarises_wins_ties_and_position_bias(registry: PromptRegistry) -> None:
    def judge_reply(request: ChatRequest) -> str:
        a, b = _answers(request)
        if "biased" in a + b:
            return '{"winner": "a", "reason": "position"}'
        if "same" in a and "same" in b:
            return '{"winner": "tie", "reason": "equal"}'
        return json.dumps({"winner": "a" if "15" in a else "b", "reason": "number"})

    judge, _ = _pairwise(registry, judge_reply)
    examples = [Example(id=f"q{n}", input=f"Question {n}?") for n in range(5)]
    run_a = [Sample(examples[0], GOOD), Sample(examples[1], BAD), Sample(examples[2], "same"),
             Sample(examples[3], "biased one"), Sample(examples[4], "x", error="timeout")]  # fmt: skip
    run_b = [Sample(examples[n], text) for n, text in enumerate([BAD, GOOD, "same", "biased two", "y"])]
    verdicts = asyncio.run(judge.compare_samples(run_a, run_b))
    assert [v.example_id for v in verdicts] == ["q0", "q1", "q2", "q3", "q4"]
    assert [v.winner for v in verdicts] == ["a", "b", "tie", "tie", None]
    assert verdicts[4].error == "the system errored: timeout"
    summary = summarize_pairwise(verdicts)
    assert (summary.n, summary.a_wins, summary.b_wins, summary.ties, summary.errors) == (5, 1, 1, 2, 1)
    assert summary.position_inconsistent == 1 and summary.inconsistency_rate == 0.25
    assert summary.a_win_rate == 0.5


def test_a_pairwise_call_that_fails_is_an_errored_verdict(registry: PromptRegistry) -> None:
    judge, _ = _pairwise(registry, lambda request: "They are both answers.")
    verdict = asyncio.run(judge.compare(PTO, GOOD, BAD))
    assert verdict.winner is None and verdict.attempts == 6
    assert verdict.error is not None and verdict.error.startswith("judge output unparseable after 3 attempts")


# ---- agreement ------------------------------------------------------------------------------------------------


def test_kappa_of_a_known_two_by_two_table() -> None:
    # judge\human  yes  no         p_o = (20 + 15) / 50 = 0.7
    #   yes         20    5        p_e = (25 * 30 + 25 * 20) / 50^2 = 0.5
    #   no          10   15        kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    judge = [1] * 25 + [0] * 25
    human = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    agreement = judge_agreement(judge, human)
    assert agreement.n == 50 and agreement.exact == 0.7
    assert agreement.kappa == pytest.approx(0.4)
    assert judge_agreement(judge, human, weights="none").kappa == pytest.approx(0.4)  # two values: any weighting


def test_quadratic_kappa_and_spearman_on_three_levels() -> None:
    # Pairs (1,1) (1,2) (2,2) (2,3) (3,3) (3,1): weighted disagreement observed (1 + 1 + 4) / 6 = 1; each marginal
    # is 1/3, so by chance (1/9) * (0+1+4 + 1+0+1 + 4+1+0) = 4/3; kappa = 1 - 1 / (4/3) = 0.25.
    # Ranks (ties averaged): judge [1.5,1.5,3.5,3.5,5.5,5.5], human [1.5,3.5,3.5,5.5,5.5,1.5] -> rho = 4/16 = 0.25.
    agreement = judge_agreement([1, 1, 2, 2, 3, 3, None], [1, 2, 2, 3, 3, 1, 2])
    assert (agreement.n, agreement.skipped, agreement.exact) == (6, 1, 0.5)
    assert agreement.kappa == pytest.approx(0.25) and agreement.spearman == pytest.approx(0.25)


def test_spearman_without_ties() -> None:
    # d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8
    agreement = judge_agreement([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert agreement.spearman == pytest.approx(0.8) and agreement.exact == 0.2


def test_agreement_needs_two_pairs_and_reports_undefined_values() -> None:
    with pytest.raises(ValueError, match="at least 2 items scored by both"):
        judge_agreement([4, None, 3], [None, 5, 3])
    with pytest.raises(ValueError, match="3 judge scores but 2 human scores"):
        judge_agreement([1, 2, 3], [1, 2])
    constant = judge_agreement([3, 3, 3], [3, 3, 3])
    assert constant.exact == 1.0 and constant.kappa is None and constant.spearman is None


def test_agreement_from_judge_scores(registry: PromptRegistry) -> None:
    def grade(request: ChatRequest) -> str:
        return (
            '{"score": 5, "reason": "x"}' if "15" in request.messages[1]["content"].split("grade:")[1] else "Score: 1"
        )

    deps, _ = _deps(registry, grade)
    metric = JudgeMetric.from_params({}, deps)
    examples = [Example(id=f"e{n}", input="Q?", expected="15 days", metadata={"human_score": h})
                for n, h in enumerate([5, 1, 2])]  # fmt: skip
    scores = _score(metric, [Sample(examples[0], "15 days"), Sample(examples[1], "10"), Sample(examples[2], "20")])
    agreement = judge_agreement(
        [s.details.get("score") for s in scores], [s.details.get("human_score") for s in scores]
    )
    assert agreement.n == 3 and agreement.exact == pytest.approx(2 / 3)
