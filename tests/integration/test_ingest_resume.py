"""`llmops ingest` killed with SIGKILL at random moments resumes on the next run: no duplicate, no missing chunk.

The real command, the real embedding model and the embedded indexes; the result is compared with one clean run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from llmops import Platform, Settings
from llmops.knowledge._tables import LIVE, ChunkRow, DocumentRow, IndexSnapshotRow

LLMOPS = str(Path(sys.executable).parent / "llmops")


def _corpus(root: Path, documents: int) -> Path:
    rng = random.Random(7)
    words = [
        "policy",
        "travel",
        "expense",
        "laptop",
        "badge",
        "office",
        "remote",
        "leave",
        "budget",
        "review",
        "approval",
        "manager",
        "team",
    ]
    root.mkdir()
    for n in range(documents):
        paragraphs = [
            " ".join(rng.choice(words) for _ in range(rng.randint(40, 90))).capitalize() + "."
            for _ in range(rng.randint(2, 5))
        ]
        (root / f"doc-{n:03}.md").write_text(f"# Document {n}\n\n" + "\n\n".join(paragraphs) + "\n")
    return root


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env.update(LLMOPS_DATA_DIR=str(data_dir), LLMOPS_CONFIG=str(data_dir / "none.yaml"))
    return env


def _ingest(data_dir: Path, corpus: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMOPS, "ingest", str(corpus), "--json"], env=_env(data_dir), capture_output=True, text=True, timeout=300
    )


def _state(data_dir: Path) -> tuple[list[tuple[str, int, str, bytes]], int]:
    platform = Platform(Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'llmops.db'}"))
    try:
        with platform.store.session() as session:
            rows = session.execute(
                sa.select(DocumentRow.source, ChunkRow.ordinal, ChunkRow.text, ChunkRow.embedding, ChunkRow.id)
                .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
                .where(ChunkRow.snapshot_until == LIVE)
            ).all()
            building = session.scalar(
                sa.select(sa.func.count()).select_from(IndexSnapshotRow).where(IndexSnapshotRow.status != "ready")
            )
        assert building == 0
        platform.knowledge.refresh()
        indexed = len(platform.knowledge.vector_index)
        platform.knowledge.vector_index.vectors([row[4] for row in rows])  # KeyError if a live chunk is not indexed
        hits = platform.knowledge.search("travel expense approval", k=500, mode="keyword")
        assert len({h.chunk_id for h in hits}) == len(hits)
        return sorted((Path(s).name, o, t, e) for s, o, t, e, _ in rows), indexed
    finally:
        platform.close()


def test_kill_9_at_random_moments_then_resume_equals_one_clean_run(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus", 40)
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    started = time.monotonic()
    clean = _ingest(clean_dir, corpus)
    duration = time.monotonic() - started  # start-up included: kills land anywhere from start-up to the end
    assert clean.returncode == 0, clean.stderr

    rng = random.Random(11)
    kills = 0
    for _ in range(5):
        process = subprocess.Popen(
            [LLMOPS, "ingest", str(corpus), "--json"],
            env=_env(killed_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 0.75) * duration)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
    assert kills >= 2  # runs were cut somewhere between start-up and the end
    resumed = _ingest(killed_dir, corpus)
    assert resumed.returncode == 0, resumed.stderr

    expected, expected_indexed = _state(clean_dir)
    got, got_indexed = _state(killed_dir)
    assert [row[:3] for row in got] == [row[:3] for row in expected]  # same chunks: none missing, none twice
    assert [row[3] for row in got] == [row[3] for row in expected]  # and the same vectors
    assert got_indexed == expected_indexed == len(got)
