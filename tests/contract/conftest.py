"""The registry of index backends the contract tests run against: add a backend by adding a factory here.

A factory knows how to make a fresh *location* for one test (a directory, a table name...) and how to open an
instance over a location; opening twice gives two instances over the same data, as two processes would have. The
crash tests open backends by name in a child process (``python -m tests.contract.crash_writer``, which imports this
module), so a factory must work from a fresh interpreter given only its location string.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmops.knowledge._hnsw import HnswVectorIndex
from llmops.knowledge._index import ExactVectorIndex, KeywordIndex, VectorIndex
from llmops.knowledge._tantivy import TantivyKeywordIndex
from tests.pgvector_server import open_pgfts, open_pgvector, postgres_location
from tests.pgvector_server import pgvector_url as pgvector_url  # the session fixture: PostgreSQL with pgvector


@dataclass(frozen=True)
class VectorFactory:
    """``location(tmp_path, request)`` makes a fresh location (and may add finalizers); ``open`` opens an instance.

    ``persistent`` backends are held to the commit / reload / crash tests; in-memory ones are not.
    """

    location: Callable[[Path, pytest.FixtureRequest], str]
    open: Callable[[str, int], VectorIndex]
    persistent: bool = True


@dataclass(frozen=True)
class KeywordFactory:
    location: Callable[[Path, pytest.FixtureRequest], str]
    open: Callable[[str], KeywordIndex]
    persistent: bool = True


def _directory(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return str(tmp_path / "index")


VECTOR_FACTORIES: dict[str, VectorFactory] = {
    "exact": VectorFactory(_directory, lambda location, dimensions: ExactVectorIndex(dimensions), persistent=False),
    "hnsw": VectorFactory(_directory, lambda location, dimensions: HnswVectorIndex(location, dimensions)),
    "pgvector": VectorFactory(postgres_location, open_pgvector),
}

KEYWORD_FACTORIES: dict[str, KeywordFactory] = {
    "pgfts": KeywordFactory(postgres_location, open_pgfts),
    "tantivy": KeywordFactory(_directory, lambda location: TantivyKeywordIndex(location)),
}


@dataclass
class Backend:
    """One backend at one test's location; every instance it opened is closed after the test."""

    name: str
    location: str
    persistent: bool
    _open: Callable[..., Any]
    _opened: list[Any] = field(default_factory=list)

    def open(self, *args: Any) -> Any:
        index = self._open(self.location, *args)
        self._opened.append(index)
        return index

    def close_all(self) -> None:
        for index in self._opened:
            # A test may have closed it already; teardown must reach every instance.
            with contextlib.suppress(Exception):
                index.close()


@pytest.fixture(params=sorted(VECTOR_FACTORIES))
def vector_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    factory = VECTOR_FACTORIES[request.param]
    backend = Backend(request.param, factory.location(tmp_path, request), factory.persistent, factory.open)
    yield backend
    backend.close_all()


@pytest.fixture(params=sorted(KEYWORD_FACTORIES))
def keyword_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    factory = KEYWORD_FACTORIES[request.param]
    backend = Backend(request.param, factory.location(tmp_path, request), factory.persistent, factory.open)
    yield backend
    backend.close_all()


def child_environment() -> dict[str, str]:
    """The environment for a child process that imports this module (the repository root on its path)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
