"""The embedded vector index: an hnswlib HNSW graph on local disk, with deletes and filtered search.

hnswlib was measured against usearch on 100k×384 clustered vectors (2 cores): 0.19 ms against 0.67 ms p50 at
recall@10 ≈ 0.99, and half the build time; its cost is a compile at install (about a minute, no wheel here).

Filtered search. A metadata filter becomes a boolean mask over rows (`llmops.knowledge._columns`), cached until the
next write, and the search takes the cheaper of two exact-enough routes:

* the mask keeps most rows (the snapshot range the knowledge base puts on every query keeps nearly all): an HNSW
  search for about ``k / fraction`` neighbours, the ones outside the mask dropped, widened ×4 until ``k`` remain;
* the mask is selective: an exact matrix-vector product over the rows it keeps, so a filter that keeps 1% of the
  rows still returns its true ``k`` nearest (plain HNSW with a post-filter would return almost nothing).

The crossover is a cost model: exact costs about a sixteenth of a graph step per kept row (``_EXACT_COST``).
Similarities are hnswlib's inner products (equal to `ExactVectorIndex`'s within float32 rounding).

Persistence. `commit` writes a new generation: the graph (hnswlib's file), the rows (vectors and metadata columns,
``.npz``) and their ids (JSON) under fresh names, fsynced, and only then ``MANIFEST.json`` naming them, replaced
atomically. A crash at any point leaves the previous manifest and every file it names intact. The previous generation
is kept (a reader in another process may be loading it); older and orphaned files are removed by the next commit.
One process writes an index at a time (the knowledge base holds its ingest lock); any number read it.

Threads. Searches run concurrently (hnswlib releases the GIL); writes wait for them and hold new ones back.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt
import orjson

from llmops.knowledge._columns import Mask
from llmops.knowledge._filters import MetadataFilter, MetadataValue
from llmops.knowledge._vector_table import ReadWriteLock, VectorTable

__all__ = ["HnswVectorIndex"]

MANIFEST = "MANIFEST.json"
_FORMAT = 1
_EXACT_COST = 16  # an exact row costs ~1/16 of an HNSW candidate (gather + dot product vs graph hops), measured
_OVERFETCH = 1.3  # neighbours fetched per expected match, before widening
_ORPHAN_AGE_S = 600.0  # unreferenced files younger than this may belong to a commit still being written
_GENERATION_FILE = re.compile(r"^(?:graph|rows|ids)-(\d{8})-[0-9a-f]{8}\.(?:bin|npz|json)$")


class HnswVectorIndex:
    """Approximate cosine search over unit vectors with metadata filters, persisted under ``path``.

    >>> import tempfile
    >>> index = HnswVectorIndex(tempfile.mkdtemp(), 2)
    >>> index.upsert(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32), [{"lang": "en"}, {"lang": "de"}])
    >>> index.search(np.array([1, 0], dtype=np.float32), 1, MetadataFilter.parse({"lang": "de"}))
    [('b', 0.0)]
    >>> index.commit()
    >>> len(HnswVectorIndex(index.path, 2))
    2
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dimensions: int,
        *,
        m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 64,
        threads: int = -1,
    ) -> None:
        """``m``, ``ef_construction`` and ``ef_search`` are hnswlib's; ``threads`` is for inserts (-1: every core)."""
        self.path = Path(path)
        self.dimensions = dimensions
        self._m, self._ef_construction, self._ef_search, self._threads = m, ef_construction, ef_search, threads
        self._lock = ReadWriteLock()
        self._write_mutex = threading.Lock()  # serialises writes, commits and reloads; searches only take `_lock`
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        self._generation = 0
        self._files: list[str] = []
        self._previous: list[str] = []
        self._dirty = False
        self._table, self._graph = VectorTable(dimensions), self._new_graph(0)
        manifest = self._read_manifest()
        if manifest is not None:
            self._install(manifest)

    # Writes

    def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        metadata: Sequence[Mapping[str, MetadataValue]],
    ) -> None:
        matrix, checked = self._table.check(ids, vectors, metadata)
        if not ids:
            return
        with self._write_mutex, self._lock.writing():
            self._check_open()
            rows = self._table.upsert(ids, matrix, checked)
            if self._graph.get_max_elements() < self._table.capacity:
                self._graph.resize_index(self._table.capacity)
            self._graph.add_items(matrix, np.asarray(rows, dtype=np.int64), num_threads=self._threads)
            self._dirty = True

    def delete(self, ids: Sequence[str]) -> None:
        with self._write_mutex, self._lock.writing():
            self._check_open()
            for row in self._table.delete(ids):
                self._graph.mark_deleted(row)
                self._dirty = True

    def patch_metadata(self, ids: Sequence[str], patch: Mapping[str, MetadataValue]) -> None:
        with self._write_mutex, self._lock.writing():
            self._check_open()
            self._table.patch(ids, patch)
            self._dirty = True

    # Reads

    def search(
        self, query: npt.NDArray[np.float32], k: int, where: MetadataFilter | None = None
    ) -> list[tuple[str, float]]:
        with self._lock.reading():
            self._check_open()
            table = self._table
            q = table.check_query(query)
            live = len(table)
            if k <= 0 or not live:
                return []
            mask = table.mask(where)
            if mask is not None and mask.count == live:
                mask = None  # keeps every live row: a plain search
            if mask is None:
                return self._approximate(q, k, None, live)
            if not mask.count:
                return []
            expected = k * live / mask.count * _OVERFETCH
            if mask.count <= _EXACT_COST * expected:
                return table.exact(q, k, mask)
            return self._approximate(q, k, mask, live)

    def _approximate(self, q: npt.NDArray[np.float32], k: int, mask: Mask | None, live: int) -> list[tuple[str, float]]:
        """HNSW neighbours, those outside ``mask`` dropped; fetches ×4 more until ``k`` remain, or turns exact."""
        fetch = k if mask is None else math.ceil(k * live / mask.count * _OVERFETCH) + 4
        while True:
            fetch = min(fetch, live)
            try:
                labels, distances = self._graph.knn_query(q, k=fetch, num_threads=1)
            except RuntimeError:  # fewer reachable neighbours than asked (many deletes): exact is always right
                return self._table.exact(q, k, mask)
            rows = labels[0].astype(np.intp)
            similarities = 1.0 - distances[0]  # hnswlib's "ip" distance is 1 - dot, already sorted
            if mask is not None:
                keep = mask.rows[rows]
                rows, similarities = rows[keep], similarities[keep]
            if len(rows) >= k or fetch >= live:
                ids = self._table.ids
                return [(ids[r], s) for r, s in zip(rows[:k].tolist(), similarities[:k].tolist(), strict=True)]
            if mask is not None and mask.count <= _EXACT_COST * fetch * 4:
                return self._table.exact(q, k, mask)
            fetch *= 4

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._lock.reading():
            self._check_open()
            return self._table.vectors(ids)

    def __len__(self) -> int:
        return len(self._table)

    # Persistence

    def commit(self) -> None:
        """Write a new generation and switch ``MANIFEST.json`` to it; nothing happens when nothing changed."""
        with self._write_mutex, self._lock.reading():
            self._check_open()
            if not self._dirty and self._generation:
                return
            generation = self._generation + 1
            tag = f"{generation:08d}-{uuid.uuid4().hex[:8]}"
            files = {"graph": f"graph-{tag}.bin", "rows": f"rows-{tag}.npz", "ids": f"ids-{tag}.json"}
            self._graph.save_index(str(self.path / files["graph"]))
            _fsync(self.path / files["graph"])
            with open(self.path / files["rows"], "wb") as handle:
                arrays: dict[str, Any] = self._table.arrays()
                np.savez(handle, **arrays)
                _flush(handle)
            with open(self.path / files["ids"], "wb") as handle:
                handle.write(orjson.dumps(self._table.header()))
                _flush(handle)
            manifest = {
                "format": _FORMAT,
                "generation": generation,
                "dimensions": self.dimensions,
                "count": len(self._table),
                "files": files,
                "previous": self._files,
            }
            temporary = self.path / f"{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(orjson.dumps(manifest))
                _flush(handle)
            os.replace(temporary, self.path / MANIFEST)
            _fsync_directory(self.path)
            self._previous, self._files = self._files, list(files.values())
            self._generation, self._dirty = generation, False
            self._remove_unreferenced()

    def reload(self) -> None:
        """Switch to the newest committed generation (another process's commit). Uncommitted writes here are dropped."""
        manifest = self._read_manifest()
        if manifest is None or list(manifest["files"].values()) == self._files:
            return
        with self._write_mutex:
            self._check_open()
            self._install(manifest)

    def close(self) -> None:
        with self._write_mutex, self._lock.writing():
            self._closed = True
            self._table, self._graph = VectorTable(self.dimensions), self._new_graph(0)

    def _install(self, manifest: dict[str, Any]) -> None:
        """Load the generation ``manifest`` names (retrying when a concurrent commit removed it under us) and swap."""
        for _attempt in range(5):
            try:
                table, graph = self._load(manifest)
                break
            except FileNotFoundError:
                time.sleep(0.05)
                newer = self._read_manifest()
                if newer is None:
                    raise
                manifest = newer
        else:
            table, graph = self._load(manifest)
        with self._lock.writing():
            self._table, self._graph = table, graph
            self._generation = int(manifest["generation"])
            self._files = list(manifest["files"].values())
            self._previous = list(manifest.get("previous", []))
            self._dirty = False

    def _load(self, manifest: dict[str, Any]) -> tuple[VectorTable, Any]:
        if manifest.get("format") != _FORMAT:
            raise ValueError(
                f"{self.path / MANIFEST} has format {manifest.get('format')!r}; this version reads {_FORMAT}"
            )
        if manifest["dimensions"] != self.dimensions:
            raise ValueError(
                f"the index at {self.path} holds {manifest['dimensions']}-dimensional vectors, not {self.dimensions}"
            )
        files = manifest["files"]
        header = orjson.loads((self.path / files["ids"]).read_bytes())
        with np.load(self.path / files["rows"], allow_pickle=False) as arrays:
            table = VectorTable.restore(header, {name: arrays[name] for name in arrays.files})
        graph = hnswlib.Index(space="ip", dim=self.dimensions)
        graph.load_index(str(self.path / files["graph"]), max_elements=table.capacity)
        graph.set_ef(self._ef_search)
        return table, graph

    def _new_graph(self, capacity: int) -> Any:
        graph = hnswlib.Index(space="ip", dim=self.dimensions)
        graph.init_index(max_elements=max(capacity, 1024), M=self._m, ef_construction=self._ef_construction)
        graph.set_ef(self._ef_search)
        return graph

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            manifest: dict[str, Any] = orjson.loads((self.path / MANIFEST).read_bytes())
        except FileNotFoundError:
            return None
        return manifest

    def _remove_unreferenced(self) -> None:
        """Remove generations older than the previous one, and orphans (a crashed commit's files) once they are old."""
        keep = {MANIFEST, *self._files, *self._previous}
        cutoff = time.time() - _ORPHAN_AGE_S
        for entry in self.path.iterdir():
            named = _GENERATION_FILE.match(entry.name)
            if entry.name in keep or not (named or entry.name.startswith(f"{MANIFEST}.")):
                continue
            try:
                if (named and int(named[1]) < self._generation - 1) or entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except FileNotFoundError:
                continue

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the vector index at {self.path} is closed")


def _flush(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
