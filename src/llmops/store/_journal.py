"""A write-ahead journal: rows bound for the store are appended to a local file, then drained in batches.

The request path pays one ``write`` of a line (microseconds) instead of a database transaction, and nothing
acknowledged is lost: once ``append`` returns, the line is in the operating system's page cache, which survives the
process being killed (``kill -9``). A background thread drains the journal into the store every few milliseconds, in
one transaction per batch; a crash between the drain and the deletion of the drained segment replays the segment,
and the inserts ignore rows that are already there (every journalled table has a natural primary key).

Layout: each process journals into its own folder ``ROOT/<pid>-<random>/`` and holds an exclusive ``flock`` on its
``lock`` file while it lives. Lines (one JSON object each, mapping table names to lists of rows) are appended to
``segment-<n>.jsonl``; every interval the segment is closed and renamed ``segment-<n>.ready``. A drainer claims a
ready segment by renaming it ``segment-<n>.draining-<pid>`` (only one rename can win), inserts it and deletes it.
Several processes (the server, ``llmops ingest``, other replicas) can share one ROOT: at start a process drains and
removes the folders whose lock it can take, which are those of processes that died.

A line may also hold entries of a compact form that is not a table (``register_journal_expander``): the drain
turns them into rows of tables, so that work is not done by the writer (a request, for traces).

Draining runs on a thread of the process by default. The server runs it in a child process instead
(``drain="process"``): inserting is work the request path must not wait for, and a thread would compete with the
event loop for the interpreter lock (at 1,600 gateway calls per second it cost a third of the throughput and
tripled the 99th percentile, measured).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import JSON, Column, DateTime, Table
from sqlalchemy.engine import Dialect

from llmops.store._base import Base
from llmops.store._store import Store

__all__ = ["Expander", "Journal", "SegmentWriter", "drain_ready", "register_journal_expander", "rows_of_line"]

logger = logging.getLogger("llmops.store")

# Lines read, or rows inserted, between two pauses of a drainer that pauses (``SegmentWriter``): ~0.1-0.3 ms of work.
_CHUNK = 32

#: Turns the entries a line holds under a registered name into rows of tables (``{table: [row, ...]}``).
Expander = Callable[[list[Any]], dict[str, list[dict[str, Any]]]]
_EXPANDERS = "llmops.journal.expanders"  # the key of the registered expanders in the tables' metadata ``info``


def register_journal_expander(name: str, expand: Expander) -> None:
    """Let journal lines hold entries under ``name`` (not a table's name), which ``expand`` turns into rows of
    tables when the line is drained, by whichever process drains it.

    The expander is registered on the tables' metadata, as the tables are: every process that has imported the
    platform's tables (the drainer process does) can drain such lines. A writer whose rows are costly to build (a
    trace's span rows and request metrics, on the request path) journals a compact entry instead.

    >>> register_journal_expander("my.entry", lambda entries: {"traces": [...]})  # doctest: +SKIP
    """
    if name in Base.metadata.tables:
        raise ValueError(f"{name!r} is a table: an expanded entry needs a name of its own")
    Base.metadata.info.setdefault(_EXPANDERS, {})[name] = expand


def rows_of_line(line: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows a journal line puts into tables, its registered entries expanded (what draining inserts)."""
    expanders: dict[str, Expander] = Base.metadata.info.get(_EXPANDERS, {})
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, entries in line.items():
        expand = expanders.get(name)
        if expand is None:
            rows.setdefault(name, []).extend(entries)
            continue
        for table, expanded in expand(entries).items():
            rows.setdefault(table, []).extend(expanded)
    return rows


class Journal:
    """Crash-safe, batched writes of rows to tables of the store.

    >>> journal.append({"traces": [row], "spans": [row, row]})  # doctest: +SKIP  (durable when it returns)
    >>> journal.flush()                                           # doctest: +SKIP  (drained into the store)
    """

    def __init__(
        self, store: Store, root: Path, *, interval: float = 0.2, drain: Literal["thread", "process"] = "thread"
    ) -> None:
        self._store = store
        self._drain = drain
        self._drainer: subprocess.Popen[bytes] | None = None
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
        self._writer = SegmentWriter(store)
        self._pending: list[bytes] = []
        self._number = 0
        self._recover(root)
        self._fd, self._size = self._open_segment()
        if drain == "process":
            self._drainer = _start_drainer(self.directory, store.url, interval)
        self._thread = threading.Thread(target=self._run, name="llmops-journal", daemon=True)
        self._thread.start()

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
                # Its drainer, if it had one, exits when it sees its parent gone; re-inserting is harmless.
                for segment in sorted(folder.glob("segment-*")):
                    self._drain_file(segment)
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(fd)

    def _path(self, number: int) -> Path:
        return self.directory / f"segment-{number:012d}.jsonl"

    def _open_segment(self) -> tuple[int, int]:
        return os.open(self._path(self._number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 0

    def append(self, rows_by_table: dict[str, list[dict[str, Any]]], *, durable: bool = True) -> None:
        """Queue rows (one line: all of them or none). Datetimes, numbers, strings, lists, dicts only.

        ``durable`` lines are on disk when this returns, together with any non-durable lines before them; a
        non-durable line waits (in memory, at most one drain interval) for the next durable one. Use it only for
        rows that are always followed by a durable line before anything is acknowledged.
        """
        line = orjson.dumps(rows_by_table, option=orjson.OPT_NAIVE_UTC) + b"\n"
        with self._append_lock:
            if self._stopped.is_set():
                raise RuntimeError("the journal is closed")
            if not durable:
                self._pending.append(line)
                return
            if self._pending:
                line = b"".join([*self._pending, line])
                self._pending.clear()
            os.write(self._fd, line)
            self._size += len(line)

    def _write_pending(self) -> None:
        """Put lines still in memory on disk (called with the append lock held)."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            os.write(self._fd, data)
            self._size += len(data)

    def rotate(self) -> None:
        """Close the current segment (if it holds anything) and mark it ready to drain."""
        with self._append_lock:
            if self._fd < 0:
                return
            self._write_pending()
            if self._size == 0:
                return
            os.close(self._fd)
            current = self._path(self._number)
            current.rename(current.with_suffix(".ready"))
            self._number += 1
            self._fd, self._size = self._open_segment()

    def flush(self) -> None:
        """Drain everything appended so far into the store, now (waiting for a drainer mid-way, if any)."""
        with self._drain_lock:
            self.rotate()
            drain_ready(self.directory, self._drain_file)
            deadline = time.monotonic() + 30
            while any(self.directory.glob("segment-*.draining-*")) and time.monotonic() < deadline:
                time.sleep(0.005)  # the drainer process is inserting a segment: its rows are moments away

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                if self._drain == "process":
                    self.rotate()
                else:
                    self.flush()
            except Exception:  # the store may be briefly unavailable: the lines stay on disk and are retried
                logger.exception("draining the journal failed; will retry")
                self._stopped.wait(1.0)

    def _drain_file(self, segment: Path) -> None:
        self._writer.drain_file(segment)

    def close(self) -> None:
        """Stop draining in the background and drain what is left."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()
        if self._drainer is not None:
            self._drainer.terminate()
            self._drainer.wait(timeout=10)
        with self._append_lock:
            os.close(self._fd)
            self._fd = -1
        for segment in sorted(self.directory.glob("segment-*")):
            self._drain_file(segment)
        shutil.rmtree(self.directory, ignore_errors=True)
        os.close(self._lock_fd)


class SegmentWriter:
    """Inserts journal segments into the store: one transaction per segment, ``executemany`` per table.

    It works on the raw DB-API connection, skipping SQLAlchemy's per-statement machinery: draining is volume work.
    ``pause``, when given, is called after every ``_CHUNK`` lines read and rows inserted: the drainer process gives
    up its CPU there (``os.sched_yield``).
    """

    def __init__(self, store: Store, *, pause: Callable[[], object] | None = None) -> None:
        self._store = store
        self._plans: dict[str, _InsertPlan] = {}
        self._pause = pause

    def drain_file(self, segment: Path) -> None:
        """Insert a segment's rows, then delete it (rows already in the store are skipped)."""
        batches = _read(segment, self._pause)
        if batches:
            self._insert(batches)
        segment.unlink(missing_ok=True)

    def _insert(self, batches: dict[str, list[dict[str, Any]]]) -> None:
        connection = self._store.engine.raw_connection()
        try:
            cursor = connection.cursor()
            for name, rows in batches.items():
                plan = self._plan(name)
                if plan is None:
                    logger.error("journal holds rows for unknown table %r; skipped", name)
                    continue
                if self._pause is None:
                    cursor.executemany(plan.sql, plan.parameters(rows))
                    continue
                for start in range(0, len(rows), _CHUNK):
                    cursor.executemany(plan.sql, plan.parameters(rows[start : start + _CHUNK]))
                    self._pause()
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    def _plan(self, name: str) -> _InsertPlan | None:
        plan = self._plans.get(name)
        if plan is None:
            table = Base.metadata.tables.get(name)
            if table is None:
                return None
            plan = self._plans[name] = _InsertPlan(table, self._store.engine.dialect)
        return plan


class _InsertPlan:
    """The INSERT statement for a table and how a journalled row becomes its parameters: the values in column order,
    with the few columns whose journalled JSON value is not what the DB-API takes (datetimes, JSON) converted."""

    __slots__ = ("_columns", "_conversions", "sql")

    def __init__(self, table: Table, dialect: Dialect) -> None:
        names = [c.name for c in table.columns]
        quoted = ", ".join(dialect.identifier_preparer.quote(n) for n in names)
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        values = ", ".join([marker] * len(names))
        verb = "INSERT OR IGNORE" if dialect.name == "sqlite" else "INSERT"
        tail = "" if dialect.name == "sqlite" else " ON CONFLICT DO NOTHING"
        self.sql = f"{verb} INTO {dialect.identifier_preparer.format_table(table)} ({quoted}) VALUES ({values}){tail}"
        self._columns = names
        self._conversions = [
            (i, convert) for i, column in enumerate(table.columns) if (convert := _converter(column, dialect))
        ]

    def parameters(self, rows: list[dict[str, Any]]) -> list[list[Any]]:
        columns, conversions = self._columns, self._conversions
        parameters = []
        for row in rows:
            values = list(map(row.get, columns))
            for i, convert in conversions:
                values[i] = convert(values[i])
            parameters.append(values)
        return parameters


def drain_ready(directory: Path, drain: Callable[[Path], None]) -> None:
    """Claim each ready segment (a rename only one process can win) and drain it."""
    for segment in sorted(directory.glob("segment-*.ready")):
        claimed = segment.with_suffix(f".draining-{os.getpid()}")
        try:
            segment.rename(claimed)
        except FileNotFoundError:
            continue  # another drainer took it
        drain(claimed)


def _start_drainer(directory: Path, url: str, interval: float) -> subprocess.Popen[bytes]:
    # The database URL may hold a password: it goes through the environment, not the command line (ps shows that).
    env = {**os.environ, "LLMOPS_DRAINER_DATABASE_URL": url}
    command = [sys.executable, "-m", "llmops.store._drainer", str(directory), str(interval), str(os.getpid())]
    return subprocess.Popen(command, env=env, start_new_session=False)


def _read(segment: Path, pause: Callable[[], object] | None = None) -> dict[str, list[dict[str, Any]]]:
    batches: dict[str, list[dict[str, Any]]] = {}
    data = segment.read_bytes()
    for number, line in enumerate(data.split(b"\n"), start=1):
        if pause is not None and number % _CHUNK == 0:
            pause()
        if not line:
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            # Only a write cut by a crash can leave a partial line, and a cut write was never acknowledged.
            logger.warning("skipping an incomplete line %d in %s", number, segment.name)
            continue
        try:
            expanded = rows_of_line(entry)
        except Exception:
            # A line its expander cannot read is skipped, as rows of an unknown table are: it must not hold up the
            # other lines (draining a segment is all or nothing).
            logger.exception("skipping line %d in %s: its entries could not be expanded", number, segment.name)
            continue
        for table, rows in expanded.items():
            batches.setdefault(table, []).extend(rows)
    return batches


def _converter(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """How a journalled value of ``column`` becomes a DB-API value, or None when it is one already: JSON is dumped
    with orjson, datetimes (ISO strings in the journal) become what the dialect stores."""
    if isinstance(column.type, JSON):
        # A str is JSON the appender serialised already (our JSON columns hold objects and arrays, never strings).
        return lambda value: value if value is None or isinstance(value, str) else orjson.dumps(value).decode()
    if isinstance(column.type, DateTime):
        bind = column.type.bind_processor(dialect)
        if bind is None and dialect.name == "sqlite":
            return _sqlite_datetime

        def to_datetime(value: Any) -> Any:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
            return bind(moment) if bind else moment

        return to_datetime
    return None


def _sqlite_datetime(value: Any) -> Any:
    """What sqlite3's own adapter stores for a datetime (``isoformat(" ")``). A journalled one is orjson's ISO text,
    which differs from that only by its "T": replaced, rather than parsed into a datetime and formatted again."""
    if isinstance(value, str):
        return value.replace("T", " ", 1)
    return value.isoformat(" ") if isinstance(value, datetime) else value
