"""Two-sample comparisons for A/B tests: proportions for 0/1 outcomes, means (Welch) for the rest.

Every comparison reports the difference (variant minus control), its confidence interval and a two-sided p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True)
class Comparison:
    metric: str
    test: str
    control_n: int
    variant_n: int
    control_mean: float
    variant_mean: float
    difference: float  # variant - control
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float
    higher_is_better: bool

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def improved(self) -> bool:
        return self.significant and (self.difference > 0) == self.higher_is_better and self.difference != 0

    @property
    def regressed(self) -> bool:
        return self.significant and (self.difference < 0) == self.higher_is_better and self.difference != 0


def compare(
    metric: str,
    control: Sequence[float],
    variant: Sequence[float],
    *,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> Comparison:
    """Compare two samples. 0/1 samples use a two-proportion test (Fisher's exact test when counts are small) with
    Newcombe's interval; others use Welch's t-test and interval. Fewer than two values on a side: not significant."""
    n1, n2 = len(control), len(variant)
    m1 = sum(control) / n1 if n1 else math.nan
    m2 = sum(variant) / n2 if n2 else math.nan
    if n1 < 2 or n2 < 2:
        return Comparison(metric, "insufficient data", n1, n2, m1, m2, m2 - m1, -math.inf, math.inf, 1.0, alpha,
                          higher_is_better)  # fmt: skip
    if all(v in (0, 1) for v in control) and all(v in (0, 1) for v in variant):
        test, p_value, low, high = _proportions(int(sum(control)), n1, int(sum(variant)), n2, alpha)
    else:
        test, p_value, low, high = _welch(control, variant, alpha)
    return Comparison(metric, test, n1, n2, m1, m2, m2 - m1, low, high, p_value, alpha, higher_is_better)


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _proportions(s1: int, n1: int, s2: int, n2: int, alpha: float) -> tuple[str, float, float, float]:
    p1, p2 = s1 / n1, s2 / n2
    z = float(stats.norm.ppf(1 - alpha / 2))
    pooled = (s1 + s2) / (n1 + n2)
    expected_small = min(pooled * n1, pooled * n2, (1 - pooled) * n1, (1 - pooled) * n2) < 5
    if expected_small:
        test = "fisher exact"
        p_value = float(stats.fisher_exact([[s1, n1 - s1], [s2, n2 - s2]]).pvalue)
    else:
        test = "two-proportion z"
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p_value = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(p2 - p1) / se))
    l1, u1 = _wilson(s1, n1, z)
    l2, u2 = _wilson(s2, n2, z)
    d = p2 - p1
    return test, p_value, d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def _welch(a: Sequence[float], b: Sequence[float], alpha: float) -> tuple[str, float, float, float]:
    result = stats.ttest_ind(b, a, equal_var=False)
    n1, n2 = len(a), len(b)
    v1 = float(stats.tvar(a)) / n1 if n1 > 1 else 0.0
    v2 = float(stats.tvar(b)) / n2 if n2 > 1 else 0.0
    diff = sum(b) / n2 - sum(a) / n1
    se = math.sqrt(v1 + v2)
    if se == 0:
        return "welch t", 1.0 if diff == 0 else 0.0, diff, diff
    df = (v1 + v2) ** 2 / ((v1**2 / (n1 - 1) if n1 > 1 else 0) + (v2**2 / (n2 - 1) if n2 > 1 else 0))
    t = float(stats.t.ppf(1 - alpha / 2, df))
    return "welch t", float(result.pvalue), diff - t * se, diff + t * se
