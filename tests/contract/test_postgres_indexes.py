"""What the PostgreSQL backends promise beyond the shared contract (test_index_contract.py runs them too).

Filtered ANN keeps its recall through pgvector's iterative HNSW scan (checked with the exact fallback switched off, on
a plan that uses the HNSW index); replicas see each other's commits; hostile field names, values, ids and queries
are data, never SQL; a failed write does not lose the writes before it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from llmops.knowledge._filters import MetadataFilter, MetadataValue
from llmops.knowledge._index import ExactVectorIndex
from llmops.knowledge._pgfts import PgKeywordIndex, fold
from llmops.knowledge._pgvector import PgVectorIndex, compile_filter, postgres_conninfo

LIVE = 2**31 - 1
DIM = 32
N = 4000
SNAPSHOT = MetadataFilter.parse({"snapshot_from": {"$lte": 1}, "snapshot_until": {"$gt": 1}})


def clustered(rng: np.random.Generator, centers: np.ndarray[Any, Any], n: int) -> np.ndarray[Any, Any]:
    x = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, centers.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def new_collection() -> str:
    return "t" + secrets.token_hex(6)


@pytest.fixture
def collection(pgvector_url: str) -> Iterator[str]:
    name = new_collection()
    yield name
    drop(pgvector_url, name)


def drop(url: str, collection: str) -> None:
    with psycopg.connect(postgres_conninfo(url), autocommit=True) as connection:
        connection.execute("SET lock_timeout = '10s'")
        for table in (f"llmops_vectors_{collection}", f"llmops_keywords_{collection}"):
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


class Corpus:
    """4,000 clustered vectors in one table, with a field for a 10% range filter and one for a 1% equality filter."""

    def __init__(self, url: str) -> None:
        rng = np.random.default_rng(5)
        centers = rng.standard_normal((30, DIM))
        self.url = url
        self.collection = new_collection()
        self.matrix = clustered(rng, centers, N)
        self.queries = clustered(rng, centers, 40)
        self.ids = [f"c{i}" for i in range(N)]
        buckets = rng.integers(0, 100, N)
        self.metadata: list[dict[str, MetadataValue]] = [
            {"bucket": int(b), "team": f"team-{b}", "snapshot_from": 1, "snapshot_until": LIVE} for b in buckets
        ]
        index = PgVectorIndex(url, self.collection, DIM)
        for start in range(0, N, 1000):
            end = start + 1000
            index.upsert(self.ids[start:end], self.matrix[start:end], self.metadata[start:end])
        index.commit()
        index.close()
        self.exact = ExactVectorIndex(DIM)
        self.exact.upsert(self.ids, self.matrix, self.metadata)

    def recall(self, index: PgVectorIndex, where: MetadataFilter, k: int = 10) -> tuple[float, int]:
        """Recall@k against exact search, and how many results were returned in all."""
        hits = returned = 0
        for query in self.queries:
            found = index.search(query, k, where)
            assert all(where.matches(self.metadata[int(c[1:])]) for c, _ in found)
            similarities = [s for _, s in found]
            assert similarities == sorted(similarities, reverse=True)
            truth = {c for c, _ in self.exact.search(query, k, where)}
            hits += len({c for c, _ in found} & truth)
            returned += len(found)
        return hits / (len(self.queries) * k), returned


@pytest.fixture(scope="module")
def corpus(pgvector_url: str) -> Iterator[Corpus]:
    built = Corpus(pgvector_url)
    yield built
    drop(pgvector_url, built.collection)


@pytest.mark.parametrize("spec", [{"bucket": {"$lt": 10}}, {"bucket": {"$gte": 99}}], ids=["10%", "1%"])
def test_filtered_search_keeps_recall_in_the_hnsw_scan(corpus: Corpus, spec: dict[str, Any]) -> None:
    where = MetadataFilter.parse(spec).and_(SNAPSHOT)
    index = PgVectorIndex(corpus.url, corpus.collection, DIM, exact_fallback=False)
    try:
        plan = index.explain(corpus.queries[0], 10, where)
        assert f"Index Scan using llmops_vectors_{corpus.collection}_hnsw" in plan, plan
        found, returned = corpus.recall(index, where)
        assert returned == 10 * len(corpus.queries)
        assert found >= 0.95
        assert index.exact_fallbacks == 0
    finally:
        index.close()


def test_plain_hnsw_then_filter_loses_the_selective_results(corpus: Corpus) -> None:
    """The failure the iterative scan exists for: without it, a 1% filter leaves almost nothing of ef_search."""
    where = MetadataFilter.parse({"bucket": {"$gte": 99}}).and_(SNAPSHOT)
    index = PgVectorIndex(corpus.url, corpus.collection, DIM, iterative_scan="off", exact_fallback=False)
    try:
        found, returned = corpus.recall(index, where)
        assert returned < 5 * len(corpus.queries)
        assert found < 0.5
    finally:
        index.close()


def test_equality_filters_and_the_exact_fallback(corpus: Corpus) -> None:
    """An equality filter may be answered from the GIN index exactly; a scan cut short is completed exactly."""
    where = MetadataFilter.parse({"team": "team-7"}).and_(SNAPSHOT)
    index = PgVectorIndex(corpus.url, corpus.collection, DIM)
    short = PgVectorIndex(corpus.url, corpus.collection, DIM, max_scan_tuples=20)
    try:
        assert corpus.recall(index, where)[0] >= 0.95
        found, returned = corpus.recall(short, MetadataFilter.parse({"bucket": {"$gte": 99}}).and_(SNAPSHOT))
        assert (found, returned) == (1.0, 10 * len(corpus.queries))
        assert short.exact_fallbacks > 0
    finally:
        index.close()
        short.close()


def test_replicas_see_each_others_commits(pgvector_url: str, collection: str) -> None:
    rng = np.random.default_rng(1)
    matrix = clustered(rng, rng.standard_normal((5, DIM)), 40)
    first = PgVectorIndex(pgvector_url, collection, DIM)
    second = PgVectorIndex(f"postgresql+psycopg{pgvector_url.removeprefix('postgresql')}", collection, DIM)
    words_a, words_b = PgKeywordIndex(pgvector_url, collection), PgKeywordIndex(pgvector_url, collection)
    try:
        first.upsert([f"a{i}" for i in range(20)], matrix[:20], [{"by": "first"}] * 20)
        words_a.upsert(["a"], ["written by the first replica"], [{}])
        assert len(second) == 0 and words_b.search("replica", 5) == []
        first.commit()
        words_a.commit()
        assert len(second) == 20 and [c for c, _ in words_b.search("replica", 5)] == ["a"]

        second.upsert([f"b{i}" for i in range(20)], matrix[20:], [{"by": "second"}] * 20)
        second.patch_metadata(["a0"], {"by": "second"})
        second.delete(["a1"])
        words_b.upsert(["b"], ["the second replica answers"], [{}])
        assert len(first) == 20  # not yet
        second.commit()
        words_b.commit()
        first.reload()
        assert len(first) == 39
        by_second = {c for c, _ in first.search(matrix[0], 50, MetadataFilter.parse({"by": "second"}))}
        assert by_second == {"a0"} | {f"b{i}" for i in range(20)}
        assert {c for c, _ in words_a.search("second replica", 5)} == {"a", "b"}

        # Two replicas writing overlapping ids at once: row locks in id order, so no deadlock; the last commit wins.
        errors: list[BaseException] = []

        def write(index: PgVectorIndex, tag: str) -> None:
            try:
                for _ in range(5):
                    ids = [f"a{i}" for i in range(2, 20)]
                    index.upsert(ids, matrix[2:20], [{"by": tag}] * len(ids))
                    index.patch_metadata(ids[::-1], {"round": tag})
                    index.commit()
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=write, args=(index, tag)) for index, tag in ((first, "x"), (second, "y"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        tags = [
            {c for c, _ in first.search(matrix[0], 50, MetadataFilter.parse({"by": tag, "round": tag}))}
            for tag in ("x", "y")
        ]
        assert len(tags[0]) + len(tags[1]) == 18
    finally:
        for index in (first, second, words_a, words_b):
            index.close()


HOSTILE_FIELDS = [
    "x'); DROP TABLE sentinel; --",
    'a" = 1 OR "1" = "1',
    "metadata",
    "id",
    "snapshot_from' OR 1=1 --",
    "%s",
    "{}",
    "$.a ? (@ > 1)",
    "\\",
    "\x00nul",
]
HOSTILE_VALUES: list[MetadataValue] = [
    "'; DROP TABLE sentinel; --",
    "' OR '1'='1",
    '{"a": 1}',
    "%(k)s",
    "\x00",
    "a\x00b",
    float("inf"),
    -(2**63),
    2**70,
    True,
]


def test_hostile_filters_ids_and_queries_are_data(pgvector_url: str, collection: str) -> None:
    conninfo = postgres_conninfo(pgvector_url)
    sentinel = f"sentinel_{collection}"
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(sentinel)))
        connection.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier(sentinel)))
    fields = [f for f in HOSTILE_FIELDS if "\x00" not in f]
    ids = [f"'; DELETE FROM llmops_vectors_{collection}; --", 'id" OR 1=1', "%s", "plain"]
    metadata: list[dict[str, MetadataValue]] = [{field: f"v{i}" for field in fields} for i in range(len(ids))]
    metadata[0]["score"] = 1
    vectors = clustered(np.random.default_rng(2), np.ones((1, DIM)), len(ids))
    index = PgVectorIndex(pgvector_url, collection, DIM)
    words = PgKeywordIndex(pgvector_url, collection)
    try:
        index.upsert(ids, vectors, metadata)
        words.upsert(ids, ["'; DROP TABLE sentinel; -- apple", "apple ' OR 1=1", "%s %(x)s apple", "apple"], metadata)
        index.commit()
        words.commit()
        for field in HOSTILE_FIELDS:
            for value in HOSTILE_VALUES:
                for op in ("$eq", "$ne", "$gt", "$lte", "$in"):
                    if op in ("$gt", "$lte") and isinstance(value, bool):
                        continue
                    spec = {field: {op: [value] if op == "$in" else value}}
                    where = MetadataFilter.parse(spec)
                    expected = {i for i, meta in zip(ids, metadata, strict=True) if where.matches(meta)}
                    assert {c for c, _ in index.search(vectors[0], 10, where)} == expected, spec
                    assert {c for c, _ in words.search("apple", 10, where)} == expected, spec
        for position, field in enumerate(fields):  # a hostile field name finds the chunk that has it
            assert {c for c, _ in index.search(vectors[0], 10, MetadataFilter.parse({field: "v3"}))} == {"plain"}
            assert position >= 0
        for query in ["'; DROP TABLE sentinel; --", "apple' | 'x", "!apple & !", "apple:*", "$1 %s %%", "\\'"]:
            assert isinstance(words.search(query, 10), list)
        assert {c for c, _ in words.search("apple", 10)} == set(ids)
        assert len(index) == len(words) == len(ids)
        assert np.allclose(index.vectors(ids), vectors, atol=1e-6)
        with psycopg.connect(conninfo, autocommit=True) as connection:
            row = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(sentinel))).fetchone()
            assert row == (1,)
            connection.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(sentinel)))
    finally:
        index.close()
        words.close()


def test_filters_compile_to_bound_parameters_only() -> None:
    expression, params = compile_filter(
        MetadataFilter.parse({"x'--": {"$gt": "'; DROP"}, "snapshot_until": {"$in": [1, 2.5, "3"]}, "n": 1})
    )
    text = expression.as_string(None)
    assert "DROP" not in text and "x'--" not in text
    assert "x'--" in params and "'; DROP" in params


def test_a_failed_write_keeps_the_earlier_uncommitted_writes(pgvector_url: str, collection: str) -> None:
    writer = PgKeywordIndex(pgvector_url, collection)
    reader = PgKeywordIndex(pgvector_url, collection)
    try:
        writer.upsert(["kept"], ["written before the failure"], [{}])
        huge = " ".join(f"w{i}x" for i in range(200_000))  # a tsvector over PostgreSQL's 1 MB limit
        with pytest.raises(psycopg.Error):
            writer.upsert(["huge"], [huge], [{}])
        writer.upsert(["after"], ["written after the failure"], [{}])
        assert {c for c, _ in writer.search("written", 5)} == {"kept", "after"}
        assert reader.search("written", 5) == []
        writer.commit()
        assert {c for c, _ in reader.search("written", 5)} == {"kept", "after"}
    finally:
        writer.close()
        reader.close()


def test_close_rolls_back_what_was_not_committed(pgvector_url: str, collection: str) -> None:
    rng = np.random.default_rng(3)
    index = PgVectorIndex(pgvector_url, collection, DIM)
    index.upsert(["a"], clustered(rng, np.ones((1, DIM)), 1), [{}])
    index.commit()
    index.upsert(["b"], clustered(rng, np.ones((1, DIM)), 1), [{}])
    index.close()
    with pytest.raises(RuntimeError):
        index.search(np.ones(DIM, dtype=np.float32), 1)
    reopened = PgVectorIndex(pgvector_url, collection, DIM)
    try:
        assert len(reopened) == 1
    finally:
        reopened.close()


def test_bad_collections_and_dimensions_are_refused(pgvector_url: str, collection: str) -> None:
    for name in ["", "Upper", "with space", "x" * 41, 'a"; DROP TABLE x; --', "1starts_with_digit"]:
        with pytest.raises(ValueError):
            PgVectorIndex(pgvector_url, name, DIM)
        with pytest.raises(ValueError):
            PgKeywordIndex(pgvector_url, name)
    PgVectorIndex(pgvector_url, collection, DIM).close()
    with pytest.raises(ValueError, match="dimensions"):
        PgVectorIndex(pgvector_url, collection, DIM + 1)
    with pytest.raises(ValueError):
        PgVectorIndex(pgvector_url, collection, 0)


def test_keyword_queries_join_their_terms_with_or(pgvector_url: str, collection: str) -> None:
    any_terms = PgKeywordIndex(pgvector_url, collection)
    all_terms = PgKeywordIndex(pgvector_url, collection, match="all")
    try:
        any_terms.upsert(
            ["refunds", "both"],
            ["Refunds are paid within 14 days.", "How long refunds take depends on the bank."],
            [{}, {}],
        )
        any_terms.commit()
        found = [c for c, _ in any_terms.search("how long do refunds take", 10)]
        assert found == ["both", "refunds"]  # every chunk with a term, the one with more terms first
        assert [c for c, _ in all_terms.search("how long do refunds take", 10)] == ["both"]
        assert fold("Crème brûlée ﬁne") == "Creme brulee fine"
        assert {c for c, _ in any_terms.search("REFUNDED", 10)} == {"refunds", "both"}  # stems, any case
    finally:
        any_terms.close()
        all_terms.close()
