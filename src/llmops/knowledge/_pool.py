"""Processing documents with every core of one machine: worker processes that parse, chunk and embed.

In-process ingestion (`LocalProcessor`) uses one core: the ingestor parses, chunks and embeds one document after
another, and the MiniLM model runs with ``embedding_threads`` threads, which scales poorly on the short batches of
one document. `LocalPoolProcessor` runs `process_document` with the embedder in N worker processes instead, each
loading the model once, and hands results back as they complete; the ingestor writes them (the store keeps one
writer). The chunks and vectors are those of the in-process run (the same function, model and batch size).

>>> with LocalPoolProcessor(ChunkingConfig(), workers=2) as processor:        # doctest: +SKIP
...     kb.ingest("docs/", processor=processor)

`KnowledgeBase.ingest` starts one by itself, one worker per CPU, for a run with enough new documents (see
`llmops.knowledge._parallel`), and closes it when the run ends.

`DocumentWorker` is the unit both this pool and the Ray actors run.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from types import TracebackType

from llmops.knowledge._chunking_config import ChunkingConfig, build_chunker
from llmops.knowledge._embedder import Embedder, MiniLMEmbedder
from llmops.knowledge._ingest import WorkItem
from llmops.knowledge._parsers import ParseError, Parser, default_parsers
from llmops.knowledge._processing import ProcessedDocument, process_document

__all__ = ["DocumentWorker", "LocalPoolProcessor", "batches", "worker_embedder_factory"]

EmbedderFactory = Callable[[], Embedder]
ParsersFactory = Callable[[], Iterable[Parser]]
WorkerResult = tuple[int, ProcessedDocument | ParseError]


class DocumentWorker:
    """One worker's parsers, embedding model and chunker, built once from picklable configuration."""

    def __init__(self, chunking_json: str, embedder_factory: EmbedderFactory, parsers_factory: ParsersFactory) -> None:
        self._embedder = embedder_factory()
        self._chunker = build_chunker(ChunkingConfig.from_json(chunking_json), self._embedder)
        self._parsers = {suffix: parser for parser in parsers_factory() for suffix in parser.suffixes}

    def model(self) -> str:
        """The embedding model's name: the driver checks it is the one its index records."""
        return self._embedder.name

    def process(self, batch: list[tuple[int, Path, bytes]]) -> list[WorkerResult]:
        results: list[WorkerResult] = []
        for index, name, data in batch:
            try:
                results.append((index, process_document(name, data, self._parsers, self._chunker, self._embedder)))
            except ParseError as exc:  # this document's failure, reported by name; anything else fails the run
                results.append((index, exc))
        return results


def batches(items: Sequence[WorkItem], size: int, max_bytes: int) -> Iterator[list[int]]:
    """Indexes of ``items`` in batches of at most ``size`` documents and ``max_bytes`` bytes (one item at least)."""
    batch: list[int] = []
    total = 0
    for index, item in enumerate(items):
        if batch and (len(batch) >= size or total + len(item.data) > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(index)
        total += len(item.data)
    if batch:
        yield batch


# The pool's worker processes each hold one DocumentWorker, made by the pool's initializer: module state that exists
# only in those child processes (a ProcessPoolExecutor hands tasks to functions, not to objects).
_worker: DocumentWorker | None = None


def _start_worker(chunking_json: str, embedder_factory: EmbedderFactory, parsers_factory: ParsersFactory) -> None:
    global _worker
    # Ctrl-C reaches the whole process group: the driver stops the run and shuts the pool down; a worker interrupted
    # on its own would only break the pool and print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="llmops-pool-parent", daemon=True).start()
    _worker = DocumentWorker(chunking_json, embedder_factory, parsers_factory)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While workers are spawned, the main module shows ``spawn`` neither a file nor a module name to re-run."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, object] = {name: vars(main)[name] for name in ("__file__", "__spec__") if name in vars(main)}
    vars(main).pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        vars(main).update(saved)


def _exit_with(parent_sentinel: int) -> None:
    """End this worker when the driver dies (kill -9 included). A pool's workers hold both ends of their task queue,
    so they never see it close: without this they would wait for work forever, each holding its model."""
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


def _model() -> str:
    assert _worker is not None
    return _worker.model()


def _process(batch: list[tuple[int, Path, bytes]]) -> list[WorkerResult]:
    assert _worker is not None
    return _worker.process(batch)


class LocalPoolProcessor:
    """A `DocumentProcessor` that parses, chunks and embeds in ``workers`` processes (default: one per CPU).

    Worker processes are started with ``spawn`` (forking a process that holds ONNX Runtime, SQLite and index
    threads is unsafe), on the first `process` call or by `start`, and live until `close` (or until this process
    dies, kill -9 included). ``import_main=False`` spares them the re-import of the main script that ``spawn``
    does so that functions defined there unpickle: the knowledge base's own pool, which runs only llmops code, turns it
    off, so a script that ingests at its top level (without ``if __name__ == "__main__":``) is not re-run in every
    worker, where it would ingest again, or fail to start its own workers. At most
    ``in_flight_per_worker`` batches per worker are queued, so memory stays bounded however many documents a run has.
    """

    embeds = True

    def __init__(
        self,
        chunking: ChunkingConfig,
        *,
        workers: int | None = None,
        threads: int = 1,
        embedder_factory: EmbedderFactory | None = None,
        parsers_factory: ParsersFactory = default_parsers,
        expected_model: str | None = None,
        batch_size: int = 4,
        batch_bytes: int = 4 * 1024 * 1024,
        in_flight_per_worker: int = 2,
        import_main: bool = True,
    ) -> None:
        if (workers is not None and workers < 1) or threads < 1 or batch_size < 1 or in_flight_per_worker < 1:
            raise ValueError("workers, threads, batch_size and in_flight_per_worker must be at least 1")
        self.chunking = chunking
        self.workers = workers or os.cpu_count() or 1
        self._embedder_factory = embedder_factory or functools.partial(MiniLMEmbedder, threads=threads)
        self._parsers_factory = parsers_factory
        self._expected_model = expected_model
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._in_flight = in_flight_per_worker
        self._import_main = import_main
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self._pool is not None:
            return
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.chunking.canonical_json(), self._embedder_factory, self._parsers_factory),
        )
        try:
            # Every worker is spawned here, by these submissions (never later: the pool stays at full size).
            with contextlib.nullcontext() if self._import_main else _main_module_hidden():
                futures = [pool.submit(_model) for _ in range(self.workers)]
            models = {future.result() for future in futures}
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        self._pool = pool
        if self._expected_model is not None and models != {self._expected_model}:
            self.close()
            raise ValueError(
                f"the worker processes embed with {', '.join(sorted(models))}, but this index is embedded with "
                f"{self._expected_model}"
            )

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers: after their current batch, waiting for them unless ``wait`` is false (a failed or
        interrupted run does not wait; the workers exit on their own once their batch is done)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def __enter__(self) -> LocalPoolProcessor:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close(wait=exc_type is None)

    def process(self, items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, ProcessedDocument | ParseError]]:
        if not items:
            return
        self.start()
        pool = self._pool
        assert pool is not None
        pending = batches(items, self._batch_size, self._batch_bytes)
        running: set[Future[list[WorkerResult]]] = set()

        def submit() -> None:
            batch = next(pending, None)
            if batch is not None:
                running.add(pool.submit(_process, [(i, items[i].name, items[i].data) for i in batch]))

        for _ in range(self.workers * self._in_flight):
            submit()
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.discard(future)
                    submit()  # keep the workers busy while the ingestor writes these results
                    for index, result in future.result():
                        yield items[index], result
        finally:
            for future in running:
                future.cancel()


def worker_embedder_factory(embedder: Embedder) -> EmbedderFactory | None:
    """How worker processes rebuild ``embedder``, or None when they cannot be trusted to.

    The bundled MiniLM model is rebuilt from its file with the same ONNX batch size and one thread (a worker is one
    CPU), so workers' vectors are the in-process ones. Any other embedder is left in-process: an HTTP embedder gains
    nothing from processes and holds connections that do not pickle; a plugin model may not pickle, or may hold a
    GPU that N copies would not share.
    """
    if type(embedder) is MiniLMEmbedder:
        return functools.partial(
            MiniLMEmbedder, threads=1, batch_size=embedder.batch_size, model_path=embedder.model_path
        )
    return None
