"""The contract every `VectorIndex` and `KeywordIndex` backend passes (backends are registered in conftest.py).

Filters are held to `MetadataFilter.matches`, similarities to a numpy brute force, recall under selective filters to
the exact filtered answer, durability to a writer killed with SIGKILL in the middle of its commits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmops.knowledge._filters import MetadataFilter, MetadataValue
from llmops.knowledge._index import ExactVectorIndex, KeywordIndex, VectorIndex
from tests.contract.conftest import Backend, child_environment

DIM = 16
LIVE = 2**31 - 1


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray[Any, np.dtype[np.float32]]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray[Any, np.dtype[np.float32]] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 30) -> np.ndarray[Any, np.dtype[np.float32]]:
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray[Any, np.dtype[np.float32]] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def brute(matrix: np.ndarray[Any, Any], ids: Sequence[str], query: np.ndarray[Any, Any], k: int) -> list[str]:
    scores = matrix @ query
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


# A table of chunks whose metadata exercises every type rule of `Condition.matches`: absent fields, mixed types in
# one field (1, 1.0, "1", True), floats next to integers, unicode and empty strings, a dotted field name.
ROWS: list[tuple[str, dict[str, MetadataValue]]] = [
    ("r0", {"lang": "en", "page": 1, "score": 0.1, "flag": True, "tag": 1, "title": "apple", "year": 2019}),
    ("r1", {"lang": "de", "page": 2, "score": 0.5, "flag": False, "tag": "1", "title": "Über", "year": 2021}),
    ("r2", {"lang": "fr", "page": 2.5, "score": 1, "flag": 1, "tag": True, "title": "zebra", "year": "2020"}),
    ("r3", {"page": 7, "score": 0.9, "tag": 1.0, "title": "", "a.b": "x"}),
    ("r4", {"lang": "en", "page": 10, "flag": False, "tag": 0, "title": "Zulu", "year": 2020}),
    ("r5", {"lang": "EN", "score": -3, "flag": True, "title": "banana split", "a.b": "y"}),
    ("r6", {"lang": "en", "page": 3, "score": 0.5, "tag": False, "title": "b", "year": 2024.5}),
    ("r7", {}),
]
for _position, (_chunk, _meta) in enumerate(ROWS):
    _meta.update(
        snapshot_from=1 + _position % 3, snapshot_until=LIVE if _position % 4 else 3, document_id=f"d{_position}"
    )

FILTERS: list[dict[str, Any]] = [
    {"lang": "en"},
    {"lang": {"$ne": "en"}},
    {"lang": {"$in": ["en", "fr"]}},
    {"lang": {"$in": []}},
    {"page": {"$gte": 2, "$lt": 7}},
    {"page": {"$gt": 2.5}},
    {"page": {"$lte": 2.5}},
    {"page": 2.5},
    {"page": 2},
    {"page": {"$in": [1, 2.5, "3"]}},
    {"page": {"$ne": 2}},
    {"score": {"$lte": 0.5}},
    {"score": {"$gt": 0}},
    {"score": 1.0},
    {"flag": True},
    {"flag": 1},
    {"flag": {"$ne": True}},
    {"flag": {"$in": [False]}},
    {"tag": 1},
    {"tag": "1"},
    {"tag": True},
    {"tag": 0},
    {"tag": {"$in": [True, "1"]}},
    {"tag": {"$ne": 1}},
    {"title": {"$gte": "b"}},
    {"title": {"$lt": "Z"}},
    {"title": {"$gt": ""}},
    {"title": ""},
    {"title": "Über"},
    {"title": {"$in": ["banana split", "zebra", "nope"]}},
    {"a.b": "x"},
    {"a.b": {"$ne": "x"}},
    {"missing": {"$ne": 3}},
    {"missing": 3},
    {"missing": {"$gt": 0}},
    {"year": {"$gte": 2020}},
    {"year": {"$gt": "2019"}},
    {"year": {"$lt": 2024.6}},
    {"snapshot_from": {"$lte": 2}, "snapshot_until": {"$gt": 2}},
    {"snapshot_from": {"$lte": 3}, "snapshot_until": {"$gt": 3}},
    {"lang": "en", "page": {"$lte": 5}, "snapshot_until": {"$gt": 2}},
    {"document_id": {"$in": ["d1", "d3", "d9"]}},
]


def expected_ids(spec: Mapping[str, Any]) -> set[str]:
    where = MetadataFilter.parse(spec)
    return {chunk_id for chunk_id, meta in ROWS if where.matches(meta)}


def snapshot_filter(snapshot: int) -> MetadataFilter:
    return MetadataFilter.parse({"snapshot_from": {"$lte": snapshot}, "snapshot_until": {"$gt": snapshot}})


# --------------------------------------------------------------------------------------------------------------------
# Vector indexes


def test_vector_backend_satisfies_the_protocol(vector_backend: Backend) -> None:
    index = vector_backend.open(DIM)
    assert isinstance(index, VectorIndex)
    assert index.dimensions == DIM


def test_vector_empty_index_and_k_zero(vector_backend: Backend) -> None:
    index: VectorIndex = vector_backend.open(DIM)
    query = unit(np.random.default_rng(0), 1)[0]
    assert len(index) == 0
    assert index.search(query, 10) == []
    assert index.search(query, 10, MetadataFilter.parse({"lang": "en"})) == []
    index.upsert(["a"], unit(np.random.default_rng(1), 1), [{"lang": "en"}])
    assert index.search(query, 0) == []
    assert index.search(query, 0, MetadataFilter.parse({"lang": "en"})) == []
    index.delete(["a"])
    assert index.search(query, 5) == []


def test_vector_search_matches_brute_force(vector_backend: Backend) -> None:
    rng = np.random.default_rng(7)
    index: VectorIndex = vector_backend.open(DIM)
    matrix = unit(rng, 600)
    ids = [f"c{i}" for i in range(600)]
    index.upsert(ids, matrix, [{"n": i} for i in range(600)])
    assert len(index) == 600
    hits = 0
    for query in unit(rng, 20):
        found = index.search(query, 10)
        assert len(found) == 10
        similarities = [score for _, score in found]
        assert similarities == sorted(similarities, reverse=True)
        for chunk_id, score in found:  # similarities are the true cosine of the returned chunk
            assert score == pytest.approx(float(matrix[int(chunk_id[1:])] @ query), abs=1e-5)
        hits += len({chunk_id for chunk_id, _ in found} & set(brute(matrix, ids, query, 10)))
    assert hits / 200 >= 0.95
    best = index.search(matrix[42], 1)
    assert best[0][0] == "c42" and best[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [c for c, _ in index.search(matrix[3], 1000)][:1] == ["c3"]
    assert len(index.search(matrix[3], 1000)) == 600


def test_vector_upsert_replaces_vector_and_metadata(vector_backend: Backend) -> None:
    rng = np.random.default_rng(3)
    index: VectorIndex = vector_backend.open(DIM)
    matrix = unit(rng, 50)
    index.upsert([f"c{i}" for i in range(50)], matrix, [{"lang": "en"} for _ in range(50)])
    replacement = unit(rng, 1)
    index.upsert(["c7"], replacement, [{"lang": "de"}])
    assert len(index) == 50
    top = index.search(replacement[0], 1)
    assert top[0][0] == "c7" and top[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [c for c, _ in index.search(matrix[7], 50, MetadataFilter.parse({"lang": "de"}))] == ["c7"]
    assert "c7" not in {c for c, _ in index.search(matrix[7], 50, MetadataFilter.parse({"lang": "en"}))}
    np.testing.assert_allclose(index.vectors(["c7", "c8"]), np.stack([replacement[0], matrix[8]]), atol=1e-6)
    with pytest.raises(KeyError):
        index.vectors(["nope"])


def test_vector_delete(vector_backend: Backend) -> None:
    rng = np.random.default_rng(4)
    index: VectorIndex = vector_backend.open(DIM)
    matrix = unit(rng, 100)
    ids = [f"c{i}" for i in range(100)]
    index.upsert(ids, matrix, [{"even": i % 2 == 0} for i in range(100)])
    index.delete([f"c{i}" for i in range(0, 100, 2)] + ["unknown"])
    assert len(index) == 50
    for i in (0, 2, 50):
        assert f"c{i}" not in {c for c, _ in index.search(matrix[i], 100)}
    assert {c for c, _ in index.search(matrix[0], 100)} == {f"c{i}" for i in range(1, 100, 2)}
    assert index.search(matrix[0], 10, MetadataFilter.parse({"even": True})) == []
    index.upsert(["c0"], matrix[:1], [{"even": True}])  # a deleted id comes back
    assert index.search(matrix[0], 1)[0][0] == "c0"
    assert len(index) == 51
    fresh = unit(rng, 60)
    index.upsert([f"n{i}" for i in range(60)], fresh, [{} for _ in range(60)])  # reuses freed places
    assert len(index) == 111
    assert index.search(fresh[59], 1)[0][0] == "n59"
    assert index.search(matrix[1], 1)[0][0] == "c1"


def test_vector_patch_metadata(vector_backend: Backend) -> None:
    rng = np.random.default_rng(5)
    index: VectorIndex = vector_backend.open(DIM)
    matrix = unit(rng, 20)
    metadata: list[dict[str, MetadataValue]] = [
        {"lang": "en", "snapshot_from": 1, "snapshot_until": LIVE} for _ in range(20)
    ]
    index.upsert([f"c{i}" for i in range(20)], matrix, metadata)
    assert len(index.search(matrix[0], 20, snapshot_filter(5))) == 20  # (a cached answer must not outlive a write)
    index.patch_metadata(["c1", "c2", "unknown"], {"snapshot_until": 5, "reviewed": True})
    closed = {c for c, _ in index.search(matrix[0], 20, MetadataFilter.parse({"snapshot_until": {"$lte": 5}}))}
    assert closed == {"c1", "c2"}
    assert {c for c, _ in index.search(matrix[0], 20, MetadataFilter.parse({"reviewed": True}))} == {"c1", "c2"}
    kept = {c for c, _ in index.search(matrix[0], 20, MetadataFilter.parse({"lang": "en"}))}
    assert kept == {f"c{i}" for i in range(20)}  # other fields stay
    assert len(index.search(matrix[0], 20, snapshot_filter(4))) == 20
    assert len(index.search(matrix[0], 20, snapshot_filter(5))) == 18


@pytest.mark.parametrize("spec", FILTERS, ids=[str(spec) for spec in FILTERS])
def test_vector_filters_follow_the_reference_semantics(vector_backend: Backend, spec: dict[str, Any]) -> None:
    rng = np.random.default_rng(11)
    index: VectorIndex = vector_backend.open(DIM)
    index.upsert([c for c, _ in ROWS], unit(rng, len(ROWS)), [m for _, m in ROWS])
    found = index.search(unit(rng, 1)[0], 100, MetadataFilter.parse(spec))
    assert {c for c, _ in found} == expected_ids(spec)
    assert len(found) == len({c for c, _ in found})


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.3, 0.6, 0.97])
def test_vector_filtered_recall_against_exact(vector_backend: Backend, fraction: float) -> None:
    """A filter keeping 1% of the chunks still returns its k true nearest neighbours (no post-filter collapse)."""
    rng = np.random.default_rng(int(fraction * 1000))
    n, dim, k = 3000, 32, 10
    matrix = clustered(rng, n, dim)
    keep = rng.random(n) < fraction
    ids = [f"c{i}" for i in range(n)]
    metadata = [{"group": "in" if keep[i] else "out", "snapshot_from": 1, "snapshot_until": LIVE} for i in range(n)]
    index: VectorIndex = vector_backend.open(dim)
    reference = ExactVectorIndex(dim)
    for start in range(0, n, 500):
        index.upsert(ids[start : start + 500], matrix[start : start + 500], metadata[start : start + 500])
    reference.upsert(ids, matrix, metadata)
    where = MetadataFilter.parse({"group": "in"}).and_(snapshot_filter(1))
    matched = 0
    queries = clustered(rng, 40, dim)
    for query in queries:
        truth = reference.search(query, k, where)
        found = index.search(query, k, where)
        assert len(found) == len(truth) == min(k, int(keep.sum()))
        assert all(keep[int(c[1:])] for c, _ in found)
        matched += len({c for c, _ in found} & {c for c, _ in truth})
    assert matched / (len(queries) * min(k, int(keep.sum()))) >= 0.95


def test_vector_rejects_bad_input(vector_backend: Backend) -> None:
    index: VectorIndex = vector_backend.open(DIM)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        index.upsert(["a"], unit(rng, 1, DIM + 1), [{}])
    with pytest.raises(ValueError):
        index.upsert(["a", "b"], unit(rng, 1), [{}, {}])
    with pytest.raises((TypeError, ValueError)):
        index.upsert(["a"], unit(rng, 1), [{"x": [1, 2]}])  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        index.search(unit(rng, 1, DIM + 1)[0], 3)
    assert len(index) == 0


def test_vector_concurrent_searches_during_writes(vector_backend: Backend) -> None:
    rng = np.random.default_rng(9)
    index: VectorIndex = vector_backend.open(DIM)
    matrix = unit(rng, 3000)
    index.upsert([f"c{i}" for i in range(500)], matrix[:500], [{"g": i % 3} for i in range(500)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        where = MetadataFilter.parse({"g": {"$in": [0, 1]}})
        try:
            while not stop.is_set():
                for chunk_id, _ in index.search(matrix[0], 10, where):
                    assert int(chunk_id[1:]) % 3 in (0, 1)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for start in range(500, 3000, 250):
            index.upsert(
                [f"c{i}" for i in range(start, start + 250)],
                matrix[start : start + 250],
                [{"g": i % 3} for i in range(start, start + 250)],
            )
            index.delete([f"c{start - 100}"])
            index.patch_metadata([f"c{start - 1}"], {"g": 2})
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert len(index) == 3000 - 10


# Durability (persistent backends only)


def _persistent(backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip(f"{backend.name} lives in one process: nothing to commit or reload")


def test_vector_commit_is_seen_by_a_second_instance(vector_backend: Backend) -> None:
    _persistent(vector_backend)
    rng = np.random.default_rng(12)
    writer: VectorIndex = vector_backend.open(DIM)
    matrix = unit(rng, 200)
    writer.upsert([f"c{i}" for i in range(200)], matrix, [{"n": i} for i in range(200)])
    assert len(vector_backend.open(DIM)) == 0  # uncommitted writes stay invisible to other instances
    writer.commit()
    reader: VectorIndex = vector_backend.open(DIM)
    assert len(reader) == 200
    assert reader.search(matrix[17], 1)[0][0] == "c17"
    assert {c for c, _ in reader.search(matrix[0], 10, MetadataFilter.parse({"n": {"$lt": 3}}))} == {"c0", "c1", "c2"}
    np.testing.assert_allclose(reader.vectors(["c5"]), matrix[5:6], atol=1e-6)

    writer.delete(["c17"])
    writer.patch_metadata(["c18"], {"n": -1})
    writer.upsert(["new"], matrix[:1], [{"n": 1000}])
    reader.reload()
    assert reader.search(matrix[17], 1)[0][0] == "c17"  # still the committed state
    writer.commit()
    reader.reload()
    assert len(reader) == 200
    assert reader.search(matrix[17], 1)[0][0] != "c17"
    assert [c for c, _ in reader.search(matrix[0], 5, MetadataFilter.parse({"n": {"$lt": 0}}))] == ["c18"]
    assert [c for c, _ in reader.search(matrix[0], 5, MetadataFilter.parse({"n": 1000}))] == ["new"]
    writer.commit()  # nothing new: a no-op that keeps the data
    assert len(vector_backend.open(DIM)) == 200


def _crash_loop(backend: Backend, kind: str, kills: int) -> None:
    """A child writes batches of 50 and commits each; it is SIGKILLed at random moments, mostly inside a commit."""
    rng = np.random.default_rng(21)
    for attempt in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.contract.crash_writer", kind, backend.name, backend.location, str(attempt)],
            env=child_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        line = child.stdout.readline()  # "ready" once it has opened the index
        assert line.strip() == "ready", (line, child.stderr.read() if child.stderr else "")
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        index = backend.open(*((DIM,) if kind == "vector" else ()))
        count = len(index)
        assert count % 50 == 0, f"a commit was torn: {count} chunks"
        if kind == "vector" and count:
            found = index.search(unit(np.random.default_rng(0), 1)[0], count + 10)
            assert len(found) == count
        index.close()


def test_vector_commit_survives_kill_9(vector_backend: Backend) -> None:
    _persistent(vector_backend)
    _crash_loop(vector_backend, "vector", kills=6)
    location = Path(vector_backend.location)
    if location.is_dir():  # leftovers of a torn write next to the committed files never stop an open
        (location / "MANIFEST.json.deadbeef.tmp").write_bytes(b'{"format": 1, "gener')
        (location / "graph-99999999-deadbeef.bin").write_bytes(b"\x00" * 10)
    index: VectorIndex = vector_backend.open(DIM)
    count = len(index)
    assert count % 50 == 0
    index.upsert(["after"], unit(np.random.default_rng(1), 1), [{}])
    index.commit()
    assert len(vector_backend.open(DIM)) == count + 1


# --------------------------------------------------------------------------------------------------------------------
# Keyword indexes


TEXTS = {
    "run": "We run the service every day.",
    "running": "Running a marathon takes training.",
    "apple3": "apple apple apple pie",
    "apple1": "an apple and a banana and a cherry and more fruit in a long sentence about fruit",
    "cherry": "cherry pie",
    "unicode": "Café naïve résumé — 東京 über",
    "code": "def f(x): return x[0] + y['k']",
}


def keyword_index(backend: Backend, texts: Mapping[str, str] = TEXTS) -> KeywordIndex:
    index: KeywordIndex = backend.open()
    index.upsert(list(texts), list(texts.values()), [{"n": i} for i in range(len(texts))])
    index.commit()
    return index


def test_keyword_backend_satisfies_the_protocol(keyword_backend: Backend) -> None:
    assert isinstance(keyword_backend.open(), KeywordIndex)


def test_keyword_empty_index_empty_query_and_k_zero(keyword_backend: Backend) -> None:
    empty: KeywordIndex = keyword_backend.open()
    assert len(empty) == 0
    assert empty.search("anything", 10) == []
    assert empty.search("anything", 10, MetadataFilter.parse({"n": 1})) == []
    empty.close()
    index = keyword_index(keyword_backend)
    assert index.search("", 10) == []
    assert index.search("   \n\t ", 10) == []
    assert index.search("!!! ... ---", 10) == []
    assert index.search("apple", 0) == []


def test_keyword_stemming(keyword_backend: Backend) -> None:
    index = keyword_index(keyword_backend)
    assert {c for c, _ in index.search("running", 10)} >= {"run", "running"}
    assert {c for c, _ in index.search("RUNS", 10)} >= {"run", "running"}
    assert "apple1" in {c for c, _ in index.search("apples", 10)}


def test_keyword_bm25_ordering(keyword_backend: Backend) -> None:
    index = keyword_index(keyword_backend)
    found = index.search("apple", 10)
    assert [c for c, _ in found] == ["apple3", "apple1"]  # term frequency and a shorter text both count
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert index.search("cherry pie", 10)[0][0] == "cherry"  # both terms beat one
    assert [c for c, _ in index.search("banana", 10)] == ["apple1"]
    assert len(index.search("pie", 1)) == 1


def test_keyword_upsert_replaces_delete_and_patch(keyword_backend: Backend) -> None:
    index = keyword_index(keyword_backend)
    assert len(index) == len(TEXTS)
    index.upsert(["cherry"], ["plum tart"], [{"n": 99}])
    index.delete(["apple3", "unknown"])
    index.patch_metadata(["run", "unknown"], {"n": -1, "extra": "yes"})
    index.commit()
    assert len(index) == len(TEXTS) - 1
    assert {c for c, _ in index.search("cherry", 10)} == {"apple1"}
    assert [c for c, _ in index.search("plum", 10)] == ["cherry"]
    assert [c for c, _ in index.search("apple", 10)] == ["apple1"]
    assert [c for c, _ in index.search("service", 10, MetadataFilter.parse({"n": -1, "extra": "yes"}))] == ["run"]
    assert index.search("service", 10, MetadataFilter.parse({"n": 0})) == []
    # a patch of a chunk added in the same uncommitted batch
    index.upsert(["fresh"], ["a fresh text"], [{"n": 5}])
    index.patch_metadata(["fresh"], {"n": 6})
    index.commit()
    assert [c for c, _ in index.search("fresh", 10, MetadataFilter.parse({"n": 6}))] == ["fresh"]
    assert index.search("fresh", 10, MetadataFilter.parse({"n": 5})) == []


@pytest.mark.parametrize("spec", FILTERS, ids=[str(spec) for spec in FILTERS])
def test_keyword_filters_follow_the_reference_semantics(keyword_backend: Backend, spec: dict[str, Any]) -> None:
    index: KeywordIndex = keyword_backend.open()
    index.upsert([c for c, _ in ROWS], [f"common words {c}" for c, _ in ROWS], [m for _, m in ROWS])
    index.commit()
    found = index.search("common", 100, MetadataFilter.parse(spec))
    assert {c for c, _ in found} == expected_ids(spec)
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)


def test_keyword_selective_filter_still_returns_k(keyword_backend: Backend) -> None:
    index: KeywordIndex = keyword_backend.open()
    n = 2000
    ids = [f"c{i}" for i in range(n)]
    texts = [f"shared term {'rare' if i % 7 == 0 else ''} filler {i}" for i in range(n)]
    metadata: list[dict[str, MetadataValue]] = [
        {"year": 2000 + i % 100, "group": "in" if i % 100 == 0 else "out", "snapshot_from": 1, "snapshot_until": LIVE}
        for i in range(n)
    ]
    index.upsert(ids, texts, metadata)
    index.commit()
    for spec in ({"group": "in"}, {"year": {"$gte": 2099}}, {"year": 2000}):  # 1% each: term, post-checked range
        where = MetadataFilter.parse(spec).and_(snapshot_filter(1))
        found = index.search("shared", 10, where)
        assert len(found) == 10
        assert all(where.matches(metadata[int(c[1:])]) for c, _ in found)
    both = index.search("shared rare", 5, MetadataFilter.parse({"group": "in"}))
    assert {c for c, _ in both[:3]} == {"c0", "c700", "c1400"}  # matching both terms ranks first inside the filter


HOSTILE = [
    '"unbalanced quote',
    "title:apple",
    "meta.n:[1.5 TO 5]",
    "n:>0",
    "(apple OR",
    ")))(((",
    "apple AND",
    "AND OR NOT",
    "-apple",
    "+",
    "*",
    "apple~2",
    "apple^10",
    "\\",
    "\x00\x01 nul bytes",
    "東京 über Café",
    "🙂 emoji 🙂",
    "'; DROP TABLE chunks; --",
    "a" * 5000,
    ("apple " * 2000)[:10_240],
    " ".join(f"w{i}" for i in range(2000)),
    "x:y:z::",
    "{apple TO banana]",
    "<script>alert(1)</script>",
]


@pytest.mark.parametrize("query", HOSTILE, ids=[repr(q[:24]) for q in HOSTILE])
def test_keyword_any_text_is_a_valid_query(keyword_backend: Backend, query: str) -> None:
    index = keyword_index(keyword_backend)
    found = index.search(query, 5)
    assert isinstance(found, list) and len(found) <= 5
    assert all(isinstance(c, str) and isinstance(s, float) for c, s in found)
    index.search(query, 5, MetadataFilter.parse({"n": {"$gte": 0}}))


def test_keyword_hostile_text_finds_its_words(keyword_backend: Backend) -> None:
    index = keyword_index(keyword_backend)
    assert index.search('"cherry pie" OR (cherry:', 10)[0][0] == "cherry"
    assert [c for c, _ in index.search("cafe", 10)] == ["unicode"]  # accents fold
    assert [c for c, _ in index.search("東京", 10)] == ["unicode"]
    assert index.search("title:nothing-here", 10) == []  # a colon is text, not a field


def test_keyword_commit_is_seen_by_a_second_instance(keyword_backend: Backend) -> None:
    _persistent(keyword_backend)
    writer = keyword_index(keyword_backend)
    reader: KeywordIndex = keyword_backend.open()
    assert len(reader) == len(TEXTS)
    assert [c for c, _ in reader.search("plum", 5)] == []
    writer.upsert(["plum"], ["plum jam"], [{"n": 1}])
    writer.delete(["cherry"])
    reader.reload()
    assert reader.search("plum", 5) == []  # uncommitted
    assert reader.search("cherry", 5)[0][0] == "cherry"
    writer.commit()
    reader.reload()
    assert [c for c, _ in reader.search("plum", 5)] == ["plum"]
    assert "cherry" not in {c for c, _ in reader.search("cherry", 5)}
    writer.close()
    assert [c for c, _ in keyword_backend.open().search("plum", 5)] == ["plum"]


def test_keyword_commit_survives_kill_9(keyword_backend: Backend) -> None:
    _persistent(keyword_backend)
    _crash_loop(keyword_backend, "keyword", kills=6)
    id_log = Path(keyword_backend.location) / "ids.log"
    if id_log.exists():  # a line torn by a crash mid-append is ignored, then cut by the next writer
        with open(id_log, "ab") as handle:
            handle.write(b'[999999, "torn')
    index: KeywordIndex = keyword_backend.open()
    count = len(index)
    index.upsert(["after"], ["after the crash"], [{}])
    index.commit()
    assert len(index) == count + 1
    assert [c for c, _ in index.search("crash", 5)] == ["after"]
    assert [c for c, _ in keyword_backend.open().search("crash", 5)] == ["after"]


def test_keyword_churn_keeps_ids_right(keyword_backend: Backend) -> None:
    """Many rounds of replace and delete (chunk ids come and go as documents change); a fresh instance agrees."""
    index: KeywordIndex = keyword_backend.open()
    for generation in range(6):
        ids = [f"g{generation}-{i}" for i in range(600)]
        index.upsert(ids, [f"word{i % 50} generation{generation}" for i in range(600)], [{"g": generation}] * 600)
        if generation:
            index.delete([f"g{generation - 1}-{i}" for i in range(600)])
        index.commit()
    assert len(index) == 600
    for reader in (index, keyword_backend.open()):
        found = reader.search("word7", 100)
        assert sorted(c for c, _ in found) == sorted(f"g5-{i}" for i in range(7, 600, 50))
        assert reader.search("generation4", 10) == []


def test_keyword_broad_filter_whose_best_hits_all_fail(keyword_backend: Backend) -> None:
    """A range keeping 60% of the chunks, where the 40% it drops hold every best-scoring hit: still k results."""
    index: KeywordIndex = keyword_backend.open()
    n = 2000
    dropped = [i % 5 < 2 for i in range(n)]
    texts = [
        "shared shared shared short" if drop else f"shared and a longer text number {i}"
        for i, drop in enumerate(dropped)
    ]
    metadata: list[dict[str, MetadataValue]] = [{"page": 1 if drop else 10} for drop in dropped]
    index.upsert([f"c{i}" for i in range(n)], texts, metadata)
    index.commit()
    found = index.search("shared", 10, MetadataFilter.parse({"page": {"$gte": 5}}))
    assert len(found) == 10
    assert not any(dropped[int(c[1:])] for c, _ in found)
    unfiltered = index.search("shared", 10)
    assert all(dropped[int(c[1:])] for c, _ in unfiltered)
