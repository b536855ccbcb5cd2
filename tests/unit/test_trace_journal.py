"""Traces are journalled in a compact form on the request path and become their rows where the journal is drained:
by the journal's thread, by the drainer process, and by the next process after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from llmops.observability import Tracing
from llmops.observability._tables import RequestMetricRow, SpanRow, TraceRow
from llmops.store import Journal, Store


def _request(tracer: trace.Tracer, request_id: str) -> None:
    """A RAG-shaped request: input rails with decision events, retrieval, a failing tool, a chat call."""
    root = tracer.start_span("rag handbook", kind=SpanKind.SERVER)
    root.set_attributes({"llmops.request_id": request_id, "llmops.rag.app": "handbook",
                         "llmops.rag.question": "How many PTO days?"})  # fmt: skip
    ctx = trace.set_span_in_context(root)
    span = tracer.start_span("guardrails.input", context=ctx)
    span.set_attributes({"llmops.guardrails.rails": ["pii"], "llmops.guardrails.triggered": ["pii"]})
    span.add_event("guardrail.decision", {"llmops.guardrail.rail": "pii", "llmops.guardrail.action": "redact"})
    span.end()
    span = tracer.start_span("retrieve", context=ctx)
    span.set_attributes({"llmops.retrieval.scores": [0.75, 0.5]})
    span.end()
    span = tracer.start_span("tool lookup", context=ctx)
    span.set_status(StatusCode.ERROR, "KeyError: 'missing'")
    span.end()
    span = tracer.start_span("chat m", context=ctx, kind=SpanKind.CLIENT)
    span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 12,
                         "gen_ai.usage.output_tokens": 3, "llmops.cost_usd": 0.001})  # fmt: skip
    span.end()
    root.set_attributes({"llmops.guardrails.grounding_score": 0.9})
    root.end()


def _rows(store: Store, request_id: str) -> tuple[Any, list[Any], Any]:
    with store.session() as session:
        row = session.get(TraceRow, request_id)
        spans = [] if row is None else list(session.scalars(sa.select(SpanRow).where(SpanRow.trace_id == row.trace_id)))
        metrics = session.get(RequestMetricRow, request_id)
        session.expunge_all()
    return row, spans, metrics


def _check(row: Any, spans: list[Any], metrics: Any) -> None:
    """The rows of `_request`, as the store processor always wrote them."""
    assert row.name == "rag handbook" and row.status == "ok" and len(row.trace_id) == 32 and row.attributes == {}
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"rag handbook", "guardrails.input", "retrieve", "tool lookup", "chat m"}
    root = by_name["rag handbook"]
    assert root.parent_span_id is None and len(root.span_id) == 16
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    assert root.attributes["llmops.rag.question"] == "How many PTO days?"
    assert abs(row.duration_ms - (root.end_ns - root.start_ns) / 1e6) < 1e-9
    assert by_name["tool lookup"].status == "error" and by_name["tool lookup"].status_message == "KeyError: 'missing'"
    assert by_name["retrieve"].status == "ok" and by_name["retrieve"].status_message is None
    (event,) = by_name["guardrails.input"].events
    assert event["name"] == "guardrail.decision" and event["attributes"]["llmops.guardrail.action"] == "redact"
    assert event["time_ns"] >= by_name["guardrails.input"].start_ns
    assert metrics.trace_id == row.trace_id and metrics.sampled and metrics.status == "ok"
    assert (metrics.model, metrics.input_tokens, metrics.output_tokens) == ("m", 12, 3)
    assert metrics.top_score == 0.75 and metrics.rails == ["pii"] and metrics.pii_incidents == 1
    assert metrics.grounding_score == 0.9 and metrics.app == "handbook" and metrics.kind == "rag"


@pytest.mark.parametrize("drain", ["thread", "process"])
def test_a_trace_becomes_its_rows_where_the_journal_is_drained(database_url: str, tmp_path: Path, drain: str) -> None:
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=0.05, drain=drain)  # type: ignore[arg-type]
    tracing = Tracing(journal)
    try:
        _request(tracing.tracer, "req_drained")
        deadline = time.monotonic() + 60  # a drainer process imports the platform first
        while _rows(store, "req_drained")[2] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        _check(*_rows(store, "req_drained"))  # drained by the journal's own drainer, no flush
    finally:
        tracing.shutdown()
        journal.close()
        store.close()


def _journalled(journal: Journal) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(journal.directory.glob("segment-*")))


def test_a_sampled_out_trace_journals_its_metrics_row_only(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=3600)
    tracing = Tracing(journal, sample_rate=0.0)
    try:
        _request(tracing.tracer, "req_out")
        on_disk = _journalled(journal)
        assert b"req_out" in on_disk and b"How many PTO days?" not in on_disk  # the content stays in memory
        journal.flush()
        row, spans, metrics = _rows(store, "req_out")
        assert row is None and spans == [] and metrics is not None and not metrics.sampled
        assert metrics.top_score == 0.75 and metrics.model == "m"

        assert tracing.store_processor.keep("req_out")  # negative feedback: the trace is stored after all
        journal.flush()
        row, spans, kept_metrics = _rows(store, "req_out")
        assert row is not None and len(spans) == 5 and not kept_metrics.sampled  # its metrics row is unchanged
    finally:
        tracing.shutdown()
        journal.close()
        store.close()


WRITER = """
import sys
from pathlib import Path
from opentelemetry import trace
import llmops._platform  # noqa: F401 - registers every package's tables
from llmops.observability import Tracing
from llmops.store import Journal, Store
sys.path.insert(0, sys.argv[3])
from test_trace_journal import _request
journal = Journal(Store(sys.argv[1]), Path(sys.argv[2]), interval=3600)  # never drains on its own: the kill beats it
tracing = Tracing(journal)
i = 0
while True:
    _request(tracing.tracer, f"req_{i}")
    print(i, flush=True)  # acknowledged: the trace is in the journal
    i += 1
"""


def test_acknowledged_traces_become_their_rows_after_kill_9(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    directory = tmp_path / "journal"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, database_url, str(directory), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    acknowledged = -1
    while acknowledged < 50:
        acknowledged = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    Journal(store, directory).close()  # the next process recovers the killed one's journal
    for i in range(acknowledged + 1):
        _check(*_rows(store, f"req_{i}"))
    store.close()
