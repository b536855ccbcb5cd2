"""A/B tests and canaries: sticky assignment, split accuracy, significance, automatic rollback and promotion."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from llmops import Platform
from llmops.prompts import Experiment, ExperimentSettings, PromptTemplateError, compare

from ..conftest import SAMPLES


def _two_versions(platform: Platform) -> None:
    platform.prompts.create("p", [{"role": "user", "content": "A {{ x }}"}], author="ana")
    platform.prompts.create("p", [{"role": "user", "content": "B {{ x }}"}], author="ana")
    platform.prompts.move_label("p", "production", 1, environment="prod", by="ana")


def _start(platform: Platform, weights: dict[int, float], **settings: object) -> Experiment:
    _two_versions(platform)
    return platform.prompts.experiments.start("p", "production", weights, environment="prod", by="ana",
                                              settings=settings)  # fmt: skip


def test_assignment_is_sticky_for_a_key(platform: Platform) -> None:
    experiment = _start(platform, {1: 0.5, 2: 0.5})
    for key in ("alice", "bob", "session-42"):
        assert len({experiment.assign(key) for _ in range(1000)}) == 1


@pytest.mark.parametrize("weights", [{1: 0.5, 2: 0.5}, {1: 0.9, 2: 0.1}, {1: 0.7, 2: 0.3}])
def test_the_split_follows_the_weights_within_two_points(platform: Platform, weights: dict[int, float]) -> None:
    experiment = _start(platform, weights)
    counts = Counter(experiment.assign(f"user-{i}") for i in range(10_000))
    for version, weight in weights.items():
        assert abs(counts[version] / 10_000 - weight) < 0.02


def test_experiments_need_the_current_version_and_one_at_a_time(platform: Platform) -> None:
    _two_versions(platform)
    experiments = platform.prompts.experiments
    with pytest.raises(PromptTemplateError, match="needs the current version v1"):
        experiments.start("p", "production", {2: 1.0}, environment="prod", by="ana")
    experiments.start("p", "production", {1: 1, 2: 1}, environment="prod", by="ana")
    with pytest.raises(PromptTemplateError, match="already running"):
        experiments.start("p", "production", {1: 1, 2: 1}, environment="prod", by="ana")


def test_a_known_effect_is_detected_in_both_kinds_of_metric() -> None:
    rng = random.Random(7)
    control = [float(rng.random() < 0.50) for _ in range(3000)]
    better = [float(rng.random() < 0.56) for _ in range(3000)]
    result = compare("feedback", control, better)
    assert result.test == "two-proportion z" and result.significant and result.improved
    assert result.ci_low < result.difference < result.ci_high and result.ci_low > 0
    fast = [rng.gauss(500, 80) for _ in range(400)]
    slow = [rng.gauss(530, 80) for _ in range(400)]
    latency = compare("latency_ms", fast, slow, higher_is_better=False)
    assert latency.test == "welch t" and latency.significant and latency.regressed and not latency.improved


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_no_effect_gives_false_positives_near_alpha(kind: str) -> None:
    rng = random.Random(11)
    runs, positives = 600, 0
    for _ in range(runs):
        if kind == "binary":
            a = [float(rng.random() < 0.3) for _ in range(400)]
            b = [float(rng.random() < 0.3) for _ in range(400)]
        else:
            a = [rng.expovariate(1 / 300) for _ in range(200)]
            b = [rng.expovariate(1 / 300) for _ in range(200)]
        positives += compare("m", a, b, alpha=0.05).significant
    rate = positives / runs
    assert 0.02 <= rate <= 0.085, f"false-positive rate {rate:.3f} is far from alpha 0.05"


def test_small_samples_use_fishers_exact_test_and_too_few_are_never_significant() -> None:
    assert compare("m", [1, 0, 0], [1, 1, 1]).test == "fisher exact"
    assert not compare("m", [1.0], [0.0]).significant


def test_a_canary_over_its_error_bound_is_rolled_back(platform: Platform) -> None:
    experiment = _start(platform, {1: 0.9, 2: 0.1}, max_error_rate=0.05, min_samples=20)
    experiments = platform.prompts.experiments
    for i in range(40):
        experiments.record_outcomes(experiment.id, 1, f"r{i}", {"error": 0.0})
        experiments.record_outcomes(experiment.id, 2, f"c{i}", {"error": float(i % 4 == 0)})  # 25% errors
    decision = experiments.evaluate(experiment.id)
    assert decision["action"] == "rolled_back" and "error rate 0.250 > bound 0.05" in decision["reason"]
    assert experiments.get(experiment.id).status == "rolled_back"
    assert experiments.active("p", "prod", "production", fresh=True) is None
    assert platform.prompts.resolve("p", environment="prod").version == 1
    assert "rolled_back" in platform.prompts.history("p")[-1].detail


def _feedback(platform: Platform, experiment: Experiment, rates: dict[int, float], n: int) -> None:
    rng = random.Random(3)
    for version, rate in rates.items():
        for i in range(n):
            platform.prompts.experiments.record_outcomes(
                experiment.id, version, f"{version}-{i}", {"feedback": float(rng.random() < rate)}
            )


def test_a_significant_winner_is_promoted(platform: Platform) -> None:
    experiment = _start(platform, {1: 0.5, 2: 0.5}, auto_promote=True, min_samples=100)
    _feedback(platform, experiment, {1: 0.4, 2: 0.7}, 300)
    decision = platform.prompts.experiments.evaluate(experiment.id)
    assert decision["action"] == "promoted" and decision["version"] == 2
    assert platform.prompts.resolve("p", environment="prod").version == 2
    assert platform.prompts.experiments.get(experiment.id).status == "promoted"


def test_no_promotion_without_a_significant_difference(platform: Platform) -> None:
    experiment = _start(platform, {1: 0.5, 2: 0.5}, auto_promote=True, min_samples=100)
    _feedback(platform, experiment, {1: 0.5, 2: 0.5}, 300)
    assert platform.prompts.experiments.evaluate(experiment.id)["action"] == "none"
    assert platform.prompts.resolve("p", environment="prod").version == 1


def test_promotion_of_a_protected_label_opens_a_change_request(platform: Platform) -> None:
    experiment = _start(platform, {1: 0.5, 2: 0.5}, auto_promote=True, min_samples=100)
    platform.prompts.approvals.set_policy("p", "prod", "production", required_approvals=1, by="admin")
    _feedback(platform, experiment, {1: 0.4, 2: 0.7}, 300)
    decision = platform.prompts.experiments.evaluate(experiment.id)
    (request,) = platform.prompts.approvals.requests()
    assert decision["change_request"] == request.id and request.to_version == 2
    assert platform.prompts.resolve("p", environment="prod").version == 1  # until someone approves


def test_feedback_arriving_later_joins_the_requests_variant(platform: Platform) -> None:
    experiment = _start(platform, {1: 0.5, 2: 0.5})
    platform.prompts.experiments.record_outcomes(experiment.id, 2, "req_1", {"latency_ms": 10.0})
    platform.prompts.experiments.record_outcome("req_1", "feedback", 1)
    assert platform.prompts.experiments.outcomes(experiment.id)[2]["feedback"] == [1.0]
    with pytest.raises(LookupError, match="not served by an experiment"):
        platform.prompts.experiments.record_outcome("req_unknown", "feedback", 1)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ExperimentSettings(alpha=0.9)


def test_the_rag_pipeline_serves_variants_and_records_outcomes(platform: Platform, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    platform.knowledge.ingest(corpus)
    prompts = platform.prompts
    current = prompts.get_version("rag-default", 1)
    shorter = [dict(current.messages[0], content="Only one short sentence. " + current.messages[0]["content"]),
               current.messages[1]]  # fmt: skip
    prompts.create("rag-default", shorter, author="ana", variables=current.variables)
    experiment = prompts.experiments.start("rag-default", "production", {1: 0.5, 2: 0.5}, environment="dev",
                                           by="ana")  # fmt: skip
    question = "How many paid time off PTO days do new employees get?"
    pipeline = platform.rag()

    async def ask(user: str) -> tuple[int | None, str]:
        answer = await pipeline.ask(question, user=user)
        return answer.prompt_version, answer.request_id

    served = {user: asyncio.run(ask(user)) for user in [f"user-{i}" for i in range(12)]}
    assert {v for v, _ in served.values()} == {1, 2}
    for user, (version, _) in served.items():
        assert version == experiment.assign(user)
        assert asyncio.run(ask(user))[0] == version  # sticky across requests
    version, request_id = served["user-0"]
    trace = platform.traces.get(request_id)
    assert trace["attributes"]["llmops.prompt.experiment"] == experiment.id
    assert trace["attributes"]["llmops.prompt.variant"] == version
    outcomes = prompts.experiments.outcomes(experiment.id)
    assert sum(len(outcomes[v]["latency_ms"]) for v in (1, 2)) == 24
    assert set(outcomes[version]) >= {"latency_ms", "cost_usd", "error", "guardrail_blocked", "abstained"}
