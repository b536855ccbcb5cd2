"""The CI gate: a candidate experiment passes when every metric meets its threshold, no metric regressed
significantly against the baseline, and no more items errored than the config allows."""

from __future__ import annotations

from llmops.evaluation._config import GateSpec
from llmops.evaluation._results import ExperimentComparison, ExperimentRecord, GateResult, ThresholdCheck

__all__ = ["evaluate_gate"]


def evaluate_gate(
    candidate: ExperimentRecord,
    thresholds: dict[str, float],
    comparison: ExperimentComparison | None,
    spec: GateSpec,
) -> GateResult:
    """Apply ``thresholds`` (metric name -> minimum mean, or maximum for lower-is-better metrics) and ``spec``."""
    checks = [
        ThresholdCheck(name, threshold, candidate.summary(name).mean, candidate.directions.get(name, True))
        for name, threshold in thresholds.items()
    ]
    failures: list[str] = []
    for check in checks:
        if check.value is None:
            failures.append(f"{check.metric}: no item was scored (every one errored)")
        elif not check.passed:
            bound = "at least" if check.higher_is_better else "at most"
            failures.append(f"{check.metric}: mean {check.value:.3f}, the gate requires {bound} {check.threshold:g}")
    items = len(candidate.items)
    errored = sum(1 for item in candidate.items if item.error or any(s.errored for s in item.scores.values()))
    if items == 0:
        failures.append("the experiment has no items")
    elif errored / items > spec.max_error_rate:
        failures.append(
            f"{errored} of {items} items errored ({errored / items:.1%}); the gate allows {spec.max_error_rate:.1%}"
        )
    if comparison is not None and spec.fail_on_regression:
        for metric in comparison.regressions:
            if abs(metric.difference) < spec.min_difference:
                continue
            failures.append(
                f"{metric.metric}: regressed {metric.baseline_mean:.3f} -> {metric.candidate_mean:.3f} "
                f"(difference {metric.difference:+.3f}, {1 - metric.alpha:.0%} CI [{metric.ci_low:+.3f}, "
                f"{metric.ci_high:+.3f}], p = {metric.p_value:.4f}, {metric.pairs} pairs) against "
                f"{comparison.baseline.id}"
            )
    return GateResult(candidate, checks, comparison, spec.max_error_rate, failures)
