"""Shared fixtures. Store-backed tests run twice: on SQLite and on the PostgreSQL of this machine (never skipped)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmops import Platform, Settings
from llmops.testing import HashEmbedder, ScriptedProvider

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "handbook"
DATASETS = ROOT.parent / "shared" / "datasets"
POSTGRES_URL = os.environ.get("LLMOPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
LOCAL_MODEL = "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer setting (LLMOPS_* variables, a llmops.yaml in the working directory) leaks into a test."""
    for name in list(os.environ):
        if name.startswith("LLMOPS_") and not name.startswith("LLMOPS_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LLMOPS_CONFIG", str(tmp_path / "no-such-llmops.yaml"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the `test` database, dropped afterwards, so parallel runs never see each other."""
    schema = "t_" + secrets.token_hex(6)
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def scripted() -> ScriptedProvider:
    return ScriptedProvider("New employees get 15 days of PTO [1].")


@pytest.fixture
def platform(tmp_path: Path, database_url: str, scripted: ScriptedProvider) -> Iterator[Platform]:
    """A platform on fakes (hash embedder, scripted model) over each store."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    built = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: scripted})
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def sqlite_platform(tmp_path: Path, scripted: ScriptedProvider) -> Iterator[Platform]:
    """The fake platform on SQLite only: for checks that happen before anything is stored."""
    settings = Settings(data_dir=tmp_path / "data")
    built = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: scripted})
    try:
        yield built
    finally:
        built.close()
