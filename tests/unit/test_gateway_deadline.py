"""UpstreamDeadline: the waits of an attempt are bounded by the first-token and total limits, the caller's own work
between events is not, and a cancellation from elsewhere stays a cancellation. The limits of every attempt on a loop
share one coarse timer (DeadlineSweeper), which stops ticking when no limit is left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from llmops.gateway._deadline import TICK_S, AttemptDeadlines, DeadlineSweeper, UpstreamDeadline


async def _events(*gaps: float) -> AsyncIterator[int]:
    """One event after each gap (seconds)."""
    for number, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield number


def _limits(first: float, total: float) -> UpstreamDeadline:
    return AttemptDeadlines().start(first, total)


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


def test_a_whole_answer_wait_times_out_and_a_prompt_one_does_not() -> None:
    async def main() -> tuple[str, float]:
        deadlines = AttemptDeadlines()
        quick = deadlines.start(0.1, 5)
        try:
            answer = await quick.wait(asyncio.sleep(0.01, result="answer"))
        finally:
            quick.close()
        slow = deadlines.start(0.1, 5)
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            try:
                await slow.wait(asyncio.sleep(2))
            finally:
                slow.close()
        return answer, time.perf_counter() - started

    answer, elapsed = asyncio.run(main())
    assert answer == "answer" and 0.09 < elapsed < 0.1 + 10 * TICK_S


def test_many_limits_share_one_timer_which_stops_when_none_is_left() -> None:
    async def main() -> None:
        sweeper = DeadlineSweeper(asyncio.get_running_loop())
        now = sweeper.loop.time()
        deadlines = [UpstreamDeadline(sweeper, first_at=now + 0.05 * (i % 3 + 1), total_at=now + 5) for i in range(30)]
        assert sweeper._handle is not None
        for deadline in deadlines[:15]:
            deadline.close()  # ended in time: never told
        await asyncio.sleep(0.2)
        assert [d.expired for d in deadlines] == [False] * 15 + [True] * 15
        assert sweeper._handle is None and not sweeper._buckets  # nothing left: no more ticks
        again = UpstreamDeadline(sweeper, first_at=sweeper.loop.time() + 0.05, total_at=sweeper.loop.time() + 5)
        await asyncio.sleep(0.1)
        assert again.expired  # ticking starts again for a new limit

    asyncio.run(main())


def test_a_limit_already_past_when_set_is_told_at_the_next_tick() -> None:
    async def main() -> bool:
        sweeper = DeadlineSweeper(asyncio.get_running_loop())
        deadline = UpstreamDeadline(sweeper, first_at=sweeper.loop.time() - 1, total_at=sweeper.loop.time() - 1)
        await asyncio.sleep(3 * TICK_S)
        return deadline.expired

    assert asyncio.run(main())
