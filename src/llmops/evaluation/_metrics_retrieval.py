"""Retrieval metrics of a sample: how well ``sample.contexts`` cover the passages ``example.sources`` names.

Relevance is `RelevantPassage.matches` and a passage counts once, at the first chunk that holds it
(`passages_found`): the same rule as ``llmops eval retrieval``, so a dataset scores the same either way. Only the first
``k`` contexts count. ``context_recall`` needs no labelled sources: it checks the example's facts (or the sentences
of its reference answer) against the retrieved text with the shared `GroundingChecker`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llmops.evaluation._metrics_generation import (
    GroundingMetric,
    context_statements,
    fact_supported,
    recall_statements,
)
from llmops.evaluation._retrieval import passages_found
from llmops.evaluation._types import Sample, Score, ScoringContext
from llmops.guardrails._grounding import GroundingChecker

__all__ = [
    "ContextPrecision",
    "ContextRecall",
    "MeanReciprocalRank",
    "NdcgAtK",
    "PrecisionAtK",
    "RecallAtK",
]


def k_param(params: dict[str, Any]) -> int:
    """The ``k`` parameter (default 5), validated."""
    k = params.get("k", 5)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k


class _RankMetric:
    """Shared by the metrics computed from which of the first ``k`` contexts find a labelled passage."""

    name = ""
    higher_is_better = True

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        return [self._score_one(sample) for sample in samples]

    def _score_one(self, sample: Sample) -> Score:
        if sample.error:
            return Score.failed(self.name, f"the system errored: {sample.error}")
        relevant = sample.example.sources
        if not relevant:
            return Score.not_applicable(self.name, "the example names no relevant passages (example.sources)")
        counts = passages_found(relevant, sample.contexts[: self.k])
        value = self._value(counts, len(relevant))
        ranks = [rank for rank, count in enumerate(counts, 1) if count]
        return Score(self.name, round(value, 6), details={"relevant": len(relevant), "found_at": ranks})

    def _value(self, counts: list[int], relevant: int) -> float:
        raise NotImplementedError


class RecallAtK(_RankMetric):
    """recall@k: the share of ``example.sources`` found among the first ``k`` contexts, in [0, 1].

    ``found / len(example.sources)``; each passage counts once however many chunks hold it. Skipped when the example
    has no sources.
    """

    name = "recall_at_k"

    def _value(self, counts: list[int], relevant: int) -> float:
        return sum(counts) / relevant


class PrecisionAtK(_RankMetric):
    """precision@k: the share of the first ``k`` contexts that find a labelled passage not found by a higher one.

    ``relevant chunks / retrieved chunks`` over the first ``k`` (a system that returns fewer than ``k`` chunks is
    divided by what it returned; 0 when it returned none). In [0, 1]. Skipped when the example has no sources.
    """

    name = "precision_at_k"

    def _value(self, counts: list[int], relevant: int) -> float:
        return sum(1 for count in counts if count) / len(counts) if counts else 0.0


class MeanReciprocalRank(_RankMetric):
    """Reciprocal rank: ``1 / rank`` of the first of the first ``k`` contexts holding a labelled passage, else 0.

    In [0, 1]; the mean over samples is MRR. Skipped when the example has no sources.
    """

    name = "mrr"

    def _value(self, counts: list[int], relevant: int) -> float:
        return next((1.0 / rank for rank, count in enumerate(counts, 1) if count), 0.0)


class NdcgAtK(_RankMetric):
    """nDCG@k with binary gains: ``DCG / ideal DCG``, in [0, 1].

    ``DCG = sum of 1 / log2(rank + 1)`` over the ranks (<= k) whose context finds a labelled passage for the first
    time; the ideal puts ``min(k, len(example.sources))`` hits at ranks 1, 2, .... Skipped when the example has no
    sources.
    """

    name = "ndcg_at_k"

    def _value(self, counts: list[int], relevant: int) -> float:
        dcg = sum(1.0 / math.log2(rank + 1) for rank, count in enumerate(counts, 1) if count)
        ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(self.k, relevant) + 1))
        return dcg / ideal


class ContextPrecision(_RankMetric):
    """Context precision (as RAGAS defines it, with labelled passages instead of a judge): are relevant chunks ranked
    first?

    The mean, over the ranks ``i <= k`` whose context finds a labelled passage, of precision@i (relevant chunks among
    the first ``i`` / ``i``); 0 when no context is relevant. In [0, 1]. Hits at ranks 1 and 3 give
    ``(1/1 + 2/3) / 2``. Skipped when the example has no sources.
    """

    name = "context_precision"

    def _value(self, counts: list[int], relevant: int) -> float:
        precisions: list[float] = []
        hits = 0
        for rank, count in enumerate(counts, 1):
            if count:
                hits += 1
                precisions.append(hits / rank)
        return sum(precisions) / len(precisions) if precisions else 0.0


class ContextRecall(GroundingMetric):
    """Context recall: the share of what a correct answer states that the retrieved contexts support, in [0, 1].

    The statements are ``example.facts``, or, when it has none, the sentences of ``example.expected``. Each is
    supported when `GroundingChecker.check` (statement, first ``k`` context texts) finds all its claims supported (a
    statement too short to hold a claim, like "Paris", must occur in the contexts). Skipped when the example has
    neither facts nor a reference answer; a sample without contexts scores 0.
    """

    name = "context_recall"
    higher_is_better = True

    def __init__(self, k: int = 5, *, grounding: GroundingChecker | None = None) -> None:
        super().__init__(grounding=grounding)
        self.k = k

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        scores: list[Score | None] = []
        jobs: list[tuple[tuple[str, ...], list[str]]] = []
        for sample in samples:
            failed = Score.failed(self.name, f"the system errored: {sample.error}") if sample.error else None
            if failed is None and not recall_statements(sample):
                failed = Score.not_applicable(
                    self.name, "the example has no facts (example.facts) and no reference answer (example.expected)"
                )
            if failed is None and not sample.contexts:
                failed = Score(self.name, 0.0, details={"unsupported": list(recall_statements(sample))})
            scores.append(failed)
            if failed is None:
                # Checked in one bundle with the answer (as faithfulness checks it) when all contexts are within k.
                statements = context_statements(sample) if len(sample.contexts) <= self.k else recall_statements(sample)
                jobs.append((statements, [c.text for c in sample.contexts[: self.k]]))
        reports = iter(self.ground(ctx, jobs))
        out: list[Score] = []
        for sample, score in zip(samples, scores, strict=True):
            if score is None:
                texts = [c.text for c in sample.contexts[: self.k]]
                statements = recall_statements(sample)
                verdicts = next(reports)[-len(statements) :]
                missed = [s for s, r in zip(statements, verdicts, strict=True) if not fact_supported(r, s, texts)]
                score = Score(self.name, round(1.0 - len(missed) / len(statements), 6), details={"unsupported": missed})
            out.append(score)
        return out
