"""The embedded keyword index: BM25 over chunk texts with tantivy, metadata filters enforced inside the tantivy query.

Measured on 100k real chunks (bench/retrieval.py): about 0.2–0.3 ms per query with the snapshot filter, several times
bm25s's throughput.

Texts are analysed by one English analyser (simple tokenizer, long tokens dropped, lowercase, ASCII folding, Porter
stemming), used both to index and to read queries: a query is the OR of its analysed terms (BM25-scored), built term
by term, never through tantivy's query parser, so any user text is a valid query (quotes, colons, ``AND``, a lone
``-``, 10 KB of text) and cannot address other fields. Queries keep their first `MAX_QUERY_TERMS` distinct terms.

Metadata. Each chunk's metadata is stored in a JSON field indexed untokenised, so ``$eq``, ``$ne`` and ``$in`` become
term and term-set queries with tantivy's typed JSON terms (strings, 64-bit integers, floats, booleans: ``1`` matches
``1.0`` but neither ``"1"`` nor ``true``, as in `Condition.matches`). Ranges are exact on the numeric *range fields*
declared at creation (by default the knowledge base's ``snapshot_from``, ``snapshot_until`` and ``page``), indexed
also as float64 fast fields: a range that keeps few chunks joins the query, one that keeps most (the snapshot range on
every query) is checked on the hits' fast-field values (see `TantivyKeywordIndex._plan`). Everything else (ranges on
other fields, string ranges, strings of over `_MAX_TERM_BYTES` bytes, field names with a backslash) is checked on the
stored metadata of the hits. Post-checks fetch more hits (×4) until ``k`` pass or the query is exhausted. Filter
clauses score zero, so scores are pure BM25.

Chunk ids. Reading a stored document costs tens of microseconds (its compressed block holds the chunk texts), which
for the 50 candidates of a hybrid query was most of the query. So every chunk also gets a stable integer key in a
fast field, read for all hits at once; the key-to-id map lives in ``ids.log`` beside the index (append-only JSON
lines, fsynced *before* the tantivy commit that references them, so a committed key is always in the log; a torn last
line from a crash is ignored and cut by the next writer; rewritten atomically without dead keys when it has grown to
twice the live chunks).

Visibility follows tantivy's model: searches (in this process too) see the last commit; `commit` publishes writes
atomically and durably (tantivy's own meta file switch: a crash leaves the previous commit). One instance per index
directory writes at a time (tantivy's writer lock); any number read and pick up commits with `reload`.
"""

from __future__ import annotations

import math
import operator
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import tantivy

from llmops.knowledge._columns import check_metadata
from llmops.knowledge._filters import Condition, MetadataFilter, MetadataValue

__all__ = ["DEFAULT_RANGE_FIELDS", "MAX_QUERY_TERMS", "TantivyKeywordIndex"]

DEFAULT_RANGE_FIELDS: tuple[str, ...] = ("snapshot_from", "snapshot_until", "page")
MAX_QUERY_TERMS = 1024
_ANALYZER = "llmops_english"
_MAX_TERM_BYTES = 16_384  # tantivy drops terms over 65,530 bytes when indexing; longer filter values are post-checked
_RANGE_PREFIX = "num_"
_RANGE_OPERATORS = {"$gt", "$gte", "$lt", "$lte"}

Clause = tuple[tantivy.Occur, tantivy.Query]


def _analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


class TantivyKeywordIndex:
    """BM25 search over chunk texts, keyed by chunk id, with metadata filters; on disk at ``path`` or in memory (None).

    >>> index = TantivyKeywordIndex(None)
    >>> index.upsert(["a", "b"], ["Running the tests", "A quiet day"], [{"lang": "en"}, {"lang": "en"}])
    >>> index.commit()
    >>> [chunk_id for chunk_id, _ in index.search("run", 5, MetadataFilter.parse({"lang": "en"}))]
    ['a']
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        range_fields: Iterable[str] = DEFAULT_RANGE_FIELDS,
        writer_heap_bytes: int = 64_000_000,
        writer_threads: int = 1,
    ) -> None:
        """``range_fields`` get exact range queries; an existing index must be reopened with the same ones."""
        self.path = Path(path) if path is not None else None
        self.range_fields = tuple(dict.fromkeys(range_fields))
        self._heap, self._threads = writer_heap_bytes, writer_threads
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
        builder.add_text_field("body", stored=True, tokenizer_name=_ANALYZER, index_option="freq")
        builder.add_json_field("meta", stored=True, tokenizer_name="raw", index_option="basic")
        builder.add_unsigned_field("key", fast=True)
        builder.add_text_field("absent", stored=False, tokenizer_name="raw", index_option="basic")
        for field in self.range_fields:
            name = _RANGE_PREFIX + field
            if not tantivy.SchemaBuilder.is_valid_field_name(name):
                raise ValueError(f"range field {field!r} is not a valid tantivy field name")
            builder.add_float_field(name, indexed=True, fast=True)
        self._schema = builder.build()
        if self.path is None:
            self._index = tantivy.Index(self._schema)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                self._index = tantivy.Index(self._schema, path=str(self.path), reuse=True)
            except ValueError as error:
                raise ValueError(
                    f"the keyword index at {self.path} was created with other range fields than {self.range_fields} "
                    f"({error})"
                ) from error
        self._analyzer = _analyzer()
        self._index.register_tokenizer(_ANALYZER, self._analyzer)
        self._index.reload()
        self._ids = _IdLog(self.path / "ids.log" if self.path is not None else None)
        self._write_lock = threading.Lock()
        self._writer: Any = None
        # Writes since the last commit, by id (None: deleted), so a patch finds a chunk its own batch just added.
        self._pending: dict[str, tuple[str, dict[str, MetadataValue]] | None] = {}
        self._closed = False
        self._range_plans: dict[tuple[str, str, float], float] = {}  # per commit: the fraction a range keeps

    # Writes

    def upsert(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, MetadataValue]]) -> None:
        if not len(ids) == len(texts) == len(metadata):
            raise ValueError(
                f"expected as many texts and metadata as ids ({len(ids)}), got {len(texts)} and {len(metadata)}"
            )
        rows = []
        for chunk_id, text, meta in zip(ids, texts, metadata, strict=True):
            if not isinstance(chunk_id, str) or not chunk_id:
                raise ValueError(f"chunk ids are non-empty strings: {chunk_id!r}")
            if not isinstance(text, str):
                raise TypeError(f"chunk texts are strings; {chunk_id!r} has {type(text).__name__}")
            rows.append((chunk_id, text, check_metadata(meta)))
        with self._write_lock:
            writer = self._open_writer()
            for chunk_id, text, meta in rows:
                self._write(writer, chunk_id, text, meta)

    def delete(self, ids: Sequence[str]) -> None:
        with self._write_lock:
            writer = self._open_writer()
            for chunk_id in dict.fromkeys(ids):
                writer.delete_documents_by_term("id", chunk_id)
                self._pending[chunk_id] = None

    def patch_metadata(self, ids: Sequence[str], patch: Mapping[str, MetadataValue]) -> None:
        checked = check_metadata(patch)
        removed = [field for field, value in patch.items() if value is None]
        with self._write_lock:
            writer = self._open_writer()
            for chunk_id, (text, meta) in self._current(list(dict.fromkeys(ids))).items():
                meta.update(checked)
                for field in removed:
                    meta.pop(field, None)
                self._write(writer, chunk_id, text, meta)

    def _write(self, writer: Any, chunk_id: str, text: str, meta: dict[str, MetadataValue]) -> None:
        document = tantivy.Document()
        document.add_text("id", chunk_id)
        document.add_unsigned("key", self._ids.key(chunk_id))
        document.add_text("body", text)
        document.add_json("meta", meta)
        for field in self.range_fields:
            value = meta.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                document.add_float(_RANGE_PREFIX + field, float(value))
            else:
                document.add_text("absent", field)
        writer.delete_documents_by_term("id", chunk_id)
        writer.add_document(document)
        self._pending[chunk_id] = (text, meta)

    def _current(self, ids: list[str]) -> dict[str, tuple[str, dict[str, MetadataValue]]]:
        """Text and metadata of the known ``ids``: this instance's pending writes first, then the last commit."""
        found: dict[str, tuple[str, dict[str, MetadataValue]]] = {}
        committed = []
        for chunk_id in ids:
            if chunk_id in self._pending:
                entry = self._pending[chunk_id]
                if entry is not None:
                    found[chunk_id] = (entry[0], dict(entry[1]))
            else:
                committed.append(chunk_id)
        searcher = self._index.searcher()
        for start in range(0, len(committed), 1024):
            batch = committed[start : start + 1024]
            query = tantivy.Query.term_set_query(self._schema, "id", batch)
            for _, address in searcher.search(query, len(batch), count=False).hits:
                stored = searcher.doc(address).to_dict()
                found[stored["id"][0]] = (stored["body"][0], dict(stored["meta"][0]))
        return found

    def _open_writer(self) -> Any:
        self._check_open()
        if self._writer is None:
            try:
                self._writer = self._index.writer(self._heap, self._threads)
            except ValueError as error:
                raise RuntimeError(f"another writer holds the keyword index at {self.path}: {error}") from error
            self._ids.refresh()  # keys another writer assigned before we took the lock
        return self._writer

    def commit(self) -> None:
        """Publish every write so far, atomically and durably, and search it from now on."""
        with self._write_lock:
            self._check_open()
            if self._writer is not None and self._pending:
                self._ids.flush()  # every key the commit references is durable first
                self._writer.commit()
                self._pending.clear()
            self._index.reload()
            self._range_plans.clear()
            if self._writer is not None and self._ids.bloated(self._index.searcher().num_docs):
                self._ids.compact(self._live_keys())

    def reload(self) -> None:
        self._check_open()
        self._index.reload()
        self._range_plans.clear()
        self._ids.refresh()

    def _live_keys(self) -> set[int]:
        searcher = self._index.searcher()
        total = int(searcher.num_docs)
        if not total:
            return set()
        hits = searcher.search(tantivy.Query.all_query(), total, count=False).hits
        keys = searcher.fast_field_values("key", [address for _, address in hits])
        return {int(key) for key in keys if isinstance(key, int)}

    def close(self) -> None:
        """Release the writer (uncommitted writes are dropped) and refuse further use."""
        with self._write_lock:
            if self._writer is not None:
                self._writer.rollback()
            self._writer = None
            self._pending.clear()
            self._closed = True

    def __len__(self) -> int:
        return int(self._index.searcher().num_docs)

    # Reads

    def search(self, query: str, k: int, where: MetadataFilter | None = None) -> list[tuple[str, float]]:
        self._check_open()
        text = self._text_query(query)
        if text is None or k <= 0:
            return []
        plan = self._plan(where)
        if plan is None:
            return []  # an empty $in: nothing can match
        full = tantivy.Query.boolean_query([(tantivy.Occur.Must, text), *plan.clauses]) if plan.clauses else text
        searcher = self._index.searcher()
        total = int(searcher.num_docs)
        if not total:
            return []
        if not plan.checked and not plan.residual:
            return self._identify(searcher, searcher.search(full, min(k, total), count=False).hits)
        return self._post_filtered(searcher, full, k, plan, total)

    def _identify(self, searcher: Any, hits: list[tuple[float, Any]]) -> list[tuple[str, float]]:
        """(chunk id, score) of tantivy hits, through the key fast field and the key map."""
        if not hits:
            return []
        keys = searcher.fast_field_values("key", [address for _, address in hits])
        ids = self._ids.lookup(keys)
        if None in ids:  # committed by another writer after our last look at the log
            self._ids.refresh()
            ids = self._ids.lookup(keys)
        return [
            (chunk_id if chunk_id is not None else searcher.doc(address)["id"][0], float(score))
            for chunk_id, (score, address) in zip(ids, hits, strict=True)
        ]

    def _post_filtered(
        self, searcher: Any, query: tantivy.Query, k: int, plan: _Plan, total: int
    ) -> list[tuple[str, float]]:
        """Hits passing the conditions checked after the search; fetches ×4 more until ``k`` pass or none are left."""
        results: list[tuple[str, float]] = []
        keep = plan.keep * (0.25 if plan.residual else 1.0)  # a guess for conditions nothing was counted for
        # k/keep hits pass on average; three standard deviations more make a second round rare
        offset, limit = 0, math.ceil((k + 3 * math.sqrt(k * (1 - keep))) / keep) + 2
        while offset < total and len(results) < k:
            hits = searcher.search(query, limit, count=False, offset=offset).hits
            addresses = [address for _, address in hits]
            passed = [True] * len(hits)
            for condition, name in plan.checked:
                check = _FLOAT_TESTS[condition.op]
                bound = float(condition.value)  # type: ignore[arg-type]  # a number: see `_plan`
                values = searcher.fast_field_values(name, addresses)
                passed = [
                    ok and value is not None and check(value, bound) for ok, value in zip(passed, values, strict=True)
                ]
            kept = [hit for hit, ok in zip(hits, passed, strict=True) if ok]
            if plan.residual:
                kept = [hit for hit in kept if _meets(searcher.doc(hit[1]).to_dict(), plan.residual)]
            results.extend(self._identify(searcher, kept[: k - len(results)]))
            if len(hits) < limit:
                break
            offset, limit = offset + limit, limit * 4
        return results

    def _text_query(self, query: str) -> tantivy.Query | None:
        if not isinstance(query, str):
            raise TypeError(f"a keyword query is a string, got {type(query).__name__}")
        terms = list(dict.fromkeys(self._analyzer.analyze(query)))[:MAX_QUERY_TERMS]
        if not terms:
            return None
        if len(terms) == 1:
            return tantivy.Query.term_query(self._schema, "body", terms[0], index_option="freq")
        should = tantivy.Occur.Should
        return tantivy.Query.boolean_query(
            [(should, tantivy.Query.term_query(self._schema, "body", term, index_option="freq")) for term in terms]
        )

    def _plan(self, where: MetadataFilter | None) -> _Plan | None:
        """Split ``where`` into index clauses, fast-field checks and checks on stored metadata (None: matches nothing).

        A range on a range field that keeps most chunks (the snapshot range on every query keeps ~all) is checked on
        the hits' fast-field values instead of joining the query: any clause beside the text turns off tantivy's
        block-max WAND pruning of the top-k, which cost ~0.25 ms per query at 100k chunks; a range that keeps few
        chunks joins the query, where it prunes.
        """
        plan = _Plan([], [], [], 1.0)
        for condition in where.conditions if where else ():
            if condition.op == "$in" and not condition.value:
                return None
            if condition.op in _RANGE_OPERATORS:
                if condition.field not in self.range_fields or isinstance(condition.value, str | bool | tuple):
                    plan.residual.append(condition)
                    continue
                name = _RANGE_PREFIX + condition.field
                kept = self._kept(condition.field, condition.op, float(condition.value))
                if kept >= 0.5:
                    plan.checked.append((condition, name))
                    plan.keep *= kept
                else:
                    query = _range_query(self._schema, name, condition.op, float(condition.value))
                    plan.clauses.append((tantivy.Occur.Must, tantivy.Query.const_score_query(query, 0.0)))
                continue
            clause = self._clause(condition)
            if clause is None:
                plan.residual.append(condition)
            else:
                plan.clauses.append(clause)
        plan.keep = max(plan.keep, 0.01)
        return plan

    def _kept(self, field: str, op: str, bound: float) -> float:
        """The fraction of chunks a range keeps, counted (once per commit) as the few it does not keep: those in its
        complement, and those whose field is absent or not a number (marked with an ``absent`` term)."""
        key = (field, op, bound)
        kept = self._range_plans.get(key)
        if kept is None:
            searcher = self._index.searcher()
            total = int(searcher.num_docs)
            complement = _range_query(self._schema, _RANGE_PREFIX + field, _COMPLEMENT[op], bound)
            absent = tantivy.Query.term_query(self._schema, "absent", field, index_option="basic")
            outside = _count(searcher, complement) + _count(searcher, absent)
            kept = self._range_plans[key] = 1.0 - outside / total if total else 1.0
        return kept

    def _clause(self, condition: Condition) -> Clause | None:
        field, op, value = condition.field, condition.op, condition.value
        if "\\" in field:
            return None
        path = "meta." + field.replace(".", "\\.")
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, str) and len(v.encode()) > _MAX_TERM_BYTES for v in values):
            return None
        if op == "$in":
            query = tantivy.Query.term_set_query(self._schema, path, list(values))
            return tantivy.Occur.Must, tantivy.Query.const_score_query(query, 0.0)
        query = tantivy.Query.term_query(self._schema, path, value, index_option="basic")
        if op == "$ne":
            return tantivy.Occur.MustNot, query
        return tantivy.Occur.Must, tantivy.Query.const_score_query(query, 0.0)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the keyword index at {self.path or 'memory'} is closed")


def _count(searcher: tantivy.Searcher, query: tantivy.Query) -> int:
    result = searcher.search(query, 1, count=True)
    return int(result.count)  # type: ignore[attr-defined]  # there at run time, missing from tantivy's stub


@dataclass
class _Plan:
    clauses: list[Clause]  # joined to the text query
    checked: list[tuple[Condition, str]]  # broad ranges, checked on the hits' fast field (named)
    residual: list[Condition]  # checked on the hits' stored metadata
    keep: float  # the expected fraction of hits the checks keep


def _meets(stored: Mapping[str, Any], conditions: Sequence[Condition]) -> bool:
    meta = stored["meta"][0] if stored.get("meta") else {}
    return all(condition.matches(meta) for condition in conditions)


_FLOAT_TESTS: dict[str, Callable[[float, float], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}

_COMPLEMENT = {"$gt": "$lte", "$gte": "$lt", "$lt": "$gte", "$lte": "$gt"}


def _range_query(schema: tantivy.Schema, name: str, op: str, bound: float) -> tantivy.Query:
    lower = bound if op in ("$gt", "$gte") else None
    upper = bound if op in ("$lt", "$lte") else None
    return tantivy.Query.range_query(
        schema,
        name,
        tantivy.FieldType.Float,
        lower,
        upper,
        include_lower=op != "$gt",
        include_upper=op != "$lt",
    )


class _IdLog:
    """Chunk id <-> integer key, persisted as append-only JSON lines ``[key, "id"]`` (None path: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._by_key: dict[int, str] = {}
        self._by_id: dict[str, int] = {}
        self._unwritten: list[tuple[int, str]] = []
        self._next = 0
        self._offset = 0  # bytes of whole lines read so far
        self._inode: int | None = None
        self.refresh()

    def key(self, chunk_id: str) -> int:
        with self._lock:
            key = self._by_id.get(chunk_id)
            if key is None:
                key = self._next
                self._next += 1
                self._by_id[chunk_id], self._by_key[key] = key, chunk_id
                self._unwritten.append((key, chunk_id))
            return key

    def lookup(self, keys: Sequence[object]) -> list[str | None]:
        by_key = self._by_key
        return [by_key.get(key) if isinstance(key, int) else None for key in keys]

    def refresh(self) -> None:
        """Read what other writers appended (all of it again if the log was rewritten)."""
        if self._path is None:
            return
        with self._lock:
            try:
                with open(self._path, "rb") as handle:
                    inode = os.fstat(handle.fileno()).st_ino
                    if inode != self._inode:
                        self._offset, self._inode = 0, inode
                    handle.seek(self._offset)
                    data = handle.read()
            except FileNotFoundError:
                return
            whole = data[: data.rfind(b"\n") + 1]  # a torn last line (a crash mid-append) waits or is cut later
            for line in whole.splitlines():
                key, chunk_id = orjson.loads(line)
                self._by_key[key], self._by_id[chunk_id] = chunk_id, key
                self._next = max(self._next, key + 1)
            self._offset += len(whole)

    def flush(self) -> None:
        """Append (and fsync) the keys assigned since the last flush."""
        if self._path is None or not self._unwritten:
            self._unwritten.clear()
            return
        with self._lock:
            lines = b"".join(orjson.dumps(entry) + b"\n" for entry in self._unwritten)
            with open(self._path, "ab") as handle:
                if handle.tell() != self._offset:  # cut a torn line left by a crashed writer
                    handle.truncate(self._offset)
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
                self._inode = os.fstat(handle.fileno()).st_ino
            self._offset += len(lines)
            self._unwritten.clear()

    def bloated(self, live: int) -> bool:
        return self._path is not None and len(self._by_key) > 2 * live + 1024

    def compact(self, live: set[int]) -> None:
        """Rewrite the log with the live keys only (atomically: readers see the old or the new file)."""
        if self._path is None:
            return
        with self._lock:
            entries = sorted((key, chunk_id) for key, chunk_id in self._by_key.items() if key in live)
            temporary = self._path.with_suffix(".log.tmp")
            data = b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self._path)
            self._by_key = dict(entries)
            self._by_id = {chunk_id: key for key, chunk_id in entries}
            self._offset, self._inode = len(data), os.stat(self._path).st_ino
