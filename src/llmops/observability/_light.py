"""A light tracer implementing the OpenTelemetry tracing API, without the SDK's per-span machinery.

The SDK validates every attribute (and every element of a list) through ``BoundedAttributes``, takes a lock per
call, builds ``Event`` objects with their own bounded attributes, asks an id generator and a sampler for each span
and copies the span into a ``ReadableSpan`` when it ends: 35-70 µs of request-thread CPU per span on a small
machine, against about 2 µs for this tracer (``bench/tracing_overhead.py``). ``LightTracer`` keeps what the
platform's processors read, in plain objects:

- attributes in a plain dict, values stored as given (the SDK cleans each value: sequences to tuples, other
  objects to their ``str``). Where a value has to be written, the SDK's cleaning is applied then, and only when
  needed: the store processor cleans a trace whose line orjson cannot write (``clean_span``), ``to_readable``
  cleans for the exporters. Lists are kept as the caller's lists, so a caller must not change one after setting it;
- events as ``LightEvent`` named tuples, their attributes a copy of the caller's dict;
- time-ordered trace ids (as UUIDv7: the first 48 bits the time in milliseconds, the other 80 random) and random
  span ids, from one ``random.Random`` seeded from ``os.urandom`` (reseeded in forked children). The store indexes
  traces and spans by trace id: a random id lands on a random page of those indexes (a page read and written per
  row, in the WAL and again at its checkpoint), a time-ordered one on the last page. The random low bits keep the
  W3C ``random-trace-id`` flag true (it asks for the rightmost 7 bytes);
- every span sampled, except under a parent that is not (the SDK's default ``ParentBased(ALWAYS_ON)``);
- each local root span (no parent, or a remote one) has ``trace_spans``: the spans of its trace that ended in this
  process, in the order they ended. A child started under a light span of the same provider knows its trace's
  root while it runs (``trace_root``) and adds itself to the root's list when it ends, so a processor can handle
  a whole trace when its root ends, without collecting the spans itself (no lock, no lookup per span).

The read side of a finished ``LightSpan`` has the names of the SDK's ``ReadableSpan`` (``name``, ``attributes``,
``events``, ``parent``, ``start_time``, ``end_time``, ``status``, ``kind``, ``context``, ``resource``,
``instrumentation_scope``, ``links``), so span processors read either. Processors' ``on_end`` runs when the span
ends, on the thread that ends it; ``on_start`` is called only for processors that override it. Exporters that need
SDK ``ReadableSpan`` objects convert a finished span with ``to_readable`` (the OTLP exporter does so on its own
thread, see ``_export.py``).

A span is ended by its owner: ``end`` is idempotent but, unlike the SDK's, takes no lock, so two threads must not
race to end the same span.

>>> provider = LightTracerProvider()
>>> with provider.get_tracer("llmops").start_as_current_span("rag app") as span:
...     span.set_attribute("llmops.request_id", "req_1")
"""

from __future__ import annotations

import os
import random
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any, NamedTuple, TypeAlias, cast

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

__all__ = [
    "UNSET",
    "FinishedSpan",
    "LightEvent",
    "LightSpan",
    "LightTracer",
    "LightTracerProvider",
    "clean_attributes",
    "clean_span",
    "span_attributes",
    "to_readable",
]

# The SDK's default limits (SpanLimits): beyond them the oldest attribute or event is dropped.
_MAX_ATTRIBUTES = 128
_MAX_EVENTS = 128

_PLAIN = frozenset({str, int, float, bool, type(None)})
_tuple_new = tuple.__new__
#: The status of every span whose status was never set (one shared object: ``span.status is UNSET`` is cheap).
UNSET = Status(StatusCode.UNSET)
_SAMPLED_BIT = TraceFlags.SAMPLED
_RANDOM_BIT = TraceFlags.RANDOM_TRACE_ID
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_DEFAULT_STATE = TraceState()

# Trace ids must be unique in the store (a repeated one loses its trace), so they do not come from the ``random``
# module, which any code may seed with a constant.
_rng = random.Random(os.urandom(32))
_bits = _rng.getrandbits


def _reseed() -> None:
    _rng.seed(os.urandom(32))  # a forked child would otherwise repeat its parent's ids


os.register_at_fork(after_in_child=_reseed)


def _new_trace_id() -> int:
    return (time_ns() // 1_000_000) << 80 | _bits(80)  # never zero: the time is not


def _new_id(bits: int) -> int:
    value = _bits(bits)
    while not value:  # zero is the invalid id (one chance in 2**64)
        value = _bits(bits)
    return value


def _clean(value: object) -> types.AnyValue:
    """An attribute value as the SDK stores it: sequences as tuples, mappings as dicts, other objects as ``str``."""
    kind = type(value)
    if kind is tuple or kind is list:
        items = cast("tuple[Any, ...] | list[Any]", value)
        if _PLAIN.issuperset(map(type, items)):
            return items if kind is tuple else tuple(items)
        return tuple(_clean(v) for v in items)
    if isinstance(value, str | bytes | bool | int | float) or value is None:
        return value
    if isinstance(value, Sequence):
        return tuple(_clean(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items() if k}
    if kind.__str__ is not object.__str__ or kind.__repr__ is not object.__repr__:
        return str(value)
    return None


def clean_attributes(attributes: Mapping[str, Any]) -> dict[str, types.AnyValue]:
    """Attributes as the SDK would have stored them (non-string keys dropped, as the SDK drops them)."""
    return {k: v if type(v) in _PLAIN else _clean(v) for k, v in attributes.items() if k and isinstance(k, str)}


def clean_span(span: LightSpan) -> bool:
    """Clean a finished span's attributes and its events' in place, as the SDK would have when they were set;
    False when they were clean already."""
    attributes = clean_attributes(span.attributes)
    events = [
        _tuple_new(LightEvent, (e.name, e.timestamp, clean_attributes(e.attributes))) if e.attributes else e
        for e in span.events
    ]
    changed = attributes != span.attributes or any(
        a.attributes != b.attributes for a, b in zip(events, span.events, strict=True)
    )
    span.attributes, span.events = attributes, events
    return changed


class LightEvent(NamedTuple):
    """A span event: ``name``, ``timestamp`` (ns) and plain-dict ``attributes``."""

    name: str
    timestamp: int
    attributes: dict[str, types.AnyValue]


class LightSpan(trace.Span):
    """A recording span; see the module's documentation for what differs from the SDK's."""

    __slots__ = (
        "_on_end",
        "_tracer",
        "attributes",
        "context",
        "end_time",
        "events",
        "kind",
        "name",
        "parent",
        "start_time",
        "status",
        "trace_root",
        "trace_spans",
    )

    # Rarely changed: set on the instance only when they differ (``trace.Span`` gives every span a ``__dict__``).
    links: tuple[Link, ...] = ()
    _record_exception = True
    _set_status_on_exception = True

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        tracer: LightTracer,
        start_time: int,
        trace_root: LightSpan | None,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self._tracer = tracer
        self._on_end = tracer.provider.on_end
        self.start_time = start_time
        self.end_time: int | None = None
        self.attributes: dict[str, types.AnyValue] = {}
        self.events: list[LightEvent] = []
        self.status = UNSET
        #: On a running child: the local root of its trace, whose ``trace_spans`` it joins when it ends (it then lets
        #: go of the root, so that finished spans and the list do not reference each other and are freed without the
        #: garbage collector). None on a root, on an ended child, and on a span whose parent is not a light span of
        #: this provider (nor a child of one that still runs): processors collect such a span themselves.
        self.trace_root = trace_root
        #: On a local root: its trace's spans that ended in this process, in the order they ended (the root is not
        #: in it; a child that ends after the root is added too). None on other spans.
        self.trace_spans: list[LightSpan] | None = [] if parent is None or parent[2] else None

    def __repr__(self) -> str:
        return f'LightSpan(name="{self.name}", context={self.context})'

    @property
    def resource(self) -> Resource:
        return self._tracer.provider.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._tracer.scope

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self.end_time is not None:
            return  # as the SDK: attributes of an ended span do not change
        attributes = self.attributes
        attributes[key] = value
        if len(attributes) > _MAX_ATTRIBUTES:
            _drop_oldest(attributes)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self.end_time is not None:
            return
        own = self.attributes
        own.update(attributes)
        if len(own) > _MAX_ATTRIBUTES:
            _drop_oldest(own)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self.end_time is not None:
            return
        events = self.events
        if len(events) >= _MAX_EVENTS:
            del events[0]
        # Built as the tuple it is (NamedTuple's own constructor is a Python-level call).
        events.append(
            _tuple_new(
                LightEvent,
                (name, time_ns() if timestamp is None else timestamp, dict(attributes) if attributes else {}),
            )
        )

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self.end_time is None and context.is_valid:
            self.links = (*self.links, Link(context, clean_attributes(attributes) if attributes else None))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET is never set, and nothing changes once the span has ended.
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self.status = status
        elif status is not StatusCode.UNSET:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, types.AnyValue] = {
            EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins" else qualname,
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = time_ns() if end_time is None else end_time
        root = self.trace_root
        try:
            for on_end in self._on_end:
                on_end(self)
        finally:
            # A child joins its trace once the processors have seen it (they can tell whether the root still runs).
            if root is not None:
                self.trace_root = None
                spans = root.trace_spans
                if spans is not None:
                    spans.append(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.end_time is None:
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()


def _drop_oldest(attributes: dict[str, types.AnyValue]) -> None:
    while len(attributes) > _MAX_ATTRIBUTES:
        del attributes[next(iter(attributes))]


#: A finished span as span processors receive it: the SDK's, or a light one.
FinishedSpan: TypeAlias = ReadableSpan | LightSpan


def span_attributes(span: FinishedSpan) -> dict[str, Any]:
    """A span's attributes as a plain dict (primitives, or sequences of them, which orjson writes as they are).

    For a ``LightSpan`` this is the span's own dict, not a copy (a finished span's attributes do not change): do not
    modify it; its values are as they were set (see the module's documentation). For an SDK span, the public
    ``span.attributes`` is a read-only proxy over BoundedAttributes whose copy costs a Python-level call per key, so
    the plain dict underneath is copied directly when it is there.
    """
    if type(span) is LightSpan:
        return span.attributes
    bounded = getattr(span, "_attributes", None)
    raw = getattr(bounded, "_dict", None)
    if isinstance(raw, dict):
        return dict(raw)
    return dict(span.attributes or {})


class LightTracer(trace.Tracer):
    """Starts ``LightSpan``s; parents come from the given (or current) context, as with the SDK's tracer."""

    def __init__(self, provider: LightTracerProvider, scope: InstrumentationScope) -> None:
        self.provider = provider
        self.scope = scope

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        # The current span, as ``trace.get_current_span(context)`` finds it, without its ABC isinstance check
        # when it is one of ours (or none).
        current = (context_api.get_current() if context is None else context).get(_SPAN_KEY)
        parent: SpanContext | None
        if type(current) is LightSpan:
            parent = current.context
        elif current is None:
            parent = None
        else:
            parent = trace.get_current_span(context).get_span_context()
        trace_root: LightSpan | None = None
        # A SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid): unpacked
        # once rather than read through its properties.
        if parent is not None and parent[5]:
            trace_id, _, remote, flags, state, _ = parent
            if not flags & _SAMPLED_BIT:
                return trace.NonRecordingSpan(parent)  # the parent was not sampled: neither is its child
            if not remote and type(current) is LightSpan and current._tracer.provider is self.provider:
                # The parent's root, or the parent when it is the root (None when the parent is a child that ended).
                trace_root = current if current.trace_spans is not None else current.trace_root
            # SpanContext's own constructor re-checks the ids' ranges: these are in range and non-zero.
            span_context = _tuple_new(
                SpanContext,
                (
                    trace_id,
                    _bits(64) or _new_id(64),
                    False,
                    _SAMPLED_RANDOM if flags & _RANDOM_BIT else _SAMPLED,
                    state,
                    True,
                ),
            )
        else:
            parent = None
            span_context = _tuple_new(
                SpanContext,
                (_new_trace_id(), _bits(64) or _new_id(64), False, _SAMPLED_RANDOM, _DEFAULT_STATE, True),
            )
        span = LightSpan(
            name, span_context, parent, kind, self, time_ns() if start_time is None else start_time, trace_root
        )
        if not record_exception:
            span._record_exception = False
        if not set_status_on_exception:
            span._set_status_on_exception = False
        if links:
            span.links = tuple(link for link in links if link.context.is_valid)
        if attributes:
            span.set_attributes(attributes)
        for processor in self.provider.starters:
            processor.on_start(span, parent_context=context)  # type: ignore[arg-type]  # reads LightSpan alike
        return span

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class LightTracerProvider(trace.TracerProvider):
    """Holds the span processors; its tracers start ``LightSpan``s that call each processor's ``on_end``."""

    def __init__(self, resource: Resource | None = None) -> None:
        self.resource = resource if resource is not None else Resource.create({})
        self.processors: list[SpanProcessor] = []
        # Read by every span as it ends (bound methods, built once); updated in place so that spans already
        # started see a processor added later, as with the SDK.
        self.on_end: list[Callable[[Any], None]] = []
        self.starters: list[SpanProcessor] = []

    def add_span_processor(self, processor: SpanProcessor) -> None:
        self.processors.append(processor)
        self.on_end.append(processor.on_end)
        if type(processor).on_start is not SpanProcessor.on_start:
            self.starters.append(processor)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> LightTracer:
        scope = InstrumentationScope(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        return LightTracer(self, scope)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self.processors)

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()


def to_readable(span: LightSpan) -> ReadableSpan:
    """The SDK's ``ReadableSpan`` of a finished light span, its attributes cleaned as the SDK cleans them, for
    exporters (costly: not on the request path)."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=clean_attributes(span.attributes),
        events=[Event(e.name, clean_attributes(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
