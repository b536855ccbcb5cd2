"""Experiments on SQLite and PostgreSQL with a scripted model: runs that store every item, resume after an
interruption, reuse cached outputs, record errors; paired comparisons computed by hand; the gate; online scoring;
`assert_eval` and the pytest fixture."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from llmops import Platform, RagConfig, Settings
from llmops.evaluation import (
    EvalConfig,
    ExperimentRecord,
    GateResult,
    ItemResult,
    MetricDeps,
    Score,
    TargetError,
    assert_eval,
    compare_experiments,
    evaluate_gate,
    paired_comparison,
)
from llmops.evaluation._config import GateSpec
from llmops.evaluation._tables import OnlineScoreRow
from llmops.gateway import ChatRequest, ProviderError
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL, SAMPLES

GOLDEN = [
    {"id": "pto", "input": "How many PTO days do new employees get?", "facts": ["15 days"], "sources": ["pto.md"]},
    {"id": "expenses", "input": "Within how many days must expense reports be submitted?", "facts": ["30 days"]},
    {"id": "laptop", "input": "When must a company laptop lock its screen?", "facts": ["5 minutes"]},
    {"id": "off-topic", "input": "Who won the football world cup in 1998?", "answerable": False},
]


class Crash(BaseException):
    """What a killed run looks like to the runner: not an Exception it may catch and record."""


def _config(tmp_path: Path, **overrides: Any) -> EvalConfig:
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in GOLDEN))
    data: dict[str, Any] = {
        "name": "answers",
        "dataset": {"file": str(dataset), "name": "golden"},
        # The hash embedder is no judge of relevance: every question retrieves, and the script decides the answer.
        "target": {"app": "handbook-rag", "retrieval": {"min_similarity": -1.0}},
        "metrics": [{"name": "fact_coverage", "threshold": 0.5}, "refusal_correctness", "faithfulness"],
        "concurrency": 2,
    }
    data.update(overrides)
    return EvalConfig.model_validate(data)


def _answers(request: ChatRequest) -> str:
    question = request.messages[-1]["content"]
    if "PTO" in question:
        return "New employees get 15 days of paid time off [1]."
    if "expense" in question:
        return "Expense reports are due within 30 days [1]."
    if "football" in question:
        return "I don't know."
    return "The screen locks after 5 minutes of inactivity [1]."


@pytest.fixture
def ingested(platform: Platform, scripted: ScriptedProvider) -> Platform:
    platform.knowledge.ingest(SAMPLES)
    scripted._replies = _answers  # type: ignore[assignment]
    return platform


def test_a_run_stores_every_item_with_scores_and_trace_and_a_rerun_is_served_from_the_cache(
    ingested: Platform, scripted: ScriptedProvider, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    first = asyncio.run(ingested.evaluator.run(config))
    assert first.status == "finished" and (first.dataset, first.dataset_version) == ("golden", 1)
    assert [i.example_id for i in first.items] == ["pto", "expenses", "laptop", "off-topic"]
    assert first.summary("fact_coverage").mean == 1.0 and first.summary("refusal_correctness").mean == 1.0
    assert all(i.trace_id and not i.cached for i in first.items)
    assert ingested.traces.get(first.items[0].trace_id or "")["spans"]
    # The off-topic question has no facts: fact coverage does not apply (not an error); the refusal was right.
    skipped = first.items[3].scores["fact_coverage"]
    assert skipped.skipped and not skipped.errored
    calls = len(scripted.requests)
    assert calls == 4

    second = asyncio.run(ingested.evaluator.run(config))
    assert second.id != first.id and all(i.cached for i in second.items)
    assert len(scripted.requests) == calls  # nothing was generated again
    assert second.summary("fact_coverage") == first.summary("fact_coverage")
    # Another prompt version is another configuration: nothing is reused.
    ingested.prompts.create(
        "rag-default",
        [{"role": "user", "content": "{{ question }} {{ sources | length }}"}],
        author="ana",
        variables={"question": "str", "sources": "list"},
    )
    third = asyncio.run(ingested.evaluator.run(config))
    assert third.config["prompt"]["version"] == 1  # the label still points at version 1
    pinned = asyncio.run(ingested.evaluator.run(config, target=config.target.merged({"prompt_version": 2})))
    assert pinned.config["prompt"]["version"] == 2 and not any(i.cached for i in pinned.items)


def test_an_interrupted_run_resumes_where_it_stopped(
    ingested: Platform, scripted: ScriptedProvider, tmp_path: Path
) -> None:
    config = _config(tmp_path, concurrency=1)

    def crash_on_the_second(request: ChatRequest) -> str:
        if len(scripted.requests) >= 2:
            raise Crash
        return _answers(request)

    scripted._replies = crash_on_the_second  # type: ignore[assignment]
    with pytest.raises(Crash):
        asyncio.run(ingested.evaluator.run(config))
    running = ingested.evaluator.experiments.list_experiments()
    assert [r["status"] for r in running] == ["running"]
    partial = ingested.evaluator.experiments.get(running[0]["id"])
    assert [i.example_id for i in partial.items] == ["pto"]

    scripted._replies = _answers  # type: ignore[assignment]
    states: list[tuple[int, int, int]] = []
    resumed = asyncio.run(
        ingested.evaluator.run(config, progress=lambda s: states.append((s.done, s.total, s.resumed)))
    )
    assert resumed.id == partial.id and resumed.status == "finished"
    assert [i.example_id for i in resumed.items] == ["pto", "expenses", "laptop", "off-topic"]
    assert states[-1] == (4, 4, 1)
    assert len([r for r in scripted.requests if "PTO" in r.messages[-1]["content"]]) == 1  # not asked twice


def test_a_failing_model_is_an_errored_item_and_fails_the_error_budget(
    ingested: Platform, scripted: ScriptedProvider, tmp_path: Path
) -> None:
    def fail_on_expenses(request: ChatRequest) -> str:
        if "expense" in request.messages[-1]["content"]:
            raise ProviderError("upstream is down", status=503)
        return _answers(request)

    scripted._replies = fail_on_expenses  # type: ignore[assignment]
    config = _config(tmp_path)
    result = asyncio.run(ingested.evaluator.gate(config))
    failed = next(i for i in result.candidate.items if i.example_id == "expenses")
    assert failed.error and "upstream is down" in failed.error
    assert all(s.errored for s in failed.scores.values())
    assert not result.passed
    assert any("1 of 4 items errored" in f for f in result.failures)
    # Errored items are not cached: the next run asks again.
    scripted._replies = _answers  # type: ignore[assignment]
    again = asyncio.run(ingested.evaluator.run(config))
    assert not next(i for i in again.items if i.example_id == "expenses").cached


def test_a_worse_prompt_fails_the_gate_against_a_baseline_target(
    ingested: Platform, scripted: ScriptedProvider, tmp_path: Path
) -> None:
    ingested.prompts.create(
        "rag-default",
        [{"role": "system", "content": "Be vague."}, {"role": "user", "content": "{{ question }}"}],
        author="ana",
        variables={"question": "str", "sources": "list"},
    )

    def by_prompt(request: ChatRequest) -> str:
        if request.messages[0]["content"] == "Be vague.":
            return "It depends on many things."
        return _answers(request)

    scripted._replies = by_prompt  # type: ignore[assignment]
    rows = [{"id": f"q{n}", "input": f"How many PTO days do new employees get? ({n})", "facts": ["15 days"]}
            for n in range(8)]  # fmt: skip
    dataset = tmp_path / "pto.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _config(
        tmp_path,
        dataset={"file": str(dataset)},
        target={"app": "handbook-rag", "prompt_version": 2, "retrieval": {"min_similarity": -1.0}},
        metrics=["fact_coverage"],
        baseline={"target": {"prompt_version": 1}},
    )
    result = asyncio.run(ingested.evaluator.gate(config))
    assert not result.passed and result.comparison is not None
    (coverage,) = result.comparison.metrics
    assert coverage.regressed and coverage.difference == -1.0 and coverage.p_value == pytest.approx(2 / 256)
    assert "fact_coverage: regressed 1.000 -> 0.000" in result.failures[0]

    same = _config(tmp_path, dataset={"file": str(dataset)}, metrics=["fact_coverage"],
                   baseline={"target": {"prompt_version": 1}})  # fmt: skip
    assert asyncio.run(ingested.evaluator.gate(same)).passed


def test_targets_refuse_what_does_not_exist(ingested: Platform, tmp_path: Path) -> None:
    for target, message in [
        ({"app": "nope"}, "no RAG app 'nope'"),
        ({"app": "handbook-rag", "prompt_version": 9}, "prompt 'rag-default'"),
        ({"app": "handbook-rag", "guardrail_policy": "strict"}, "guardrail policy 'strict'"),
        ({"model": "gpt-9"}, "unknown model 'gpt-9'"),
    ]:
        with pytest.raises(TargetError, match=message):
            asyncio.run(ingested.evaluator.run(_config(tmp_path, target=target)))


def test_a_model_target_answers_without_retrieval(ingested: Platform, tmp_path: Path) -> None:
    config = _config(tmp_path, target={"model": LOCAL_MODEL, "max_answer_tokens": 20}, metrics=["fact_coverage"])
    record = asyncio.run(ingested.evaluator.run(config))
    assert record.config["kind"] == "model" and record.summary("fact_coverage").mean == 1.0


def _record(name: str, values: dict[str, float], higher: bool = True) -> ExperimentRecord:
    from datetime import UTC, datetime

    return ExperimentRecord(
        id=name, name=name, dataset="d", dataset_version=1, config={}, config_hash="", status="finished",
        created_at=datetime.now(UTC), finished_at=None,
        items=[ItemResult(k, k, "", {"m": Score("m", v)}) for k, v in values.items()],
        directions={"m": higher},
    )  # fmt: skip


def test_paired_comparison_by_hand() -> None:
    # Five items drop by one, one stays: of the 2^6 sign patterns, 4 reach |mean| >= 5/6 (the zero's sign is free).
    pairs = [(f"e{n}", 1.0, 0.0) for n in range(5)] + [("e5", 1.0, 1.0)]
    result = paired_comparison("m", pairs)
    assert result.difference == pytest.approx(-5 / 6) and result.p_value == pytest.approx(4 / 64)
    assert not result.regressed  # 0.0625 is not under 0.05
    six = paired_comparison("m", [(f"e{n}", 1.0, 0.0) for n in range(6)])
    assert six.p_value == pytest.approx(2 / 64) and six.regressed and six.ci_low == six.ci_high == -1.0
    same = paired_comparison("m", [(f"e{n}", 0.5, 0.5) for n in range(30)])
    assert same.p_value == 1.0 and not same.significant
    # Lower is better (latency): a drop is an improvement.
    faster = paired_comparison("latency", [(f"e{n}", 900.0, 500.0 + n) for n in range(20)], higher_is_better=False)
    assert faster.improved and not faster.regressed and faster.p_value < 0.001 and faster.ci_high < 0
    assert faster.test == "paired sign-flip permutation" and faster.item_diffs[0][0] == "e0"


def test_compare_pairs_by_example_and_leaves_unpaired_and_errored_items_out() -> None:
    base = _record("base", {"a": 1.0, "b": 0.5, "c": 0.0})
    cand = _record("cand", {"a": 1.0, "b": 0.0, "d": 1.0})
    cand.items.append(ItemResult("c", "c", "", {"m": Score.failed("m", "judge unparseable")}))
    (metric,) = compare_experiments(base, cand).metrics
    assert metric.pairs == 2 and metric.difference == pytest.approx(-0.25)
    gate = evaluate_gate(cand, {"m": 0.9}, None, GateSpec(max_error_rate=0.5))
    assert isinstance(gate, GateResult) and not gate.passed
    assert gate.failures == ["m: mean 0.667, the gate requires at least 0.9"]


def test_online_evaluation_scores_a_sample_of_answers_beside_their_traces(tmp_path: Path, database_url: str) -> None:
    scripted = ScriptedProvider("New employees get 15 days of paid time off [1].")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rag_apps=[RagConfig(online_eval_rate=1.0, min_similarity=-1.0), RagConfig(name="unsampled")],
    )
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: scripted})
    try:
        platform.knowledge.ingest(SAMPLES)
        answer = asyncio.run(platform.rag().ask("How many PTO days do new employees get?"))
        asyncio.run(platform.rag("unsampled").ask("How many PTO days do new employees get?"))
        assert platform.online_eval is not None
        platform.online_eval.drain(timeout=30)
        platform.journal.flush()
        with platform.store.session() as session:
            rows = session.scalars(select(OnlineScoreRow)).all()
        assert {(r.request_id, r.metric) for r in rows} == {
            (answer.request_id, "faithfulness"),
            (answer.request_id, "answer_relevance"),
        }
        assert all(r.trace_id == answer.trace_id and r.value is not None for r in rows)
        trace = platform.traces.get(answer.request_id)
        assert set(trace["online_scores"]) == {"faithfulness", "answer_relevance"}
        assert (
            b'llmops_online_eval_score_count{app="handbook-rag",metric="faithfulness"} 1.0' in platform.metrics.render()
        )
    finally:
        platform.close()


def test_assert_eval_passes_and_fails_with_the_reasons() -> None:
    deps = MetricDeps(embedder=HashEmbedder())
    context = ["New employees get 15 days of paid time off per year."]
    scores = assert_eval(
        "New employees get 15 days of paid time off.",
        input="How many PTO days?",
        facts=["15 days"],
        contexts=context,
        metrics={"fact_coverage": 1.0, "faithfulness": 0.9, "regex": {"pattern": r"\b15\b", "threshold": 1}},
        deps=deps,
    )
    assert scores["fact_coverage"].value == 1.0
    with pytest.raises(AssertionError) as failed:
        assert_eval(
            "New employees get 20 days.", facts=["15 days"], contexts=context,
            metrics={"fact_coverage": 1.0, "faithfulness": 0.9}, deps=deps,
        )  # fmt: skip
    assert "fact_coverage: 0.000, expected >= 1" in str(failed.value) and "faithfulness" in str(failed.value)


def test_the_pytest_fixture_works_in_a_users_suite(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        "def test_answer(llmops_eval):\n"
        "    llmops_eval('Passwords must be at least 14 characters.', facts=['14 characters'],\n"
        "                metrics={'fact_coverage': 1.0})\n"
        "def test_wrong_answer(llmops_eval):\n"
        "    llmops_eval('Passwords must be 8 characters.', facts=['14 characters'], metrics={'fact_coverage': 1.0})\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_user.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "fact_coverage: 0.000, expected >= 1" in result.stdout
