"""A TTL cache that keeps serving the last good value when its source fails.

Used by the prompt registry's ``get``, the HTTP `PromptClient` and the guardrail policy registry's ``get``, so an
application keeps answering with the prompt (or policy) it had while the store or the server is unreachable, and says
so in a log line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["StaleCache"]

logger = logging.getLogger("llmops.prompts")
V = TypeVar("V")


class StaleCache(Generic[V]):
    """``get(key, fetch)`` returns a cached value younger than ``ttl`` seconds, else calls ``fetch``.

    If ``fetch`` raises one of ``unavailable`` and an older value is cached, that value is served and a warning
    ("<what> source unreachable ...") is logged on ``log``; any other error (say, the prompt was deleted or never
    existed) propagates.
    """

    def __init__(
        self,
        ttl: float,
        unavailable: tuple[type[BaseException], ...],
        *,
        what: str = "prompt",
        log: logging.Logger = logger,
    ) -> None:
        self.ttl = ttl
        self._unavailable = unavailable
        self._what = what
        self._log = log
        self._values: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, fetch: Callable[[], V]) -> V:
        entry = self._values.get(key)
        now = time.monotonic()
        if entry is not None and now - entry[0] < self.ttl:
            return entry[1]
        try:
            value = fetch()
        except self._unavailable as exc:
            if entry is None:
                raise
            self._log.warning(
                "%s source unreachable (%s: %s); serving the cached %r from %.1f s ago",
                self._what,
                type(exc).__name__,
                exc,
                key,
                now - entry[0],
            )
            return entry[1]
        with self._lock:
            self._values[key] = (time.monotonic(), value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
