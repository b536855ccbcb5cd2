"""Ingestion on every core when it pays: in this process for small runs, in worker processes for large ones.

`KnowledgeBase.ingest` runs with an `AutoProcessor` unless given a processor. In-process ingestion (`LocalProcessor`)
uses one core; a `LocalPoolProcessor` of one worker per CPU uses them all, but costs its start-up (spawning the
workers, importing llmops, loading the model in each) before the first document. The auto processor starts the pool
only for a run with enough new bytes to win that back (``POOL_MIN_BYTES``, ``POOL_MIN_DOCUMENTS``); once started, the
pool serves the rest of the run, and it is closed when the run ends, however it ends.

What goes to the pool: documents without an indexed earlier version. A changed document stays in-process, where the
ingestor embeds through the embedding cache and so re-embeds only the chunks whose text changed; the workers embed
every chunk they cut (they have no store), which for a one-line edit of a long document would throw that saving away.
A run dominated by changes therefore stays on one core and is cheap anyway; a run dominated by new documents (a first
ingestion, a new folder, a resumed first ingestion) gets every core.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from types import TracebackType

from llmops.knowledge._ingest import DocumentProcessor, WorkItem
from llmops.knowledge._parsers import ParseError, Parser
from llmops.knowledge._pool import LocalPoolProcessor
from llmops.knowledge._processing import ProcessedDocument

__all__ = [
    "POOL_MIN_BYTES",
    "POOL_MIN_DOCUMENTS",
    "AutoProcessor",
    "available_cpus",
    "parsers_factory",
    "shipped_parsers",
]

# Measured on a 2-core AMD EPYC, all-MiniLM-L6-v2 int8, subsets of bench/ingest.py's corpus ingested with defaults
# pinned in-process (workers=1) and with two workers (workers=2), the machine also running other work (load ~1.9):
# starting two workers takes ~2.5 s (importing llmops is most of it), and in-process ingestion runs ~8-10 KB/s of this
# corpus. 27 KB in 5 documents: 3.9 s in-process, 5.4 s in workers; 97 KB (12): 9.9 s, 9.5 s; 104 KB (14): 12.4 s,
# 10.7 s; 155 KB (15): 16.8 s, 12.1 s; 443 KB (32): 53 s, 33 s. The pool breaks even near 100 KB of new documents
# and is clearly faster above ~120 KB.
POOL_MIN_BYTES = 120_000
#: Fewer documents than workers leave workers idle (one document is never split between them).
POOL_MIN_DOCUMENTS = 4


def available_cpus() -> int:
    """The CPUs this process may run on (a container's or ``taskset``'s limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class AutoProcessor:
    """In-process, or a worker pool when a run's new documents are worth starting it for (``always``: whenever a run
    has new documents). ``pool`` None: in-process only. Use it as a context manager, which closes the pool.

    `used` and `used_workers` say, after a run, which one did the work.
    """

    embeds = True  # the pool's results come with vectors, the in-process ones do not (the ingestor checks each)

    def __init__(
        self,
        local: DocumentProcessor,
        pool: LocalPoolProcessor | None,
        *,
        always: bool = False,
        min_bytes: int | None = None,
        min_documents: int | None = None,
    ) -> None:
        self._local = local
        self._pool = pool
        self._always = always
        self._min_bytes = POOL_MIN_BYTES if min_bytes is None else min_bytes
        self._min_documents = POOL_MIN_DOCUMENTS if min_documents is None else min_documents
        self._pool_used = False

    @property
    def used(self) -> str:
        return type(self._pool if self._pool is not None and self._pool_used else self._local).__name__

    @property
    def used_workers(self) -> int:
        return self._pool.workers if self._pool is not None and self._pool_used else 1

    def pays(self, items: Sequence[WorkItem]) -> bool:
        """Whether ``items`` (new documents) go to the worker pool."""
        if self._pool is None or not items:
            return False
        if self._always or self._pool_used:  # pinned, or its start-up is already paid
            return True
        return len(items) >= self._min_documents and sum(len(item.data) for item in items) >= self._min_bytes

    def process(self, items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, ProcessedDocument | ParseError]]:
        fresh = [item for item in items if not item.likely_cached]
        if self._pool is None or not self.pays(fresh):
            yield from self._local.process(items)
            return
        self._pool_used = True
        # Largest first: a long document started last would keep one worker busy while the others idle.
        yield from self._pool.process(sorted(fresh, key=lambda item: len(item.data), reverse=True))
        yield from self._local.process([item for item in items if item.likely_cached])

    def close(self, *, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.close(wait=wait)

    def __enter__(self) -> AutoProcessor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close(wait=exc_type is None)


def shipped_parsers(parsers: Sequence[Parser]) -> list[Parser]:
    """The knowledge base's own parser instances, unpickled in a worker (plugin parsers included)."""
    return list(parsers)


def parsers_factory(parsers: Sequence[Parser]) -> functools.partial[list[Parser]]:
    """A picklable factory of ``parsers`` (each instance once) for worker processes."""
    return functools.partial(shipped_parsers, list({id(parser): parser for parser in parsers}.values()))
