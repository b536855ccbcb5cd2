"""How many processes an ingestion run uses: `AutoProcessor`'s choice, the setting, and bad values refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops import Platform, Settings
from llmops.knowledge._ingest import WorkItem
from llmops.knowledge._parallel import AutoProcessor
from llmops.knowledge._parsers import ParseError
from llmops.knowledge._processing import ProcessedDocument
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL, SAMPLES


class Recorder:
    """A processor that records which documents it was given (and a pool's lifecycle)."""

    embeds = False

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.seen: list[str] = []
        self.started = False
        self.closed: list[bool] = []

    def process(self, items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, ProcessedDocument | ParseError]]:
        self.started = True
        for item in items:
            self.seen.append(item.uri)
            yield item, ParseError("recorded only")

    def close(self, *, wait: bool = True) -> None:
        self.closed.append(wait)


def _items(count: int, size: int, *, likely_cached: bool = False, prefix: str = "d") -> list[WorkItem]:
    return [WorkItem(f"{prefix}{n}", Path(f"{prefix}{n}.txt"), b"x" * size, likely_cached) for n in range(count)]


def _auto(**options: object) -> tuple[AutoProcessor, Recorder, Recorder]:
    local, pool = Recorder(), Recorder(workers=3)
    return AutoProcessor(local, pool, min_bytes=1000, min_documents=4, **options), local, pool  # type: ignore[arg-type]


def test_a_small_run_stays_in_process() -> None:
    auto, local, pool = _auto()
    assert len(list(auto.process(_items(10, 50)))) == 10  # 500 bytes: below the threshold
    assert len(list(auto.process(_items(3, 1000, prefix="e")))) == 3  # enough bytes, too few documents
    assert len(local.seen) == 13 and pool.seen == [] and not pool.started
    assert (auto.used, auto.used_workers) == ("Recorder", 1)


def test_a_large_run_of_new_documents_goes_to_the_pool_and_changed_ones_stay_in_process() -> None:
    auto, local, pool = _auto()
    new, changed = _items(4, 300), _items(2, 5000, likely_cached=True, prefix="c")
    done = [item.uri for item, _ in auto.process(new + changed)]
    assert sorted(done) == sorted(item.uri for item in new + changed)
    assert pool.seen == ["d0", "d1", "d2", "d3"] and local.seen == ["c0", "c1"]
    assert auto.used_workers == 3
    # Once started, the pool takes the next source's new documents however few.
    list(auto.process(_items(1, 10, prefix="n")))
    assert pool.seen[-1] == "n0"


def test_changed_documents_alone_never_start_the_pool() -> None:
    auto, local, pool = _auto()
    list(auto.process(_items(10, 5000, likely_cached=True)))
    assert len(local.seen) == 10 and not pool.started


def test_pinned_workers_use_the_pool_for_any_new_document() -> None:
    auto, _, pool = _auto(always=True)
    list(auto.process(_items(1, 10)))
    assert pool.seen == ["d0"]


def test_without_a_pool_everything_is_in_process() -> None:
    local = Recorder()
    auto = AutoProcessor(local, None)  # type: ignore[arg-type]
    list(auto.process(_items(50, 100_000)))
    assert len(local.seen) == 50 and (auto.used, auto.used_workers) == ("Recorder", 1)


def test_the_pool_is_closed_at_the_end_of_the_run_without_waiting_after_an_error() -> None:
    auto, _, pool = _auto()
    with auto:
        pass
    with pytest.raises(KeyboardInterrupt), auto:
        raise KeyboardInterrupt
    assert pool.closed == [True, False]


def test_small_test_corpora_are_ingested_in_process(sqlite_platform: Platform) -> None:
    report = sqlite_platform.knowledge.ingest(SAMPLES)
    assert (report.processor, report.workers) == ("LocalProcessor", 1)
    assert report.to_dict()["processor"] == "LocalProcessor"


def test_bad_worker_counts_are_refused_clearly(sqlite_platform: Platform, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ingest_workers"):
        Settings(knowledge={"ingest_workers": -1})
    with pytest.raises(ValueError, match="not -1"):
        sqlite_platform.knowledge.ingest(SAMPLES, workers=-1)
    # The hash embedder cannot be rebuilt in worker processes: asking for two is an error, not a silent fallback.
    with pytest.raises(ValueError, match=r"2 ingest workers need .* hash-embedder embeds in this process only"):
        sqlite_platform.knowledge.ingest(SAMPLES, workers=2)
    settings = Settings(data_dir=tmp_path / "pinned", knowledge={"ingest_workers": 2})
    with pytest.raises(ValueError, match="2 ingest workers need"):
        Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("")})
    assert sqlite_platform.knowledge.stats()["documents"] == 0  # nothing was ingested by the refused runs


def test_the_setting_reaches_the_knowledge_base(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", knowledge={"ingest_workers": 1})
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("")})
    try:
        assert platform.knowledge.ingest_workers == 1
    finally:
        platform.close()


def test_a_worker_process_starts_without_scipy() -> None:
    """What a spawned worker imports (the pool module) leaves out datasketch and the scipy it imports (~1 s of each
    worker's start-up, which the auto threshold pays for); the driver imports them when it deduplicates."""
    code = "import sys, llmops.knowledge._pool; print(sorted({'scipy', 'datasketch'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
