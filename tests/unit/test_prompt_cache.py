"""Serving prompts: the cached get, the TTL, and the last good version while the store or server is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops import Platform, Settings
from llmops.prompts import PromptClient, PromptNotFoundError
from llmops.server import create_app
from llmops.store import Store
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL
from ..helpers import serve_in_thread


@pytest.fixture
def short_ttl(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, prompt_cache_ttl_s=0.3)
    built = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider()})
    for text in ("A {{ x }}", "B {{ x }}"):
        version = built.prompts.create("p", [{"role": "user", "content": text}], author="ana")
        built.prompts.move_label("p", "production", version.version, environment="dev", by="ana")
    yield built
    built.close()


def test_rollback_is_served_within_the_cache_ttl(short_ttl: Platform) -> None:
    prompts = short_ttl.prompts
    assert prompts.get("p").version == 2
    prompts.rollback("p", "production", environment="dev", by="ops")
    assert prompts.get("p").version == 2  # still cached
    time.sleep(0.35)
    assert prompts.get("p").version == 1


def test_the_last_good_version_is_served_while_the_store_is_down(
    short_ttl: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = short_ttl.prompts
    assert prompts.get("p").version == 2
    prompts._store = Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")  # nothing listens
    time.sleep(0.35)
    with caplog.at_level(logging.WARNING, logger="llmops.prompts"):
        assert prompts.get("p").version == 2
    assert "prompt source unreachable" in caplog.text and "serving the cached" in caplog.text
    with pytest.raises(Exception, match=r"connect|Connection"):
        prompts.get("never-cached")


def test_the_http_client_caches_and_survives_a_stopped_server(
    short_ttl: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_in_thread(create_app(short_ttl)) as base:
        client = PromptClient(base, environment="dev", ttl=0.3)
        version = client.get("p")
        assert version.version == 2 and client.render(version, {"x": "y"}) == [{"role": "user", "content": "B y"}]
        with pytest.raises(PromptNotFoundError):
            client.get("no-such-prompt")
    time.sleep(0.35)  # the server is gone and the entry is stale
    with caplog.at_level(logging.WARNING, logger="llmops.prompts"):
        assert client.get("p").version == 2
    assert "prompt source unreachable" in caplog.text
    client.close()
