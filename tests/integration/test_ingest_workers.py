"""Ingestion on every core by default: the auto choice, the same index as in-process, the setting and the CLI option,
and worker processes that never outlive a killed run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmops import Platform, Settings
from llmops.knowledge import _base, _parallel
from llmops.knowledge._tables import LIVE, ChunkRow
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL, SAMPLES
from .conftest import LLMOPS, clean_env


def _corpus(root: Path, documents: int, name: str = "extra") -> Path:
    """``documents`` Markdown files of three sections each, no two sharing a sentence."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(documents):
        sections = "\n\n".join(f"## Part {p}\n\n" + f"{name.title()} {n} says {p} things about topic {n * p}. " * 30
                               for p in range(3))  # fmt: skip
        (root / f"{name}-{n:02}.md").write_text(f"# {name.title()} {n}\n\n{sections}\n", encoding="utf-8")
    return root


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[tuple[Platform, Platform]]:
    """Two fake platforms whose hash embedder worker processes can rebuild: one pinned in-process, one automatic."""
    built = []
    for name, workers in (("local", 1), ("auto", 0)):
        settings = Settings(data_dir=tmp_path / name, knowledge={"ingest_workers": workers})
        platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("")})
        platform.knowledge.worker_embedder = HashEmbedder
        built.append(platform)
    try:
        yield built[0], built[1]
    finally:
        for platform in built:
            platform.close()


def _rows(platform: Platform) -> dict[str, tuple[object, ...]]:
    with platform.store.session() as session:
        return {
            row.id: (row.document_id, row.ordinal, row.text, row.heading, row.page, row.meta, row.embedding,
                     row.snapshot_from, row.snapshot_until)
            for row in session.scalars(sa.select(ChunkRow))
        }  # fmt: skip


def test_auto_uses_every_core_above_the_threshold_and_builds_the_in_process_index(
    platforms: tuple[Platform, Platform], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, auto = platforms
    corpus = _corpus(tmp_path / "corpus", 8)
    below = auto.knowledge.ingest(SAMPLES)  # the handbook, 28 KB: not worth starting workers
    assert (below.processor, below.workers) == ("LocalProcessor", 1)
    local.knowledge.ingest(SAMPLES)

    size = sum(path.stat().st_size for path in corpus.iterdir())
    monkeypatch.setattr(_parallel, "POOL_MIN_BYTES", size // 2)
    monkeypatch.setattr(_base, "available_cpus", lambda: 2)  # two workers even on a one-CPU runner
    expected = local.knowledge.ingest(corpus)
    report = auto.knowledge.ingest(corpus)
    assert (expected.processor, report.processor, report.workers) == ("LocalProcessor", "LocalPoolProcessor", 2)
    assert sorted(report.added) == sorted(expected.added) and len(report.added) == 8
    assert report.chunks_written == expected.chunks_written == report.chunks_embedded
    assert _rows(auto) == _rows(local)

    # A changed document stays in-process and re-embeds only its changed chunk (the rest comes from the cache); new
    # ones above the threshold still go to the workers.
    (corpus / "extra-00.md").write_text(
        (corpus / "extra-00.md").read_text(encoding="utf-8").replace("Part 2", "Part two"), encoding="utf-8"
    )
    _corpus(corpus, 6, name="more")
    expected = local.knowledge.ingest(corpus)
    report = auto.knowledge.ingest(corpus)
    assert report.processor == "LocalPoolProcessor" and len(report.updated) == 1 and len(report.added) == 6
    assert report.chunks_embedded == expected.chunks_embedded < report.chunks_written
    assert _rows(auto) == _rows(local)


def _chunks(data_dir: Path) -> list[tuple[str, int, str, bytes]]:
    with sqlite3.connect(data_dir / "llmops.db") as connection:
        rows = connection.execute("SELECT d.source, c.ordinal, c.text, c.embedding FROM chunks c "
                                  "JOIN documents d ON d.id = c.document_id").fetchall()  # fmt: skip
    return sorted((Path(source).name, ordinal, text, embedding) for source, ordinal, text, embedding in rows)


def _ingest(data_dir: Path, corpus: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLMOPS, "ingest", str(corpus), "--json", *args], env=clean_env(data_dir, **env),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_setting_and_the_cli_option_with_the_bundled_model(tmp_path: Path) -> None:
    pinned = _ingest(tmp_path / "pool", SAMPLES, LLMOPS_KNOWLEDGE__INGEST_WORKERS="2")
    assert pinned.returncode == 0, pinned.stderr
    report = json.loads(pinned.stdout)
    assert (report["processor"], report["workers"]) == ("LocalPoolProcessor", 2)
    # --workers overrides the setting.
    local = _ingest(tmp_path / "local", SAMPLES, "--workers", "1", LLMOPS_KNOWLEDGE__INGEST_WORKERS="2")
    assert local.returncode == 0, local.stderr
    assert (json.loads(local.stdout)["processor"], json.loads(local.stdout)["workers"]) == ("LocalProcessor", 1)
    # The workers rebuild the bundled model as the platform built it: the same chunks and the same vectors.
    ours, theirs = _chunks(tmp_path / "pool"), _chunks(tmp_path / "local")
    assert ours == theirs and len(ours) == report["chunks_written"]


def test_bad_worker_counts_are_refused_by_the_cli(tmp_path: Path) -> None:
    option = _ingest(tmp_path / "a", SAMPLES, "--workers", "-1")
    assert option.returncode == 2 and "--workers" in option.stderr
    setting = _ingest(tmp_path / "b", SAMPLES, LLMOPS_KNOWLEDGE__INGEST_WORKERS="many")
    assert setting.returncode == 2 and "ingest_workers" in setting.stderr


def _workers_of(pid: int) -> set[int]:
    """The spawned worker processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_run_takes_its_workers_with_it_and_the_next_run_completes(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus", 80)
    shutil.copytree(SAMPLES, corpus, dirs_exist_ok=True)
    data_dir = tmp_path / "data"
    command = [LLMOPS, "ingest", str(corpus), "--json", "--workers", "2"]
    process = subprocess.Popen(command, env=clean_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            workers = _workers_of(process.pid)
        assert len(workers) == 2, "the run never started its two workers"
        time.sleep(3)  # the workers load the model and take their first documents
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "worker processes outlived the killed run"
    finally:
        if process.poll() is None:
            process.kill()
    resumed = _ingest(data_dir, corpus, "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["failed"] == [] and os.path.exists(data_dir / "llmops.db")
    with sqlite3.connect(data_dir / "llmops.db") as connection:
        documents = connection.execute(
            "SELECT count(DISTINCT document_id) FROM chunks WHERE snapshot_until = ?", (LIVE,)
        ).fetchone()[0]
        building = connection.execute("SELECT count(*) FROM index_snapshots WHERE status != 'ready'").fetchone()[0]
    assert documents == 86 and building == 0


def test_a_script_that_ingests_at_top_level_without_a_main_guard(tmp_path: Path) -> None:
    """``spawn`` re-runs the main script in each worker unless told not to: a script without
    ``if __name__ == "__main__":`` would ingest again in every worker (and fail to start workers of its own)."""
    script = tmp_path / "ingest_docs.py"
    script.write_text(
        "from llmops import Platform, Settings\n"
        "print('script ran', flush=True)\n"
        "platform = Platform(Settings())\n"
        f"report = platform.knowledge.ingest({str(SAMPLES)!r}, workers=2)\n"
        "platform.close()\n"
        "print(report.processor, report.workers, len(report.failed), len(report.added), flush=True)\n",
        encoding="utf-8",
    )
    done = subprocess.run([sys.executable, str(script)], env=clean_env(tmp_path / "data"), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines.count("script ran") == 1, done.stdout  # the workers did not re-run it
    processor, workers, failed, added = lines[-1].split()
    assert (processor, workers, failed) == ("LocalPoolProcessor", "2", "0") and int(added) > 0
