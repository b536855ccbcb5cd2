"""The light tracer: the OpenTelemetry API's behaviour (parents, current span, exceptions, status) without the SDK,
and finished spans that the SDK's processors and exporters take."""

from __future__ import annotations

import gc
import os
import random
import time
import weakref
from typing import Any, cast

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from llmops.observability import MetricsSpanProcessor, PlatformMetrics, StoreSpanProcessor
from llmops.observability._export import ReadableSpanExporter
from llmops.observability._light import LightSpan, LightTracer, LightTracerProvider, clean_span, to_readable
from llmops.rag import new_request_id
from llmops.store._journal import rows_of_line


class Recorder(SpanProcessor):
    """Every span handed to ``on_end``, in order."""

    def __init__(self) -> None:
        self.ended: list[Any] = []

    def on_end(self, span: Any) -> None:
        self.ended.append(span)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def tracer(recorder: Recorder) -> LightTracer:
    provider = LightTracerProvider(resource=Resource.create({"service.name": "light-test"}))
    provider.add_span_processor(recorder)
    return provider.get_tracer("llmops")


def _light(span: trace.Span) -> LightSpan:
    assert isinstance(span, LightSpan)
    return span


def test_children_share_the_trace_and_name_their_parent(tracer: LightTracer, recorder: Recorder) -> None:
    root = _light(tracer.start_span("rag app", kind=SpanKind.SERVER))
    ctx = trace.set_span_in_context(root)
    child = _light(tracer.start_span("retrieve", context=ctx))
    grandchild = _light(tracer.start_span("rerank", context=trace.set_span_in_context(child)))
    other = _light(tracer.start_span("rag other"))

    assert root.parent is None and other.parent is None
    assert child.parent == root.get_span_context() and grandchild.parent == child.get_span_context()
    assert child.context.trace_id == grandchild.context.trace_id == root.context.trace_id
    assert other.context.trace_id != root.context.trace_id
    ids = [s.context.span_id for s in (root, child, grandchild, other)]
    assert len(set(ids)) == 4 and all(0 < i < 2**64 for i in ids)
    assert 0 < root.context.trace_id < 2**128
    assert root.context.is_valid and not root.context.is_remote and root.context.trace_flags.sampled
    assert root.kind is SpanKind.SERVER and child.kind is SpanKind.INTERNAL
    assert root.context == trace.SpanContext(*root.context[:5])  # what SpanContext's own constructor makes
    for span in (grandchild, child, other, root):
        span.end()
    assert [s.name for s in recorder.ended] == ["rerank", "retrieve", "rag other", "rag app"]


def test_ids_are_not_repeated_and_do_not_follow_the_random_module(tracer: LightTracer) -> None:
    state = random.getstate()
    try:
        random.seed(7)
        first = _light(tracer.start_span("a")).context
        random.seed(7)
        second = _light(tracer.start_span("a")).context
    finally:
        random.setstate(state)
    assert first.trace_id != second.trace_id and first.span_id != second.span_id
    trace_ids = {_light(tracer.start_span("x")).context.trace_id for _ in range(2000)}
    assert len(trace_ids) == 2000


def test_trace_ids_start_with_the_time_and_end_random(tracer: LightTracer) -> None:
    """Time-ordered (the store's indexes on trace ids grow at their end), with 80 random low bits."""
    before = time.time_ns() // 1_000_000
    ids = [_light(tracer.start_span("x")).context.trace_id for _ in range(500)]
    time.sleep(0.002)
    later = _light(tracer.start_span("x")).context.trace_id
    after = time.time_ns() // 1_000_000
    assert all(before <= i >> 80 <= after for i in ids)
    assert later > max(ids)
    assert len({i & (1 << 80) - 1 for i in ids}) == 500
    assert _light(tracer.start_span("x")).context.trace_flags & 0x02  # W3C random-trace-id: the low 7 bytes are


def test_request_ids_sort_by_time() -> None:
    ids = []
    for _ in range(3):
        ids += [new_request_id() for _ in range(100)]
        time.sleep(0.002)
    assert len(set(ids)) == 300
    assert max(ids[:100]) < min(ids[100:200]) and max(ids[100:200]) < min(ids[200:])
    assert all(len(i) == 36 and i.startswith("req_") and int(i[4:], 16) for i in ids)


def test_a_forked_child_draws_other_ids_than_its_parent(tracer: LightTracer) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next trace id, to the parent
        os.close(read)
        os.write(write, _light(tracer.start_span("child")).context.trace_id.to_bytes(16, "big"))
        os._exit(0)
    os.close(write)
    mine = _light(tracer.start_span("parent")).context.trace_id
    theirs = int.from_bytes(os.read(read, 16), "big")
    os.waitpid(pid, 0)
    os.close(read)
    assert theirs != 0 and theirs != mine


def test_start_as_current_span_nests_and_restores(tracer: LightTracer, recorder: Recorder) -> None:
    assert trace.get_current_span() is trace.INVALID_SPAN
    with tracer.start_as_current_span("ingest") as outer:
        assert trace.get_current_span() is outer
        with tracer.start_as_current_span("index.catch_up") as inner:
            assert trace.get_current_span() is inner
            assert _light(inner).parent == outer.get_span_context()
        assert trace.get_current_span() is outer
        assert _light(inner).end_time is not None and _light(outer).end_time is None
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert [s.name for s in recorder.ended] == ["index.catch_up", "ingest"]


def test_an_exception_is_recorded_on_the_span_it_escapes(tracer: LightTracer, recorder: Recorder) -> None:
    with (
        pytest.raises(ValueError, match="no index"),
        tracer.start_as_current_span("ingest"),
        tracer.start_as_current_span("index.catch_up"),
    ):
        raise ValueError("no index")
    inner, outer = recorder.ended
    for span in (inner, outer):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: no index"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "no index"
        assert 'raise ValueError("no index")' in event.attributes["exception.stacktrace"]
        assert event.timestamp >= span.start_time


def test_exception_recording_and_status_can_be_turned_off(tracer: LightTracer, recorder: Recorder) -> None:
    with (
        pytest.raises(KeyError),
        tracer.start_as_current_span("quiet", record_exception=False, set_status_on_exception=False),
    ):
        raise KeyError("k")
    (span,) = recorder.ended
    assert span.events == [] and span.status.status_code is StatusCode.UNSET


def test_a_span_used_as_a_context_manager_records_its_exception(tracer: LightTracer, recorder: Recorder) -> None:
    with pytest.raises(RuntimeError), tracer.start_span("stage") as span:
        raise RuntimeError("boom")
    assert recorder.ended == [span]
    assert _light(span).status.status_code is StatusCode.ERROR
    assert _light(span).events[0].attributes["exception.escaped"] == "True"


def test_use_span_makes_a_started_span_current(tracer: LightTracer, recorder: Recorder) -> None:
    root = tracer.start_span("guarded m")
    with trace.use_span(root):
        assert trace.get_current_span() is root
        child = _light(tracer.start_span("guardrails.input"))  # no context given: the current one
        child.end()
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert child.parent == root.get_span_context()
    assert recorder.ended == [child]  # use_span does not end the span unless asked
    with trace.use_span(root, end_on_exit=True):
        pass
    assert recorder.ended == [child, root]


class Odd:
    """An attribute value no JSON encoder knows; the SDK stores its ``str``."""

    def __str__(self) -> str:
        return "odd"


def test_attributes_are_kept_as_given_and_cleaned_as_the_sdk_would_where_written(tracer: LightTracer) -> None:
    span = _light(tracer.start_span("retrieve", attributes={"llmops.retrieval.top_k": 4}))
    chunk_ids = ["a", "b"]
    span.set_attributes({"llmops.retrieval.chunk_ids": chunk_ids, "llmops.retrieval.mode": "dense", "none": None})
    span.set_attribute("mixed", cast(Any, [1, object(), Odd()]))
    span.set_attribute("mapping", {"k": (1, 2)})
    event: dict[str, Any] = {"llmops.guardrail.rail": "pii", "llmops.guardrail.action": "pass", "list": [1]}
    span.add_event("guardrail.decision", event)
    event["llmops.guardrail.action"] = "block"  # the event keeps a copy of the caller's dict
    span.add_event("cache.miss", timestamp=123)

    assert span.attributes["llmops.retrieval.chunk_ids"] is chunk_ids  # as given: no copy on the request path
    assert span.attributes["none"] is None and span.attributes["llmops.retrieval.top_k"] == 4
    decision, miss = span.events
    assert decision.name == "guardrail.decision"
    assert decision.attributes == {"llmops.guardrail.rail": "pii", "llmops.guardrail.action": "pass", "list": [1]}
    assert (miss.name, miss.timestamp, miss.attributes) == ("cache.miss", 123, {})

    span.end()
    span.set_attribute("late", 1)
    span.add_event("late")
    span.update_name("renamed")
    assert "late" not in span.attributes and len(span.events) == 2 and span.name == "retrieve"

    # Where the values are written, they are cleaned as the SDK cleans them when they are set.
    readable = to_readable(span)
    sdk_span = TracerProvider().get_tracer("sdk").start_span("retrieve")
    sdk_span.set_attributes(span.attributes)
    assert dict(readable.attributes or {}) == dict(sdk_span.attributes or {})  # type: ignore[attr-defined]
    assert dict(readable.attributes or {})["mixed"] == (1, None, "odd")
    assert clean_span(span) and span.attributes.get("llmops.retrieval.chunk_ids") == ("a", "b")
    assert span.events[0].attributes["list"] == (1,)
    assert not clean_span(span)  # clean already


def test_status_follows_the_sdk_rules(tracer: LightTracer) -> None:
    span = _light(tracer.start_span("chat m"))
    assert _status(span) == (StatusCode.UNSET, None)
    span.set_status(StatusCode.ERROR, "upstream failed")
    assert _status(span) == (StatusCode.ERROR, "upstream failed")
    span.set_status(Status(StatusCode.UNSET))  # never goes back to UNSET
    assert _status(span) == (StatusCode.ERROR, "upstream failed")
    span.set_status(Status(StatusCode.OK))
    span.set_status(StatusCode.ERROR, "later")  # OK is final
    assert _status(span) == (StatusCode.OK, None)


def _status(span: LightSpan) -> tuple[StatusCode, str | None]:
    return span.status.status_code, span.status.description


def test_ending_twice_calls_the_processors_once(tracer: LightTracer, recorder: Recorder) -> None:
    span = _light(tracer.start_span("pack_context"))
    assert span.is_recording()
    span.end(end_time=span.start_time + 5_000)
    span.end()
    assert recorder.ended == [span] and span.end_time == span.start_time + 5_000
    assert not span.is_recording()


def test_every_processor_sees_every_span_once(recorder: Recorder) -> None:
    provider = LightTracerProvider()
    second = Recorder()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("t")
    early = tracer.start_span("started before the second processor")
    provider.add_span_processor(second)
    late = tracer.start_span("late")
    late.end()
    early.end()
    assert recorder.ended == [late, early] and second.ended == [late, early]


def test_a_root_collects_its_traces_spans_as_they_end(tracer: LightTracer, recorder: Recorder) -> None:
    root = _light(tracer.start_span("rag app"))
    ctx = trace.set_span_in_context(root)
    first = _light(tracer.start_span("retrieve", context=ctx))
    second = _light(tracer.start_span("chat m", context=ctx))
    grandchild = _light(tracer.start_span("rerank", context=trace.set_span_in_context(first)))
    assert root.trace_spans == [] and root.trace_root is None
    assert first.trace_root is root and grandchild.trace_root is root and first.trace_spans is None

    second.end()
    grandchild.end()
    first.end()
    assert root.trace_spans == [second, grandchild, first]  # in the order they ended; the root is not in it
    assert first.trace_root is None and second.trace_root is None  # an ended child lets go of its root
    root.end()
    assert recorder.ended == [second, grandchild, first, root]
    late = _light(tracer.start_span("after", context=ctx))  # a child of the ended root still joins its trace
    assert late.trace_root is root
    late.end()
    assert root.trace_spans == [second, grandchild, first, late]
    assert _light(tracer.start_span("other")).trace_spans == []  # another root: its own list


def test_a_finished_trace_is_freed_without_the_garbage_collector(tracer: LightTracer, recorder: Recorder) -> None:
    # Spans and their trace's list must not reference each other: a request's trace is freed as soon as it is
    # dropped, not at the next (full, for old objects) collection.
    gc.collect()
    gc.disable()
    try:
        with (
            tracer.start_as_current_span("rag app") as root,
            tracer.start_as_current_span("retrieve"),
            tracer.start_as_current_span("rerank"),
        ):
            pass
        refs = [weakref.ref(s) for s in recorder.ended]
        assert len(refs) == 3 and recorder.ended[-1] is root
        del root
        recorder.ended.clear()
        assert [r() for r in refs] == [None, None, None]
    finally:
        gc.enable()


def test_spans_whose_parent_is_not_a_running_light_span_are_collected_by_trace_id() -> None:
    journal, provider, other = CapturedJournal(), LightTracerProvider(), LightTracerProvider()
    provider.add_span_processor(StoreSpanProcessor(journal))  # type: ignore[arg-type]
    tracer = provider.get_tracer("llmops")
    root = _light(tracer.start_span("rag app", attributes={"llmops.request_id": "req_strays"}))
    by_context = _light(tracer.start_span("by context", context=trace.set_span_in_context(
        trace.NonRecordingSpan(root.get_span_context()))))  # fmt: skip
    ended = _light(tracer.start_span("ended", context=trace.set_span_in_context(root)))
    ended.end()
    under_ended = _light(tracer.start_span("under ended", context=trace.set_span_in_context(ended)))
    foreign_root = other.get_tracer("other").start_span("foreign")
    foreign = _light(tracer.start_span("under a foreign span", context=trace.set_span_in_context(foreign_root)))
    for span in (by_context, under_ended, foreign):
        assert span.trace_root is None and span.trace_spans is None
        span.end()
    root.end()

    (line,) = journal.lines
    names = sorted(row["name"] for row in line["spans"])
    assert names == ["by context", "ended", "rag app", "under ended"]  # the foreign span's trace never ended here
    assert line["traces"][0]["request_id"] == "req_strays"


def test_a_remote_parent_keeps_its_trace_and_stays_remote(tracer: LightTracer, recorder: Recorder) -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    span = _light(tracer.start_span("rag app", context=ctx))
    assert span.context.trace_id == 0xABC and span.context.span_id != 0xDEF
    assert span.parent == remote and span.parent is not None and span.parent.is_remote

    unsampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    dropped = tracer.start_span("rag app", context=trace.set_span_in_context(trace.NonRecordingSpan(unsampled)))
    assert not dropped.is_recording() and not isinstance(dropped, LightSpan)  # ParentBased(ALWAYS_ON), as the SDK
    dropped.end()
    span.end()
    assert recorder.ended == [span]


def test_outside_any_span_the_current_span_is_the_invalid_one(tracer: LightTracer) -> None:
    current = trace.get_current_span()
    assert current is trace.INVALID_SPAN
    assert not current.get_span_context().is_valid
    span = _light(tracer.start_span("root"))  # a new trace, not a child of the invalid span
    assert span.parent is None and span.context.is_valid


def test_a_finished_span_converts_to_the_sdks_readable_span(tracer: LightTracer) -> None:
    root = tracer.start_span("rag app", kind=SpanKind.SERVER)
    child = _light(tracer.start_span("guardrails.input", context=trace.set_span_in_context(root)))
    child.set_attributes({"llmops.guardrails.rails": ["size"], "llmops.guardrails.allowed": True})
    child.add_event("guardrail.decision", {"llmops.guardrail.rail": "size"})
    child.set_status(StatusCode.ERROR, "blocked")
    child.end()

    readable = to_readable(child)
    assert isinstance(readable, ReadableSpan)
    assert (readable.name, readable.kind, readable.parent) == ("guardrails.input", SpanKind.INTERNAL, child.parent)
    assert readable.context == child.context
    assert dict(readable.attributes or {}) == {"llmops.guardrails.rails": ("size",), "llmops.guardrails.allowed": True}
    assert [(e.name, dict(e.attributes or {}), e.timestamp) for e in readable.events] == [
        ("guardrail.decision", {"llmops.guardrail.rail": "size"}, child.events[0].timestamp)
    ]
    assert (readable.start_time, readable.end_time) == (child.start_time, child.end_time)
    assert readable.status.status_code is StatusCode.ERROR
    assert readable.resource.attributes["service.name"] == "light-test"
    assert readable.instrumentation_scope is not None and readable.instrumentation_scope.name == "llmops"
    assert readable.to_json()  # the SDK's own encoder reads it


def test_the_sdks_exporters_take_light_spans_through_the_converting_exporter(tracer: LightTracer) -> None:
    exported = InMemorySpanExporter()
    tracer.provider.add_span_processor(SimpleSpanProcessor(ReadableSpanExporter(exported)))
    with tracer.start_as_current_span("chat m", attributes={"gen_ai.operation.name": "chat"}):
        pass
    (span,) = exported.get_finished_spans()
    assert isinstance(span, ReadableSpan) and not isinstance(span, LightSpan)
    assert span.name == "chat m" and dict(span.attributes or {}) == {"gen_ai.operation.name": "chat"}


class CapturedJournal:
    """Stands in for the journal: the rows of each appended line, as the journal would write it (one orjson call)
    and draining would read it back (its entries expanded into rows)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.written: list[dict[str, Any]] = []  # the lines as written

    def append(self, rows_by_table: dict[str, list[dict[str, Any]]], *, durable: bool = True) -> None:
        line = orjson.loads(orjson.dumps(rows_by_table, option=orjson.OPT_NAIVE_UTC))
        self.written.append(line)
        self.lines.append({table: rows for table, rows in rows_of_line(line).items() if rows})


def _request(tracer: trace.Tracer, request_id: str, *, odd: bool = False) -> None:
    """A RAG-shaped request: a root, guardrails with decision events, retrieval, a failing tool and a chat call."""
    with tracer.start_as_current_span("rag handbook", kind=SpanKind.SERVER) as root:
        root.set_attributes({"llmops.request_id": request_id, "llmops.rag.app": "handbook"})
        with tracer.start_as_current_span("guardrails.input") as span:
            span.set_attributes({"llmops.guardrails.rails": ["pii", "size"], "llmops.guardrails.triggered": ["pii"]})
            for rail, action in (("pii", "redact"), ("size", "pass")):
                span.add_event(
                    "guardrail.decision",
                    {"llmops.guardrail.rail": rail, "llmops.guardrail.action": action, "llmops.guardrail.stage": "in",
                     "llmops.guardrail.policy": "default@1", "llmops.guardrail.latency_ms": 1.5},
                )  # fmt: skip
        with tracer.start_as_current_span("retrieve") as span:
            span.set_attributes({"llmops.retrieval.scores": [0.75, 0.5], "llmops.retrieval.chunk_ids": ["a", "b"]})
        with pytest.raises(KeyError), tracer.start_as_current_span("tool lookup"):
            raise KeyError("missing")
        with tracer.start_as_current_span("chat m", kind=SpanKind.CLIENT) as span:
            span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "llmops.ttft_ms": 80.0,
                                 "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3,
                                 "llmops.cost_usd": 0.001, "llmops.tokens_per_s": 50.0, "gen_ai.request.top_p": None,
                                 "gen_ai.response.finish_reasons": ("stop",)})  # fmt: skip
        root.set_attributes({"llmops.guardrails.grounding_score": 0.9, "llmops.citations": ["a"]})
        if odd:  # values orjson cannot write: the line is written with them cleaned, as the SDK cleans them
            root.set_attributes({"llmops.odd": cast(Any, Odd()), "llmops.mixed": cast(Any, [1, object()])})


_VARYING = {
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_ns",
    "end_ns",
    "duration_ms",
    "retrieval_ms",
    "created_at",
    "time_ns",
}


def _stable(value: Any) -> Any:
    """A journal line without what differs between two runs (ids, times, stack traces' line numbers)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VARYING and k != "exception.stacktrace"}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.mark.parametrize("odd", [False, True], ids=["plain", "odd-values"])
def test_the_store_and_metrics_processors_write_the_same_for_sdk_and_light_spans(odd: bool) -> None:
    written: dict[str, tuple[CapturedJournal, PlatformMetrics]] = {}
    for name, provider in (("sdk", TracerProvider()), ("light", LightTracerProvider())):
        journal, metrics = CapturedJournal(), PlatformMetrics()
        provider.add_span_processor(StoreSpanProcessor(journal))  # type: ignore[arg-type]
        provider.add_span_processor(MetricsSpanProcessor(metrics))
        _request(provider.get_tracer("llmops"), "req_same", odd=odd)
        written[name] = (journal, metrics)

    (sdk_line,), (light_line,) = written["sdk"][0].lines, written["light"][0].lines
    assert _stable(light_line) == _stable(sdk_line)
    spans = {row["name"]: row for row in light_line["spans"]}
    assert set(spans) == {"rag handbook", "guardrails.input", "retrieve", "tool lookup", "chat m"}
    assert spans["tool lookup"]["status"] == "error" and spans["tool lookup"]["events"][0]["name"] == "exception"
    assert spans["retrieve"]["attributes"]["llmops.retrieval.scores"] == [0.75, 0.5]
    (metrics_row,) = light_line["request_metrics"]
    assert metrics_row["top_score"] == 0.75 and metrics_row["rails"] == ["pii"] and metrics_row["pii_incidents"] == 1
    assert metrics_row["input_tokens"] == 12 and metrics_row["model"] == "m" and metrics_row["ttft_ms"] == 80.0
    root = spans["rag handbook"]
    assert all(row["trace_id"] == root["trace_id"] for row in light_line["spans"])
    assert all(row["parent_span_id"] == root["span_id"] for name, row in spans.items() if name != "rag handbook")
    if odd:
        assert root["attributes"]["llmops.odd"] == "odd" and root["attributes"]["llmops.mixed"] == [1, None]
    # Counters and histogram counts agree (bucket placement of durations differs from run to run).
    light_counts, sdk_counts = (_counts(written[name][1]) for name in ("light", "sdk"))
    assert light_counts == sdk_counts
    assert 'llmops_guardrail_triggers_total{action="redact",rail="pii",stage="in"} 1.0' in light_counts
    assert 'llmops_stage_seconds_count{stage="guardrails.input"} 1.0' in light_counts
    assert 'llmops_guardrail_seconds_sum{rail="pii"} 0.0015' in light_counts


def _counts(metrics: PlatformMetrics) -> list[str]:
    lines = metrics.render().decode().splitlines()
    return sorted(line for line in lines if ("_total{" in line or "_count{" in line or "guardrail_seconds_sum" in line))


def test_a_sampled_out_trace_is_held_and_kept_later_with_its_values_cleaned() -> None:
    journal, provider = CapturedJournal(), LightTracerProvider()
    processor = StoreSpanProcessor(journal, sample_rate=0.0)  # type: ignore[arg-type]
    provider.add_span_processor(processor)
    _request(provider.get_tracer("llmops"), "req_later", odd=True)

    (metrics_only,) = journal.lines
    assert set(metrics_only) == {"request_metrics"} and metrics_only["request_metrics"][0]["sampled"] is False
    assert processor.keep("req_later") and not processor.keep("req_later")
    kept = journal.lines[1]
    assert kept["traces"][0]["request_id"] == "req_later" and len(kept["spans"]) == 5
    (root,) = [row for row in kept["spans"] if row["parent_span_id"] is None]
    assert root["attributes"]["llmops.odd"] == "odd"
