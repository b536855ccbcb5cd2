"""The write-ahead journal: durable appends, batched drains, idempotent replays, and survival of kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from llmops.observability._tables import TraceRow
from llmops.store import Base, Journal, Store
from llmops.store._journal import SegmentWriter, register_journal_expander, rows_of_line


def _trace(i: int) -> dict[str, object]:
    return {
        "request_id": f"req_{i}",
        "trace_id": f"{i:032x}",
        "name": "t",
        "created_at": datetime.now(UTC),
        "duration_ms": 1.0,
        "status": "ok",
        "attributes": {"i": i},
    }


def _count(store: Store) -> int:
    with store.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(TraceRow)) or 0


def test_appended_rows_reach_the_store(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=0.01)
    for i in range(50):
        journal.append({"traces": [_trace(i)]})
    journal.flush()
    assert _count(store) == 50
    with store.session() as session:
        row = session.get(TraceRow, "req_7")
        assert row is not None and row.attributes == {"i": 7} and row.created_at.year >= 2026
    journal.close()
    assert list((tmp_path / "journal").iterdir()) == [] or all(
        p.stat().st_size == 0 for p in (tmp_path / "journal").iterdir()
    )
    store.close()


def test_journalled_datetimes_read_back_as_written(database_url: str, tmp_path: Path) -> None:
    """With and without microseconds; on SQLite stored as its own adapter stores a datetime (``isoformat(" ")``)."""
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=60)
    moments = [datetime(2026, 11, 24, 12, 30, 1, 123456, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)]
    for i, moment in enumerate(moments):
        journal.append({"traces": [{**_trace(i), "created_at": moment}]})
    journal.flush()
    with store.session() as session:
        for i, moment in enumerate(moments):
            row = session.get(TraceRow, f"req_{i}")
            assert row is not None and row.created_at.replace(tzinfo=UTC) == moment
    if store.is_sqlite:
        with store.engine.connect() as connection:
            stored = connection.exec_driver_sql("SELECT created_at FROM traces ORDER BY request_id").scalars().all()
        assert stored == [m.isoformat(" ") for m in moments]
    journal.close()
    store.close()


def test_a_pausing_writer_inserts_everything_and_pauses_between_chunks(database_url: str, tmp_path: Path) -> None:
    """The drainer process's writer gives up its CPU every few dozen lines and rows (``pause``); what it inserts is
    the same, in one transaction per segment."""
    store = Store(database_url)
    store.migrate()
    segment = tmp_path / "segment-000000000000.ready"
    lines = [orjson.dumps({"traces": [_trace(i)]}, option=orjson.OPT_NAIVE_UTC) for i in range(200)]
    segment.write_bytes(b"\n".join(lines) + b"\n")
    pauses: list[int] = []
    SegmentWriter(store, pause=lambda: pauses.append(1)).drain_file(segment)
    assert _count(store) == 200
    assert not segment.exists()
    # 200 lines read and 200 rows inserted, in chunks of 32: at least 6 pauses for each.
    assert len(pauses) >= 12
    with store.session() as session:
        row = session.get(TraceRow, "req_199")
        assert row is not None and row.attributes == {"i": 199} and row.created_at.year >= 2026
    store.close()


def test_the_background_thread_drains_without_a_flush(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=0.01)
    journal.append({"traces": [_trace(1)]})
    deadline = time.monotonic() + 5
    while _count(store) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _count(store) == 1
    journal.close()
    store.close()


def test_a_replayed_segment_inserts_nothing_twice(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    directory = tmp_path / "journal"
    journal = Journal(store, directory)
    journal.append({"traces": [_trace(1), _trace(2)]})
    journal.flush()
    journal.close()
    # A process that crashed after its insert but before deleting the segment: the same lines are on disk again.
    dead = directory / "12345-dead"
    dead.mkdir()
    (dead / "segment-000000000099.jsonl").write_bytes(
        b'{"traces": [{"request_id": "req_1", "trace_id": "1", "name": "t", "created_at": "2026-01-01T00:00:00+00:00",'
        b' "duration_ms": 1.0, "status": "ok", "attributes": {}}]}\n{"traces": [{"request_id": "req_3", "trace_'
    )
    Journal(store, directory).close()  # recovery at start
    assert _count(store) == 2  # req_1 was already there; the cut line (never acknowledged) is skipped
    assert not dead.exists()
    store.close()


WRITER = """
import sys
from pathlib import Path
from datetime import UTC, datetime
from llmops.observability import _tables  # registers the tables
from llmops.store import Journal, Store
store = Store(sys.argv[1])
journal = Journal(store, Path(sys.argv[2]), interval=3600)  # never drains on its own: the kill must beat it
i = 0
while True:
    journal.append({"traces": [{"request_id": f"req_{i}", "trace_id": f"{i:032x}", "name": "t",
                    "created_at": datetime.now(UTC), "duration_ms": 1.0, "status": "ok", "attributes": {}}]})
    print(i, flush=True)  # acknowledged
    i += 1
"""


def test_acknowledged_rows_survive_kill_9(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    directory = tmp_path / "journal"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, database_url, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    acknowledged = -1
    while acknowledged < 300:
        acknowledged = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert _count(store) == 0  # nothing was drained before the kill
    Journal(store, directory).close()  # the next process recovers the journal
    with store.session() as session:
        stored = set(session.scalars(sa.select(TraceRow.request_id)))
    assert {f"req_{i}" for i in range(acknowledged + 1)} <= stored
    store.close()


def test_journals_of_live_processes_are_left_alone(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    server = Journal(store, tmp_path / "journal", interval=3600)
    server.append({"traces": [_trace(1)]})
    Journal(store, tmp_path / "journal").close()  # another process (a CLI command) starts and stops meanwhile
    server.append({"traces": [_trace(2)]})
    server.flush()
    assert _count(store) == 2
    server.close()
    store.close()


def test_a_drainer_process_inserts_while_the_journal_only_appends(database_url: str, tmp_path: Path) -> None:
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=0.05, drain="process")
    for i in range(200):
        journal.append({"traces": [_trace(i)]})
    deadline = time.monotonic() + 30  # the child imports llmops first
    while _count(store) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _count(store) == 200
    journal.append({"traces": [_trace(999)]})
    journal.flush()  # a read right after a request sees its rows, whoever drains them
    assert _count(store) == 201
    journal.close()
    assert list((tmp_path / "journal").iterdir()) == []
    store.close()


def _expand_numbers(entries: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """A compact entry (a list of numbers) expanded into trace rows; a number below zero cannot be expanded."""
    if any(n < 0 for entry in entries for n in entry):
        raise ValueError("no negative numbers")
    return {"traces": [{**_trace(n), "created_at": datetime.now(UTC)} for entry in entries for n in entry]}


@pytest.fixture
def numbers_expander(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers ``test.numbers`` for one test (the registry lives in the tables' metadata, shared by the process)."""
    monkeypatch.setitem(Base.metadata.info, "llmops.journal.expanders", dict(Base.metadata.info.get(
        "llmops.journal.expanders", {})))  # fmt: skip
    register_journal_expander("test.numbers", _expand_numbers)


def test_registered_entries_are_expanded_into_rows_when_drained(
    database_url: str, tmp_path: Path, numbers_expander: None, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=3600)
    journal.append({"test.numbers": [[1, 2], [3]], "traces": [_trace(4)]})
    journal.append({"test.numbers": [[5, -1]]})  # its expander fails: this line is skipped, not the segment
    journal.append({"test.numbers": [[6]]})
    assert rows_of_line({"test.numbers": [[7]], "traces": []})["traces"][0]["request_id"] == "req_7"
    journal.flush()
    with store.session() as session:
        assert set(session.scalars(sa.select(TraceRow.request_id))) == {"req_1", "req_2", "req_3", "req_4", "req_6"}
    assert "could not be expanded" in caplog.text
    journal.close()
    store.close()


def test_an_expanded_entry_cannot_take_a_tables_name(numbers_expander: None) -> None:
    with pytest.raises(ValueError, match="is a table"):
        register_journal_expander("traces", _expand_numbers)
