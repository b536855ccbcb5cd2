"""UpstreamDeadline: the waits of an attempt are bounded by the first-token and total limits, the caller's own work
between events is not, and a cancellation from elsewhere stays a cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from llmops.gateway._deadline import UpstreamDeadline


async def _events(*gaps: float) -> AsyncIterator[int]:
    """One event after each gap (seconds)."""
    for number, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield number


def _limits(first: float, total: float) -> UpstreamDeadline:
    now = asyncio.get_running_loop().time()
    return UpstreamDeadline(first_at=now + first, total_at=now + total)


async def _drain(deadline: UpstreamDeadline, events: AsyncIterator[int], pause: float = 0.0) -> list[int]:
    seen = []
    try:
        while True:
            try:
                seen.append(await deadline.next(events))
            except StopAsyncIteration:
                return seen
            await asyncio.sleep(pause)  # the caller's own work between events
    finally:
        deadline.close()


def test_a_stall_before_the_first_event_times_out_at_the_first_token_limit() -> None:
    async def main() -> float:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await _drain(_limits(0.1, 5), _events(2))
        return time.perf_counter() - started

    assert 0.09 < asyncio.run(main()) < 1.0


def test_after_the_first_event_only_the_total_limit_applies() -> None:
    async def main() -> tuple[list[int], float]:
        # Events every 0.08 s: each wait is under the first-token limit, the stream as a whole passes the total one.
        deadline, events = _limits(0.15, 0.5), _events(0.01, *[0.08] * 20)
        seen: list[int] = []
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            try:
                while True:
                    seen.append(await deadline.next(events))
            finally:
                deadline.close()
        return seen, time.perf_counter() - started

    seen, elapsed = asyncio.run(main())
    assert 3 < len(seen) < 10 and 0.45 < elapsed < 1.5  # past the first-token limit, stopped by the total one


def test_the_callers_work_between_events_is_not_interrupted() -> None:
    async def main() -> list[int]:
        # The caller pauses 0.3 s after each event, longer than the first-token limit; its pauses are never cut.
        return await _drain(_limits(0.1, 5), _events(0.01, 0.01, 0.01), pause=0.3)

    assert asyncio.run(main()) == [0, 1, 2]


def test_a_wait_after_the_total_limit_passed_during_the_callers_work_times_out() -> None:
    async def main() -> list[int]:
        seen: list[int] = []
        deadline, events = _limits(0.1, 0.2), _events(0.01, 0.01, 0.01)
        with pytest.raises(TimeoutError):
            try:
                while True:
                    seen.append(await deadline.next(events))
                    await asyncio.sleep(0.3)  # not cancelled: the limit bounds waits on the upstream only
            finally:
                deadline.close()
        return seen

    assert asyncio.run(main()) == [0]


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        task = asyncio.create_task(_drain(_limits(5, 5), _events(10)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_closed_deadline_cancels_nothing_later() -> None:
    async def main() -> list[int]:
        seen = await _drain(_limits(0.05, 0.1), _events(0.01))
        await asyncio.sleep(0.2)  # past both limits: the task must not be cancelled now
        return seen

    assert asyncio.run(main()) == [0]
