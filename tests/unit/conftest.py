"""Fixtures of the unit tests that more than one module uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmops import Platform

from ..conftest import SAMPLES


@pytest.fixture
def ingested(platform: Platform, tmp_path: Path) -> Platform:
    """The fake platform with the sample handbook ingested (from a copy, so tests may change the files)."""
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    platform.knowledge.ingest(corpus)
    return platform
