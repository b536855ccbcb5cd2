"""Embedders: the OpenAI-compatible one against real HTTP servers on loopback (a scripted server answering in the
openai SDK's own response types, and llmops' own /v1/embeddings serving the bundled MiniLM), tiktoken offsets, and the
embedding cache."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tiktoken
from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.create_embedding_response import Usage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from llmops import ModelConfig, Platform, Settings
from llmops.knowledge._embedder import Embedder, MiniLMEmbedder
from llmops.knowledge._embedding_cache import CachedEmbedder, EmbeddingCache, InMemoryEmbeddingCache, text_hash
from llmops.knowledge._openai_embedder import EmbeddingError, OpenAICompatibleEmbedder, TiktokenTokenizer
from llmops.testing import HashEmbedder

from ..helpers import serve_in_thread

DIMS = 8


def _vector(text: str, dims: int = DIMS) -> list[float]:
    """Deterministic and deliberately not unit length, so normalisation is visible."""
    rng = np.random.default_rng(int(text_hash(text)[:8], 16))
    return [float(x) for x in rng.normal(size=dims) * 3.0]


class ScriptedEmbeddings:
    """An OpenAI-compatible /v1/embeddings whose behaviour is chosen by the model name; answers are built from the
    openai SDK's own types, so their shape is the real one. ``calls`` counts requests per model."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.app = Starlette(routes=[Route("/v1/embeddings", self._embeddings, methods=["POST"])])

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        model = body["model"]
        self.calls[model] = self.calls.get(model, 0) + 1
        self.bodies.append(body)
        self.auth.append(request.headers.get("authorization"))
        texts: list[str] = body["input"]
        n = self.calls[model]
        if model == "rate-limited" and n <= 2:
            return JSONResponse({"error": {"message": "Rate limit reached", "type": "requests"}}, 429,
                                headers={"retry-after": "0"})  # fmt: skip
        if model == "down":
            return PlainTextResponse("bad gateway", 502)
        if model == "unknown":
            return JSONResponse({"error": {"message": "The model `unknown` does not exist", "code": None}}, 404)
        dims = 5 if model == "wrong-dims" else body.get("dimensions", DIMS)
        items = [Embedding(embedding=_vector(t, dims), index=i, object="embedding") for i, t in enumerate(texts)]
        if model == "short":
            items = items[:-1]
        if model == "shuffled":
            items = items[::-1]
        payload = CreateEmbeddingResponse(
            data=items, model=model, object="list", usage=Usage(prompt_tokens=len(texts), total_tokens=len(texts))
        ).model_dump(mode="json")
        if body.get("encoding_format") == "base64" or model == "base64":
            for item in payload["data"]:
                item["embedding"] = base64.b64encode(np.asarray(item["embedding"], "<f4").tobytes()).decode()
        return JSONResponse(payload)


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedEmbeddings, str]]:
    server = ScriptedEmbeddings()
    with serve_in_thread(server.app) as base:
        yield server, f"{base}/v1"


def _embedder(base: str, model: str, **kwargs: Any) -> OpenAICompatibleEmbedder:
    options: dict[str, Any] = {"dimensions": DIMS, "api_key_env": None, "backoff_base_s": 0.001} | kwargs
    return OpenAICompatibleEmbedder(base_url=base, model=model, **options)


def _unit(vectors: list[list[float]]) -> npt.NDArray[np.float32]:
    array = np.asarray(vectors, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)  # type: ignore[no-any-return]


# ---- OpenAI-compatible embedder --------------------------------------------------------------------------------------


def test_batches_in_order_with_unit_vectors(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    server, base = scripted
    texts = [f"text number {i}" for i in range(23)]
    with _embedder(base, "ok-batches", batch_size=10) as embedder:
        assert isinstance(embedder, Embedder)
        vectors = embedder.embed(texts)
    assert server.calls["ok-batches"] == 3
    assert [len(b["input"]) for b in server.bodies if b["model"] == "ok-batches"] == [10, 10, 3]
    assert vectors.shape == (23, DIMS) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(vectors, _unit([_vector(t) for t in texts]), rtol=1e-5)


def test_concurrent_batches_keep_their_order(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    _, base = scripted
    texts = [f"concurrent {i}" for i in range(50)]
    with _embedder(base, "ok-concurrent", batch_size=4, concurrency=4) as embedder:
        np.testing.assert_allclose(embedder.embed(texts), _unit([_vector(t) for t in texts]), rtol=1e-5)


def test_items_are_placed_by_index_and_base64_is_decoded(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    _, base = scripted
    texts = ["alpha", "beta", "gamma"]
    expected = _unit([_vector(t) for t in texts])
    for model in ("shuffled", "base64"):
        with _embedder(base, model) as embedder:
            np.testing.assert_allclose(embedder.embed(texts), expected, rtol=1e-5)


def test_retries_429_then_succeeds(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    server, base = scripted
    with _embedder(base, "rate-limited", retries=3) as embedder:
        assert embedder.embed(["x"]).shape == (1, DIMS)
    assert server.calls["rate-limited"] == 3


def test_gives_up_after_the_retries_with_the_status(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    server, base = scripted
    with _embedder(base, "down", retries=2) as embedder, pytest.raises(EmbeddingError, match=r"502.*after 3 attempts"):
        embedder.embed(["x"])
    assert server.calls["down"] == 3


def test_client_errors_are_not_retried_and_keep_the_upstream_message(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    server, base = scripted
    with _embedder(base, "unknown") as embedder, pytest.raises(EmbeddingError) as error:
        embedder.embed(["x"])
    assert error.value.status == 404 and "The model `unknown` does not exist" in str(error.value)
    assert server.calls["unknown"] == 1


def test_wrong_dimensions_and_missing_vectors_are_clear_errors(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    _, base = scripted
    with _embedder(base, "wrong-dims") as embedder, pytest.raises(EmbeddingError, match=r"5 dimensions.*expected 8"):
        embedder.embed(["x", "y"])
    with _embedder(base, "short") as embedder, pytest.raises(EmbeddingError, match="1 embeddings for 2 texts"):
        embedder.embed(["x", "y"])


def test_a_refused_connection_is_retried_then_reported() -> None:
    from ..helpers import free_port

    with (
        _embedder(f"http://127.0.0.1:{free_port()}/v1", "m", retries=1) as embedder,
        pytest.raises(EmbeddingError, match="failed: ConnectError"),
    ):
        embedder.embed(["x"])


def test_api_key_from_the_environment_and_dimensions_on_request(
    scripted: tuple[ScriptedEmbeddings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, base = scripted
    monkeypatch.delenv("TEST_EMBED_KEY", raising=False)
    with pytest.raises(ValueError, match="TEST_EMBED_KEY is not set"):
        _embedder(base, "ok", api_key_env="TEST_EMBED_KEY")
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-test-123")
    with _embedder(base, "ok-dims", api_key_env="TEST_EMBED_KEY", dimensions=4, request_dimensions=True) as e:
        assert e.embed(["x"]).shape == (1, 4)
        assert e.name == "ok-dims@4"
    assert server.auth[-1] == "Bearer sk-test-123"
    assert server.bodies[-1] == {"model": "ok-dims", "input": ["x"], "encoding_format": "float", "dimensions": 4}


def test_against_llmops_own_embeddings_endpoint_serving_minilm(tmp_path: Path) -> None:
    """A real OpenAI-compatible server end to end: the vectors equal the bundled model's own."""
    from llmops.server import create_app

    minilm = MiniLMEmbedder()
    settings = Settings(
        data_dir=tmp_path / "data",
        models=[ModelConfig(name="minilm", provider="local", kind="embedding", model="all-minilm-l6-v2")],
        rag_apps=[],
    )
    platform = Platform(settings, embedder=minilm)
    texts = ["Employees get fifteen days of paid time off.", "Jupiter has many moons.", "", "naïve café 🙂"]
    try:
        with serve_in_thread(create_app(platform)) as base:
            remote = OpenAICompatibleEmbedder(
                base_url=f"{base}/v1", model="minilm", dimensions=384, api_key_env=None, batch_size=3
            )
            with remote:
                vectors = remote.embed(texts)
    finally:
        platform.close()
    np.testing.assert_allclose(vectors, minilm.embed(texts), atol=1e-5)


# ---- the bundled MiniLM ----------------------------------------------------------------------------------------------

MINILM_TEXTS = [
    "Employees get fifteen days of paid time off.",
    "",
    "naïve café 🙂",
    "Travel expenses need a receipt. " * 60,  # past the model's 256 tokens: truncated alike in every batching
    "Jupiter has many moons.",
    "Remote work needs a manager's approval and a secure connection to the office network, every day it is used.",
]


class RecordingSession:
    """Wraps an onnxruntime session and records the (rows, tokens) shape of every batch run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.shapes: list[tuple[int, int]] = []

    def run(self, outputs: list[str], feeds: dict[str, npt.NDArray[np.int64]]) -> Any:
        self.shapes.append(feeds["input_ids"].shape)
        return self.session.run(outputs, feeds)


def test_minilm_batch_sizes_give_the_same_vectors_in_the_same_order() -> None:
    """One text per ONNX run (the default, the fastest measured) gives the vectors batches of 32 give, row for row."""
    one, batched = MiniLMEmbedder(), MiniLMEmbedder(batch_size=32)
    alone = np.concatenate([one.embed([text]) for text in MINILM_TEXTS])
    for vectors in (one.embed(MINILM_TEXTS), batched.embed(MINILM_TEXTS)):
        assert vectors.shape == (len(MINILM_TEXTS), 384) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        assert np.min(np.sum(vectors * alone, axis=1)) >= 0.9999
    assert one.embed([]).shape == (0, 384)


def test_minilm_runs_one_text_at_a_time_by_default_and_batches_by_token_count() -> None:
    default = MiniLMEmbedder()
    default._session = RecordingSession(default._session)
    default.embed(MINILM_TEXTS)
    assert [rows for rows, _ in default._session.shapes] == [1] * len(MINILM_TEXTS)

    batched = MiniLMEmbedder(batch_size=2)
    batched._session = RecordingSession(batched._session)
    texts = ["short one", "word " * 100, "another short one", "word " * 90]
    batched.embed(texts)
    # The two short texts share a batch and the two long ones another, so neither pads a short text to ~100 tokens.
    (short_rows, short_width), (long_rows, long_width) = batched._session.shapes
    assert (short_rows, long_rows) == (2, 2) and short_width < 10 and long_width > 90


def test_minilm_rejects_an_empty_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        MiniLMEmbedder(batch_size=0)


# ---- tiktoken as the chunking tokenizer ------------------------------------------------------------------------------


def test_tiktoken_counts_and_offsets_match_tiktoken() -> None:
    tokenizer = TiktokenTokenizer("cl100k_base")
    encoding = tiktoken.get_encoding("cl100k_base")
    for text in ["Hello world, this is llmops.", "naïve 日本語 🙂🙂 text\n\n  spaced", "<|endoftext|> is text here"]:
        offsets = tokenizer.token_offsets(text)
        assert tokenizer.count_tokens(text) == len(encoding.encode(text, disallowed_special=())) == len(offsets)
        starts = [s for s, _ in offsets]
        assert starts == sorted(starts) and starts[0] == 0 and offsets[-1][1] == len(text)
        # Cutting at every token start gives back the text.
        bounds = [*dict.fromkeys(starts), len(text)]
        assert "".join(text[a:b] for a, b in itertools.pairwise(bounds)) == text


def test_the_openai_embedder_counts_in_cl100k_by_default(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    _, base = scripted
    with _embedder(base, "ok") as embedder:
        assert embedder.count_tokens("tokenization is fun") == len(
            tiktoken.get_encoding("cl100k_base").encode("tokenization is fun")
        )


# ---- cache -----------------------------------------------------------------------------------------------------------


class CountingEmbedder(HashEmbedder):
    def __init__(self, name: str = "hash-embedder") -> None:
        super().__init__()
        self.name = name
        self.embedded: list[str] = []

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        self.embedded.extend(texts)
        return super().embed(texts)


def test_the_cache_embeds_only_misses_and_each_text_once() -> None:
    inner = CountingEmbedder()
    cache = InMemoryEmbeddingCache()
    assert isinstance(cache, EmbeddingCache)
    cached = CachedEmbedder(inner, cache)
    assert isinstance(cached, Embedder) and cached.name == inner.name
    first = cached.embed(["alpha beta", "gamma", "alpha beta"])
    second = cached.embed(["gamma", "delta", "alpha beta"])
    assert inner.embedded == ["alpha beta", "gamma", "delta"]
    assert (cached.misses, cached.hits) == (3, 3) and len(cache) == 3
    np.testing.assert_array_equal(first, HashEmbedder().embed(["alpha beta", "gamma", "alpha beta"]))
    np.testing.assert_array_equal(second, HashEmbedder().embed(["gamma", "delta", "alpha beta"]))


def test_the_cache_key_names_the_model() -> None:
    cache = InMemoryEmbeddingCache()
    a, b = CountingEmbedder("model-a"), CountingEmbedder("model-b")
    CachedEmbedder(a, cache).embed(["same text"])
    CachedEmbedder(b, cache).embed(["same text"])
    assert a.embedded == b.embedded == ["same text"]
    assert set(cache.get_many("model-a", [text_hash("same text"), text_hash("other")])) == {text_hash("same text")}


def test_cached_vectors_are_copies() -> None:
    cache = InMemoryEmbeddingCache()
    vector = np.ones(4, dtype=np.float32)
    cache.put_many("m", {"h": vector})
    vector[:] = 0
    got = cache.get_many("m", ["h"])["h"]
    got[:] = 5
    np.testing.assert_array_equal(cache.get_many("m", ["h"])["h"], np.ones(4))


def test_cache_in_front_of_the_remote_embedder(scripted: tuple[ScriptedEmbeddings, str]) -> None:
    server, base = scripted
    with _embedder(base, "ok-cached") as remote:
        cached = CachedEmbedder(remote, InMemoryEmbeddingCache())
        cached.embed(["one", "two"])
        cached.embed(["two", "three", "one"])
    assert [b["input"] for b in server.bodies if b["model"] == "ok-cached"] == [["one", "two"], ["three"]]
