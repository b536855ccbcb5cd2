"""Retrieval speed and recall of the embedded indexes at 100,000 chunks, next to raw hnswlib and bm25s.

    .venv/bin/pip install -e '.[bench]'      # bm25s (hnswlib is a main dependency)
    .venv/bin/python bench/retrieval.py [--chunks 100000] [--queries 1000]

The corpus is real text built offline: the CPython documentation shipped in ``pydoc_data.topics`` and the Debian
package documentation under /usr/share/doc (README, NEWS, changelog, .txt and .md files, gzipped or not), split into
paragraph-sized chunks of at most ~600 characters. The keyword side indexes and queries these texts (queries are 2-4
words drawn from random chunks). The dense side uses synthetic clustered 384-dimensional unit vectors, as the issue
allows: embedding 100k chunks with the bundled MiniLM takes over ten minutes on two cores, and the ANN figures depend on
the vectors' geometry, not on where they came from.

Every llmops query carries the knowledge base's snapshot filter (``snapshot_from <= S < snapshot_until``, about 98% of
the chunks here), as every real query does. Hybrid = dense and keyword searches for ``--candidates`` each (the
knowledge base's default 50), fused by reciprocal rank (k=60), top 10. Raw hnswlib and bm25s run unfiltered in the
same process on the same vectors and texts. Each query is timed on its own; the table gives p50/p99, the last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmops.knowledge._filters import MetadataFilter, MetadataValue
from llmops.knowledge._hnsw import HnswVectorIndex
from llmops.knowledge._index import ExactVectorIndex
from llmops.knowledge._retrieval import snapshot_filter
from llmops.knowledge._tantivy import TantivyKeywordIndex

LIVE = 2**31 - 1
SNAPSHOT = 3
DIM = 384
DOC_ROOT = Path("/usr/share/doc")
WORD = re.compile(r"[A-Za-z]{4,}")

Vectors = npt.NDArray[np.float32]


# --------------------------------------------------------------------------------------------------------------------
# Corpus


def documents() -> Iterator[tuple[str, str]]:
    """(source, text) of the CPython topics, then the Debian docs in a fixed order."""
    import pydoc_data.topics

    for name, text in sorted(pydoc_data.topics.topics.items()):
        yield f"pydoc:{name}", text
    for root, dirs, files in os.walk(DOC_ROOT):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            low = name.lower()
            wanted = low.endswith((".txt", ".md", ".txt.gz", ".md.gz")) or low.startswith(
                ("readme", "changelog", "news")
            )
            if path.is_symlink() or not wanted:
                continue
            try:
                if low.endswith(".gz"):
                    with gzip.open(path, "rb") as handle:
                        data = handle.read(8_000_000)
                else:
                    data = path.read_bytes()[:8_000_000]
            except (OSError, EOFError):
                continue
            if b"\0" in data[:4096]:
                continue
            yield str(path), data.decode("utf-8", "replace")


def chunk(text: str, size: int = 600) -> Iterator[str]:
    """Paragraphs (whitespace-normalised) packed into chunks of at most ~``size`` characters; long ones are cut."""
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        if len(paragraph) < 20:
            continue
        while len(paragraph) > size:
            cut = paragraph.rfind(" ", size // 2, size)
            cut = cut if cut > 0 else size
            if current:
                yield current
                current = ""
            yield paragraph[:cut]
            paragraph = paragraph[cut:].lstrip()
        if current and len(current) + 1 + len(paragraph) > size:
            yield current
            current = ""
        current = f"{current} {paragraph}" if current else paragraph
    if current:
        yield current


def corpus(n: int) -> tuple[list[str], list[str], list[dict[str, MetadataValue]]]:
    ids: list[str] = []
    texts: list[str] = []
    metadata: list[dict[str, MetadataValue]] = []
    rng = random.Random(7)
    for number, (source, text) in enumerate(documents()):
        for ordinal, piece in enumerate(chunk(text)):
            i = len(ids)
            closed = rng.random() < 0.02  # superseded by a later snapshot: outside the searched snapshot
            meta: dict[str, MetadataValue] = {
                "document_id": f"doc-{number}",
                "source": source,
                "title": Path(source).parent.name or source,
                "language": "en",
                "parser": "text",
                "section": f"part {ordinal // 5}",
                "snapshot_from": 1 + i % SNAPSHOT,
                "snapshot_until": 2 if closed else LIVE,
                "team": f"team-{i % 100}",  # a 1% filter
                "kind": f"kind-{i % 10}",  # a 10% filter
            }
            if ordinal % 3 == 0:
                meta["page"] = ordinal // 3 + 1
            ids.append(f"chunk-{i:06d}")
            texts.append(piece)
            metadata.append(meta)
            if len(ids) == n:
                return ids, texts, metadata
    return ids, texts, metadata


def clustered(rng: np.random.Generator, n: int, centers: Vectors) -> Vectors:
    """Unit vectors around random centres (200 clusters, cosine to the centre ~0.86), like embedded topics."""
    out = np.empty((n, centers.shape[1]), dtype=np.float32)
    for start in range(0, n, 20_000):
        size = min(20_000, n - start)
        x = centers[rng.integers(0, len(centers), size)] + 0.6 * rng.standard_normal((size, centers.shape[1]))
        out[start : start + size] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class Workload:
    """The corpus both retrieval benchmarks search: real texts, clustered vectors, and their queries."""

    ids: list[str]
    texts: list[str]
    metadata: list[dict[str, MetadataValue]]
    vectors: Vectors
    query_vectors: Vectors
    text_queries: list[str]


def workload(chunks: int, queries: int) -> Workload:
    ids, texts, metadata = corpus(chunks)
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((200, DIM)).astype(np.float32)
    return Workload(
        ids,
        texts,
        metadata,
        clustered(rng, len(ids), centers),
        clustered(np.random.default_rng(12), queries, centers),
        keyword_queries(texts, queries),
    )


def keyword_queries(texts: Sequence[str], n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    queries: list[str] = []
    while len(queries) < n:
        words = WORD.findall(texts[rng.randrange(len(texts))])
        if len(words) >= 2:
            queries.append(" ".join(rng.sample(words, min(len(words), rng.randint(2, 4)))))
    return queries


# --------------------------------------------------------------------------------------------------------------------
# Measurement helpers


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(fn: Callable[[int], Any], n: int, warmup: int = 50) -> tuple[list[float], list[Any]]:
    """Milliseconds of ``fn(i)`` for each i (after a warm-up), and its results."""
    for i in range(min(warmup, n)):
        fn(i)
    out: list[Any] = []
    times: list[float] = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        out.append(fn(i))
        times.append((clock() - start) / 1e6)
    return times, out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / max(1, sum(len(t) for t in truth))


def rrf(rankings: Sequence[Sequence[tuple[str, float]]], k: int, constant: int = 60) -> list[str]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (constant + rank + 1)
    return [chunk_id for chunk_id, _ in sorted(scores.items(), key=lambda item: -item[1])[:k]]


def dense_search(
    index: ExactVectorIndex | HnswVectorIndex, queries: Vectors, k: int, where: MetadataFilter | None
) -> Callable[[int], list[tuple[str, float]]]:
    return lambda i: index.search(queries[i], k, where)


def directory_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


# --------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=50, help="per-index candidates fused in hybrid search")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    import bm25s
    import hnswlib

    k, nq = args.k, args.queries
    work = Path(tempfile.mkdtemp(prefix="llmops-bench-retrieval-"))
    figures: dict[str, Any] = {}
    rows: list[tuple[str, str, str, str, str]] = []
    try:
        started = time.perf_counter()
        data = workload(args.chunks, nq)
        ids, texts, metadata = data.ids, data.texts, data.metadata
        vectors, query_vectors, text_queries = data.vectors, data.query_vectors, data.text_queries
        n = len(ids)
        print(
            f"corpus: {n:,} chunks, {sum(map(len, texts)) / 1e6:.1f} M characters, "
            f"{len({m['document_id'] for m in metadata}):,} documents ({time.perf_counter() - started:.1f} s); "
            f"{nq} queries, k={k}, hybrid candidates={args.candidates}"
        )
        scope = snapshot_filter(SNAPSHOT)
        in_scope = sum(scope.matches(m) for m in metadata) / n
        one_percent = MetadataFilter.parse({"team": "team-7"}).and_(scope)
        ten_percent = MetadataFilter.parse({"kind": "kind-3"}).and_(scope)

        # Ground truth: one batched product (BLAS) with the filters as masks; ExactVectorIndex is timed on a sample
        truth: dict[str, list[list[str]]] = {}
        filters = {"none": None, "scope": scope, "1%": one_percent, "10%": ten_percent}
        scores = query_vectors @ vectors.T
        for label, where in filters.items():
            masked = scores if where is None else np.where([where.matches(m) for m in metadata], scores, -np.inf)
            top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
            truth[label] = [[ids[j] for j in row] for row in top]
        del scores
        exact = ExactVectorIndex(DIM)
        exact.upsert(ids, vectors, metadata)
        exact_times: dict[str, list[float]] = {}
        for label, where in filters.items():
            sample = min(nq, 100)
            exact_times[label] = timed(dense_search(exact, query_vectors, k, where), sample, warmup=5)[0]
        exact.close()

        # llmops HNSW
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        hnsw = HnswVectorIndex(work / "vectors", DIM)
        for s in range(0, n, 10_000):
            hnsw.upsert(ids[s : s + 10_000], vectors[s : s + 10_000], metadata[s : s + 10_000])
        hnsw_build = time.perf_counter() - start
        start = time.perf_counter()
        hnsw.commit()
        hnsw_commit = time.perf_counter() - start
        hnsw_rss = rss_mb() - before
        hnsw.close()
        del hnsw
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        hnsw = HnswVectorIndex(work / "vectors", DIM)
        hnsw_open = time.perf_counter() - start
        hnsw_open_rss = rss_mb() - before

        dense_unfiltered, found = timed(lambda i: hnsw.search(query_vectors[i], k), nq)
        ann_recall_unfiltered = recall([[c for c, _ in r] for r in found], truth["none"])
        dense_times, found = timed(lambda i: hnsw.search(query_vectors[i], k, scope), nq)
        ann_recall = recall([[c for c, _ in r] for r in found], truth["scope"])
        filtered: dict[str, tuple[list[float], float]] = {}
        for label, where in (("1%", one_percent), ("10%", ten_percent)):
            times, found = timed(dense_search(hnsw, query_vectors, k, where), nq)
            filtered[label] = (times, recall([[c for c, _ in r] for r in found], truth[label]))

        # Raw hnswlib, same parameters
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        raw = hnswlib.Index(space="ip", dim=DIM)
        raw.init_index(max_elements=n, M=16, ef_construction=128)
        raw.add_items(vectors, np.arange(n))
        raw_build = time.perf_counter() - start
        raw_rss = rss_mb() - before
        raw.set_ef(64)
        raw.set_num_threads(1)
        raw_times, found = timed(lambda i: raw.knn_query(query_vectors[i], k=k)[0][0], nq)
        raw_recall = recall([[ids[j] for j in r] for r in found], truth["none"])

        # llmops tantivy
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        keyword = TantivyKeywordIndex(work / "keywords")
        for s in range(0, n, 10_000):
            keyword.upsert(ids[s : s + 10_000], texts[s : s + 10_000], metadata[s : s + 10_000])
        keyword.commit()
        tantivy_build = time.perf_counter() - start
        tantivy_rss = rss_mb() - before
        keyword.close()
        del keyword
        gc.collect()
        before = rss_mb()
        keyword = TantivyKeywordIndex(work / "keywords")
        keyword_unfiltered, _ = timed(lambda i: keyword.search(text_queries[i], k), nq)
        tantivy_open_rss = rss_mb() - before  # after a first pass of queries has paged the index in
        keyword_times, keyword_found = timed(lambda i: keyword.search(text_queries[i], k, scope), nq)
        keyword_1pct, _ = timed(lambda i: keyword.search(text_queries[i], k, one_percent), nq)

        # Raw bm25s
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        corpus_tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(corpus_tokens, show_progress=False)
        bm25s_build = time.perf_counter() - start
        bm25s_rss = rss_mb() - before

        def bm25s_search(i: int) -> list[str]:
            tokens = bm25s.tokenize(text_queries[i], stopwords="en", show_progress=False)
            if not tokens.vocab:
                return []
            documents, _ = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
            return [ids[j] for j in documents[0]]

        bm25s_times, bm25s_found = timed(bm25s_search, nq)
        overlap = recall([[c for c, _ in r] for r in keyword_found], bm25s_found)

        # Hybrid: what the knowledge base does per query (minus embedding the question)
        def hybrid(i: int, candidates: int) -> list[str]:
            dense = hnsw.search(query_vectors[i], candidates, scope)
            lexical = keyword.search(text_queries[i], candidates, scope)
            return rrf([dense, lexical], k)

        hybrid_times, _ = timed(lambda i: hybrid(i, args.candidates), nq)
        hybrid_k_times, _ = timed(lambda i: hybrid(i, k), nq)

        keyword_qps = 1000 / statistics.fmean(keyword_times)
        bm25s_qps = 1000 / statistics.fmean(bm25s_times)
        rows += [
            (
                "exact (numpy), scope filter",
                f"{pct(exact_times['scope'], 50):.3f}",
                f"{pct(exact_times['scope'], 99):.3f}",
                "1.000",
                "",
            ),
            (
                "hnswlib raw, no filter",
                f"{pct(raw_times, 50):.3f}",
                f"{pct(raw_times, 99):.3f}",
                f"{raw_recall:.3f}",
                "",
            ),
            (
                "llmops hnsw, no filter",
                f"{pct(dense_unfiltered, 50):.3f}",
                f"{pct(dense_unfiltered, 99):.3f}",
                f"{ann_recall_unfiltered:.3f}",
                f"{pct(dense_unfiltered, 50) / pct(raw_times, 50):.2f}x raw",
            ),
            (
                f"llmops hnsw, scope ({in_scope:.0%})",
                f"{pct(dense_times, 50):.3f}",
                f"{pct(dense_times, 99):.3f}",
                f"{ann_recall:.3f}",
                f"{pct(dense_times, 50) / pct(raw_times, 50):.2f}x raw",
            ),
            (
                "llmops hnsw, 10% filter",
                f"{pct(filtered['10%'][0], 50):.3f}",
                f"{pct(filtered['10%'][0], 99):.3f}",
                f"{filtered['10%'][1]:.3f}",
                f"exact {pct(exact_times['10%'], 50):.2f} ms",
            ),
            (
                "llmops hnsw, 1% filter",
                f"{pct(filtered['1%'][0], 50):.3f}",
                f"{pct(filtered['1%'][0], 99):.3f}",
                f"{filtered['1%'][1]:.3f}",
                f"exact {pct(exact_times['1%'], 50):.2f} ms",
            ),
            (
                "bm25s raw, no filter",
                f"{pct(bm25s_times, 50):.3f}",
                f"{pct(bm25s_times, 99):.3f}",
                "",
                f"{bm25s_qps:,.0f} q/s",
            ),
            (
                "llmops tantivy, no filter",
                f"{pct(keyword_unfiltered, 50):.3f}",
                f"{pct(keyword_unfiltered, 99):.3f}",
                "",
                f"{1000 / statistics.fmean(keyword_unfiltered):,.0f} q/s",
            ),
            (
                "llmops tantivy, scope",
                f"{pct(keyword_times, 50):.3f}",
                f"{pct(keyword_times, 99):.3f}",
                f"{overlap:.3f}*",
                f"{keyword_qps:,.0f} q/s = {keyword_qps / bm25s_qps:.1f}x bm25s",
            ),
            ("llmops tantivy, 1% filter", f"{pct(keyword_1pct, 50):.3f}", f"{pct(keyword_1pct, 99):.3f}", "", ""),
            (
                f"hybrid RRF, {args.candidates}+{args.candidates} candidates",
                f"{pct(hybrid_times, 50):.3f}",
                f"{pct(hybrid_times, 99):.3f}",
                "",
                "scope filter on both",
            ),
            (
                f"hybrid RRF, {k}+{k} candidates",
                f"{pct(hybrid_k_times, 50):.3f}",
                f"{pct(hybrid_k_times, 99):.3f}",
                "",
                "",
            ),
        ]
        build_rows = [
            (
                "llmops hnsw",
                f"{hnsw_build:.1f} s (+{hnsw_commit:.1f} s commit, {hnsw_open:.1f} s open)",
                f"{hnsw_rss:.0f} MB (reopened: {hnsw_open_rss:.0f} MB)",
                f"{directory_mb(work / 'vectors'):.0f} MB",
            ),
            ("hnswlib raw", f"{raw_build:.1f} s", f"{raw_rss:.0f} MB", ""),
            (
                "llmops tantivy",
                f"{tantivy_build:.1f} s (with commit)",
                f"{tantivy_rss:.0f} MB (reopened: {tantivy_open_rss:.0f} MB)",
                f"{directory_mb(work / 'keywords'):.0f} MB",
            ),
            ("bm25s raw", f"{bm25s_build:.1f} s", f"{bm25s_rss:.0f} MB", ""),
        ]
        print()
        print(f"{'build':<18} {'time':<40} {'RSS delta':<28} {'on disk'}")
        for name, took, memory, disk in build_rows:
            print(f"{name:<18} {took:<40} {memory:<28} {disk}")
        print()
        print(f"{'query (ms)':<38} {'p50':>8} {'p99':>8} {'recall@10':>10}  notes")
        for name, p50, p99, rec, note in rows:
            print(f"{name:<38} {p50:>8} {p99:>8} {rec:>10}  {note}")
        print("* top-10 overlap with bm25s (different analysers: tantivy stems, bm25s does not)")
        figures = {
            "chunks": n,
            "queries": nq,
            "hybrid_p50_ms": round(pct(hybrid_times, 50), 3),
            "hybrid_p99_ms": round(pct(hybrid_times, 99), 3),
            "hybrid_candidates": args.candidates,
            "hybrid_k_candidates_p50_ms": round(pct(hybrid_k_times, 50), 3),
            "ann_recall_at_10": round(ann_recall, 4),
            "ann_recall_at_10_unfiltered": round(ann_recall_unfiltered, 4),
            "filtered_recall_10pct": round(filtered["10%"][1], 4),
            "filtered_recall_1pct": round(filtered["1%"][1], 4),
            "dense_p50_ms": round(pct(dense_times, 50), 3),
            "dense_p99_ms": round(pct(dense_times, 99), 3),
            "dense_1pct_p50_ms": round(pct(filtered["1%"][0], 50), 3),
            "dense_10pct_p50_ms": round(pct(filtered["10%"][0], 50), 3),
            "hnswlib_p50_ms": round(pct(raw_times, 50), 3),
            "hnswlib_recall_at_10": round(raw_recall, 4),
            "keyword_p50_ms": round(pct(keyword_times, 50), 3),
            "keyword_p99_ms": round(pct(keyword_times, 99), 3),
            "keyword_qps": round(keyword_qps, 1),
            "bm25s_qps": round(bm25s_qps, 1),
            "bm25s_p50_ms": round(pct(bm25s_times, 50), 3),
            "keyword_vs_bm25s_qps": round(keyword_qps / bm25s_qps, 2),
            "hnsw_build_s": round(hnsw_build, 1),
            "hnsw_commit_s": round(hnsw_commit, 1),
            "hnswlib_build_s": round(raw_build, 1),
            "tantivy_build_s": round(tantivy_build, 1),
            "bm25s_build_s": round(bm25s_build, 1),
            "hnsw_rss_mb": round(hnsw_rss),
            "hnsw_reopened_rss_mb": round(hnsw_open_rss),
            "hnswlib_rss_mb": round(raw_rss),
            "tantivy_rss_mb": round(tantivy_rss),
            "tantivy_reopened_rss_mb": round(tantivy_open_rss),
            "bm25s_rss_mb": round(bm25s_rss),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
