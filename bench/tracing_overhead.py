"""Tracing overhead: what a span costs the request path, and how many spans per second the write path sustains.

(a) Cost per span. One request shape, the one a RAG request has (a root span and six children: input rails,
retrieve, pack, render, the gateway's chat span, output rails, with the GenAI and llmops attributes and rail events
that ``rag/_pipeline.py``, the gateway and the rails set: each ``guardrail.decision`` event carries what
``guardrails._engine.span_payload`` writes, the output rails their grounding claims), run N times through
  - ``off``: OpenTelemetry's ``NoOpTracer`` (tracing off: the same calls, nothing recorded);
  - ``sdk``: the OpenTelemetry SDK tracer with no processor (what recording costs with the SDK; reference);
  - ``light``: the platform's ``LightTracer`` (the OpenTelemetry API without the SDK) with no processor;
  - ``light + store processor``: the platform's ``Tracing`` alone (``StoreSpanProcessor`` journalling each
    finished trace, with its request metrics row, to a real ``Journal`` on a SQLite store);
  - ``platform``: that plus ``MetricsSpanProcessor`` and the trigger rules' ``RequestEventsProcessor``, as
    ``Platform`` wires them, the journal drained by a child process as under ``llmops up`` (and, second, by a
    thread, as in an embedded platform).
Overhead per span = (time with tracing − time with the no-op tracer) / spans, median of the repeats; the drainer
process is running (and has drained a first line) before anything is timed. Reference: the Langfuse Python SDK
measured 106–197 µs per traced call (not run here).

(b) Sustained write path. For ``--seconds`` the request shape runs back to back (the request path producing traces as
fast as one thread can) while the journal drains, in process mode and thread mode; then the journal is flushed and
the ``spans`` rows in the store are counted. Reported: spans/s inserted (rows / (production + final flush time)),
the journal's lag when production stopped (spans appended but not yet in the store, and the seconds the final flush
took), and the write path alone: pre-rendered journal lines of the same traces appended with ``Journal.append``
(no span work), drained the same way.

    .venv/bin/python bench/tracing_overhead.py [--requests 2000] [--repeats 7] [--seconds 10]

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai

import llmops._platform  # noqa: F401 - registers every package's tables, as the platform does
from llmops.loop import RequestEventsProcessor
from llmops.observability import MetricsSpanProcessor, PlatformMetrics, StoreSpanProcessor, Tracing
from llmops.observability._light import LightTracerProvider
from llmops.observability._tables import SpanRow
from llmops.store import Journal, Store

SPANS_PER_REQUEST = 7
LANGFUSE_US = (106, 197)
GOAL_US = 20.0
Drain = Literal["thread", "process"]

_ids = itertools.count()
_RUN = secrets.token_hex(3)
_CHUNKS = [f"{secrets.token_hex(20)}" for _ in range(4)]
_RAILS = ["size", "injection", "indirect_injection"]
_OUT_RAILS = ["pii_leakage", "toxicity", "system_prompt_leakage", "grounding"]
# The output rails' grounding claims, as ``span_payload`` writes them (a JSON string).
_CLAIMS = json.dumps([{"start": 0, "end": 57, "supported": True, "score": 0.83, "reason": "", "missing_facts": 0}])


def _decision(rail: str, stage: str) -> dict[str, Any]:
    """A ``guardrail.decision`` event's attributes, as ``guardrails._engine.span_payload`` writes them."""
    return {
        "llmops.guardrail.rail": rail,
        "llmops.guardrail.stage": stage,
        "llmops.guardrail.policy": "default@1",
        "llmops.guardrail.action": "pass",
        "llmops.guardrail.score": 0.0,
        "llmops.guardrail.latency_ms": 0.42,
        "llmops.guardrail.kinds": [],
        "llmops.guardrail.reason": "",
    }


def traced_request(tracer: trace.Tracer) -> None:
    """One RAG request's spans, with the attributes and events the platform sets on them."""
    request_id = f"req_{_RUN}{next(_ids):012d}"
    root = tracer.start_span("rag handbook-rag", kind=trace.SpanKind.SERVER)
    root.set_attributes({"llmops.request_id": request_id, "llmops.rag.app": "handbook-rag"})
    ctx = trace.set_span_in_context(root)

    span = tracer.start_span("guardrails.input", context=ctx)
    span.set_attributes({"llmops.guardrails.policy": "default@1", "llmops.guardrails.allowed": True,
                         "llmops.guardrails.rails": _RAILS, "llmops.guardrails.triggered": []})  # fmt: skip
    for rail in _RAILS:
        span.add_event("guardrail.decision", _decision(rail, "input"))
    span.end()
    root.set_attribute("llmops.rag.question", "How many PTO days do new employees get in their first year?")

    span = tracer.start_span("retrieve", context=ctx)
    span.set_attributes(
        {
            genai.GEN_AI_OPERATION_NAME: "retrieval",
            genai.GEN_AI_DATA_SOURCE_ID: "knowledge",
            "llmops.retrieval.top_k": 4,
            "llmops.retrieval.min_similarity": 0.3,
            "llmops.retrieval.mode": "dense",
            "llmops.retrieval.hits": 4,
            "llmops.retrieval.chunk_ids": _CHUNKS,
            "llmops.retrieval.scores": [0.8123, 0.7311, 0.6542, 0.5121],
            "llmops.index.snapshot": 3,
        }
    )
    span.end()

    span = tracer.start_span("pack_context", context=ctx)
    span.set_attributes({"llmops.context.chunks": 4, "llmops.context.dropped": 0})
    span.end()

    span = tracer.start_span("render_prompt", context=ctx)
    span.set_attributes({genai.GEN_AI_PROMPT_NAME: "rag-answer", "llmops.prompt.version": 2,
                         "llmops.prompt.label": "production", "llmops.context.chunks": 4})  # fmt: skip
    span.end()

    span = tracer.start_span("chat smollm2-135m-instruct", context=ctx, kind=trace.SpanKind.CLIENT)
    span.set_attributes({genai.GEN_AI_OPERATION_NAME: "chat", genai.GEN_AI_REQUEST_MODEL: "smollm2-135m-instruct",
                         genai.GEN_AI_REQUEST_TEMPERATURE: 0.0, genai.GEN_AI_REQUEST_TOP_P: 1.0,
                         genai.GEN_AI_REQUEST_STREAM: True, genai.GEN_AI_REQUEST_MAX_TOKENS: 160})  # fmt: skip
    span.set_attributes(
        {
            genai.GEN_AI_PROVIDER_NAME: "local",
            genai.GEN_AI_RESPONSE_MODEL: "SmolLM2-135M-Instruct.Q4_1",
            genai.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
            genai.GEN_AI_USAGE_INPUT_TOKENS: 412,
            genai.GEN_AI_USAGE_OUTPUT_TOKENS: 37,
            genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.085,
            "llmops.upstream.model": "SmolLM2-135M-Instruct.Q4_1",
            "llmops.ttft_ms": 85.0,
            "llmops.cost_usd": 0.0,
            "llmops.tokens_per_s": 95.2,
            "llmops.caller.app": "handbook-rag",
        }
    )
    span.set_attribute("llmops.request_id", request_id)
    span.end()

    span = tracer.start_span("guardrails.output", context=ctx)
    span.set_attributes({"llmops.guardrails.policy": "default@1", "llmops.guardrails.allowed": True,
                         "llmops.guardrails.rails": _OUT_RAILS, "llmops.guardrails.triggered": [],
                         "llmops.guardrails.grounding_score": 0.83, "llmops.guardrails.grounding_claims": _CLAIMS,
                         "llmops.guardrails.stream_ms": 3.2})  # fmt: skip
    for rail in _OUT_RAILS:
        span.add_event("guardrail.decision", _decision(rail, "output"))
    span.end()

    root.set_attributes(
        {
            "llmops.rag.answer": "New employees get 15 days of PTO in their first year [1].",
            "llmops.guardrails.grounding_score": 0.83,
            "llmops.guardrails.unsupported_claims": 0,
            "llmops.prompt.name": "rag-answer",
            "llmops.prompt.version": 2,
            "llmops.index.snapshot": 3,
            genai.GEN_AI_USAGE_INPUT_TOKENS: 412,
            genai.GEN_AI_USAGE_OUTPUT_TOKENS: 37,
            "llmops.cost_usd": 0.0,
            "llmops.citations": _CHUNKS[:1],
        }
    )
    root.end()


class TracedStore:
    """The platform's tracing over a fresh SQLite store and journal, as ``Platform`` wires it (``metrics=False``
    leaves out the metrics and request-events processors, to tell the store processor's cost apart)."""

    def __init__(self, root: Path, drain: Drain, *, metrics: bool = True) -> None:
        root.mkdir(parents=True)
        self.store = Store(f"sqlite:///{root / 'store.db'}")
        self.store.migrate()
        self.journal = Journal(self.store, root / "journal", drain=drain)
        self.tracing = Tracing(self.journal)
        self.events: list[tuple[str, dict[str, Any]]] = []  # what trigger rules would be told (none: all succeed)
        if metrics:
            self.tracing.add_processor(MetricsSpanProcessor(PlatformMetrics()))
            self.tracing.add_processor(
                RequestEventsProcessor(lambda kind, details: self.events.append((kind, details)))
            )
        self._wait_for_drain()

    def _wait_for_drain(self, timeout: float = 120.0) -> None:
        """A drainer process needs seconds to start (it imports the platform): measure once it drains."""
        traced_request(self.tracing.tracer)
        deadline = time.monotonic() + timeout
        while self.spans_stored() == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the journal was not drained")
            time.sleep(0.05)

    def spans_stored(self) -> int:
        with self.store.session() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(SpanRow)) or 0

    def close(self) -> None:
        self.tracing.shutdown()
        self.journal.close()
        self.store.close()


def time_requests(tracer: trace.Tracer, requests: int) -> tuple[float, float]:
    """Nanoseconds per span for ``requests`` request shapes: wall-clock time, and the CPU time of the request
    thread (which a busy machine does not inflate). The collector is paused, as a request would not usually pay
    for a full collection."""
    gc.collect()
    gc.disable()
    try:
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(requests):
            traced_request(tracer)
        elapsed, cpu = time.perf_counter_ns() - started, time.thread_time_ns() - cpu_started
    finally:
        gc.enable()
    spans = requests * SPANS_PER_REQUEST
    return elapsed / spans, cpu / spans


def per_span(tmp: Path, requests: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median ns per span (wall, CPU) for each configuration; configurations interleave within a repeat, so drift in the
    machine's load (two shared cores) falls on all of them alike."""
    off = trace.NoOpTracer()
    sdk = TracerProvider().get_tracer("bench")
    light = LightTracerProvider().get_tracer("bench")
    stores = {
        "light + store processor": TracedStore(tmp / "per-span-store", "process", metrics=False),
        "platform (drain process)": TracedStore(tmp / "per-span-process", "process"),
        "platform (drain thread)": TracedStore(tmp / "per-span-thread", "thread"),
    }
    tracers: dict[str, trace.Tracer] = {"off": off, "sdk": sdk, "light": light}
    tracers.update({name: traced.tracing.tracer for name, traced in stores.items()})
    try:
        for tracer in tracers.values():  # warm up: imports, caches, the store's first transactions
            time_requests(tracer, requests)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in tracers}
        for _ in range(repeats):
            for name, tracer in tracers.items():
                samples[name].append(time_requests(tracer, requests))
                for traced in stores.values():
                    traced.journal.flush()  # each run starts with an empty journal
        return {
            name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in samples.items()
        }
    finally:
        for traced in stores.values():
            traced.close()


def sustained(tmp: Path, drain: Drain, seconds: float, *, raw: bool) -> dict[str, float]:
    """Traces produced back to back for ``seconds`` while the journal drains; spans per second that reached the
    store. ``raw`` appends pre-rendered journal lines instead of producing spans (the write path alone)."""
    platform = TracedStore(tmp / f"sustained-{drain}-{'raw' if raw else 'spans'}", drain)
    try:
        template = _rendered_trace()
        baseline = platform.spans_stored()  # the line that showed the drainer was up
        produced = 0
        started = time.perf_counter()
        stop_at = started + seconds
        if raw:
            append, now = platform.journal.append, datetime.now(UTC)
            while time.perf_counter() < stop_at:
                for _ in range(100):
                    append(_renamed(template, now))
                produced += 100 * SPANS_PER_REQUEST
        else:
            tracer = platform.tracing.tracer
            while time.perf_counter() < stop_at:
                for _ in range(100):
                    traced_request(tracer)
                produced += 100 * SPANS_PER_REQUEST
        stopped = time.perf_counter()
        in_store_at_stop = platform.spans_stored() - baseline
        platform.journal.flush()
        flushed = time.perf_counter()
        stored = platform.spans_stored() - baseline
    finally:
        platform.close()
    return {
        "produced_spans_per_s": produced / (stopped - started),
        "spans_per_s": stored / (flushed - started),
        "stored": stored,
        "produced": produced,
        "lag_spans": produced - in_store_at_stop,
        "lag_s": flushed - stopped,
    }


def _rendered_trace() -> dict[str, list[dict[str, Any]]]:
    """A journal line of one real trace, exactly as StoreSpanProcessor writes it."""
    captured: list[dict[str, list[dict[str, Any]]]] = []

    class Capture:
        def append(self, rows: dict[str, list[dict[str, Any]]], *, durable: bool = True) -> None:
            captured.append(rows)

    provider = LightTracerProvider()
    provider.add_span_processor(StoreSpanProcessor(Capture()))  # type: ignore[arg-type]
    traced_request(provider.get_tracer("bench"))
    return captured[0]


def _renamed(line: dict[str, list[dict[str, Any]]], now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The line with new request and trace ids (rows already in the store would be skipped, not counted)."""
    n = next(_ids)
    ids = {"request_id": f"req_raw{_RUN}{n:012d}", "trace_id": f"{n:032x}"}
    renamed = {}
    for table, rows in line.items():
        renamed[table] = [
            {
                **row,
                **{k: v for k, v in ids.items() if k in row},
                **({"created_at": now} if "created_at" in row else {}),
            }
            for row in rows
        ]
    return renamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="request shapes per timed run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each sustained run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        print(f"(a) per-span cost: {args.requests} requests x {SPANS_PER_REQUEST} spans, median of {args.repeats}",
              file=sys.stderr)  # fmt: skip
        costs = per_span(tmp, args.requests, args.repeats)
        runs = {}
        for drain in ("process", "thread"):
            for raw in (False, True):
                print(f"(b) sustained: drain={drain} {'journal lines' if raw else 'spans'}", file=sys.stderr)
                runs[(drain, raw)] = sustained(tmp, drain, args.seconds, raw=raw)

    off, off_cpu = costs["off"]
    print(f"{'configuration':<28}{'µs/span':>10}{'overhead µs/span':>18}{'CPU µs/span':>13}{'CPU overhead':>14}")
    for name, (ns, cpu) in costs.items():
        print(
            f"{name:<28}{ns / 1000:>10.2f}{(ns - off) / 1000:>18.2f}{cpu / 1000:>13.2f}{(cpu - off_cpu) / 1000:>14.2f}"
        )

    def overhead(name: str, base: str = "off", cpu: bool = False) -> float:
        column = 1 if cpu else 0
        return round((costs[name][column] - costs[base][column]) / 1000, 2)

    overhead_us = overhead("platform (drain process)")
    print(f"goal ≤ {GOAL_US:.0f} µs per span; Langfuse Python SDK (reference, not run): "
          f"{LANGFUSE_US[0]}–{LANGFUSE_US[1]} µs per traced call")  # fmt: skip
    print()
    print(f"{'sustained, ' + str(args.seconds) + ' s':<30}{'produced/s':>12}{'stored/s':>12}{'lag spans':>11}"
          f"{'flush s':>9}{'stored':>10}")  # fmt: skip
    for (drain, raw), r in runs.items():
        name = f"drain {drain}, {'journal lines' if raw else 'spans'}"
        print(f"{name:<30}{r['produced_spans_per_s']:>12.0f}{r['spans_per_s']:>12.0f}{r['lag_spans']:>11.0f}"
              f"{r['lag_s']:>9.2f}{r['stored']:>10.0f}")  # fmt: skip
        assert r["stored"] == r["produced"], f"{name}: {r['produced']} spans produced, {r['stored']} stored"
    main_run = runs[("process", False)]
    figures = {
        "spans_per_request": SPANS_PER_REQUEST,
        "per_span_overhead_us": overhead_us,
        "per_span_overhead_cpu_us": overhead("platform (drain process)", cpu=True),
        "per_span_overhead_us_drain_thread": overhead("platform (drain thread)"),
        "per_span_sdk_only_us": overhead("sdk"),
        "per_span_sdk_only_cpu_us": overhead("sdk", cpu=True),
        "per_span_light_only_us": overhead("light"),
        "per_span_light_only_cpu_us": overhead("light", cpu=True),
        "per_span_store_processor_us": overhead("light + store processor", "light"),
        "per_span_store_processor_cpu_us": overhead("light + store processor", "light", cpu=True),
        "per_span_processors_cpu_us": overhead("platform (drain process)", "light", cpu=True),
        "per_span_noop_us": round(off / 1000, 3),
        "goal_us": GOAL_US,
        "langfuse_reference_us": list(LANGFUSE_US),
        "sustained_spans_per_s": round(main_run["spans_per_s"]),
        "sustained_spans_per_s_drain_thread": round(runs[("thread", False)]["spans_per_s"]),
        "write_path_spans_per_s": round(runs[("process", True)]["spans_per_s"]),
        "write_path_spans_per_s_drain_thread": round(runs[("thread", True)]["spans_per_s"]),
        "journal_lag_spans": round(main_run["lag_spans"]),
        "journal_lag_s": round(main_run["lag_s"], 3),
        "write_path_journal_lag_s": round(runs[("process", True)]["lag_s"], 3),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
