"""Server-scale keyword index: PostgreSQL full-text search, shared by any number of replicas.

Each chunk's text is stored with a generated ``tsvector`` (the ``english`` configuration: lower case, stop words
dropped, Snowball stems) and a GIN index. A query is any user text: ``plainto_tsquery`` reads it as words (no syntax
to get wrong, nothing to escape), and the terms are then joined with OR. BM25 retrieval is an OR of terms ranked by
how well each document matches; the AND that ``plainto_tsquery`` and ``websearch_to_tsquery`` build finds nothing as
soon as one word of a question is missing from the chunk (see `PgKeywordIndex` for the measured difference).
Accents are folded before PostgreSQL sees a text or a query (``Café`` finds ``cafe``): the ``unaccent`` extension is
not in every PostgreSQL (pgserver's has none), and folding in Python treats documents and queries alike.

Matches are ranked with ``ts_rank`` (term frequency, the rank divided by 1 + log of the document length). PostgreSQL
has no BM25 and no IDF: on bench/retrieval.py's corpus (20k chunks) the top 10 overlapped bm25s's by 0.35 with
``ts_rank``, 0.16 with ``ts_rank_cd``, 0.41 with an IDF-weighted sum of per-term ranks (an extra query for document
frequencies); bm25s does not stem, which bounds any overlap.

Cost, measured by bench/postgres_indexes.py at 100k chunks on two busy cores: OR queries 9 q/s (p50 74 ms; every
matching chunk is ranked, and 2-4 word queries match ~10% of the corpus), 0.3% of queries find nothing; AND queries
135 q/s (p50 5 ms) but 21% find nothing. OR stays the default: a keyword leg that is empty for a fifth of the
questions is worse than a slow one; ``match="all"`` is there for deployments that need the speed.

Metadata, filters, transactions and replicas behave exactly as in `llmops.knowledge._pgvector`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from llmops.knowledge._filters import MetadataFilter, MetadataValue
from llmops.knowledge._pgvector import (
    PgTable,
    check_ids,
    compile_filter,
    ensure_schema,
    postgres_conninfo,
    split_metadata,
    validate_collection,
)

__all__ = ["PgKeywordIndex"]

Match = Literal["any", "all"]


def fold(text: str) -> str:
    """``text`` without accents and compatibility forms (NFKD, combining marks dropped, NFC), NUL as a space.

    >>> fold("Café naïve ﬁle")
    'Cafe naive file'
    """
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))
    # NUL cannot be stored in PostgreSQL text; as a separator it means what a space means to the parser.
    return text.replace("\x00", " ")


class PgKeywordIndex:
    """`KeywordIndex` on PostgreSQL full-text search.

    >>> index = PgKeywordIndex("postgresql://app@db/llmops", "handbook")  # doctest: +SKIP
    >>> index.upsert(["c1"], ["Refunds are paid within 14 days."], [{"language": "en"}])  # doctest: +SKIP
    >>> index.commit()  # doctest: +SKIP
    >>> index.search("how long do refunds take", 10)  # doctest: +SKIP
    [('c1', 0.0607...)]

    The table is ``llmops_keywords_<collection>``. ``match="any"`` (the default) returns chunks with any query term,
    best first; ``match="all"`` only chunks with every term. Scores are ``ts_rank`` values: higher is better, and they
    are comparable within one query only.
    """

    def __init__(
        self,
        url: str,
        collection: str,
        *,
        match: Match = "any",
        pool_size: int = 4,
    ) -> None:
        if match not in ("any", "all"):
            raise ValueError(f"match is 'any' or 'all', got {match!r}")
        self.collection = validate_collection(collection)
        self.table = f"llmops_keywords_{collection}"
        self.match = match
        table = sql.Identifier(self.table)
        with psycopg.connect(postgres_conninfo(url), autocommit=True) as connection:
            ensure_schema(
                connection,
                f"llmops.knowledge.{self.table}",
                [
                    (
                        self.table,
                        sql.SQL(
                            "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, body text NOT NULL, "
                            "tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, body)) STORED, "
                            "metadata jsonb NOT NULL DEFAULT '{{}}', snapshot_from bigint, snapshot_until bigint)"
                        ).format(table),
                    ),
                    (
                        f"{self.table}_tsv",
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (tsv)").format(
                            sql.Identifier(f"{self.table}_tsv"), table
                        ),
                    ),
                    (
                        f"{self.table}_snapshot",
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (snapshot_from, snapshot_until)").format(
                            sql.Identifier(f"{self.table}_snapshot"), table
                        ),
                    ),
                ],
            )
        self._table = PgTable(url, self.table, pool_size=pool_size, session_settings={})

    # -- writes

    def upsert(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, MetadataValue]]) -> None:
        if not len(ids) == len(texts) == len(metadata):
            raise ValueError(f"got {len(ids)} ids, {len(texts)} texts and {len(metadata)} metadata mappings")
        if not ids:
            return
        check_ids(ids)
        rows = []
        for position in sorted(range(len(ids)), key=lambda i: ids[i]):  # id order: no deadlock between replicas
            text = texts[position]
            if not isinstance(text, str):
                raise ValueError(f"texts are strings, got {type(text).__name__} for {ids[position]!r}")
            fields, snapshot = split_metadata(metadata[position])
            # The body is the folded text the search runs on; the chunk's own text lives in the store.
            rows.append((ids[position], fold(text), Jsonb(fields), *snapshot))
        statement = sql.SQL(
            "INSERT INTO {} (id, body, metadata, snapshot_from, snapshot_until) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, metadata = EXCLUDED.metadata, "
            "snapshot_from = EXCLUDED.snapshot_from, snapshot_until = EXCLUDED.snapshot_until"
        ).format(sql.Identifier(self.table))
        with self._table.write() as connection, connection.cursor() as cursor:
            cursor.executemany(statement, rows)

    def delete(self, ids: Sequence[str]) -> None:
        self._table.delete(ids)

    def patch_metadata(self, ids: Sequence[str], patch: Mapping[str, MetadataValue]) -> None:
        self._table.patch_metadata(ids, patch)

    def commit(self) -> None:
        self._table.commit()

    def reload(self) -> None:
        """Nothing to do: every read already sees what the other replicas committed."""

    def close(self) -> None:
        self._table.close()

    # -- reads

    def _tsquery(self) -> sql.Composable:
        """The tsquery of the text parameter: its words, normalised as the documents are, joined by OR (or AND)."""
        if self.match == "all":
            return sql.SQL("plainto_tsquery('english'::regconfig, %s)")
        # plainto_tsquery's output quotes every lexeme, so ' & ' only ever occurs as the operator between two terms.
        return sql.SQL("replace(plainto_tsquery('english'::regconfig, %s)::text, ' & ', ' | ')::tsquery")

    def search(self, query: str, k: int, where: MetadataFilter | None = None) -> list[tuple[str, float]]:
        if not isinstance(query, str):
            raise TypeError(f"a keyword query is a string, got {type(query).__name__}")
        text = fold(query)
        if k <= 0 or not text.strip():
            return []
        condition, params = compile_filter(where)
        tsquery = self._tsquery()
        # The tsquery expression is immutable, so with the text bound PostgreSQL folds it to a constant and the GIN
        # index serves the match; it is written twice rather than joined from a subquery for that reason.
        statement = sql.SQL(
            "SELECT id, ts_rank(tsv, {0}, 1) AS score FROM {1} WHERE tsv @@ {0} AND {2} "
            "ORDER BY score DESC, id LIMIT %s"
        ).format(tsquery, sql.Identifier(self.table), condition)
        with self._table.read() as connection:
            rows = connection.execute(statement, [text, text, *params, int(k)]).fetchall()
        return [(str(identifier), float(score)) for identifier, score in rows]

    def __len__(self) -> int:
        return self._table.count()
