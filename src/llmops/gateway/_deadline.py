"""Time limits on the waits of one upstream attempt, kept by one coarse timer per event loop.

An attempt waits on its upstream for each event of the answer (or for the whole answer): until the first one by
the first-token limit (and the total limit), after it by the total limit. Only those waits are bounded: the caller's
own work between events (a guardrail checking text, a slow client reading a stream) is never interrupted.

``asyncio.timeout`` around each wait would do it, but arms and cancels a loop timer per wait. On uvloop each is a
libuv timer handle, opened and closed: a gateway call with one ``asyncio.timeout`` spent ~12 us more CPU than one
without (~190 us in all, at 16 concurrent calls, measured with ``bench/gateway_overhead.py``'s load). Here a
``DeadlineSweeper`` per event loop ticks every ``TICK_S`` while any limit is set and tells the attempts whose limit
passed; setting and clearing a limit is a dict insertion and removal. A limit is noticed up to one tick late.

When a limit passes during a wait, the waiting task is cancelled and the wait turns that cancellation into
``TimeoutError``, as ``asyncio.timeout`` does (a cancellation from elsewhere stays a cancellation).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from llmops.gateway._loop_local import LoopLocal

__all__ = ["TICK_S", "AttemptDeadlines", "DeadlineSweeper", "UpstreamDeadline"]

T = TypeVar("T")

#: How late a passed limit may be noticed (upstream limits are seconds long).
TICK_S = 0.01


class DeadlineSweeper:
    """The timer of the upstream limits set on one event loop.

    >>> sweeper = DeadlineSweeper(asyncio.get_running_loop())  # doctest: +SKIP
    """

    __slots__ = ("_buckets", "_handle", "_next", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, dict[UpstreamDeadline, None]] = {}  # tick number -> the limits that pass in it
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0  # the first tick not swept yet

    def add(self, deadline: UpstreamDeadline, at: float) -> int:
        """Tell ``deadline`` (``_fire``) once loop time ``at`` passed; returns the tick to ``discard`` it with."""
        if self._handle is None:  # idle until now: start ticking
            self._next = int(self.loop.time() / TICK_S)
            self._handle = self.loop.call_later(TICK_S, self._sweep)
        tick = max(math.ceil(at / TICK_S), self._next)
        self._buckets.setdefault(tick, {})[deadline] = None
        return tick

    def discard(self, deadline: UpstreamDeadline, tick: int) -> None:
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.pop(deadline, None)
            if not bucket:
                del self._buckets[tick]

    def _sweep(self) -> None:
        now = int(self.loop.time() / TICK_S)
        first, self._next = self._next, now + 1  # first: a limit set again while firing goes to a later tick
        due = [deadline for tick in range(first, now + 1) for deadline in self._buckets.pop(tick, ())]
        for deadline in due:
            deadline._fire()
        self._handle = self.loop.call_later(TICK_S, self._sweep) if self._buckets else None


class UpstreamDeadline:
    """The limits of one attempt: ``first_at`` for the first event, ``total_at`` for all (loop times).

    >>> deadline = UpstreamDeadline(sweeper, first_at=loop.time() + 30, total_at=loop.time() + 300)  # doctest: +SKIP
    >>> event = await deadline.next(events)  # doctest: +SKIP  (raises TimeoutError past the limit that applies)
    >>> deadline.close()                     # doctest: +SKIP
    """

    __slots__ = ("_cancelling", "_sweeper", "_task", "_tick", "_total_at", "_waiting", "expired", "started")

    def __init__(self, sweeper: DeadlineSweeper, *, first_at: float, total_at: float) -> None:
        self._sweeper = sweeper
        self._task: asyncio.Task[object] | None = None  # the task waiting now
        self._cancelling = 0
        self._total_at = total_at
        self._waiting = False
        self.started = False  # the first event arrived: only the total limit applies from now on
        self.expired = False
        self._tick = sweeper.add(self, min(first_at, total_at))

    def _fire(self) -> None:
        if self.started and self._sweeper.loop.time() < self._total_at:
            # The first-token limit passed after the first event: the total limit is the one left.
            self._tick = self._sweeper.add(self, self._total_at)
            return
        self.expired = True
        if self._waiting and self._task is not None:
            self._task.cancel()

    async def next(self, events: AsyncIterator[T]) -> T:
        """The next event of ``events`` (``StopAsyncIteration`` at its end), or ``TimeoutError`` past the limit."""
        event = await self.wait(events.__anext__())
        self.started = True
        return event

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result (a whole answer), or ``TimeoutError`` past the limit."""
        if self.expired:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never awaited: close it, or it warns when collected
            raise TimeoutError
        task = self._task = asyncio.current_task()  # a generator may be read by more than one task in turn
        if task is None:
            raise RuntimeError("UpstreamDeadline waits must be awaited inside a task")
        self._cancelling = task.cancelling()
        self._waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Ours when the limit passed and no one else cancelled the task meanwhile (asyncio.timeout's own test).
            if self.expired and task.uncancel() <= self._cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def close(self) -> None:
        """Clear the limits (the attempt ended, whichever way)."""
        self._sweeper.discard(self, self._tick)


class AttemptDeadlines:
    """Starts the limits of upstream attempts, on the running event loop's ``DeadlineSweeper``."""

    __slots__ = ("_sweepers",)

    def __init__(self) -> None:
        self._sweepers: LoopLocal[DeadlineSweeper] = LoopLocal(DeadlineSweeper)

    def start(self, first_token_s: float, total_s: float) -> UpstreamDeadline:
        """The limits of an attempt starting now; ``close()`` it when the attempt ends."""
        sweeper = self._sweepers.get()
        now = sweeper.loop.time()
        return UpstreamDeadline(sweeper, first_at=now + first_token_s, total_at=now + total_s)
