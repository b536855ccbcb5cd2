"""Results of evaluation runs as the store returns them, comparisons of two runs, and gate verdicts.

These are plain data: the runner fills them, `compare_experiments` and `gate` compute on them, reports render them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmops.evaluation._types import Score

__all__ = [
    "ExperimentComparison",
    "ExperimentRecord",
    "GateResult",
    "ItemResult",
    "MetricComparison",
    "MetricSummary",
    "ThresholdCheck",
]


@dataclass
class ItemResult:
    """One example's output and scores in one experiment."""

    example_id: str
    input: str
    output: str
    scores: dict[str, Score]
    trace_id: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    cached: bool = False  # reused from an earlier experiment with the same configuration and example
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricSummary:
    """A metric over an experiment: the mean of the scored items; errored items are counted, never averaged."""

    metric: str
    mean: float | None
    scored: int
    errors: int
    higher_is_better: bool = True


@dataclass
class ExperimentRecord:
    """An experiment: a dataset version run against one configuration."""

    id: str
    name: str
    dataset: str
    dataset_version: int
    config: dict[str, Any]
    config_hash: str
    status: str  # running | finished | failed
    created_at: datetime
    finished_at: datetime | None
    items: list[ItemResult] = field(default_factory=list)
    directions: dict[str, bool] = field(default_factory=dict)  # metric -> higher is better

    def metrics(self) -> list[str]:
        names: dict[str, None] = {}
        for item in self.items:
            names.update(dict.fromkeys(item.scores))
        return list(names)

    def values(self, metric: str) -> dict[str, float]:
        """Example id -> value, for the items this metric scored (errors left out: they are counted separately)."""
        out: dict[str, float] = {}
        for item in self.items:
            score = item.scores.get(metric)
            if score is not None and score.value is not None:
                out[item.example_id] = score.value
        return out

    def summary(self, metric: str) -> MetricSummary:
        values = list(self.values(metric).values())
        errors = sum(1 for item in self.items if metric in item.scores and item.scores[metric].errored)
        return MetricSummary(
            metric,
            statistics.fmean(values) if values else None,
            len(values),
            errors,
            self.directions.get(metric, True),
        )

    def to_dict(self) -> dict[str, Any]:
        """The experiment as JSON: configuration, totals, metric summaries and every item's output and scores."""
        return {
            "id": self.id,
            "name": self.name,
            "dataset": self.dataset,
            "dataset_version": self.dataset_version,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "config": self.config,
            "totals": self.totals(),
            "metrics": {m: self.summary(m).__dict__ for m in self.metrics()},
            "items": [
                {
                    "example_id": i.example_id,
                    "input": i.input,
                    "output": i.output,
                    "error": i.error,
                    "cached": i.cached,
                    "trace_id": i.trace_id,
                    "latency_ms": i.latency_ms,
                    "cost_usd": i.cost_usd,
                    "scores": {
                        n: {"value": s.value, "error": s.error, "skipped": s.skipped} for n, s in i.scores.items()
                    },
                }
                for i in self.items
            ],
        }

    def totals(self) -> dict[str, float]:
        """Cost, tokens and latency over the items (cached items count what they cost when they were produced)."""
        latencies = [i.latency_ms for i in self.items if i.latency_ms is not None]
        return {
            "items": len(self.items),
            "errors": sum(1 for i in self.items if i.error),
            "cached": sum(1 for i in self.items if i.cached),
            "cost_usd": sum(i.cost_usd or 0.0 for i in self.items),
            "input_tokens": sum(i.input_tokens or 0 for i in self.items),
            "output_tokens": sum(i.output_tokens or 0 for i in self.items),
            "latency_p50_ms": statistics.median(latencies) if latencies else 0.0,
        }


@dataclass(frozen=True)
class MetricComparison:
    """Candidate minus baseline on one metric, over the examples both scored (paired).

    ``ci_low``/``ci_high`` is the paired bootstrap confidence interval of the mean difference; ``p_value`` comes
    from a paired test (``test`` names it). A regression is a significant change in the worse direction.
    """

    metric: str
    higher_is_better: bool
    pairs: int
    baseline_mean: float | None
    candidate_mean: float | None
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float
    test: str
    item_diffs: tuple[tuple[str, float, float], ...] = ()  # (example id, baseline, candidate), largest change first

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha and self.difference != 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "pairs": self.pairs,
            "baseline_mean": self.baseline_mean,
            "candidate_mean": self.candidate_mean,
            "difference": self.difference,
            "ci": [self.ci_low, self.ci_high],
            "p_value": self.p_value,
            "test": self.test,
            "significant": self.significant,
            "regressed": self.regressed,
            "improved": self.improved,
        }

    @property
    def regressed(self) -> bool:
        return self.significant and (self.difference < 0) == self.higher_is_better

    @property
    def improved(self) -> bool:
        return self.significant and (self.difference > 0) == self.higher_is_better


@dataclass
class ExperimentComparison:
    baseline: ExperimentRecord
    candidate: ExperimentRecord
    metrics: list[MetricComparison]

    @property
    def regressions(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.regressed]


@dataclass(frozen=True)
class ThresholdCheck:
    """A metric's mean against the minimum (or, for lower-is-better metrics, maximum) the gate requires."""

    metric: str
    threshold: float
    value: float | None
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold


@dataclass
class GateResult:
    """The CI gate's verdict on a candidate experiment: thresholds, regressions against a baseline, error budget."""

    candidate: ExperimentRecord
    thresholds: list[ThresholdCheck]
    comparison: ExperimentComparison | None
    max_error_rate: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures
