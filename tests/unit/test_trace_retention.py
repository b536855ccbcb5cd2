"""Trace retention on SQLite and PostgreSQL: by age and by count, per app, in batches, every related table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from llmops._settings import ObservabilitySettings, RetentionSettings
from llmops.evaluation._tables import OnlineScoreRow
from llmops.observability._retention import TraceRetention
from llmops.observability._tables import DriftObservationRow, RequestMetricRow, SpanRow, TraceRow
from llmops.store import Base, Journal, Store

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def stored(database_url: str, tmp_path: Path) -> Iterator[tuple[Store, Journal]]:
    store = Store(database_url)
    store.migrate()
    # The metrics and drift tables may be newer than the migrations of this checkout; created only if missing.
    tables = [Base.metadata.tables["request_metrics"], Base.metadata.tables["drift_observations"]]
    Base.metadata.create_all(store.engine, tables=tables)
    journal = Journal(store, tmp_path / "journal")
    try:
        yield store, journal
    finally:
        journal.close()
        store.close()


def _request(
    session: Any, name: str, age_days: float, app: str | None, *, trace: bool = True, metrics: bool = True
) -> None:
    """One request: a trace with three spans, a metrics row, an online score and a drift observation."""
    created = NOW - timedelta(days=age_days)
    trace_id = name.encode().hex().ljust(32, "0")[:32]
    if trace:
        session.add(TraceRow(request_id=name, trace_id=trace_id, name="rag x", created_at=created, duration_ms=1.0,
                             status="ok", attributes={}))  # fmt: skip
        for n in range(3):
            parent = None if n == 0 else f"{0:016x}"
            session.add(SpanRow(trace_id=trace_id, span_id=f"{n:016x}", parent_span_id=parent, name=f"s{n}",
                                start_ns=n, end_ns=n + 1, duration_ms=0.0, status="ok", status_message=None,
                                attributes={"gen_ai.operation.name": "chat"}, events=[]))  # fmt: skip
        session.add(OnlineScoreRow(request_id=name, metric="faithfulness", app=app or "", trace_id=trace_id,
                                   value=0.5, error=None, details={}, created_at=created))  # fmt: skip
    if metrics:
        session.add(RequestMetricRow(request_id=name, trace_id=trace_id, created_at=created, kind="rag", app=app,
                                     status="ok", sampled=trace, blocked=False, abstained=False, duration_ms=1.0,
                                     input_tokens=1, output_tokens=1, cost_usd=0.0, guardrail_triggers=0,
                                     pii_incidents=0, rails=[]))  # fmt: skip
    if app is not None:
        session.add(DriftObservationRow(request_id=name, app=app, created_at=created, question="q", embedding="",
                                        model="m"))  # fmt: skip


def _remaining(store: Store) -> dict[str, set[str]]:
    with store.session() as session:
        traces = set(session.scalars(sa.select(TraceRow.request_id)))
        metrics = set(session.scalars(sa.select(RequestMetricRow.request_id)))
        drift = set(session.scalars(sa.select(DriftObservationRow.request_id)))
        scores = set(session.scalars(sa.select(OnlineScoreRow.request_id)))
        span_traces = set(session.scalars(sa.select(SpanRow.trace_id)))
        by_trace = dict(session.execute(sa.select(TraceRow.trace_id, TraceRow.request_id)).all())
    assert span_traces <= set(by_trace)  # no span outlives its trace
    return {"traces": traces, "request_metrics": metrics, "drift_observations": drift, "eval_online_scores": scores}


# (name, age in days, app, has a trace, has a metrics row)
REQUESTS = [
    # "archive" keeps its 2 newest whatever their age.
    ("arch-100d", 100, "archive", True, True),
    ("arch-50d", 50, "archive", True, True),
    ("arch-20d", 20, "archive", True, True),
    ("arch-1d", 1, "archive", True, True),
    # "support" has no override: the defaults (7 days, 3 newest), counted for this app alone.
    ("sup-12d-unsampled", 12, "support", False, True),
    ("sup-10d", 10, "support", True, True),
    ("sup-6d", 6, "support", True, True),
    ("sup-5d-unsampled", 5, "support", False, True),
    ("sup-4d", 4, "support", True, True),
    ("sup-3d", 3, "support", True, True),
    # No app: gateway calls (metrics rows without an app) and traces from before metrics rows existed.
    ("gw-8d", 8, None, True, True),
    ("gw-2d", 2, None, True, True),
    ("old-9d", 9, None, True, False),
    ("old-1d", 1, None, True, False),
    ("old-0.5d", 0.5, None, True, False),
]
KEPT = {"arch-20d", "arch-1d", "sup-5d-unsampled", "sup-4d", "sup-3d", "old-1d", "old-0.5d", "gw-2d"}
SETTINGS = ObservabilitySettings(
    retention=RetentionSettings(max_age_days=7, max_traces=3),
    retention_by_app={"archive": RetentionSettings(max_age_days=None, max_traces=2)},
)


@pytest.mark.parametrize("batch_size", [2, 5_000])
def test_age_and_count_limits_per_app(stored: tuple[Store, Journal], batch_size: int) -> None:
    store, journal = stored
    with store.session() as session:
        for name, age, app, trace, metrics in REQUESTS:
            _request(session, name, age, app, trace=trace, metrics=metrics)
    before = {table: len(names) for table, names in _remaining(store).items()}

    deleted = TraceRetention(store, journal, SETTINGS, batch_size=batch_size).prune(now=NOW)

    after = _remaining(store)
    with_trace = {name for name, _, _, trace, _ in REQUESTS if trace}
    with_metrics = {name for name, _, _, _, metrics in REQUESTS if metrics}
    with_app = {name for name, _, app, _, _ in REQUESTS if app is not None}
    assert after["traces"] == KEPT & with_trace
    assert after["request_metrics"] == KEPT & with_metrics
    assert after["drift_observations"] == KEPT & with_app
    assert after["eval_online_scores"] == KEPT & with_trace
    for table in after:
        assert deleted[table] == before[table] - len(after[table]), table
    assert deleted["spans"] == 3 * (len(with_trace) - len(KEPT & with_trace))
    # Running it again deletes nothing: what is left is exactly what the settings keep.
    assert set(TraceRetention(store, journal, SETTINGS).prune(now=NOW).values()) == {0}


def test_equal_timestamps_still_keep_exactly_max_traces(stored: tuple[Store, Journal]) -> None:
    store, journal = stored
    with store.session() as session:
        for i in range(7):
            _request(session, f"same-{i}", 1, "burst")
    settings = ObservabilitySettings(retention=RetentionSettings(max_age_days=None, max_traces=4))
    deleted = TraceRetention(store, journal, settings).prune(now=NOW)
    assert deleted["traces"] == 3
    assert _remaining(store)["traces"] == {"same-3", "same-4", "same-5", "same-6"}  # ties broken by request id


def test_rows_still_in_the_journal_are_pruned_too(stored: tuple[Store, Journal]) -> None:
    store, journal = stored
    old = NOW - timedelta(days=40)
    journal.append({"traces": [{"request_id": "req_j", "trace_id": "f" * 32, "name": "chat m", "created_at": old,
                                "duration_ms": 1.0, "status": "ok", "attributes": "{}"}]})  # fmt: skip
    deleted = TraceRetention(store, journal, ObservabilitySettings()).prune(now=NOW)
    assert deleted["traces"] == 1
    assert _remaining(store)["traces"] == set()


def test_a_big_prune_runs_in_short_transactions(stored: tuple[Store, Journal]) -> None:
    """12,000 expired requests go in three batches of at most 5,000: three DELETEs per table, three commits."""
    store, journal = stored
    old = NOW - timedelta(days=60)
    metrics: list[dict[str, Any]] = [
        {"request_id": f"r{i}", "trace_id": f"{i:032x}", "created_at": old, "kind": "chat", "app": None,
         "status": "ok", "sampled": True, "blocked": False, "abstained": False, "duration_ms": 1.0,
         "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "guardrail_triggers": 0, "pii_incidents": 0,
         "rails": []}
        for i in range(12_000)
    ]  # fmt: skip
    traces: list[dict[str, Any]] = [
        {"request_id": f"r{i}", "trace_id": f"{i:032x}", "name": "chat m", "created_at": old, "duration_ms": 1.0,
         "status": "ok", "attributes": {}}
        for i in range(12_000)
    ]  # fmt: skip
    with store.session() as session:
        session.execute(sa.insert(RequestMetricRow), metrics)
        session.execute(sa.insert(TraceRow), traces)
        _request(session, "fresh", 1, None)
    statements: list[str] = []
    commits: list[int] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM TRACES"):
            statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    sa.event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    try:
        deleted = TraceRetention(store, journal, ObservabilitySettings()).prune(now=NOW)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert deleted["traces"] == 12_000 and deleted["request_metrics"] == 12_000
    assert len(statements) == 3
    assert len(commits) >= 3
    assert _remaining(store)["traces"] == {"fresh"}
