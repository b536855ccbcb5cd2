"""Integration fixtures: the real `llmops` command, the bundled models, a real server process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops.testing import make_pdf

from ..conftest import SAMPLES
from ..helpers import free_port, wait_until_up

LLMOPS = str(Path(sys.executable).with_name("llmops"))


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") or k.startswith("LLMOPS_TEST_")}
    env.update({"LLMOPS_DATA_DIR": str(data_dir), "LLMOPS_CONFIG": str(data_dir / "absent.yaml"), **extra})
    return env


@contextmanager
def llmops_up(env: dict[str, str], log_path: Path, *, timeout: float = 120) -> Iterator[str]:
    """`llmops up` on a free port with ``env``, its output in ``log_path``; yields its base URL and stops it with
    Ctrl-C (killed if it does not stop within 20 s)."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [LLMOPS, "up"], env={**env, "LLMOPS_PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{base_url}/healthz", timeout=timeout)
            yield base_url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class RunningServer:
    base_url: str
    data_dir: Path
    corpus: Path
    ingest_output: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`llmops ingest` over the sample handbook plus a corrupt PDF, then `llmops up` on a free port."""
    root = tmp_path_factory.mktemp("e2e")
    corpus = root / "corpus"
    shutil.copytree(SAMPLES, corpus)
    (corpus / "corrupt.pdf").write_bytes(make_pdf(["This file is cut short."])[:180])
    data_dir = root / "data"
    ingest = subprocess.run(
        [LLMOPS, "ingest", str(corpus)], env=clean_env(data_dir), capture_output=True, text=True, timeout=300
    )
    with llmops_up(clean_env(data_dir), root / "server.log") as base_url:
        yield RunningServer(base_url, data_dir, corpus, ingest)
