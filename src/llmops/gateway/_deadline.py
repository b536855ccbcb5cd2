"""Time limits on the waits of one upstream attempt, with one timer per attempt.

An attempt waits on its upstream for each event of the answer: until the first one by the first-token limit (and the
total limit), after it by the total limit. Only those waits are bounded: the caller's own work between events (a
guardrail checking text, a slow client reading a stream) is never interrupted.

``asyncio.timeout_at`` around each wait would do it, but arms and cancels a timer per event: ~5 µs each on uvloop,
three per non-streamed gateway call (text, finish, end), 16 µs of a call's ~230 µs of CPU (measured,
``bench/gateway_overhead.py``). Here one timer is armed for the attempt; when it fires during a wait it cancels the
waiting task, and the wait turns that cancellation into ``TimeoutError``, as ``asyncio.timeout`` does (a
cancellation from elsewhere stays a cancellation).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

__all__ = ["UpstreamDeadline"]

T = TypeVar("T")


class UpstreamDeadline:
    """The limits of one attempt: ``first_at`` for the first event, ``total_at`` for all (loop times).

    >>> deadline = UpstreamDeadline(first_at=loop.time() + 30, total_at=loop.time() + 300)  # doctest: +SKIP
    >>> event = await deadline.next(events)  # doctest: +SKIP  (raises TimeoutError past the limit that applies)
    >>> deadline.close()                     # doctest: +SKIP
    """

    __slots__ = ("_cancelling", "_handle", "_loop", "_task", "_total_at", "_waiting", "expired", "started")

    def __init__(self, *, first_at: float, total_at: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None  # the task waiting now
        self._cancelling = 0
        self._total_at = total_at
        self._waiting = False
        self.started = False  # the first event arrived: only the total limit applies from now on
        self.expired = False
        self._handle: asyncio.TimerHandle = self._loop.call_at(min(first_at, total_at), self._fire)

    def _fire(self) -> None:
        if self.started and self._loop.time() < self._total_at:
            # The first-token limit passed after the first event: the total limit is the one left.
            self._handle = self._loop.call_at(self._total_at, self._fire)
            return
        self.expired = True
        if self._waiting and self._task is not None:
            self._task.cancel()

    async def next(self, events: AsyncIterator[T]) -> T:
        """The next event of ``events`` (``StopAsyncIteration`` at its end), or ``TimeoutError`` past the limit."""
        if self.expired:
            raise TimeoutError
        task = self._task = asyncio.current_task()  # a generator may be read by more than one task in turn
        if task is None:
            raise RuntimeError("UpstreamDeadline.next must be awaited inside a task")
        self._cancelling = task.cancelling()
        self._waiting = True
        try:
            event = await events.__anext__()
        except asyncio.CancelledError:
            # Ours when the timer fired and no one else cancelled the task meanwhile (asyncio.timeout's own test).
            if self.expired and task.uncancel() <= self._cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False
        self.started = True
        return event

    def close(self) -> None:
        """Disarm the timer (the attempt ended, whichever way)."""
        self._handle.cancel()
