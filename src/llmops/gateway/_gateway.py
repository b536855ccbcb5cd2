"""The gateway: one entry point to every model, with routing, fallback, retries, caching, limits and accounting.

A call goes: identify the caller → choose the alias (a router may decide) → reserve its rate and budget → answer from
the cache if it can → otherwise try the alias and then its fallbacks, each with retries on retryable errors and
behind its circuit breaker → price the usage with the current price book → settle the reservation → record the call
in the ledger and on its span (OpenTelemetry GenAI attributes plus llmops.* for route, cache, retries and cost).

Streams fail over only while nothing has been sent: once text has gone out, a failure ends the stream with an error
(the server turns it into an explicit error event), never with a clean end of a truncated answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai

from llmops._settings import GatewaySettings, ModelConfig, RouterConfig
from llmops._spans import mark_error
from llmops.gateway._breaker import CircuitBreaker
from llmops.gateway._cache import (
    CachedAnswer,
    Embed,
    ExactCache,
    InProcessScopeIndex,
    InProcessStore,
    RedisScopeIndex,
    RedisStore,
    SemanticCache,
    exact_key,
)
from llmops.gateway._deadline import AttemptDeadlines
from llmops.gateway._limits import Caller, InProcessCounters, LimitEnforcer, RedisCounters, Reservation
from llmops.gateway._prices import PriceBook
from llmops.gateway._routing import Route, Router
from llmops.gateway._types import (
    ChatRequest,
    ChatResult,
    Finish,
    Provider,
    ProviderError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)

__all__ = ["EmbeddingProvider", "EmbeddingResult", "Gateway", "UnknownModelError"]

GatewayEvent = TextDelta | ToolCallDelta | ChatResult


class UnknownModelError(LookupError):
    """The request named a model the gateway does not serve."""


class Journal(Protocol):
    def append(self, rows_by_table: dict[str, list[dict[str, Any]]], *, durable: bool = True) -> None: ...


class EmbeddingProvider(Protocol):
    name: str

    async def embed(self, model: str, texts: list[str]) -> tuple[list[list[float]], int]:
        """(one vector per text, input tokens)."""
        ...


@dataclass
class EmbeddingResult:
    vectors: list[list[float]]
    input_tokens: int
    cost_usd: float
    model: str


@dataclass
class _Attempts:
    """What happened on the way to an answer, for the span and the ledger."""

    count: int = 0  # requests sent upstream
    tried: int = 0  # aliases tried
    failed: list[str] = field(default_factory=list)  # aliases that failed or were skipped, in order
    errors: list[str] = field(default_factory=list)


class _Call:
    """One call's accounting, around its answer (``async with``): the span, the reservation against limits (made on
    entry), what the attempts did; on exit it settles and records the call, or releases and records the failure.
    The streamed and the whole-answer paths share it."""

    __slots__ = ("attempts", "cache_scope", "caller", "gateway", "request", "request_id", "reservation", "result",
                 "route", "span", "started")  # fmt: skip

    def __init__(
        self,
        gateway: Gateway,
        request: ChatRequest,
        context: Context | None,
        request_id: str | None,
        caller: Caller | None,
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.request_id = request_id
        self.route = route = gateway._route(request)
        self.caller = caller = caller or Caller(user=request.user)
        self.cache_scope = caller.team or caller.user or caller.key_name or "*"
        self.span = span = gateway._tracer.start_span(f"chat {request.model}", context=context,
                                                      kind=trace.SpanKind.CLIENT)  # fmt: skip
        span.set_attributes(
            {
                genai.GEN_AI_OPERATION_NAME: "chat",
                genai.GEN_AI_REQUEST_MODEL: request.model,
                genai.GEN_AI_REQUEST_TEMPERATURE: request.temperature,
                genai.GEN_AI_REQUEST_TOP_P: request.top_p,
                genai.GEN_AI_REQUEST_STREAM: request.stream,
            }
        )
        if request.max_tokens is not None:
            span.set_attribute(genai.GEN_AI_REQUEST_MAX_TOKENS, request.max_tokens)
        if request_id is not None:
            span.set_attribute("llmops.request_id", request_id)
        if route.policy != "alias":
            span.set_attributes({"llmops.route.policy": route.policy, "llmops.route.model": route.alias,
                                 "llmops.route.reason": route.reason})  # fmt: skip
        self.started = time.perf_counter()
        self.attempts = _Attempts()
        self.reservation: Reservation | None = None
        self.result: ChatResult | None = None

    async def __aenter__(self) -> _Call:
        gateway = self.gateway
        try:
            self.reservation = await gateway.limits.admit(
                self.caller, **gateway._estimate(self.route.alias, self.request)
            )
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        gateway, span, result = self.gateway, self.span, self.result
        try:
            if exc is None and result is not None and self.reservation is not None:
                try:
                    alerts = await gateway.limits.settle(
                        self.reservation, tokens=result.usage.total_tokens, cost=result.cost_usd
                    )
                except BaseException as failure:
                    self._failed(failure)
                    raise
                gateway._record(span, self.request, result, self.route, self.attempts, self.caller, self.request_id,
                                alerts)  # fmt: skip
                return
            if self.reservation is not None and result is None:
                await gateway.limits.release(self.reservation)
            if isinstance(exc, GeneratorExit):
                # The caller stopped reading (a guardrail ended the answer, or the client left): not an upstream error.
                span.set_attribute("llmops.cancelled", True)
            elif exc is not None:
                self._failed(exc)
        finally:
            span.end()

    def _failed(self, exc: BaseException) -> None:
        mark_error(self.span, exc)
        self.gateway._record_failure(self.request, self.route, self.attempts, self.caller, self.request_id,
                                     self.started, exc)  # fmt: skip


class Gateway:
    """Serves the configured models and routers.

    >>> result = await gateway.complete(ChatRequest(model="smollm2-135m-instruct", messages=[...]))  # doctest: +SKIP
    >>> result.usage.output_tokens, result.cost_usd, result.served_by                                # doctest: +SKIP
    """

    def __init__(
        self,
        models: Sequence[ModelConfig],
        providers: Mapping[str, Provider],
        tracer: trace.Tracer,
        *,
        settings: GatewaySettings | None = None,
        routers: Sequence[RouterConfig] = (),
        embedders: Mapping[str, EmbeddingProvider] | None = None,
        semantic_embed: Embed | None = None,
        journal: Journal | None = None,
        price_book: PriceBook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self._chat = {m.name: m for m in models if m.kind == "chat"}
        self._embedding = {m.name: m for m in models if m.kind == "embedding"}
        missing = self._chat.keys() - providers.keys()
        if missing:
            raise ValueError(f"no provider for the models {sorted(missing)}")
        for config in self._chat.values():
            unknown = [f for f in config.fallbacks if f not in self._chat]
            if unknown:
                raise ValueError(f"model {config.name!r} falls back to unknown models {unknown}")
        self._providers = dict(providers)
        self._embedders = dict(embedders or {})
        self._tracer = tracer
        self._journal = journal
        self._rng = rng or random.Random()
        self._id_prefix = secrets.token_hex(6)  # call ids: a random per-process prefix and a counter
        self._calls = 0
        self.prices = price_book or PriceBook.from_models(models)
        self.routers = {
            r.name: Router(
                r, self._chat, lambda a: self.prices.price(a).input_per_mtok + self.prices.price(a).output_per_mtok
            )
            for r in routers
        }
        s = self.settings
        self._breakers = {name: CircuitBreaker(s.breaker_failures, s.breaker_cooldown_s) for name in self._chat}
        self._deadlines = AttemptDeadlines()
        store = RedisStore(s.redis_url) if s.redis_url else InProcessStore(s.cache_max_entries)
        self._exact = ExactCache(store, s.cache_ttl_s) if s.cache else None
        self._semantic = None
        if s.semantic_cache and semantic_embed is not None:
            index = RedisScopeIndex(s.redis_url) if s.redis_url else InProcessScopeIndex()
            self._semantic = SemanticCache(
                semantic_embed, store, index, threshold=s.semantic_cache_threshold, ttl=s.cache_ttl_s
            )
        self.limits = LimitEnforcer(s.limits, RedisCounters(s.redis_url) if s.redis_url else InProcessCounters())

    # ---- the catalogue --------------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Chat model names clients can use: aliases, then routers."""
        return [*self._chat, *self.routers]

    def embedding_model_names(self) -> list[str]:
        return list(self._embedding)

    def model(self, name: str) -> ModelConfig:
        """The alias ``name`` (a router resolves to its first candidate, for context-window questions)."""
        if name in self.routers:
            return self._chat[self.routers[name].candidates[0]]
        config = self._chat.get(name)
        if config is None:
            served = ", ".join(self.model_names()) or "none"
            raise UnknownModelError(f"unknown model {name!r}; served models: {served}")
        return config

    def provider(self, name: str) -> Provider:
        return self._providers[self.model(name).name]

    def count_tokens(self, model: str, text: str) -> int:
        config = self.model(model)
        return self._providers[config.name].count_tokens(config.model, text)

    def breaker(self, alias: str) -> CircuitBreaker:
        return self._breakers[alias]

    def adhoc_alias(self, base_url: str, model: str) -> str:
        """Serve ``model`` at a client-supplied ``base_url`` (the caller checked it against the allowlist).

        The upstream is called without credentials: keys come from settings, never from requests.
        """
        from llmops.gateway._upstream import OpenAICompatibleProvider, Timeouts

        alias = f"adhoc:{base_url.rstrip('/')}:{model}"
        if alias not in self._chat:
            s = self.settings
            self._chat[alias] = ModelConfig(name=alias, provider="openai-compatible", model=model, base_url=base_url)
            self._providers[alias] = OpenAICompatibleProvider(
                base_url, timeouts=Timeouts(s.connect_timeout_s, s.first_token_timeout_s, s.total_timeout_s)
            )
            self._breakers[alias] = CircuitBreaker(s.breaker_failures, s.breaker_cooldown_s)
        return alias

    # ---- chat -----------------------------------------------------------------------------------------------

    async def complete(
        self,
        request: ChatRequest,
        *,
        context: Context | None = None,
        request_id: str | None = None,
        caller: Caller | None = None,
    ) -> ChatResult:
        """Generate the whole answer.

        A request that streams (``request.stream``, the default) is streamed internally, so time to first token is
        measured too. One that does not is asked of each upstream whose provider can answer in one response
        (``complete``) without the stream's per-event machinery: the server's non-streamed chat completions."""
        if request.stream:
            result: ChatResult | None = None
            async for event in self.stream(request, context=context, request_id=request_id, caller=caller):
                if isinstance(event, ChatResult):
                    result = event
            assert result is not None  # stream() ends with a result or raises
            return result
        async with _Call(self, request, context, request_id, caller) as call:
            call.result = await self._answer_whole(call)
        return call.result

    async def stream(
        self,
        request: ChatRequest,
        *,
        context: Context | None = None,
        request_id: str | None = None,
        caller: Caller | None = None,
    ) -> AsyncIterator[GatewayEvent]:
        """Yields text and tool-call deltas, then one `ChatResult`; raises `ProviderError`, `UnknownModelError` or
        `LimitExceededError`. ``context`` is the trace context to record the span under; ``request_id`` names the
        request when this call is the whole request (its span is then the trace's root)."""
        async with _Call(self, request, context, request_id, caller) as call:
            async for event in self._answer(call):
                if isinstance(event, ChatResult):
                    call.result = event
                else:
                    yield event
        assert call.result is not None
        yield call.result  # after the span ended: when it is the root, the trace is journalled before the caller has it

    def _route(self, request: ChatRequest) -> Route:
        router = self.routers.get(request.model)
        if router is not None:
            return router.choose(request)
        self.model(request.model)  # raises UnknownModelError
        return Route(request.model, "alias", "requested")

    def _estimate(self, alias: str, request: ChatRequest) -> dict[str, Any]:
        """Worst-case tokens and cost of a call, reserved against limits before it is made."""
        config = self._chat[alias]
        text = "\n".join(str(m.get("content") or "") for m in request.messages)
        input_tokens = max(1, len(text) // 3)  # generous: no tokenizer work on the hot path
        output_tokens = request.max_tokens or int(config.params.get("max_tokens", 1024))
        price = self.prices.price(alias)
        cost = (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1_000_000
        return {"tokens": input_tokens + output_tokens, "max_cost": cost}

    async def _answer(self, call: _Call) -> AsyncIterator[GatewayEvent]:
        cached = self._from_cache(call)
        if cached is not None:
            if cached.text:
                yield TextDelta(cached.text)
            yield cached
            return
        for alias in self._chain(call):
            answered = False
            # Consume the attempt to its end (no early return): an async generator left half-way is finalised
            # later through the event loop's self-pipe, a system call per request.
            async for event in self._try_alias(alias, call):
                yield event
                if isinstance(event, ChatResult):
                    self._store_in_cache(call, alias, event)
                    answered = True
            if answered:
                return
            call.attempts.failed.append(alias)
        raise self._every_upstream_failed(call)

    async def _answer_whole(self, call: _Call) -> ChatResult:
        """`_answer` for a request that does not stream, as one coroutine: no per-event generators on the way."""
        cached = self._from_cache(call)
        if cached is not None:
            return cached
        for alias in self._chain(call):
            whole = getattr(self._providers[alias], "complete", None)
            result: ChatResult | None = None
            if whole is not None:
                result = await self._try_alias_whole(alias, whole, call)
            else:  # a provider that only streams (the local model, plugins)
                async for event in self._try_alias(alias, call):
                    if isinstance(event, ChatResult):
                        result = event
            if result is not None:
                self._store_in_cache(call, alias, result)
                return result
            call.attempts.failed.append(alias)
        raise self._every_upstream_failed(call)

    def _chain(self, call: _Call) -> Iterator[str]:
        """The routed alias, then its fallbacks, skipping those whose circuit is open."""
        for alias in (call.route.alias, *self._chat[call.route.alias].fallbacks):
            if not self._breakers[alias].allow():
                call.attempts.failed.append(alias)
                call.attempts.errors.append(f"{alias}: circuit open")
                continue
            call.attempts.tried += 1
            yield alias

    def _every_upstream_failed(self, call: _Call) -> ProviderError:
        errors = "; ".join(call.attempts.errors)
        return ProviderError(f"every upstream failed for {call.request.model!r}: {errors}", status=502)

    def _upstream_request(self, alias: str, request: ChatRequest) -> ChatRequest:
        """The request as sent to ``alias``: the alias's default max_tokens when the caller set none."""
        params = self._chat[alias].params
        if request.max_tokens is None and "max_tokens" in params:
            return replace(request, max_tokens=int(params["max_tokens"]))
        return request

    async def _try_alias(self, alias: str, call: _Call) -> AsyncIterator[GatewayEvent]:
        """Try one alias with retries. Returns without a result when it failed before sending anything."""
        provider = self._providers[alias]
        s = self.settings
        upstream_request = self._upstream_request(alias, call.request)
        for attempt in range(s.retries + 1):
            call.attempts.count += 1
            sent = False
            first: float | None = None
            last = time.perf_counter()
            parts: list[str] = []
            calls: dict[int, dict[str, Any]] = {}
            finish: Finish | None = None
            # Times only the waits on the upstream (never the caller's work between events).
            deadline = self._deadlines.start(s.first_token_timeout_s, s.total_timeout_s)
            events = provider.stream(self._chat[alias].model, upstream_request).__aiter__()
            try:
                while True:
                    try:
                        event = await deadline.next(events)
                    except StopAsyncIteration:
                        break
                    if isinstance(event, Finish):
                        finish = event
                        continue
                    last = time.perf_counter()
                    first = first or last
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                    else:
                        _merge_tool_call(calls, event)
                    sent = True
                    yield event
                if finish is None:
                    raise ProviderError(f"{alias} ended the stream without finishing", retryable=True)
            except (ProviderError, TimeoutError) as exc:
                await _close_quietly(events)
                if await self._retry_after(alias, exc, call, attempt, sent=sent, before_first=first is None):
                    continue
                return
            finally:
                deadline.close()
            yield self._succeeded(alias, call, finish, first or last, last, "".join(parts), _tool_calls(calls))
            return

    async def _try_alias_whole(
        self, alias: str, whole: Callable[[str, ChatRequest], Awaitable[list[StreamEvent]]], call: _Call
    ) -> ChatResult | None:
        """`_try_alias` for an upstream that answers in one response: one limit (the first-token one, since the
        first byte of the answer is all of it) around one await per attempt."""
        s = self.settings
        upstream_request = self._upstream_request(alias, call.request)
        for attempt in range(s.retries + 1):
            call.attempts.count += 1
            deadline = self._deadlines.start(s.first_token_timeout_s, s.total_timeout_s)
            try:
                try:
                    events = await deadline.wait(whole(self._chat[alias].model, upstream_request))
                finally:
                    deadline.close()
                text, tool_calls, finish = _collect(events)
                if finish is None:
                    raise ProviderError(f"{alias} ended the answer without finishing", retryable=True)
            except (ProviderError, TimeoutError) as exc:
                if await self._retry_after(alias, exc, call, attempt, sent=False, before_first=True):
                    continue
                return None
            last = time.perf_counter()
            return self._succeeded(alias, call, finish, last, last, text, tool_calls)
        return None

    async def _retry_after(
        self,
        alias: str,
        exc: ProviderError | TimeoutError,
        call: _Call,
        attempt: int,
        *,
        sent: bool,
        before_first: bool,
    ) -> bool:
        """Count a failed attempt; True after the backoff when the same alias should be tried again. Raises when no
        other attempt may follow (the answer had started, or the request itself is wrong)."""
        self._breakers[alias].record_failure()
        if isinstance(exc, ProviderError):
            error = exc
        else:
            when = "before the first token" if before_first else "in total"
            error = ProviderError(f"{alias} timed out ({when})", retryable=True)
        call.attempts.errors.append(f"{alias}: {error}")
        if sent:
            raise ProviderError(f"{alias} failed after the answer started: {error}", status=502) from exc
        if error.status in (400, 413, 422):
            raise error from exc  # the request itself is wrong: no other upstream will take it
        if not error.retryable or attempt == self.settings.retries:
            return False
        await asyncio.sleep(self._backoff(attempt))
        return True

    def _succeeded(
        self,
        alias: str,
        call: _Call,
        finish: Finish,
        first: float,
        last: float,
        text: str,
        tool_calls: list[dict[str, Any]],
    ) -> ChatResult:
        self._breakers[alias].record_success()
        result = self._result(call.request, alias, finish.usage, None, call.started, first, last, call.attempts,
                              text=text, finish=finish, tool_calls=tool_calls)  # fmt: skip
        if self.routers:
            for router in self.routers.values():
                if alias in router.candidates:
                    router.observe(alias, result.ttft_ms)
        return result

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        s = self.settings
        return self._rng.uniform(0, min(s.backoff_max_s, s.backoff_base_s * 2**attempt))

    def _result(
        self,
        request: ChatRequest,
        alias: str,
        usage: Any,
        cached: CachedAnswer | None,
        started: float,
        first: float,
        last: float,
        attempts: _Attempts,
        *,
        cache_hit: str | None = None,
        text: str = "",
        finish: Finish | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        now = time.perf_counter()
        decode = last - first
        tokens_per_s = (usage.output_tokens - 1) / decode if decode > 0 and cached is None else None
        return ChatResult(
            text=cached.text if cached else text,
            finish_reason=cached.finish_reason if cached else finish.reason if finish else "stop",
            usage=usage,
            model=request.model,
            response_model=cached.response_model if cached else finish.response_model if finish else alias,
            cost_usd=0.0 if cached else self.prices.cost(alias, usage),
            ttft_ms=(first - started) * 1000,
            duration_ms=(now - started) * 1000,
            tokens_per_s=tokens_per_s,
            tool_calls=cached.tool_calls if cached else tool_calls or [],
            cache_hit=cache_hit,
            queue_ms=finish.queue_ms if finish else 0.0,
            attempts=attempts.count,
            fallbacks=list(attempts.failed),
            served_by=alias,
            price_book=self.prices.version,
        )

    # ---- cache ------------------------------------------------------------------------------------------------

    def _cacheable(self, request: ChatRequest) -> bool:
        if request.cache is not None:
            return request.cache
        return request.temperature == 0.0

    def _from_cache(self, call: _Call) -> ChatResult | None:
        """The routed alias's answer from the cache, as a result (no cost, no upstream)."""
        cached = self._cached(call.request, call.route.alias, call.cache_scope)
        if cached is None:
            return None
        answer, kind = cached
        started = call.started
        return self._result(call.request, call.route.alias, answer.usage, answer, started, started, started,
                            call.attempts, cache_hit=kind)  # fmt: skip

    def _cached(self, request: ChatRequest, alias: str, scope: str) -> tuple[CachedAnswer, str] | None:
        if not self._cacheable(request):
            return None
        upstream = self._chat[alias].model
        if self._exact is not None:
            hit = self._exact.get(exact_key(upstream, request, scope))
            if hit is not None:
                return hit, "exact"
        question = SemanticCache.question(request) if self._semantic else None
        if self._semantic is not None and question and not request.tools:
            found = self._semantic.lookup(self._semantic_scope(request, alias, scope), question)
            if found is not None:
                return found[0], "semantic"
        return None

    def _semantic_scope(self, request: ChatRequest, alias: str, scope: str) -> str:
        return f"{alias}|{request.metadata.get('prompt_version', '')}|{scope}"

    def _store_in_cache(self, call: _Call, alias: str, result: ChatResult) -> None:
        request, scope = call.request, call.cache_scope
        if not self._cacheable(request) or result.finish_reason not in ("stop", "tool_calls"):
            return
        answer = CachedAnswer(result.text, result.finish_reason, result.tool_calls, result.usage, result.response_model)
        if self._exact is not None:
            self._exact.put(exact_key(self._chat[alias].model, request, scope), answer)
        question = SemanticCache.question(request) if self._semantic else None
        if self._semantic is not None and question and not request.tools:
            self._semantic.add(self._semantic_scope(request, alias, scope), question, answer)

    # ---- accounting ---------------------------------------------------------------------------------------------

    def _record(
        self,
        span: trace.Span,
        request: ChatRequest,
        result: ChatResult,
        route: Route,
        attempts: _Attempts,
        caller: Caller,
        request_id: str | None,
        alerts: list[str],
    ) -> None:
        config = self._chat[result.served_by]
        # Every attribute costs the request path a few microseconds: the usual case records what is not default.
        attributes: dict[str, Any] = {
            genai.GEN_AI_PROVIDER_NAME: self._providers[result.served_by].name,
            genai.GEN_AI_RESPONSE_MODEL: result.response_model,
            genai.GEN_AI_RESPONSE_FINISH_REASONS: (result.finish_reason,),
            genai.GEN_AI_USAGE_INPUT_TOKENS: result.usage.input_tokens,
            genai.GEN_AI_USAGE_OUTPUT_TOKENS: result.usage.output_tokens,
            genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: result.ttft_ms / 1000,
            "llmops.upstream.model": config.model,
            "llmops.ttft_ms": result.ttft_ms,
            "llmops.cost_usd": result.cost_usd,
        }
        if result.tokens_per_s:
            attributes["llmops.tokens_per_s"] = result.tokens_per_s
        if result.served_by != request.model:
            attributes["llmops.served_by"] = result.served_by
        if result.usage.estimated:
            attributes["llmops.usage.estimated"] = True
        if result.queue_ms:
            attributes["llmops.queue_ms"] = result.queue_ms
        if result.cache_hit:
            attributes["llmops.cache.hit"] = result.cache_hit
        if attempts.count > 1:
            attributes["llmops.retries"] = attempts.count - attempts.tried
        if attempts.failed:
            attributes["llmops.fallbacks"] = attempts.failed
        # Who the call is attributed to: request metrics aggregate cost by user, team and app.
        if caller.user:
            attributes["llmops.caller.user"] = caller.user
        if caller.team:
            attributes["llmops.caller.team"] = caller.team
        if caller.app:
            attributes["llmops.caller.app"] = caller.app
        span.set_attributes(attributes)
        if alerts:
            span.add_event("budget.soft_limit", {"alerts": alerts})
        self._ledger(request, result.served_by, route, attempts, caller, request_id, result=result)

    def _record_failure(
        self,
        request: ChatRequest,
        route: Route,
        attempts: _Attempts,
        caller: Caller,
        request_id: str | None,
        started: float,
        exc: BaseException,
    ) -> None:
        if isinstance(exc, Exception) and route.alias in self._chat:
            self._ledger(request, route.alias, route, attempts, caller, request_id, error=exc, started=started)

    def _ledger(
        self,
        request: ChatRequest,
        alias: str,
        route: Route,
        attempts: _Attempts,
        caller: Caller,
        request_id: str | None,
        *,
        result: ChatResult | None = None,
        error: Exception | None = None,
        started: float | None = None,
    ) -> None:
        if self._journal is None:
            return
        config = self._chat[alias]
        usage = result.usage if result else None
        self._calls += 1
        row = {
            "id": f"call_{self._id_prefix}{self._calls:x}",
            "request_id": request_id or "",
            "at": datetime.now(UTC),
            "model": request.model,
            "served_by": alias,
            "upstream_model": config.model,
            "provider": config.provider,
            "key_name": caller.key_name,
            "user": caller.user,
            "team": caller.team,
            "app": caller.app,
            "tags": list(caller.tags),
            "input_tokens": usage.input_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
            "cached_input_tokens": usage.cached_input_tokens if usage else 0,
            "cost_usd": result.cost_usd if result else 0.0,
            "price_book": self.prices.version,
            "status": "ok" if result else "error",
            "cache_hit": result.cache_hit if result else None,
            "latency_ms": result.duration_ms if result else (time.perf_counter() - (started or 0)) * 1000,
            "ttft_ms": result.ttft_ms if result else None,
            "attempts": attempts.count,
            "fallbacks": attempts.failed,
            "route": {"policy": route.policy, "alias": route.alias, "reason": route.reason},
            "error": str(error)[:500] if error else None,
        }
        # Written with the next line of the journal (the trace's, which always follows before the answer goes out):
        # one system call per request instead of two.
        self._journal.append({"gateway_calls": [row]}, durable=False)

    # ---- embeddings -------------------------------------------------------------------------------------------

    async def embed(self, model: str, texts: list[str], *, caller: Caller | None = None) -> EmbeddingResult:
        config = self._embedding.get(model)
        if config is None or model not in self._embedders:
            served = ", ".join(self._embedding) or "none"
            raise UnknownModelError(f"unknown embedding model {model!r}; served: {served}")
        vectors, tokens = await self._embedders[model].embed(config.model, texts)
        price = self.prices.price(model)
        return EmbeddingResult(vectors, tokens, tokens * price.input_per_mtok / 1_000_000, model)

    async def aclose(self) -> None:
        for provider in {id(p): p for p in self._providers.values()}.values():
            await provider.aclose()
        counters = self.limits.counters
        if isinstance(counters, RedisCounters):
            await counters.aclose()


async def _close_quietly(events: AsyncIterator[Any]) -> None:
    """Release a failed upstream stream (its connection) without letting the cleanup raise over the real error."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: ToolCallDelta) -> None:
    call = calls.setdefault(
        delta.index, {"id": delta.id or "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if delta.id:
        call["id"] = delta.id
    if delta.name:
        call["function"]["name"] = delta.name
    call["function"]["arguments"] += delta.arguments


def _collect(events: list[StreamEvent]) -> tuple[str, list[dict[str, Any]], Finish | None]:
    """The text, tool calls and finish of a whole answer's events."""
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: Finish | None = None
    for event in events:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, Finish):
            finish = event
        else:
            _merge_tool_call(calls, event)
    return "".join(parts), _tool_calls(calls), finish


def _tool_calls(calls: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    return [calls[i] for i in sorted(calls)]
