"""Distributed ingestion on a real local Ray cluster (``ray start --head``) gives the local run's index, bit for bit.

Two platforms over the same corpus and the real MiniLM model: one ingests in-process, the other through
`RayProcessor`. Same document ids and contents make the same chunk ids, so the two stores are compared row by row
(text, offsets, headings, pages, metadata, vectors), and the two knowledge bases must answer searches alike. An
incremental second run (one file changed, one removed, one added) must agree as well.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from llmops import Platform, Settings
from llmops.knowledge import IngestReport, MiniLMEmbedder
from llmops.knowledge._chunking_config import ChunkingConfig
from llmops.knowledge._ray import RayProcessor, RayUnavailableError, ray_processor_from_settings
from llmops.knowledge._tables import ChunkRow
from llmops.testing import HashEmbedder, ScriptedProvider, make_pdf

from ..conftest import LOCAL_MODEL, SAMPLES
from ..helpers import free_port

RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A one-node Ray cluster with 2 CPUs, started for this module and stopped after it (only its own processes).

    ``--block`` keeps ``ray start`` in the foreground as the parent of the cluster's processes, in a session of its
    own, so the whole cluster is stopped by signalling that one process group (``ray stop`` would stop every Ray
    cluster of this user on the machine). The temporary directory is short: Ray's Unix sockets live under it.
    """
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    port = free_port()
    command = [
        RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--disable-usage-stats",
        "--include-dashboard=false", f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp}",
    ]  # fmt: skip
    log = (temp / "ray-start.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, process, temp / "ray-start.log")
        yield f"127.0.0.1:{port}"
    finally:
        _stop_group(process)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the Ray head did not listen on {port} within {timeout} s:\n{log.read_text()}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the cluster's process group: on SIGTERM Ray drains for up to 30 s, and a test cluster has no work to
    drain. The daemons are children of ``ray start``, so they are reaped with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The sample handbook, plus generated documents: a multi-page PDF, long Markdown, a duplicate, a corrupt PDF."""
    target = tmp_path / "corpus"
    shutil.copytree(SAMPLES, target)
    pages = [
        f"Travel policy, part {n}. "
        + " ".join(f"Rule {n}.{i}: trips over {i * 100} km need approval." for i in range(40))
        for n in range(1, 5)
    ]
    (target / "travel.pdf").write_bytes(make_pdf(pages, title="Travel Policy"))
    sections = [
        f"## Section {n}\n\n" + " ".join(f"Laptop model {n}-{i} ships with {i} GB of memory." for i in range(30))
        for n in range(8)
    ]
    (target / "hardware.md").write_text("# Hardware catalogue\n\n" + "\n\n".join(sections) + "\n", encoding="utf-8")
    shutil.copy(target / "pto.md", target / "pto-copy.md")
    (target / "corrupt.pdf").write_bytes(make_pdf(["This file is cut short."])[:180])
    return target


def _platform(data_dir: Path, embedder: MiniLMEmbedder) -> Platform:
    return Platform(
        Settings(data_dir=data_dir),
        embedder=embedder,
        providers={LOCAL_MODEL: ScriptedProvider("unused")},
    )


def _chunks(platform: Platform) -> dict[str, dict[str, Any]]:
    """Every chunk version in the store, by chunk id."""
    with platform.store.session() as session:
        rows = session.scalars(sa.select(ChunkRow)).all()
        return {
            row.id: {
                "document_id": row.document_id,
                "ordinal": row.ordinal,
                "text": row.text,
                "token_count": row.token_count,
                "heading": row.heading,
                "page": row.page,
                "span": (row.start_char, row.end_char),
                "meta": row.meta,
                "embedding_model": row.embedding_model,
                "snapshot": (row.snapshot_from, row.snapshot_until),
                "vector": np.frombuffer(row.embedding, dtype=np.float32),
            }
            for row in rows
        }


def _pairs(report: IngestReport) -> set[frozenset[str]]:
    return {frozenset({Path(d.source).name, Path(d.duplicate_of).name}) for d in report.near_duplicates}


def _assert_same_index(local: Platform, distributed: Platform) -> None:
    ours, theirs = _chunks(local), _chunks(distributed)
    assert ours and set(ours) == set(theirs)
    for chunk_id, row in ours.items():
        other = theirs[chunk_id]
        assert {k: v for k, v in row.items() if k != "vector"} == {k: v for k, v in other.items() if k != "vector"}
        assert np.allclose(row["vector"], other["vector"], atol=1e-6, rtol=0), chunk_id
    queries = ["How many PTO days do new employees get?", "laptop memory", "working abroad tax rules", "trips approval"]
    for query in queries:
        for mode in ("dense", "keyword", "hybrid"):
            a = local.knowledge.search(query, k=5, mode=mode, min_similarity=0.0)
            b = distributed.knowledge.search(query, k=5, mode=mode, min_similarity=0.0)
            # pto.md and its copy tie (same text, same vector): either may come first, so compare texts and scores.
            assert [h.text for h in a] == [h.text for h in b], (query, mode)
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5), (query, mode)


def test_ray_ingestion_matches_the_local_run(ray_address: str, corpus: Path, tmp_path: Path) -> None:
    embedder = MiniLMEmbedder()
    local = _platform(tmp_path / "local", embedder)
    distributed = _platform(tmp_path / "ray", embedder)
    try:
        with ray_processor_from_settings(ray_address, distributed, batch_size=2) as processor:
            assert processor.worker_count == 2  # one actor per CPU of the cluster
            first_local = local.knowledge.ingest(corpus)
            first_ray = distributed.knowledge.ingest(corpus, processor=processor)
            assert sorted(first_ray.added) == sorted(first_local.added) and len(first_ray.added) == 9
            assert first_ray.failed == first_local.failed and [Path(s).name for s, _ in first_ray.failed] == [
                "corrupt.pdf"
            ]
            assert first_ray.chunks_written == first_local.chunks_written > 40
            assert first_ray.chunks_embedded == first_ray.chunks_written  # embedded on the cluster, none locally
            # Which of two near-duplicates is "the copy" depends on which finished first: compare the pairs.
            assert _pairs(first_ray) == _pairs(first_local) == {frozenset({"pto.md", "pto-copy.md"})}
            _assert_same_index(local, distributed)

            # An incremental run: one document changed, one removed, one added; the rest is left alone.
            (corpus / "pto.md").write_text("# Time Off\n\nAsk your manager about paid leave.\n", encoding="utf-8")
            (corpus / "security.html").unlink()
            (corpus / "notes.txt").write_text("Office notes\n\nThe coffee machine is on floor 3.\n", encoding="utf-8")
            second_local = local.knowledge.ingest(corpus)
            second_ray = distributed.knowledge.ingest(corpus, processor=processor)
            assert (second_ray.added, second_ray.updated, second_ray.removed) == (
                second_local.added,
                second_local.updated,
                second_local.removed,
            )
            assert [Path(s).name for s in second_ray.added + second_ray.removed] == ["notes.txt", "security.html"]
            assert [Path(s).name for s in second_ray.updated] == ["pto.md"]
            assert second_ray.chunks_written == second_local.chunks_written == 2
            _assert_same_index(local, distributed)
    finally:
        local.close()
        distributed.close()


def test_workers_with_another_embedding_model_are_refused(ray_address: str) -> None:
    processor = RayProcessor(
        ray_address,
        ChunkingConfig(),
        embedder_factory=HashEmbedder,
        expected_model=MiniLMEmbedder.name,
        workers=1,
    )
    with pytest.raises(ValueError, match=r"the Ray workers embed with .* but this index is embedded with all-MiniLM"):
        processor.start()
    assert processor.worker_count == 0


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to ``import ray``
    processor = RayProcessor("127.0.0.1:1", ChunkingConfig())
    with pytest.raises(RayUnavailableError, match=r"pip install 'llmops\[ray\]'"):
        processor.start()
