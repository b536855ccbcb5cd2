"""The journal's drainer process: ``python -m llmops.store._drainer DIRECTORY INTERVAL PARENT_PID``.

Inserts the ready segments of one journal folder into the store until its parent process is gone. The database URL
arrives in ``LLMOPS_DRAINER_DATABASE_URL``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("llmops.store")


def main(argv: list[str]) -> int:
    directory, interval, parent = Path(argv[0]), float(argv[1]), int(argv[2])
    # Draining is catch-up work: at a lower priority, whatever serves requests on these cores (the server, and on one
    # machine its clients and upstreams) takes the CPU first, and the drainer takes what is left. Behind the gateway
    # at saturation it takes ~0.1 ms of CPU per call in bursts of tens of milliseconds each interval; at the default
    # priority those bursts delayed the requests in flight.
    with contextlib.suppress(OSError):
        os.nice(10)
    import llmops._platform  # noqa: F401 - registers every package's tables on the shared metadata
    from llmops.store._journal import SegmentWriter, drain_ready
    from llmops.store._store import Store

    # Everything imported so far lives as long as the process: out of the collector's reach, so the collections
    # that each drained segment's rows set off do not walk the platform's modules again (reading and expanding a
    # segment took 32 us per request with them, 18 us without).
    gc.collect()
    gc.freeze()
    store = Store(os.environ["LLMOPS_DRAINER_DATABASE_URL"])
    writer = SegmentWriter(store)
    while os.getppid() == parent and directory.exists():
        try:
            drain_ready(directory, writer.drain_file)
        except Exception:  # the store may be briefly unavailable: segments stay on disk and are retried
            logger.exception("draining %s failed; will retry", directory)
            time.sleep(1.0)
        time.sleep(interval)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
