"""Distributed ingestion: parsing, chunking and embedding on a Ray cluster, behind the `DocumentProcessor` seam.

The ingestor on the driver still lists sources, hashes documents, writes chunk rows and snapshots (the store is the
source of truth, and one writer keeps kill -9 resumption exact); only the CPU-bound work moves to the cluster. Each
worker is a Ray actor that builds its parsers, embedding model and chunker ONCE from picklable configuration (the
MiniLM model takes ~0.3 s and ~90 MB to load; loading it per task would cost more than embedding a small document),
then runs the same `process_document` as the local run, so the chunks and vectors are the local run's.

>>> with RayProcessor("ray://head:10001", ChunkingConfig()) as processor:     # doctest: +SKIP
...     report = kb.ingest("/data/corpus", processor=processor)

The address is what ``ray.init`` takes: ``ray://HOST:10001`` (Ray Client, from any machine that reaches the head),
``HOST:6379`` or ``auto`` (from a machine that is itself a node of the cluster). Ray is an optional dependency
(``pip install 'llmops[ray]'``, with the client), imported only when a processor connects. Every node of the cluster
needs llmops installed at the driver's version (or pass ``runtime_env`` to ship it).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from llmops.knowledge._chunking_config import ChunkingConfig
from llmops.knowledge._embedder import Embedder, MiniLMEmbedder
from llmops.knowledge._ingest import WorkItem
from llmops.knowledge._parallel import parsers_factory
from llmops.knowledge._parsers import ParseError, default_parsers
from llmops.knowledge._pool import (
    DocumentWorker,
    EmbedderFactory,
    ParsersFactory,
    WorkerResult,
    batches,
    worker_embedder_factory,
)
from llmops.knowledge._processing import ProcessedDocument

if TYPE_CHECKING:
    from llmops.knowledge._base import KnowledgeBase

__all__ = ["RayProcessor", "RayUnavailableError", "ray_processor_from_settings"]


class RayUnavailableError(ImportError):
    """Ray is not installed in this environment."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(
            "distributed ingestion needs Ray, which is not installed: pip install 'llmops[ray]'"
        ) from exc
    return ray


class RayProcessor:
    """Processes documents on a Ray cluster: a pool of actors, one per CPU by default, each embedding as it chunks.

    Documents travel in batches of up to ``batch_size`` documents or ``batch_bytes`` bytes; at most
    ``in_flight_per_worker`` batches per actor are queued at once, so the object store holds a bounded amount of
    document bytes however large the run, and no actor waits for the driver between batches. Results are yielded as
    batches complete (in any order, as `DocumentProcessor` allows).

    ``embedder_factory`` and ``parsers_factory`` are called on the workers; they must be picklable (a class, a
    ``functools.partial``, a module-level function). ``expected_model``, when given, is checked against the workers'
    embedding model before any document is sent: an index must never mix two models' vectors.
    """

    embeds = True

    def __init__(
        self,
        address: str,
        chunking: ChunkingConfig,
        *,
        embedder_factory: EmbedderFactory | None = None,
        parsers_factory: ParsersFactory = default_parsers,
        expected_model: str | None = None,
        workers: int | None = None,
        batch_size: int = 8,
        batch_bytes: int = 8 * 1024 * 1024,
        in_flight_per_worker: int = 2,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1 or batch_bytes < 1 or in_flight_per_worker < 1 or (workers is not None and workers < 1):
            raise ValueError("workers, batch_size, batch_bytes and in_flight_per_worker must be at least 1")
        self.address = address
        self.chunking = chunking
        self._embedder_factory: EmbedderFactory = embedder_factory or functools.partial(MiniLMEmbedder, threads=1)
        self._parsers_factory = parsers_factory
        self._expected_model = expected_model
        self._workers = workers
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._in_flight = in_flight_per_worker
        self._runtime_env = runtime_env
        self._ray: Any = None
        self._actors: list[Any] = []
        self._connected_here = False

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the cluster and load the model on every worker (done by the first `process` otherwise)."""
        if self._actors:
            return
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                runtime_env=self._runtime_env,
                log_to_driver=False,
                logging_level="warning",
                configure_logging=False,
            )
            self._connected_here = True
        count = self._workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # A crashed worker (lost node, out of memory) is restarted and its batch retried: processing is idempotent.
        actor_class = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(DocumentWorker)
        config = self.chunking.canonical_json()
        actors = [actor_class.remote(config, self._embedder_factory, self._parsers_factory) for _ in range(count)]
        try:
            models = set(ray.get([actor.model.remote() for actor in actors]))
        except Exception:
            for actor in actors:
                ray.kill(actor)
            raise
        self._actors = actors
        if self._expected_model is not None and models != {self._expected_model}:
            self.close()
            raise ValueError(
                f"the Ray workers embed with {', '.join(sorted(models))}, but this index is embedded with "
                f"{self._expected_model}: configure the same model on both"
            )

    def close(self) -> None:
        """Stop the workers, and disconnect if this processor connected."""
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._connected_here and ray.is_initialized():
            ray.shutdown()
        self._connected_here = False

    def __enter__(self) -> RayProcessor:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def worker_count(self) -> int:
        return len(self._actors)

    # ---- the work --------------------------------------------------------------------------------------------

    def process(self, items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, ProcessedDocument | ParseError]]:
        if not items:
            return
        self.start()
        ray = self._ray
        pending = batches(items, self._batch_size, self._batch_bytes)
        running: dict[Any, Any] = {}  # object ref -> the actor computing it

        def submit(actor: Any) -> None:
            batch = next(pending, None)
            if batch is not None:
                running[actor.process.remote([(i, items[i].name, items[i].data) for i in batch])] = actor

        for _ in range(self._in_flight):
            for actor in self._actors:
                submit(actor)
        while running:
            (ready,), _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(ready)
            results: list[WorkerResult] = ray.get(
                ready
            )  # a worker's unexpected error fails the run, as it would locally
            submit(actor)  # keep the actor busy while the driver writes these results
            for index, result in results:
                yield items[index], result


class _PlatformLike(Protocol):
    """What `ray_processor_from_settings` needs of `llmops.Platform` (knowledge never imports the composition root)."""

    @property
    def embedder(self) -> Embedder: ...

    @property
    def knowledge(self) -> KnowledgeBase: ...


def ray_processor_from_settings(address: str, platform: _PlatformLike, **options: Any) -> RayProcessor:
    """The processor ``llmops ingest --ray ADDRESS`` uses: the platform's chunking and embedding model, on Ray.

    The bundled MiniLM model is rebuilt on each worker with one thread (a worker is one CPU); another embedder is
    shipped as it is, so it must be picklable (an HTTP embedder holding open connections is not: run it locally).
    The parsers are the knowledge base's own instances, shipped likewise.
    """
    embedder = platform.embedder
    # As the local worker pool rebuilds it (one thread, the same batch size and model file), else shipped as it is.
    factory: EmbedderFactory = worker_embedder_factory(embedder) or functools.partial(_shipped, embedder)
    return RayProcessor(
        address,
        platform.knowledge.chunking,
        embedder_factory=factory,
        # The knowledge base's own parser instances (stateless, picklable), so plugin parsers run on the workers too.
        parsers_factory=parsers_factory(list(platform.knowledge.parsers.values())),
        expected_model=embedder.name,
        **options,
    )


def _shipped(embedder: Embedder) -> Embedder:
    return embedder
