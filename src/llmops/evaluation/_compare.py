"""Item-by-item comparison of two experiments: paired bootstrap confidence intervals and a paired permutation test.

Both experiments ran the same examples, so each example is its own control: the statistic is the mean of the
per-example differences (candidate minus baseline). Pairing removes the variance between examples (some questions
are hard for every configuration), which is what lets twenty examples show a real regression that an unpaired test
on the same data would call noise.

- Confidence interval: percentile bootstrap of the mean difference (examples resampled with replacement).
- p-value: the paired sign-flip permutation test (under "no difference" each difference is as likely positive as
  negative); exact over all 2^n sign patterns when n <= 16, else Monte Carlo. Identical outputs give differences of
  zero, p = 1 and no flag: two runs of the same configuration never "regress".
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np

from llmops.evaluation._results import ExperimentComparison, ExperimentRecord, MetricComparison

__all__ = ["compare_experiments", "paired_comparison"]

_RESAMPLES = 10_000
_EXACT_UP_TO = 16


def paired_comparison(
    metric: str,
    pairs: list[tuple[str, float, float]],
    *,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    seed: int = 0,
) -> MetricComparison:
    """Compare ``(example id, baseline, candidate)`` pairs on one metric."""
    n = len(pairs)
    if n == 0:
        return MetricComparison(metric, higher_is_better, 0, None, None, 0.0, 0.0, 0.0, 1.0, alpha, "no pairs")
    base = np.array([p[1] for p in pairs], dtype=np.float64)
    cand = np.array([p[2] for p in pairs], dtype=np.float64)
    diffs = cand - base
    mean = float(diffs.mean())
    rng = np.random.default_rng(seed)
    if n == 1 or not diffs.any():
        low = high = mean
        p_value = 1.0
    else:
        resampled = diffs[rng.integers(0, n, size=(_RESAMPLES, n))].mean(axis=1)
        low, high = (float(x) for x in np.quantile(resampled, [alpha / 2, 1 - alpha / 2]))
        p_value = _sign_flip_p(diffs, rng)
    order = sorted(pairs, key=lambda p: -abs(p[2] - p[1]))
    return MetricComparison(
        metric=metric,
        higher_is_better=higher_is_better,
        pairs=n,
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        difference=mean,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        alpha=alpha,
        test="paired sign-flip permutation" + (" (exact)" if n <= _EXACT_UP_TO else ""),
        item_diffs=tuple(order),
    )


def _sign_flip_p(diffs: np.ndarray, rng: np.random.Generator) -> float:
    observed = abs(diffs.mean())
    n = len(diffs)
    if n <= _EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ diffs / n)
        # A tolerance, so that the observed pattern itself counts despite floating-point noise.
        return float(np.mean(means >= observed - 1e-12))
    signs = rng.choice((-1.0, 1.0), size=(_RESAMPLES, n))
    means = np.abs(signs @ diffs / n)
    return float((np.sum(means >= observed - 1e-12) + 1) / (_RESAMPLES + 1))


def compare_experiments(
    baseline: ExperimentRecord,
    candidate: ExperimentRecord,
    *,
    alpha: float = 0.05,
    metrics: list[str] | None = None,
) -> ExperimentComparison:
    """Compare every metric both experiments scored, on the examples both scored (errored items are left out of
    the pairs; the gate counts them separately)."""
    names = metrics or [m for m in candidate.metrics() if m in set(baseline.metrics())]
    out: list[MetricComparison] = []
    for name in names:
        base = baseline.values(name)
        cand = candidate.values(name)
        pairs = [(example, base[example], cand[example]) for example in cand if example in base]
        direction = candidate.directions.get(name, baseline.directions.get(name, True))
        # The seed depends on the pair of experiments and the metric, so a report is reproducible.
        seed = zlib.crc32(f"{baseline.id}/{candidate.id}/{name}".encode())
        out.append(paired_comparison(name, pairs, higher_is_better=direction, alpha=alpha, seed=seed))
    return ExperimentComparison(baseline, candidate, out)
