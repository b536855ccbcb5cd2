"""OTLP/HTTP export: a real collector on loopback receives the platform's spans; a dead one costs requests nothing."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider

from llmops import Platform
from llmops.gateway import ChatRequest
from llmops.observability._export import otlp_span_processor, traces_url

from ..conftest import LOCAL_MODEL
from ..helpers import free_port


class Collector:
    """A minimal OTLP/HTTP collector: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.received = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.paths.append(self.path)
                collector.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    collector.resources.append(resource)
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            collector.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "attributes": {a.key: _value(a.value) for a in span.attributes},
                                }
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                collector.received.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    try:
        yield running
    finally:
        running.close()


def test_the_collector_receives_a_requests_spans_with_genai_attributes(
    sqlite_platform: Platform, collector: Collector
) -> None:
    processor = otlp_span_processor(collector.url, {"authorization": "Bearer token-1"})
    sqlite_platform.tracing.add_processor(processor)

    async def call() -> str:
        request = ChatRequest(model=LOCAL_MODEL, messages=[{"role": "user", "content": "PTO?"}], max_tokens=8)
        await sqlite_platform.gateway.complete(request, request_id="req_otlp1")
        await sqlite_platform.gateway.aclose()
        return "done"

    assert asyncio.run(call()) == "done"
    assert processor.force_flush(10_000)
    assert collector.received.wait(10)

    assert collector.paths == ["/v1/traces"]
    assert collector.headers[0]["authorization"] == "Bearer token-1"
    assert collector.headers[0]["content-type"] == "application/x-protobuf"
    assert collector.resources[0]["service.name"] == "llmops"
    (chat,) = [s for s in collector.spans if s["name"] == f"chat {LOCAL_MODEL}"]
    attributes = chat["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == LOCAL_MODEL
    assert attributes["gen_ai.request.max_tokens"] == 8
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["llmops.request_id"] == "req_otlp1"
    # The same trace is in the store too: export is beside the store, not instead of it.
    stored = sqlite_platform.traces.get("req_otlp1")
    assert stored["trace_id"] == chat["trace_id"]


def test_the_endpoint_may_be_the_collectors_base_or_its_traces_url() -> None:
    assert traces_url("http://otel:4318") == "http://otel:4318/v1/traces"
    assert traces_url("http://otel:4318/") == "http://otel:4318/v1/traces"
    assert traces_url("https://api.example.com/otlp/v1/traces") == "https://api.example.com/otlp/v1/traces"


@pytest.fixture(params=["refused", "silent"])
def dead_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """A port nobody listens on (connections refused) or a listener that never answers (connections hang)."""
    if request.param == "refused":
        yield f"http://127.0.0.1:{free_port()}"
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepted by the kernel's backlog, never read or answered
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def test_a_dead_collector_does_not_slow_span_ending(dead_endpoint: str) -> None:
    provider = TracerProvider()
    processor = otlp_span_processor(dead_endpoint, {}, timeout_s=1.0, max_queue_size=256, max_export_batch_size=64)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(200):  # warm up; the first batches reach the exporter, which starts failing
        with tracer.start_as_current_span("warm"):
            pass
    time.sleep(0.2)

    started = time.perf_counter()
    for i in range(1000):
        span = tracer.start_span("chat m")
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "i": i})
        span.end()
    elapsed = time.perf_counter() - started

    assert elapsed < 0.5, f"1000 spans took {elapsed:.3f} s to end against a dead collector"
    assert processor.dropped > 0  # the queue (256) filled: spans were dropped, not waited for
    # Shutting down gives up on the dead collector after its timeout instead of holding up the platform's close.
    started = time.perf_counter()
    provider.shutdown()
    assert time.perf_counter() - started < 3.0
