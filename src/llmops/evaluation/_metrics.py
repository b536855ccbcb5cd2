"""The metric registry: configs name metrics (``recall_at_k``, ``faithfulness``, ``contains``…) with parameters, and
`build_metric` turns a name and its parameters into a metric, refusing what it does not know.

Every built-in metric scores a batch, one `Score` per sample in order: a sample whose system errored is an error
score (``"the system errored: ..."``); a sample lacking what the metric needs (no ``example.facts`` for
``fact_coverage``, no ``sample.contexts`` for ``faithfulness``) is skipped (`Score.not_applicable`, naming the
field), which a gate's error budget does not count. Values are in [0, 1] except the raw ``latency`` and ``cost``.

Built-in metrics are listed here; more come from installed packages through the ``llmops.metrics`` entry-point
group, each a factory ``(params: dict, deps: MetricDeps) -> Metric``::

    [project.entry-points."llmops.metrics"]
    bleu = "my_package:make_bleu"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, cast

from llmops._plugins import load_plugin
from llmops.evaluation._metrics_checks import (
    AssertionsMetric,
    CheckMetric,
    CostMetric,
    LatencyMetric,
    check_params,
)
from llmops.evaluation._metrics_generation import (
    AnswerRelevance,
    AnswerSimilarity,
    Correctness,
    FactCoverage,
    Faithfulness,
    RefusalCorrectness,
)
from llmops.evaluation._metrics_retrieval import (
    ContextPrecision,
    ContextRecall,
    MeanReciprocalRank,
    NdcgAtK,
    PrecisionAtK,
    RecallAtK,
    k_param,
)
from llmops.evaluation._types import AsyncMetric, Metric, MetricDeps

__all__ = ["MetricConfigError", "build_metric", "metric_names"]

PLUGIN_GROUP = "llmops.metrics"

Factory = Callable[[dict[str, Any], MetricDeps], Metric | AsyncMetric]


class MetricConfigError(ValueError):
    """A metric's name or parameters are wrong; the message names the metric and the parameter."""


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    params: frozenset[str] | None  # None: the factory validates its own parameters
    needs_embedder: bool = False


def _number(params: dict[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return None if value is None else float(value)


def _judge(params: dict[str, Any], deps: MetricDeps) -> Metric | AsyncMetric:
    # Imported on use: the judge pulls in the gateway and prompt machinery that the other metrics never need.
    from llmops.evaluation._judge import JudgeMetric

    return JudgeMetric.from_params(params, deps)


# Names a config might reach for that are not per-sample metrics, with what to use instead.
_NOT_METRICS = {
    "pairwise_judge": "it compares two runs rather than scoring samples: use "
    "PairwiseJudge.from_params(params, deps).compare_samples(run_a, run_b)",
}


def _check_entry(kind: str) -> _Entry:
    return _Entry(lambda p, d: CheckMetric(kind, p), check_params(kind))


_K = frozenset({"k"})
_NONE: frozenset[str] = frozenset()

_BUILTIN: dict[str, _Entry] = {
    # retrieval
    "recall_at_k": _Entry(lambda p, d: RecallAtK(k_param(p)), _K),
    "precision_at_k": _Entry(lambda p, d: PrecisionAtK(k_param(p)), _K),
    "mrr": _Entry(lambda p, d: MeanReciprocalRank(k_param(p)), _K),
    "ndcg_at_k": _Entry(lambda p, d: NdcgAtK(k_param(p)), _K),
    "context_precision": _Entry(lambda p, d: ContextPrecision(k_param(p)), _K),
    "context_recall": _Entry(lambda p, d: ContextRecall(k_param(p), grounding=d.grounding), _K),
    # generation
    "faithfulness": _Entry(lambda p, d: Faithfulness(grounding=d.grounding), _NONE),
    "answer_relevance": _Entry(lambda p, d: AnswerRelevance(), _NONE, needs_embedder=True),
    "answer_similarity": _Entry(lambda p, d: AnswerSimilarity(), _NONE, needs_embedder=True),
    "fact_coverage": _Entry(lambda p, d: FactCoverage(grounding=d.grounding), _NONE),
    "correctness": _Entry(lambda p, d: Correctness(grounding=d.grounding), _NONE, needs_embedder=True),
    "refusal_correctness": _Entry(lambda p, d: RefusalCorrectness(), _NONE),
    # task checks
    **{kind: _check_entry(kind) for kind in ("contains", "not_contains", "regex", "json_schema", "entities", "length")},
    "latency": _Entry(lambda p, d: LatencyMetric(_number(p, "max_ms")), frozenset({"max_ms"})),
    "cost": _Entry(lambda p, d: CostMetric(_number(p, "max_usd")), frozenset({"max_usd"})),
    "assertions": _Entry(lambda p, d: AssertionsMetric(), _NONE),
    # LLM judges
    "judge": _Entry(_judge, None),
}


def metric_names() -> list[str]:
    """Every metric `build_metric` knows: the built-in ones and those installed packages register."""
    plugins = {entry.name for entry in entry_points(group=PLUGIN_GROUP)}
    return sorted(set(_BUILTIN) | plugins)


def build_metric(name: str, params: dict[str, Any], deps: MetricDeps) -> Metric | AsyncMetric:
    """The metric called ``name``, configured by ``params``, using what it needs of ``deps``.

    Example:
        >>> metric = build_metric("recall_at_k", {"k": 3}, MetricDeps())
        >>> metric.name, metric.higher_is_better
        ('recall_at_k', True)

    Raises:
        MetricConfigError: The name is unknown (the message lists the known ones), a parameter is unknown or
            invalid, or the metric needs a dependency ``deps`` lacks.
    """
    if name in _NOT_METRICS:
        raise MetricConfigError(f"{name!r} is not a metric: {_NOT_METRICS[name]}")
    entry = _BUILTIN.get(name)
    if entry is None:
        try:
            factory = cast(Factory, load_plugin(PLUGIN_GROUP, name))
        except LookupError:
            raise MetricConfigError(f"unknown metric {name!r}; known: {', '.join(metric_names())}") from None
        entry = _Entry(factory, None)
    if entry.params is not None:
        unknown = sorted(set(params) - entry.params)
        if unknown:
            takes = ", ".join(sorted(entry.params)) or "no parameters"
            raise MetricConfigError(f"metric {name!r} has no parameter {unknown[0]!r}; it takes: {takes}")
    if entry.needs_embedder and deps.embedder is None:
        raise MetricConfigError(f"metric {name!r} needs an embedder (MetricDeps.embedder)")
    try:
        metric = entry.factory(dict(params), deps)
    except MetricConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise MetricConfigError(f"metric {name!r}: {exc}") from exc
    if not isinstance(metric, Metric):
        raise MetricConfigError(f"metric {name!r}: the factory returned {type(metric).__name__}, not a metric")
    return metric
