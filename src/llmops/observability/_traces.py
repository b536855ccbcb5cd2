"""Reading stored traces back: by request id or trace id, and the newest first."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from llmops.evaluation._tables import OnlineScoreRow
from llmops.observability._tables import RequestMetricRow, SpanRow, TraceRow
from llmops.store import Journal, Store

__all__ = ["TraceNotFoundError", "TraceReader"]


class TraceNotFoundError(LookupError):
    pass


class TraceReader:
    """Reads traces from the store; a trace still in the journal is drained first, so a finished request is
    always readable."""

    def __init__(self, store: Store, journal: Journal) -> None:
        self._store = store
        self._journal = journal

    def get(self, request_or_trace_id: str) -> dict[str, Any]:
        """The trace with its spans in start order, each with its depth in the tree."""
        try:
            return self._get(request_or_trace_id)
        except TraceNotFoundError:
            self._journal.flush()
            return self._get(request_or_trace_id)

    def _get(self, request_or_trace_id: str) -> dict[str, Any]:
        with self._store.session() as session:
            row = session.scalars(
                select(TraceRow).where(
                    or_(TraceRow.request_id == request_or_trace_id, TraceRow.trace_id == request_or_trace_id)
                )
            ).first()
            if row is None:
                raise TraceNotFoundError(f"no trace for {request_or_trace_id!r}")
            spans = session.scalars(
                select(SpanRow).where(SpanRow.trace_id == row.trace_id).order_by(SpanRow.start_ns)
            ).all()
            scores = session.scalars(select(OnlineScoreRow).where(OnlineScoreRow.trace_id == row.trace_id)).all()
            metrics = session.get(RequestMetricRow, row.request_id)
        depth: dict[str, int] = {}
        out_spans = []
        summary = _summary(row)
        root = next((s for s in spans if s.parent_span_id is None), None)
        if root is not None:
            summary["attributes"] = {**summary["attributes"], **root.attributes}
        for span in spans:
            depth[span.span_id] = depth.get(span.parent_span_id or "", -1) + 1
            out_spans.append(
                {
                    "span_id": span.span_id,
                    "parent_span_id": span.parent_span_id,
                    "name": span.name,
                    "depth": depth[span.span_id],
                    "start_offset_ms": (span.start_ns - spans[0].start_ns) / 1e6,
                    "duration_ms": span.duration_ms,
                    "status": span.status,
                    "status_message": span.status_message,
                    "attributes": span.attributes,
                    "events": span.events,
                }
            )
        online = {s.metric: {"value": s.value, "error": s.error} for s in scores}
        return {**summary, **_metrics_summary(metrics), "spans": out_spans, "online_scores": online}

    def select_answers(
        self,
        *,
        app: str | None = None,
        max_grounding: float | None = None,
        topic: str | None = None,
        since: datetime | None = None,
        request_ids: Collection[str] | None = None,
        limit: int = 200,
        scan: int = 20_000,
    ) -> list[dict[str, Any]]:
        """Recent RAG requests whose trace holds the question and answer, newest first, filtered by app, grounding
        score below ``max_grounding``, every word of ``topic`` in the question, and/or request ids. At most ``scan``
        recent traces are examined (the filters read the root span's attributes)."""
        self._journal.flush()
        words = [w for w in (topic or "").lower().split() if w]
        query = (
            select(TraceRow.request_id, TraceRow.trace_id, TraceRow.created_at, SpanRow.attributes)
            .join(SpanRow, SpanRow.trace_id == TraceRow.trace_id)
            .where(SpanRow.parent_span_id.is_(None), TraceRow.name.startswith("rag "))
            .order_by(TraceRow.created_at.desc())
            .limit(scan)
        )
        if since is not None:
            query = query.where(TraceRow.created_at >= since)
        if request_ids is not None:
            query = query.where(TraceRow.request_id.in_(list(request_ids)))
        found: list[dict[str, Any]] = []
        with self._store.session() as session:
            for request_id, trace_id, created_at, attributes in session.execute(query):
                question = attributes.get("llmops.rag.question")
                if not isinstance(question, str) or "llmops.rag.answer" not in attributes:
                    continue
                if app is not None and attributes.get("llmops.rag.app") != app:
                    continue
                grounding = attributes.get("llmops.guardrails.grounding_score")
                if max_grounding is not None and not (isinstance(grounding, int | float) and grounding < max_grounding):
                    continue
                if words and not all(w in question.lower() for w in words):
                    continue
                found.append(
                    {"request_id": request_id, "trace_id": trace_id, "created_at": created_at, "attributes": attributes}
                )
                if len(found) >= limit:
                    break
        return found

    def recent(
        self,
        limit: int = 20,
        *,
        q: str | None = None,
        status: str | None = None,
        app: str | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The newest stored traces, optionally only those whose request id, trace id or name contains ``q``,
        with ``status`` (ok, error), of ``app``, or since a moment. Each has the request's metrics when known."""
        self._journal.flush()
        query = select(TraceRow).order_by(TraceRow.created_at.desc()).limit(limit)
        if q:
            pattern = f"%{q}%"
            query = query.where(
                or_(TraceRow.request_id.like(pattern), TraceRow.trace_id.like(pattern), TraceRow.name.like(pattern))
            )
        if status:
            query = query.where(TraceRow.status == status)
        if since is not None:
            query = query.where(TraceRow.created_at >= since)
        if app:
            query = query.where(
                TraceRow.request_id.in_(select(RequestMetricRow.request_id).where(RequestMetricRow.app == app))
            )
        with self._store.session() as session:
            rows = session.scalars(query).all()
            metrics = {
                m.request_id: m
                for m in session.scalars(
                    select(RequestMetricRow).where(RequestMetricRow.request_id.in_([r.request_id for r in rows]))
                )
            }
        return [{**_summary(r), **_metrics_summary(metrics.get(r.request_id))} for r in rows]


def _summary(row: TraceRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "trace_id": row.trace_id,
        "name": row.name,
        "created_at": row.created_at.isoformat(),
        "duration_ms": row.duration_ms,
        "status": row.status,
        "attributes": row.attributes,
    }


def _metrics_summary(row: RequestMetricRow | None) -> dict[str, Any]:
    if row is None:
        return {}
    return {
        "app": row.app,
        "model": row.model,
        "prompt_version": row.prompt_version,
        "cost_usd": row.cost_usd,
        "grounding_score": row.grounding_score,
        "blocked": row.blocked,
    }
