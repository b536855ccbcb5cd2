"""The LlamaIndex side of bench/ingest.py; runs in bench/.venv-llamaindex, never in the project's environment.

    bench/.venv-llamaindex/bin/python bench/_llamaindex_ingest.py CORPUS [--size 200 --overlap 32 --workers N]

Reads CORPUS with ``SimpleDirectoryReader`` and runs an ``IngestionPipeline`` of ``SentenceSplitter`` (sizes counted
with the MiniLM tokenizer, like llmops's chunker) and the very same embedding model llmops uses: llmops's own
`MiniLMEmbedder` (all-MiniLM-L6-v2 int8 ONNX, same thread count, same ONNX batch size ``--batch-size``) wrapped as a
LlamaIndex ``BaseEmbedding``. So only the pipeline differs. ``--workers N`` runs the pipeline with ``num_workers=N``
(LlamaIndex's own process pool). Prints one JSON object with the stage timings (wall and CPU seconds).

The embedder module is loaded from the repository's source without running ``llmops/__init__`` (which would import
the whole platform and its dependencies, absent from this environment): the two packages are registered as bare
namespace entries so that ``importlib.resources`` still finds the tokenizer file shipped beside the module. The model
is loaded lazily in each process, so the pipeline's transformations pickle for its worker processes.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding  # type: ignore[import-not-found]
from pydantic import PrivateAttr

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_TOKENS = 256


def load_minilm(threads: int, batch_size: int) -> Any:
    for name, folder in (("llmops", SRC / "llmops"), ("llmops.knowledge", SRC / "llmops" / "knowledge")):
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)  # registered, never executed
    module = importlib.import_module("llmops.knowledge._embedder")
    return module.MiniLMEmbedder(threads=threads, batch_size=batch_size)


class LazyModel:
    """The MiniLM model, loaded on first use in whichever process uses it; pickles as its settings only."""

    def __init__(self, threads: int, batch_size: int) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None
        self.seconds = 0.0  # time spent embedding in this process

    def __getstate__(self) -> dict[str, Any]:
        return {"threads": self.threads, "batch_size": self.batch_size, "_model": None, "seconds": 0.0}

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_minilm(self.threads, self.batch_size)
        return self._model

    def embed(self, texts: list[str]) -> list[list[float]]:
        model = self.model
        t0 = time.perf_counter()
        vectors: list[list[float]] = model.embed(texts).tolist()
        self.seconds += time.perf_counter() - t0
        return vectors

    def token_ids(self, text: str) -> list[int]:
        ids: list[int] = self.model._counter.encode(text, add_special_tokens=False).ids
        return ids


class MiniLMEmbedding(BaseEmbedding):  # type: ignore[misc]
    """llmops's MiniLM model as a LlamaIndex embedding."""

    _lazy: LazyModel = PrivateAttr()

    def __init__(self, lazy: LazyModel, **kwargs: Any) -> None:
        # LlamaIndex hands the model at least its default 10 texts per call; the model runs them in ONNX batches of
        # ``batch_size`` (llmops's setting), so both systems run the same inference batches.
        super().__init__(model_name="all-MiniLM-L6-v2-int8", embed_batch_size=max(10, lazy.batch_size), **kwargs)
        self._lazy = lazy

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._lazy.embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._lazy.embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._lazy.embed(list(texts))


class TokenIds:
    """The splitter's tokenizer: MiniLM's token ids of a text (picklable, model loaded lazily)."""

    def __init__(self, lazy: LazyModel) -> None:
        self.lazy = lazy

    def __call__(self, text: str) -> list[int]:
        return self.lazy.token_ids(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    from llama_index.core import SimpleDirectoryReader  # type: ignore[import-not-found]
    from llama_index.core.ingestion import IngestionPipeline  # type: ignore[import-not-found]
    from llama_index.core.node_parser import SentenceSplitter  # type: ignore[import-not-found]
    from llama_index.core.schema import MetadataMode  # type: ignore[import-not-found]

    lazy = LazyModel(args.threads, args.batch_size)
    lazy.model  # noqa: B018 - loaded before the clock starts, as llmops's is

    wall0, cpu0 = time.perf_counter(), time.process_time()
    documents = SimpleDirectoryReader(str(args.corpus)).load_data()
    read_seconds = time.perf_counter() - wall0

    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=args.size, chunk_overlap=args.overlap, tokenizer=TokenIds(lazy)),
            MiniLMEmbedding(lazy),
        ]
    )
    t0 = time.perf_counter()
    nodes = pipeline.run(documents=documents, num_workers=args.workers or None)
    pipeline_seconds = time.perf_counter() - t0
    total_seconds = time.perf_counter() - wall0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = time.process_time() - cpu0 + children.ru_utime + children.ru_stime

    # Outside the timed part: what was embedded, in the model's tokens (truncated at its 256-token limit).
    embedded = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    tokens = sum(min(len(lazy.token_ids(text)) + 2, MAX_TOKENS) for text in embedded)
    assert all(node.embedding is not None and len(node.embedding) == 384 for node in nodes)
    import llama_index.core  # type: ignore[import-not-found]

    print(
        json.dumps(
            {
                "version": llama_index.core.__version__,
                "workers": args.workers,
                "documents": len(documents),
                "files": len({d.metadata.get("file_path") for d in documents}),
                "chunks": len(nodes),
                "embedded_tokens": tokens,
                "read_s": read_seconds,
                # Known only when the pipeline runs in this process.
                "split_s": None if args.workers > 1 else pipeline_seconds - lazy.seconds,
                "embed_s": None if args.workers > 1 else lazy.seconds,
                "pipeline_s": pipeline_seconds,
                "total_s": total_seconds,
                "cpu_s": cpu_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
