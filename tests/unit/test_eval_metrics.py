"""Non-LLM evaluation metrics and their registry: hand-computed values, missing fields, errored samples, bad configs."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import llmops._plugins
from llmops.evaluation import RelevantPassage, RetrievalQuery, evaluate_retrieval
from llmops.evaluation import _metrics as registry
from llmops.evaluation._metrics import MetricConfigError, build_metric, metric_names
from llmops.evaluation._metrics_generation import GroundingMetric, is_refusal
from llmops.evaluation._types import (
    Example,
    Metric,
    MetricDeps,
    RetrievedContext,
    Sample,
    Score,
    ScoringContext,
)
from llmops.guardrails import GroundingChecker
from llmops.rag import ABSTAIN_ANSWER
from llmops.testing import HashEmbedder

QUESTION = "How many days of paid time off do new employees get?"
PTO = "New employees get 15 days of paid time off per year."
CARRY = "Unused days carry over up to 5 days into the next year."
UNRELATED = "The cafeteria serves lunch from noon until two in the afternoon."


def example(**fields: Any) -> Example:
    return Example(id=fields.pop("id", "e1"), input=fields.pop("input", QUESTION), **fields)


def chunk(source: str, text: str = "") -> RetrievedContext:
    return RetrievedContext(source=source, text=text)


def sample(ex: Example | None = None, output: str = "", **fields: Any) -> Sample:
    return Sample(example=ex or example(), output=output, **fields)


def deps() -> MetricDeps:
    return MetricDeps(embedder=HashEmbedder())


def run(name: str, samples: Sequence[Sample], params: dict[str, Any] | None = None, **kw: Any) -> list[Score]:
    metric_deps = kw.pop("metric_deps", None) or deps()
    metric = build_metric(name, params or {}, metric_deps)
    assert isinstance(metric, Metric)
    scores = metric.score(samples, ScoringContext(metric_deps))
    assert len(scores) == len(samples) and all(s.metric == name for s in scores)
    return scores


def value(name: str, one: Sample, params: dict[str, Any] | None = None, **kw: Any) -> float | None:
    return run(name, [one], params, **kw)[0].value


# --- retrieval ------------------------------------------------------------------------------------------------------

SOURCES = (RelevantPassage("a.md"), RelevantPassage("b.md"), RelevantPassage("c.md"))


def ranked(*sources: str) -> Sample:
    return sample(example(sources=SOURCES), contexts=tuple(chunk(s, "text") for s in sources))


def test_recall_at_k_counts_each_found_source_once() -> None:
    assert value("recall_at_k", ranked("a.md", "x.md", "b.md", "a.md")) == pytest.approx(2 / 3)
    assert value("recall_at_k", ranked("a.md", "x.md", "b.md"), {"k": 2}) == pytest.approx(1 / 3)


def test_precision_at_k_does_not_count_a_repeated_passage() -> None:
    # Relevant new passages at ranks 1 and 3; rank 4 repeats a.md: 2 of 4.
    assert value("precision_at_k", ranked("a.md", "x.md", "b.md", "a.md")) == 0.5
    # Fewer chunks than k: divided by what was retrieved.
    assert value("precision_at_k", ranked("a.md", "x.md"), {"k": 5}) == 0.5
    assert value("precision_at_k", ranked()) == 0.0


def test_mrr_is_the_reciprocal_of_the_first_relevant_rank() -> None:
    assert value("mrr", ranked("x.md", "b.md")) == 0.5
    assert value("mrr", ranked("x.md", "y.md")) == 0.0
    assert value("mrr", ranked("x.md", "y.md", "a.md"), {"k": 2}) == 0.0


def test_ndcg_with_hits_at_ranks_one_and_three() -> None:
    two = sample(example(sources=SOURCES[:2]), contexts=(chunk("a.md"), chunk("x.md"), chunk("b.md")))
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert value("ndcg_at_k", two) == pytest.approx(expected)
    # The ideal holds min(k, relevant) hits: with k=1 only rank 1 counts, and it is a hit.
    assert value("ndcg_at_k", two, {"k": 1}) == 1.0


def test_context_precision_averages_precision_at_each_relevant_rank() -> None:
    assert value("context_precision", ranked("a.md", "x.md", "b.md")) == pytest.approx((1 + 2 / 3) / 2)
    assert value("context_precision", ranked("x.md", "a.md")) == 0.5
    assert value("context_precision", ranked("x.md", "y.md")) == 0.0


def test_one_chunk_holding_two_passages_is_one_relevant_chunk() -> None:
    ex = example(sources=(RelevantPassage("pto.md", "15 days"), RelevantPassage("pto.md", "carry over")))
    both = sample(ex, contexts=(chunk("x.md", PTO), chunk("pto.md", f"{PTO} {CARRY}")))
    assert value("recall_at_k", both) == 1.0
    assert value("precision_at_k", both) == 0.5
    assert value("context_precision", both) == 0.5  # precision@2 = 1 relevant chunk / 2


def test_rank_metrics_agree_with_evaluate_retrieval() -> None:
    hits = [chunk("docs/b.md", "x"), chunk("x.md", "y"), chunk("docs/a.md", "z")]
    report = evaluate_retrieval("q", [RetrievalQuery("q", SOURCES)], lambda _q: hits, k=3)
    one = sample(example(sources=SOURCES), contexts=tuple(hits))
    assert value("recall_at_k", one, {"k": 3}) == pytest.approx(report.recall_at_k, abs=1e-4)
    assert value("mrr", one, {"k": 3}) == pytest.approx(report.mrr, abs=1e-4)
    assert value("ndcg_at_k", one, {"k": 3}) == pytest.approx(report.ndcg_at_k, abs=1e-4)


def test_a_snippet_label_matches_by_text_and_path_suffix() -> None:
    ex = example(sources=(RelevantPassage("pto.md", "15 days of PAID time"),))
    hit = sample(ex, contexts=(chunk("other.md", PTO), chunk("handbook/pto.md", PTO.replace(" ", "  "))))
    assert value("mrr", hit) == 0.5


def test_rank_metrics_need_sources_and_fail_errored_samples() -> None:
    for name in ("recall_at_k", "precision_at_k", "mrr", "ndcg_at_k", "context_precision"):
        (missing,) = run(name, [sample(contexts=(chunk("a.md"),))])
        assert missing.skipped and "example.sources" in (missing.error or "")
        (errored,) = run(name, [sample(example(sources=SOURCES), error="timeout")])
        assert errored.errored and errored.error == "the system errored: timeout"


def test_context_recall_is_the_share_of_facts_the_contexts_support() -> None:
    ex = example(facts=(PTO, CARRY))
    (score,) = run("context_recall", [sample(ex, contexts=(chunk("pto.md", PTO), chunk("x.md", UNRELATED)))])
    assert score.value == 0.5 and score.details["unsupported"] == [CARRY]
    assert value("context_recall", sample(ex, contexts=(chunk("pto.md", f"{PTO} {CARRY}"),))) == 1.0
    assert value("context_recall", sample(ex)) == 0.0  # nothing retrieved


def test_context_recall_uses_reference_sentences_without_facts() -> None:
    ex = example(expected=f"{PTO} {CARRY}")
    assert value("context_recall", sample(ex, contexts=(chunk("pto.md", CARRY),))) == 0.5
    # Past k, a context does not count.
    assert value("context_recall", sample(ex, contexts=(chunk("x", UNRELATED), chunk("p", CARRY))), {"k": 1}) == 0.0


def test_context_recall_checks_a_bare_name_by_its_text() -> None:
    ex = example(facts=("Maria Lopez", "Madrid"))
    assert value("context_recall", sample(ex, contexts=(chunk("hr.md", "Questions go to maria lopez in HR."),))) == 0.5


def test_context_recall_needs_facts_or_a_reference() -> None:
    (score,) = run("context_recall", [sample(contexts=(chunk("a.md", PTO),))])
    assert score.skipped and "example.facts" in (score.error or "") and "example.expected" in (score.error or "")


# --- generation -----------------------------------------------------------------------------------------------------


def test_faithfulness_is_the_share_of_claim_characters_supported() -> None:
    contexts = (chunk("pto.md", PTO),)
    assert value("faithfulness", sample(output=PTO, contexts=contexts)) == 1.0
    wrong = "New employees get 20 days of paid time off per year."
    (score,) = run("faithfulness", [sample(output=wrong, contexts=contexts)])
    assert score.value == 0.0 and score.details["unsupported"] == [wrong]
    extra = "The office closes on 4 July."
    (mixed,) = run("faithfulness", [sample(output=f"{PTO} {extra}", contexts=contexts)])
    assert mixed.value == pytest.approx(len(PTO) / (len(PTO) + len(extra)), abs=1e-4)
    assert mixed.details["unsupported"] == [extra]


def test_faithfulness_of_a_refusal_is_one_and_contexts_are_required() -> None:
    contexts = (chunk("pto.md", PTO),)
    (refusal,) = run("faithfulness", [sample(output="I don't know.", contexts=contexts)])
    assert refusal.value == 1.0 and refusal.details["refusal"] is True
    assert value("faithfulness", sample(output="20 days.", contexts=contexts, abstained=True)) == 1.0
    (missing,) = run("faithfulness", [sample(output=PTO)])
    assert missing.skipped and "sample.contexts" in (missing.error or "")


def test_the_batched_grounding_gives_the_checkers_own_verdicts() -> None:
    """Claims that reach the embedding tier score the same batched (scoring context memo) and one by one."""
    context = (chunk("pto.md", "Staff members receive fifteen vacation days annually, granted on the first workday."),)
    outputs = [
        "Staff get vacation days every year from their start.",
        "Members receive annual leave at the first workday.",
        "Vacation days are given to staff members.",
        PTO,
    ]
    samples = [sample(output=o, contexts=context) for o in outputs]
    embedder = HashEmbedder()
    direct = GroundingChecker(embedder)
    expected = [direct.check(o, [c.text for c in context]) for o in outputs]
    assert any(claim.similarity is not None for report in expected for claim in report.claims)

    calls: list[int] = []

    class Counting(HashEmbedder):
        def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
            calls.append(len(texts))
            return super().embed(texts)

    batched = run("faithfulness", samples, metric_deps=MetricDeps(embedder=Counting()))
    assert [s.value for s in batched] == [r.score for r in expected]
    assert len(calls) == 1  # every claim and window embedded in one batch
    configured = run("faithfulness", samples, metric_deps=MetricDeps(grounding=direct))
    assert [s.value for s in configured] == [r.score for r in expected]


def test_statements_checked_together_keep_their_separate_verdicts() -> None:
    """Faithfulness and context recall check the answer and the facts against the contexts in one joined check."""
    context = [
        "Staff members receive fifteen vacation days annually, granted on the first workday. "
        "Questions go to Maria Lopez in HR. Unused days carry over up to 5 days into the next year."
    ]
    answer = "Staff get vacation days every year from their start. Questions go to Maria Lopez. It is 20 days."
    facts = ("Members receive annual leave at the first workday.", CARRY, "Unused days expire in March.", "HR")
    direct = GroundingChecker(HashEmbedder())
    ex = example(facts=facts)
    one = sample(ex, output=answer, contexts=(chunk("pto.md", context[0]),))
    metric_deps = deps()
    scoring = ScoringContext(metric_deps)
    faithfulness, context_recall = (build_metric(n, {}, metric_deps) for n in ("faithfulness", "context_recall"))
    assert isinstance(faithfulness, Metric) and isinstance(context_recall, Metric)
    (faithful,) = faithfulness.score([one], scoring)
    (recall,) = context_recall.score([one], scoring)  # reads the reports faithfulness left in the context

    alone = direct.check(answer, context)
    assert any(c.similarity is not None for c in alone.claims) and 0 < alone.score < 1
    assert faithful.value == alone.score
    assert faithful.details["unsupported"] == [answer[c.start : c.end] for c in alone.unsupported]
    supported = [direct.check(f, context).supported for f in facts[:3]] + [True]  # "HR": no claim, found as text
    assert recall.value == pytest.approx(sum(supported) / len(facts), abs=1e-6)
    assert recall.details["unsupported"] == [f for f, ok in zip(facts, supported, strict=True) if not ok]

    statements = (answer, *facts)
    (reports,) = GroundingMetric().ground(ScoringContext(deps()), [(statements, context)])
    assert reports == [direct.check(statement, context) for statement in statements]


def test_answer_relevance_is_the_question_answer_cosine() -> None:
    embedder = HashEmbedder()
    q, a = embedder.embed([QUESTION, PTO])
    assert value("answer_relevance", sample(output=PTO)) == pytest.approx(max(0.0, float(q @ a)), abs=1e-5)
    assert value("answer_relevance", sample(output=QUESTION)) == pytest.approx(1.0)
    assert value("answer_relevance", sample(output="  ")) == 0.0


def test_answer_relevance_of_refusals() -> None:
    assert value("answer_relevance", sample(output="I don't know.")) == 0.0
    assert value("answer_relevance", sample(example(answerable=False), output="I don't know.")) == 1.0
    assert value("answer_relevance", sample(output=PTO, abstained=True)) == 0.0


def test_answer_relevance_ranks_a_relevant_answer_above_an_unrelated_one_with_minilm() -> None:
    from llmops.knowledge import MiniLMEmbedder

    minilm = MetricDeps(embedder=MiniLMEmbedder())
    relevant, unrelated = run("answer_relevance", [sample(output=PTO), sample(output=UNRELATED)], metric_deps=minilm)
    assert relevant.value is not None and unrelated.value is not None
    assert relevant.value > unrelated.value + 0.2


def test_answer_similarity_compares_with_the_reference() -> None:
    assert value("answer_similarity", sample(example(expected=PTO), output=PTO)) == pytest.approx(1.0)
    assert value("answer_similarity", sample(example(expected=PTO), output="")) == 0.0
    (missing,) = run("answer_similarity", [sample(output=PTO)])
    assert missing.skipped and "example.expected" in (missing.error or "")


def test_fact_coverage_is_the_share_of_facts_the_answer_states() -> None:
    ex = example(facts=(PTO, CARRY))
    (score,) = run("fact_coverage", [sample(ex, output=f"You asked about leave. {PTO}")])
    assert score.value == 0.5 and score.details["missing"] == [CARRY]
    assert value("fact_coverage", sample(ex, output=f"{CARRY} {PTO}")) == 1.0
    assert value("fact_coverage", sample(ex, output="New employees get 20 days of paid time off per year.")) == 0.0
    (missing,) = run("fact_coverage", [sample(output=PTO)])
    assert missing.skipped and "example.facts" in (missing.error or "")


def test_correctness_averages_the_parts_the_example_allows() -> None:
    both = example(expected=PTO, facts=(PTO, CARRY))
    (score,) = run("correctness", [sample(both, output=PTO)])
    assert score.value == pytest.approx(0.75, abs=1e-5)
    assert score.details == {"answer_similarity": pytest.approx(1.0), "fact_coverage": 0.5}
    assert value("correctness", sample(example(facts=(PTO, CARRY)), output=PTO)) == 0.5
    (neither,) = run("correctness", [sample(output=PTO)])
    assert neither.skipped and "example.expected" in (neither.error or "")


@pytest.mark.parametrize(
    "text",
    [
        "I don't know.",
        ABSTAIN_ANSWER,
        "I’m sorry, but I couldn't find that in the documents.",
        "Sorry. There is no information about parking in the handbook.",
        "The provided documents do not mention a parking policy.",
        "That is not covered in the provided sources, so I cannot answer.",
    ],
)
def test_refusals_are_recognised(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        PTO,
        "New employees get 15 days. I don't know about contractors.",
        "You cannot carry over more than 5 days.",
        "No.",
        "",
    ],
)
def test_answers_are_not_refusals(text: str) -> None:
    assert not is_refusal(text)


def test_refusal_correctness_wants_a_refusal_exactly_when_unanswerable() -> None:
    answerable, unanswerable = example(), example(answerable=False)
    cases = [
        (sample(answerable, output=PTO), 1.0),
        (sample(answerable, output="I don't know."), 0.0),
        (sample(unanswerable, output="I could not find this in the documents."), 1.0),
        (sample(unanswerable, output=PTO, abstained=True), 1.0),
        (sample(unanswerable, output=PTO), 0.0),
    ]
    scores = run("refusal_correctness", [s for s, _ in cases])
    assert [s.value for s in scores] == [v for _, v in cases]
    assert scores[4].details == {"refused": False, "answerable": False}


# --- task checks ----------------------------------------------------------------------------------------------------


def test_contains_and_not_contains() -> None:
    answer = sample(output="You get 15 Days of PTO.")
    assert value("contains", answer, {"value": "15 days"}) == 1.0
    assert value("contains", answer, {"value": "15 days", "case_sensitive": True}) == 0.0
    (score,) = run("contains", [answer], {"values": ["15 days", "accrue"]})
    assert score.value == 0.0 and score.details["reason"] == "missing ['accrue']"
    assert value("not_contains", answer, {"values": ["20 days", "contractor"]}) == 1.0
    assert value("not_contains", answer, {"value": "pto"}) == 0.0


def test_contains_without_a_value_wants_the_reference() -> None:
    assert value("contains", sample(example(expected="15 days"), output="You get 15 days.")) == 1.0
    assert value("contains", sample(example(expected="20 days"), output="You get 15 days.")) == 0.0
    (missing,) = run("contains", [sample(output="x")])
    assert missing.skipped and "example.expected" in (missing.error or "")


def test_regex_check() -> None:
    assert value("regex", sample(output="Call ext. 4821."), {"pattern": r"ext\. \d{4}\b"}) == 1.0
    assert value("regex", sample(output="Call HR."), {"pattern": r"ext\. \d{4}\b"}) == 0.0


def test_json_schema_check() -> None:
    schema = {"type": "object", "properties": {"days": {"type": "integer"}}, "required": ["days"]}
    assert value("json_schema", sample(output='{"days": 15}'), {"schema": schema}) == 1.0
    assert value("json_schema", sample(output='```json\n{"days": 15}\n```'), {"schema": schema}) == 1.0
    (wrong,) = run("json_schema", [sample(output='{"days": "15"}')], {"schema": schema})
    assert wrong.value == 0.0 and "$.days" in wrong.details["reason"]
    (prose,) = run("json_schema", [sample(output="Fifteen days.")], {"schema": schema})
    assert prose.value == 0.0 and prose.details["reason"].startswith("not JSON")
    assert value("json_schema", sample(output="[1, 2]")) == 1.0  # no schema: any JSON


def test_entities_check_by_type_and_by_name() -> None:
    params = {"entities": ["EMAIL_ADDRESS", "Ana Ruiz"]}
    assert value("entities", sample(output="Write to Ana Ruiz at ana.ruiz@example.com."), params) == 1.0
    (score,) = run("entities", [sample(output="Write to ana ruiz.")], params)
    assert score.value == 0.0 and score.details["reason"] == "missing ['EMAIL_ADDRESS']"


def test_length_check() -> None:
    answer = sample(output="one two three four")
    assert value("length", answer, {"min_words": 2, "max_words": 4, "max_chars": 18}) == 1.0
    (short,) = run("length", [answer], {"min_words": 5})
    assert short.value == 0.0 and short.details["reason"] == "4 words, min_words is 5"
    assert value("length", answer, {"max_chars": 10}) == 0.0


def test_latency_and_cost_raw_or_against_a_maximum() -> None:
    timed = sample(output="x", latency_ms=250.0, cost_usd=0.002)
    raw = build_metric("latency", {}, deps())
    assert raw.higher_is_better is False
    assert value("latency", timed) == 250.0
    assert value("latency", timed, {"max_ms": 300}) == 1.0
    assert value("latency", timed, {"max_ms": 200}) == 0.0
    assert build_metric("cost", {}, deps()).higher_is_better is False
    assert value("cost", timed) == 0.002
    assert value("cost", timed, {"max_usd": 0.001}) == 0.0
    (missing,) = run("latency", [sample(output="x")])
    assert missing.skipped and "sample.latency_ms" in (missing.error or "")
    (no_cost,) = run("cost", [sample(output="x")], {"max_usd": 1})
    assert no_cost.skipped and "sample.cost_usd" in (no_cost.error or "")


def test_assertions_score_the_share_that_pass() -> None:
    ex = example(
        assertions=(
            {"type": "contains", "value": "15 days"},
            {"type": "regex", "pattern": r"\[\d\]"},
            {"type": "length", "max_words": 3},
        )
    )
    (score,) = run("assertions", [sample(ex, output="New employees get 15 days [1].")])
    assert score.value == pytest.approx(2 / 3, abs=1e-5)
    assert score.details["failed"] == ["length: 6 words, max_words is 3"]


def test_an_invalid_assertion_fails_the_item_with_its_position() -> None:
    bad = example(assertions=({"type": "contains", "value": "x"}, {"type": "regex", "pattern": "("}))
    (score,) = run("assertions", [sample(bad, output="x")])
    assert score.errored and (score.error or "").startswith("assertion 2 is invalid: pattern '('")
    unknown = example(assertions=({"type": "sentiment"},))
    (score,) = run("assertions", [sample(unknown, output="x")])
    assert "unknown check type 'sentiment'" in (score.error or "")
    (none,) = run("assertions", [sample(output="x")])
    assert none.skipped and "example.assertions" in (none.error or "")


# --- every metric ---------------------------------------------------------------------------------------------------

PARAMS: dict[str, dict[str, Any]] = {
    "not_contains": {"value": "x"},
    "regex": {"pattern": "x"},
    "entities": {"entities": ["x"]},
    "length": {"max_words": 3},
}
BUILTIN = sorted(set(registry._BUILTIN) - {"judge"})


@pytest.mark.parametrize("name", BUILTIN)
def test_every_metric_fails_an_errored_sample_and_keeps_the_order(name: str) -> None:
    ok = sample(
        example(expected=PTO, facts=(PTO,), sources=SOURCES, assertions=({"type": "contains", "value": "x"},)),
        output=PTO,
        contexts=(chunk("a.md", PTO),),
        latency_ms=10.0,
        cost_usd=0.0,
    )
    scores = run(name, [ok, sample(output="", error="HTTP 500"), ok], PARAMS.get(name))
    assert scores[1] == Score.failed(name, "the system errored: HTTP 500")
    assert scores[0] == scores[2] and scores[0].value is not None and scores[0].value >= 0.0


def test_metric_names_lists_the_builtins() -> None:
    names = metric_names()
    assert set(BUILTIN) <= set(names) and "judge" in names and "pairwise_judge" not in names
    assert names == sorted(names)


def test_an_unknown_metric_is_refused_with_the_known_names() -> None:
    with pytest.raises(MetricConfigError, match=r"unknown metric 'recal_at_k'; known: .*recall_at_k"):
        build_metric("recal_at_k", {}, deps())
    with pytest.raises(MetricConfigError, match=r"'pairwise_judge' is not a metric: .*compare_samples"):
        build_metric("pairwise_judge", {}, deps())


def test_the_judge_is_built_by_its_own_module() -> None:
    # Parameters are the judge's to check; without a gateway it is refused, naming the metric.
    with pytest.raises(MetricConfigError, match="metric 'judge': a judge metric needs the gateway"):
        build_metric("judge", {}, deps())


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("recall_at_k", {"top_k": 3}, "metric 'recall_at_k' has no parameter 'top_k'; it takes: k"),
        ("faithfulness", {"k": 3}, "metric 'faithfulness' has no parameter 'k'; it takes: no parameters"),
        ("ndcg_at_k", {"k": 0}, "metric 'ndcg_at_k': k must be a positive integer, got 0"),
        ("mrr", {"k": "5"}, "metric 'mrr': k must be a positive integer"),
        ("regex", {"pattern": "(unclosed"}, "metric 'regex': pattern '(unclosed' is not a valid regular expression"),
        ("regex", {}, "metric 'regex': pattern must be a non-empty regular expression"),
        ("json_schema", {"schema": {"type": "nope"}}, "metric 'json_schema': schema is not a valid JSON Schema"),
        ("not_contains", {}, "metric 'not_contains': needs value or values"),
        ("contains", {"value": "a", "values": ["b"]}, "metric 'contains': give value or values, not both"),
        ("contains", {"value": "a", "case_sensitive": "yes"}, "metric 'contains': case_sensitive must be true"),
        ("entities", {"entities": ["PERSON"]}, "metric 'entities': entities ['PERSON'] need an NER model"),
        ("entities", {"entities": []}, "metric 'entities': entities must be a non-empty string or a list"),
        ("length", {}, "metric 'length': needs at least one of min_chars"),
        ("length", {"min_words": 5, "max_words": 2}, "metric 'length': min_words (5) is above max_words"),
        ("length", {"min_chars": -1}, "metric 'length': min_chars must be a non-negative integer"),
        ("latency", {"max_ms": "fast"}, "metric 'latency': max_ms must be a number"),
        ("cost", {"max_usd": -1}, "metric 'cost': the maximum must be a non-negative number"),
    ],
)
def test_bad_parameters_are_refused_naming_the_metric(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(MetricConfigError, match=re.escape(message)):
        build_metric(name, params, deps())


def test_embedding_metrics_need_an_embedder() -> None:
    for name in ("answer_relevance", "answer_similarity", "correctness"):
        with pytest.raises(MetricConfigError, match=rf"metric '{name}' needs an embedder"):
            build_metric(name, {}, MetricDeps())
    build_metric("faithfulness", {}, MetricDeps())  # grounding works on facts and words alone


class _AlwaysHalf:
    name = "always_half"
    higher_is_better = True

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        return [Score(self.name, 0.5) for _ in samples]


class _Entry:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self._target = target

    def load(self) -> Any:
        return self._target


def test_plugins_come_from_the_llmops_metrics_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = [
        _Entry("always_half", lambda params, deps: _AlwaysHalf(params)),
        _Entry("broken", lambda params, deps: object()),
    ]

    def fake_entry_points(*, group: str) -> list[_Entry]:
        return installed if group == "llmops.metrics" else []

    monkeypatch.setattr(llmops._plugins, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert {"always_half", "broken", "recall_at_k"} <= set(metric_names())
    metric = build_metric("always_half", {"anything": 1}, deps())
    assert isinstance(metric, _AlwaysHalf) and metric.params == {"anything": 1}
    with pytest.raises(MetricConfigError, match="metric 'broken': the factory returned object, not a metric"):
        build_metric("broken", {}, deps())
    with pytest.raises(MetricConfigError, match=r"known: .*always_half"):
        build_metric("missing", {}, deps())
