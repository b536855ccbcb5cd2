"""Aggregates over the stored per-request metrics, online evaluation scores and feedback: one number for a window
(what triggers compare with a threshold) or a series of time buckets (what dashboards draw), by any dimension.

>>> metrics.value("grounding_score", app="handbook-rag", window_s=600)        # doctest: +SKIP
Aggregate(value=0.71, count=42)
>>> metrics.series("cost_usd", window_s=86_400, bucket_s=3_600, group_by="model")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select

from llmops.evaluation._tables import OnlineScoreRow
from llmops.observability._tables import RequestMetricRow
from llmops.store import Journal, Store

__all__ = ["DIMENSIONS", "METRICS", "Aggregate", "MetricsQuery", "UnknownMetricError"]

#: Columns of ``request_metrics`` a metric can be filtered or grouped by.
DIMENSIONS = ("app", "prompt_name", "prompt_version", "model", "index_snapshot", "user", "team", "kind", "status")

_Row = dict[str, Any]
_Reduce = Callable[[Sequence[_Row]], float | None]


def _mean(column: str) -> _Reduce:
    def reduce(rows: Sequence[_Row]) -> float | None:
        values = [r[column] for r in rows if r[column] is not None]
        return sum(values) / len(values) if values else None

    return reduce


def _share(test: Callable[[_Row], bool], among: Callable[[_Row], bool] = lambda r: True) -> _Reduce:
    def reduce(rows: Sequence[_Row]) -> float | None:
        pool = [r for r in rows if among(r)]
        return sum(1 for r in pool if test(r)) / len(pool) if pool else None

    return reduce


def _sum(column: str) -> _Reduce:
    return lambda rows: float(sum(r[column] or 0 for r in rows))


def _percentile(column: str, q: float) -> _Reduce:
    def reduce(rows: Sequence[_Row]) -> float | None:
        values = sorted(r[column] for r in rows if r[column] is not None)
        if not values:
            return None
        return float(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))])

    return reduce


#: Metrics over requests: name -> (what it is, how a window's rows reduce to one number).
METRICS: dict[str, tuple[str, _Reduce]] = {
    "requests": ("requests in the window", lambda rows: float(len(rows))),
    "error_rate": ("share of requests that failed", _share(lambda r: r["status"] == "error")),
    "blocked_rate": ("share of requests a guardrail blocked", _share(lambda r: bool(r["blocked"]))),
    "no_context_rate": ("share of RAG requests with no relevant context", _share(lambda r: bool(r["abstained"]),
                                                                                 lambda r: r["kind"] == "rag")),
    "guardrail_trigger_rate": ("share of requests where any rail acted", _share(lambda r: r["guardrail_triggers"] > 0)),
    "pii_incidents": ("rails that found personal data or secrets", _sum("pii_incidents")),
    "grounding_score": ("mean grounding score of answers", _mean("grounding_score")),
    "hallucination_rate": ("share of checked answers with an unsupported claim",
                           _share(lambda r: (r["unsupported_claims"] or 0) > 0,
                                  lambda r: r["unsupported_claims"] is not None)),
    "top_score": ("mean similarity of the best retrieved chunk", _mean("top_score")),
    "latency_ms": ("mean end-to-end latency", _mean("duration_ms")),
    "latency_ms_p95": ("95th percentile end-to-end latency", _percentile("duration_ms", 0.95)),
    "ttft_ms": ("mean time to first token", _mean("ttft_ms")),
    "ttft_ms_p95": ("95th percentile time to first token", _percentile("ttft_ms", 0.95)),
    "retrieval_ms": ("mean retrieval latency", _mean("retrieval_ms")),
    "tokens_per_s": ("mean decode speed", _mean("tokens_per_s")),
    "input_tokens": ("input tokens", _sum("input_tokens")),
    "output_tokens": ("output tokens", _sum("output_tokens")),
    "cost_usd": ("spend in US dollars", _sum("cost_usd")),
    "cost_per_request_usd": ("mean cost of a request", _mean("cost_usd")),
}  # fmt: skip
_ONLINE = "online:"
_NOT_SERVED = ("ingest", "trigger")
_COLUMNS = [c.name for c in RequestMetricRow.__table__.columns if c.name not in ("trace_id", "rails")]


class UnknownMetricError(ValueError):
    pass


@dataclass(frozen=True)
class Aggregate:
    value: float | None  # None when the window holds nothing the metric applies to
    count: int  # requests (or scores) in the window

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "count": self.count}


class MetricsQuery:
    """Reads ``request_metrics`` (and ``eval_online_scores`` for ``online:<metric>``). The journal is flushed first
    so the newest requests count. ``where`` filters on `DIMENSIONS` (equality)."""

    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        extra: dict[str, Callable[..., Aggregate]] | None = None,
        max_rows: int = 500_000,
    ) -> None:
        self._store = store
        self._journal = journal
        self._max_rows = max_rows
        self._extra = dict(extra or {})  # more single-value metrics, e.g. feedback's thumbs_down_rate

    def add_metric(self, name: str, compute: Callable[..., Aggregate]) -> None:
        """A metric from elsewhere: ``compute(app=..., window_s=..., now=...) -> Aggregate``."""
        self._extra[name] = compute

    def names(self) -> list[str]:
        return [*METRICS, *self._extra, f"{_ONLINE}<metric>"]

    def value(
        self,
        metric: str,
        *,
        app: str | None = None,
        window_s: float = 3600.0,
        where: dict[str, Any] | None = None,
        now: datetime | None = None,
        last: int | None = None,
    ) -> Aggregate:
        """The metric over the window; ``last`` keeps only the newest N observations in it (a quality drop shows
        in the last answers long before it moves an hour's mean)."""
        now = now or datetime.now(UTC)
        if metric in self._extra:
            return self._extra[metric](app=app, window_s=window_s, now=now)
        rows = self._rows(metric, app, where, now - timedelta(seconds=window_s), now)
        if last is not None:
            rows = sorted(rows, key=lambda r: _aware(r["created_at"]))[-last:]
        return Aggregate(self._reduce(metric)(rows), len(rows))

    def series(
        self,
        metric: str,
        *,
        app: str | None = None,
        window_s: float = 3600.0,
        bucket_s: float = 60.0,
        group_by: str | None = None,
        where: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """``[{"t": bucket start (ISO), "group": value of group_by or None, "value", "count"}]`` in time order."""
        if group_by is not None and group_by not in DIMENSIONS:
            raise ValueError(f"cannot group by {group_by!r}; dimensions are {', '.join(DIMENSIONS)}")
        if bucket_s <= 0 or window_s / bucket_s > 2_000:
            raise ValueError("bucket_s must be positive and the window at most 2,000 buckets")
        now = now or datetime.now(UTC)
        start = now - timedelta(seconds=window_s)
        reduce = self._reduce(metric)
        buckets: dict[tuple[int, Any], list[_Row]] = {}
        for row in self._rows(metric, app, where, start, now):
            index = int((_aware(row["created_at"]) - start).total_seconds() // bucket_s)
            buckets.setdefault((index, row.get(group_by) if group_by else None), []).append(row)
        return [
            {
                "t": (start + timedelta(seconds=index * bucket_s)).isoformat(),
                "group": group,
                "value": reduce(rows),
                "count": len(rows),
            }
            for (index, group), rows in sorted(buckets.items(), key=lambda item: (item[0][0], str(item[0][1])))
        ]

    def _reduce(self, metric: str) -> _Reduce:
        if metric.startswith(_ONLINE):
            return _mean("value")
        try:
            return METRICS[metric][1]
        except KeyError:
            raise UnknownMetricError(f"unknown metric {metric!r}; known: {', '.join(self.names())}") from None

    def _rows(
        self, metric: str, app: str | None, where: dict[str, Any] | None, start: datetime, end: datetime
    ) -> list[_Row]:
        self._reduce(metric)  # unknown names fail before any query
        self._journal.flush()
        if metric.startswith(_ONLINE):
            return self._online_rows(metric.removeprefix(_ONLINE), app, start, end)
        conditions: list[ColumnElement[bool]] = [
            RequestMetricRow.created_at >= start,
            RequestMetricRow.created_at <= end,
        ]
        if app is not None:
            conditions.append(RequestMetricRow.app == app)
        if "kind" not in (where or {}):
            # Ingestion runs and trigger firings are traced like requests; served requests are what metrics mean.
            conditions.append(RequestMetricRow.kind.not_in(_NOT_SERVED))
        for name, value in (where or {}).items():
            if name not in DIMENSIONS:
                raise ValueError(f"cannot filter on {name!r}; dimensions are {', '.join(DIMENSIONS)}")
            conditions.append(getattr(RequestMetricRow, name) == value)
        columns = [getattr(RequestMetricRow, c) for c in _COLUMNS]
        query = select(*columns).where(*conditions).order_by(RequestMetricRow.created_at).limit(self._max_rows)
        with self._store.session() as session:
            return [dict(zip(_COLUMNS, values, strict=True)) for values in session.execute(query)]

    def _online_rows(self, metric: str, app: str | None, start: datetime, end: datetime) -> list[_Row]:
        query = select(OnlineScoreRow.value, OnlineScoreRow.created_at, OnlineScoreRow.app).where(
            OnlineScoreRow.metric == metric, OnlineScoreRow.created_at >= start, OnlineScoreRow.created_at <= end
        )
        if app is not None:
            query = query.where(OnlineScoreRow.app == app)
        with self._store.session() as session:
            return [
                {"value": value, "created_at": created_at, "app": row_app}
                for value, created_at, row_app in session.execute(query.limit(self._max_rows))
            ]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
