"""Online evaluation: the offline metrics, run on a sample of production answers, stored beside their traces.

Each RAG app sets the share of its requests to score (``online_eval_rate``). Scoring happens on a background
thread after the answer has been returned, so a request never waits for it; the scores are written through the
journal (durable once appended, drained in batches) into ``eval_online_scores``, keyed by request id, where the
trace views and the observability issue's charts and alerts read them. Metrics that call a model (judges) are not
run online: their cost per request belongs in an offline experiment.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from llmops.evaluation._types import Example, Metric, RetrievedContext, Sample, ScoringContext, is_async_metric
from llmops.rag import RagAnswer
from llmops.store import Journal

__all__ = ["OnlineEvaluator"]

logger = logging.getLogger("llmops.evaluation")

ScoreObserver = Callable[[str, str, float], None]


class OnlineEvaluator:
    """Samples answers per app and scores them in the background.

    Args:
        metrics: Synchronous (non-LLM) metrics; async ones are refused.
        ctx: Shared scoring context (its embedding memo is bounded by ``memo_limit`` texts).
        journal: Where score rows go.
        rates: App name -> share of requests to score, in [0, 1].
        observe: Called with (app, metric, value) for each score, e.g. to update Prometheus.
    """

    def __init__(
        self,
        metrics: Sequence[Metric],
        ctx: ScoringContext,
        journal: Journal,
        rates: dict[str, float],
        *,
        observe: ScoreObserver | None = None,
        workers: int = 1,
        max_pending: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        for metric in metrics:
            if is_async_metric(metric):
                raise ValueError(f"online evaluation runs non-LLM metrics only; {metric.name!r} calls a model")
        self._metrics = list(metrics)
        self._ctx = ctx
        self._journal = journal
        self._rates = rates
        self._observe = observe
        self._rng = rng or random.Random()
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="llmops-online-eval")
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._max_pending = max_pending
        self.skipped_overload = 0

    def rate(self, app: str) -> float:
        return self._rates.get(app, 0.0)

    def submit(self, answer: RagAnswer, question: str, model_answer: str) -> bool:
        """Maybe score ``answer`` (by the app's rate); returns whether it was queued. Never raises, never blocks."""
        if answer.blocked or not question or self._rng.random() >= self.rate(answer.app):
            return False
        self._pending = {f for f in self._pending if not f.done()}
        if len(self._pending) >= self._max_pending:
            self.skipped_overload += 1  # scoring fell behind the traffic: drop samples, never slow requests down
            return False
        future = self._executor.submit(self._score, answer, question, model_answer)
        self._pending.add(future)
        return True

    def drain(self, timeout: float | None = None) -> None:
        """Wait for queued scoring to finish (tests, shutdown)."""
        concurrent.futures.wait(list(self._pending), timeout=timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

    def _score(self, answer: RagAnswer, question: str, model_answer: str) -> None:
        try:
            sample = Sample(
                Example(id=answer.request_id, input=question),
                model_answer or answer.answer,
                contexts=tuple(RetrievedContext(c.source, c.text, c.score, c.chunk_id) for c in answer.citations),
                latency_ms=answer.duration_ms,
                cost_usd=answer.cost_usd,
                abstained=answer.abstained,
                trace_id=answer.trace_id,
            )
            now = datetime.now(UTC)
            rows: list[dict[str, Any]] = []
            for metric in self._metrics:
                try:
                    (score,) = metric.score([sample], self._ctx)
                except Exception as exc:  # a broken metric is recorded as such, and the others still run
                    rows.append(self._row(answer, metric.name, None, f"{type(exc).__name__}: {exc}", {}, now))
                    continue
                rows.append(self._row(answer, metric.name, score.value, score.error, score.details, now))
                if score.value is not None and self._observe is not None:
                    self._observe(answer.app, metric.name, score.value)
            self._journal.append({"eval_online_scores": rows})
        except Exception:
            logger.exception("online evaluation of %s failed", answer.request_id)

    @staticmethod
    def _row(
        answer: RagAnswer, metric: str, value: float | None, error: str | None, details: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        return {
            "request_id": answer.request_id,
            "metric": metric,
            "app": answer.app,
            "trace_id": answer.trace_id,
            "value": value,
            "error": error,
            "details": _compact(details),
            "created_at": now,
        }


def _compact(details: dict[str, Any]) -> dict[str, Any]:
    """Numbers and short strings only: details may quote the answer, which the trace already holds."""
    return {
        k: v for k, v in details.items() if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) < 200)
    }
