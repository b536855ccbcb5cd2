"""A server killed with SIGKILL under load loses no acknowledged trace: every request answered 200 before the kill
has its trace after a restart on the same data directory.

The real `llmops up` (journal drained by a child process, as in production) serves `/v1/chat/completions` for a
model behind a fake OpenAI-compatible upstream on loopback, so requests are cheap and many are in flight when the
whole process group (server and drainer) is killed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..helpers import FakeUpstream, free_port, serve_in_thread, wait_until_up
from .conftest import LLMOPS, clean_env

CLIENTS = 8
KILL_AFTER_ACKNOWLEDGED = 1000
LOAD_DEADLINE_S = 60


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_in_thread(FakeUpstream().app) as base:
        yield base


def _start(data_dir: Path, config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = clean_env(data_dir, LLMOPS_PORT=str(port), LLMOPS_CONFIG=str(config))
    with log.open("ab") as out:
        # Its own session: the kill reaches the server and its journal drainer, as a crash of the machine's
        # service would (the drainer is a child in the same process group).
        return subprocess.Popen([LLMOPS, "up"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _load(base_url: str, acknowledged: list[str], failures: list[str], stop: threading.Event) -> None:
    body = {"model": "fake", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            try:
                response = client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "Hello world":
                acknowledged.append(response.headers["x-request-id"])
            else:
                failures.append(f"{response.status_code} {response.text[:200]}")


def _wait_for_the_drainer(data_dir: Path, timeout: float = 180) -> None:
    """The drainer process is draining once the segment written at start-up is gone (it needs seconds to start)."""
    deadline = time.monotonic() + timeout
    while any((data_dir / "journal").glob("*/segment-*.ready")):
        assert time.monotonic() < deadline, "the journal's drainer never drained the start-up segment"
        time.sleep(0.1)


def _stored(data_dir: Path, request_ids: list[str]) -> int:
    """How many of these requests have their trace row in the store (read directly, before any restart)."""
    with sqlite3.connect(data_dir / "llmops.db") as db:
        stored = {row[0] for row in db.execute("SELECT request_id FROM traces")}
    return len(stored & set(request_ids))


def _journal_lines(data_dir: Path) -> int:
    """Lines left in the journal (written, maybe not yet drained) by the killed processes."""
    return sum(
        segment.read_bytes().count(b"\n") for segment in (data_dir / "journal").glob("*/segment-*") if segment.is_file()
    )


@pytest.mark.timeout(600)
def test_every_acknowledged_request_has_its_trace_after_kill_9(tmp_path: Path, upstream: str) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "llmops.yaml"
    model = {"name": "fake", "provider": "openai-compatible", "model": "ok", "base_url": f"{upstream}/v1",
             "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}  # fmt: skip
    embedder = {"name": "all-minilm-l6-v2", "provider": "local", "kind": "embedding", "model": "all-MiniLM-L6-v2-int8"}
    config.write_text(json.dumps({"models": [model, embedder], "rag_apps": []}))  # JSON is YAML
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"

    server = _start(data_dir, config, port, log)
    try:
        wait_until_up(f"{base_url}/healthz", timeout=180)
        _wait_for_the_drainer(data_dir)
        acknowledged: list[str] = []
        failures: list[str] = []
        stop = threading.Event()
        loaders = [
            threading.Thread(target=_load, args=(base_url, acknowledged, failures, stop), daemon=True)
            for _ in range(CLIENTS)
        ]
        for loader in loaders:
            loader.start()
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while len(acknowledged) < KILL_AFTER_ACKNOWLEDGED and time.monotonic() < deadline:
            time.sleep(0.01)
        # Kill mid-drain: once some of the load's traces reached the store (a busy machine can take a while to
        # drain the first ones), while the newest are still only in the journal.
        drained_by = time.monotonic() + LOAD_DEADLINE_S
        while _stored(data_dir, list(acknowledged)) == 0 and time.monotonic() < drained_by:
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)  # mid-load: every client has a request in flight
        server.wait(timeout=30)
        stop.set()
        for loader in loaders:
            loader.join(timeout=30)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)

    assert not failures, failures[:5]
    assert len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED, log.read_text()[-3000:]
    assert len(set(acknowledged)) == len(acknowledged)
    # The kill came mid-drain: some acknowledged traces were in the store, others only in the journal, which the
    # restart must recover.
    in_store, left_in_journal = _stored(data_dir, acknowledged), _journal_lines(data_dir)
    print(
        f"{len(acknowledged)} acknowledged; {in_store} in the store at the kill, {left_in_journal} journal lines left"
    )
    assert 0 < in_store < len(acknowledged)
    assert left_in_journal > 0

    restarted = _start(data_dir, config, port, log)
    try:
        wait_until_up(f"{base_url}/healthz", timeout=180)
        missing = []
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for request_id in acknowledged:
                response = client.get(f"/api/traces/{request_id}")
                if response.status_code != 200:
                    missing.append(request_id)
                    continue
                trace = response.json()
                assert trace["request_id"] == request_id
                (chat,) = [s for s in trace["spans"] if s["name"] == "chat fake"]  # the root, or under the rails
                assert chat["attributes"]["gen_ai.request.model"] == "fake"
                assert chat["attributes"]["gen_ai.usage.output_tokens"] == 2
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged requests lost their trace"
    finally:
        restarted.send_signal(signal.SIGINT)
        try:
            restarted.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(restarted.pid, signal.SIGKILL)
            restarted.wait(timeout=30)
