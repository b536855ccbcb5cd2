"""Trace retention: what is older than an app's age limit, or beyond its newest ``max_traces``, is deleted; the
questions and answers in traces older than ``content_max_age_days`` are cleared (the traces stay). (Feedback's
``feedback_max_age_days`` is applied by ``Platform.apply_retention`` with the feedback store.)

The unit is a request: its ``request_metrics`` row (every request has one, sampled or not) or, for a trace written
before metrics rows existed, its ``traces`` row. A request belongs to the app named on its metrics row; each app is
pruned on its own (one busy app never evicts another's traces), with its ``retention_by_app`` entry, else its
project's ``retention_by_project`` entry, else the defaults; the requests without an app (gateway calls,
embeddings, older traces) form one more group, under the default project's policy.

Deleting a request deletes its spans, its trace, its metrics row, its online evaluation scores and its drift
observation. Rows go in batches of ``batch_size`` requests, one short transaction each, so pruning millions of
traces never holds a long write lock (SQLite) or one giant transaction (PostgreSQL) against the request path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, literal, or_, select, union_all, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Subquery

from llmops._settings import ObservabilitySettings, RetentionSettings
from llmops.evaluation._tables import OnlineScoreRow
from llmops.observability._tables import DriftObservationRow, RequestMetricRow, SpanRow, TraceRow
from llmops.store import Journal, Store

__all__ = ["TraceRetention"]

#: Tables pruned, in the order rows are deleted (children before the rows that index them).
TABLES = ("spans", "eval_online_scores", "drift_observations", "traces", "request_metrics")
#: The span attributes that hold what a user asked and what they were answered ("prompts in traces").
CONTENT_ATTRIBUTES = ("llmops.rag.question", "llmops.rag.answer")


@dataclass(frozen=True)
class _Cutoff:
    """The newest request to delete by count: it and everything older (by created_at, then request id) go."""

    created_at: datetime
    request_id: str


class TraceRetention:
    """Prunes stored traces by age and count, per app.

    >>> retention = TraceRetention(platform.store, platform.journal, settings.observability)  # doctest: +SKIP
    >>> retention.prune()  # doctest: +SKIP
    {'spans': 1204, 'eval_online_scores': 3, 'drift_observations': 40, 'traces': 172, 'request_metrics': 180}
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        settings: ObservabilitySettings,
        *,
        batch_size: int = 5_000,
        app_projects: Mapping[str, str] | None = None,
        default_project: str = "default",
    ) -> None:
        """``app_projects``: the project of each app (``rag_apps[].project``); other apps are the default's."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store = store
        self._journal = journal
        self._settings = settings
        self._batch_size = batch_size
        self._app_projects = dict(app_projects or {})
        self._default_project = default_project

    def policy(self, app: str | None) -> RetentionSettings:
        """The retention of ``app``'s records: its own, else its project's, else the defaults."""
        settings = self._settings
        if app is not None and app in settings.retention_by_app:
            return settings.retention_by_app[app]
        project = self._app_projects.get(app or "", self._default_project)
        return settings.retention_by_project.get(project, settings.retention)

    def prune(self, *, now: datetime | None = None) -> dict[str, int]:
        """Delete what the retention settings no longer keep; returns the rows deleted per table."""
        now = _utc(now or datetime.now(UTC))
        # Rows still in the journal are drained first, so they are counted and judged like the others.
        self._journal.flush()
        deleted = dict.fromkeys((*TABLES, "content_cleared"), 0)
        for app in self.apps():
            policy = self.policy(app)
            for table, count in self._prune_group(app, policy, now).items():
                deleted[table] += count
            if policy.content_max_age_days is not None:
                deleted["content_cleared"] += self._clear_content(
                    app, now - timedelta(days=policy.content_max_age_days)
                )
        return deleted

    def _clear_content(self, app: str | None, cutoff: datetime) -> int:
        """Remove the question and answer text from the spans (and trace rows) of ``app``'s requests older than
        ``cutoff``; returns the spans cleared. Only rows still holding text are read, a batch at a time."""
        requests = _requests(app)
        cleared = 0
        for table in (SpanRow, TraceRow):
            holds_text = or_(*(table.attributes[key].as_string().is_not(None) for key in CONTENT_ATTRIBUTES))
            key_columns = (SpanRow.trace_id, SpanRow.span_id) if table is SpanRow else (TraceRow.request_id,)
            batch = (
                select(*key_columns, table.attributes)
                .join(requests, requests.c.trace_id == table.trace_id)
                .where(requests.c.created_at < cutoff, holds_text)
                .limit(self._batch_size)
            )
            while True:
                with self._store.session() as session:
                    rows = session.execute(batch).all()
                    for *keys, attributes in rows:
                        match = and_(*(column == value for column, value in zip(key_columns, keys, strict=True)))
                        session.execute(update(table).where(match).values(attributes=_without_content(attributes)))
                if table is SpanRow:
                    cleared += len(rows)
                if len(rows) < self._batch_size:
                    break
        return cleared

    def apps(self) -> list[str | None]:
        """Every app with stored requests, and None for the requests without one."""
        with self._store.session() as session:
            apps = session.scalars(select(RequestMetricRow.app).where(RequestMetricRow.app.is_not(None)).distinct())
            return [None, *sorted(a for a in apps if a is not None)]

    def _prune_group(self, app: str | None, policy: RetentionSettings, now: datetime) -> dict[str, int]:
        deleted = dict.fromkeys(TABLES, 0)
        requests = _requests(app)
        doomed: list[ColumnElement[bool]] = []
        if policy.max_age_days is not None:
            doomed.append(requests.c.created_at < now - timedelta(days=policy.max_age_days))
        if policy.max_traces is not None:
            cutoff = self._count_cutoff(requests, policy.max_traces)
            if cutoff is not None:
                doomed.append(
                    or_(
                        requests.c.created_at < cutoff.created_at,
                        and_(requests.c.created_at == cutoff.created_at, requests.c.request_id <= cutoff.request_id),
                    )
                )
        if not doomed:
            return deleted
        batch = select(requests.c.request_id, requests.c.trace_id).where(or_(*doomed)).limit(self._batch_size)
        while True:
            with self._store.session() as session:
                rows = session.execute(batch).all()
                if not rows:
                    break
                counts = _delete(session, [r.request_id for r in rows], sorted({r.trace_id for r in rows}))
            for table, count in counts.items():
                deleted[table] += count
            if len(rows) < self._batch_size:
                break
        return deleted

    def _count_cutoff(self, requests: Subquery, keep: int) -> _Cutoff | None:
        """The newest request beyond the ``keep`` newest, or None when the group holds no more than that."""
        query = (
            select(requests.c.created_at, requests.c.request_id)
            .order_by(requests.c.created_at.desc(), requests.c.request_id.desc())
            .offset(keep)
            .limit(1)
        )
        with self._store.session() as session:
            row = session.execute(query).first()
        return _Cutoff(row.created_at, row.request_id) if row is not None else None


def _requests(app: str | None) -> Subquery:
    """The requests of one app (request_id, trace_id, created_at); for None, those without an app, including
    traces that have no metrics row."""
    metrics = select(
        RequestMetricRow.request_id.label("request_id"),
        RequestMetricRow.trace_id.label("trace_id"),
        RequestMetricRow.created_at.label("created_at"),
    )
    if app is not None:
        return metrics.where(RequestMetricRow.app == app).subquery("requests")
    unindexed = select(TraceRow.request_id, TraceRow.trace_id, TraceRow.created_at).where(
        ~exists(select(literal(1)).where(RequestMetricRow.request_id == TraceRow.request_id))
    )
    return union_all(metrics.where(RequestMetricRow.app.is_(None)), unindexed).subquery("requests")


def _delete(session: Session, request_ids: Sequence[str], trace_ids: Sequence[str]) -> dict[str, int]:
    statements = {
        "spans": delete(SpanRow).where(SpanRow.trace_id.in_(trace_ids)),
        "eval_online_scores": delete(OnlineScoreRow).where(OnlineScoreRow.trace_id.in_(trace_ids)),
        "drift_observations": delete(DriftObservationRow).where(DriftObservationRow.request_id.in_(request_ids)),
        "traces": delete(TraceRow).where(TraceRow.request_id.in_(request_ids)),
        "request_metrics": delete(RequestMetricRow).where(RequestMetricRow.request_id.in_(request_ids)),
    }
    # Core statements on the session's connection: no ORM bookkeeping of deleted objects, and a row count.
    connection = session.connection()
    return {table: connection.execute(statement).rowcount for table, statement in statements.items()}


def _without_content(attributes: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if k not in CONTENT_ATTRIBUTES}


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as the store writes them."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
