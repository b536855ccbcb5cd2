"""A write-ahead journal: rows bound for the store are appended to a local file, then drained in batches.

The request path pays one ``write`` of a line (microseconds) instead of a database transaction, and nothing
acknowledged is lost: once ``append`` returns, the line is in the operating system's page cache, which survives the
process being killed (``kill -9``). A background thread drains the journal into the store every few milliseconds, in
one transaction per batch; a crash between the drain and the deletion of the drained segment replays the segment,
and the inserts ignore rows that are already there (every journalled table has a natural primary key).

Layout: each process journals into its own folder ``ROOT/<pid>-<random>/`` holding ``segment-<n>.jsonl`` files (one
JSON object per line, mapping table names to lists of rows) and a ``lock`` file it holds an exclusive ``flock`` on
while it lives. Several processes (the server, ``llmops ingest``, another replica) can share one ROOT: at start a
process drains and removes the folders whose lock it can take, which are those of processes that died.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import DateTime, Table
from sqlalchemy.dialects import postgresql, sqlite

from llmops.store._base import Base
from llmops.store._store import Store

__all__ = ["Journal"]

logger = logging.getLogger("llmops.store")


class Journal:
    """Crash-safe, batched writes of rows to tables of the store.

    >>> journal.append({"traces": [row], "spans": [row, row]})  # doctest: +SKIP  (durable when it returns)
    >>> journal.flush()                                           # doctest: +SKIP  (drained into the store)
    """

    def __init__(self, store: Store, root: Path, *, interval: float = 0.05) -> None:
        self._store = store
        root.mkdir(parents=True, exist_ok=True)
        self.directory = root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.directory.mkdir()
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._append_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._interval = interval
        self._number = 0
        self._recover(root)
        self._fd, self._size = self._open_segment()
        self._thread = threading.Thread(target=self._run, name="llmops-journal", daemon=True)
        self._thread.start()

    def _segments(self, directory: Path | None = None) -> list[Path]:
        return list((directory or self.directory).glob("segment-*.jsonl"))

    def _recover(self, root: Path) -> None:
        """Drain the journals of processes that died (their lock can be taken), then remove them."""
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and p != self.directory):
            try:
                fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its process is alive and drains it itself
            try:
                self._drain_segments(self._segments(folder))
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(fd)

    def _path(self, number: int) -> Path:
        return self.directory / f"segment-{number:012d}.jsonl"

    def _open_segment(self) -> tuple[int, int]:
        return os.open(self._path(self._number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 0

    def append(self, rows_by_table: dict[str, list[dict[str, Any]]]) -> None:
        """Durably queue rows (one line: all of them or none). Datetimes, numbers, strings, lists, dicts only."""
        line = orjson.dumps(rows_by_table, option=orjson.OPT_NAIVE_UTC) + b"\n"
        with self._append_lock:
            if self._stopped.is_set():
                raise RuntimeError("the journal is closed")
            os.write(self._fd, line)
            self._size += len(line)

    def flush(self) -> None:
        """Drain everything appended so far into the store, now."""
        with self._drain_lock:
            with self._append_lock:
                if self._size == 0:
                    return
                os.close(self._fd)
                closed = self._path(self._number)
                self._number += 1
                self._fd, self._size = self._open_segment()
            self._drain_segments([closed])

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the store may be briefly unavailable: the lines stay on disk and are retried
                logger.exception("draining the journal failed; will retry")
                self._stopped.wait(1.0)

    def _drain_segments(self, segments: list[Path]) -> None:
        for segment in sorted(segments):
            batches = _read(segment)
            if batches:
                self._insert(batches)
            segment.unlink()

    def _insert(self, batches: dict[str, list[dict[str, Any]]]) -> None:
        tables = Base.metadata.tables
        dialect_insert = postgresql.insert if self._store.engine.dialect.name == "postgresql" else sqlite.insert
        with self._store.engine.begin() as connection:
            for name, rows in batches.items():
                table = tables.get(name)
                if table is None:
                    logger.error("journal holds rows for unknown table %r; skipped", name)
                    continue
                statement = dialect_insert(table).on_conflict_do_nothing()
                connection.execute(statement, [_typed(table, row) for row in rows])

    def close(self) -> None:
        """Stop the drain thread and drain what is left."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=10)
        with self._drain_lock, self._append_lock:
            os.close(self._fd)
            self._fd = -1
        self._drain_segments(self._segments())
        shutil.rmtree(self.directory, ignore_errors=True)
        os.close(self._lock_fd)


def _read(segment: Path) -> dict[str, list[dict[str, Any]]]:
    batches: dict[str, list[dict[str, Any]]] = {}
    data = segment.read_bytes()
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line:
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            # Only a write cut by a crash can leave a partial line, and a cut write was never acknowledged.
            logger.warning("skipping an incomplete line %d in %s", number, segment.name)
            continue
        for table, rows in entry.items():
            batches.setdefault(table, []).extend(rows)
    return batches


def _typed(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no datetimes: turn ISO strings back into datetimes for DateTime columns."""
    out = dict(row)
    for column in table.columns:
        value = out.get(column.name)
        if isinstance(value, str) and isinstance(column.type, DateTime):
            out[column.name] = datetime.fromisoformat(value)
    return out
