"""``assert_eval``: the platform's metrics as assertions in a user's own pytest suite.

.. code-block:: python

    def test_pto_answer(llmops_eval):
        answer = my_app("How many PTO days do new employees get?")
        llmops_eval(
            answer.text,
            input="How many PTO days do new employees get?",
            facts=["New employees get 15 days of paid time off"],
            contexts=answer.chunks,
            metrics={"fact_coverage": 1.0, "faithfulness": 0.8, "regex": {"pattern": r"\\b15\\b", "threshold": 1}},
        )

The ``llmops_eval`` fixture (registered through the ``pytest11`` entry point when llmops is installed) shares one
embedder across a session; `assert_eval` itself works anywhere, given `MetricDeps`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from llmops.evaluation._metrics import build_metric
from llmops.evaluation._retrieval import RelevantPassage
from llmops.evaluation._runner import score_samples
from llmops.evaluation._types import Example, MetricDeps, RetrievedContext, Sample, Score, ScoringContext

__all__ = ["EvalAssertion", "assert_eval"]

Thresholds = Mapping[str, float | Mapping[str, Any]]


def assert_eval(
    output: str,
    *,
    metrics: Thresholds,
    input: str = "",
    expected: str | None = None,
    facts: Sequence[str] = (),
    sources: Sequence[str | RelevantPassage] = (),
    contexts: Sequence[str | RetrievedContext] = (),
    answerable: bool = True,
    deps: MetricDeps | None = None,
) -> dict[str, Score]:
    """Score ``output`` and fail (AssertionError naming every failing metric, its value and why) when a metric
    falls under its threshold (or, for lower-is-better metrics, exceeds it) or cannot score. ``metrics`` maps a
    metric name to its threshold, or to its parameters with a ``threshold`` key. Returns the scores."""
    example = Example(
        id="assert",
        input=input,
        expected=expected,
        facts=tuple(facts),
        sources=tuple(s if isinstance(s, RelevantPassage) else RelevantPassage(s) for s in sources),
        answerable=answerable,
    )
    retrieved = tuple(c if isinstance(c, RetrievedContext) else RetrievedContext("", c) for c in contexts)
    sample = Sample(example, output, contexts=retrieved)
    deps = deps or MetricDeps()
    built = []
    for name, spec in metrics.items():
        params = dict(spec) if isinstance(spec, Mapping) else {"threshold": spec}
        threshold = params.pop("threshold", None)
        if not isinstance(threshold, int | float):
            raise ValueError(f"metric {name!r}: give a numeric threshold")
        built.append((build_metric(name, params, deps), float(threshold)))
    (scores,) = asyncio.run(score_samples([m for m, _ in built], [sample], ScoringContext(deps)))
    failures = []
    for metric, threshold in built:
        score = scores[metric.name]
        if score.value is None:
            failures.append(f"{metric.name}: could not score ({score.error})")
            continue
        ok = score.value >= threshold if metric.higher_is_better else score.value <= threshold
        if not ok:
            bound = ">=" if metric.higher_is_better else "<="
            why = f" {score.details}" if score.details else ""
            failures.append(f"{metric.name}: {score.value:.3f}, expected {bound} {threshold:g}{why}")
    if failures:
        raise AssertionError("evaluation failed:\n  " + "\n  ".join(failures) + f"\noutput: {output[:500]!r}")
    return scores


class EvalAssertion:
    """`assert_eval` bound to shared dependencies (what the ``llmops_eval`` fixture returns)."""

    def __init__(self, deps: MetricDeps) -> None:
        self.deps = deps

    def __call__(self, output: str, *, metrics: Thresholds, **example: Any) -> dict[str, Score]:
        return assert_eval(output, metrics=metrics, deps=self.deps, **example)
