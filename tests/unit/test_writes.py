"""The event loop's write batch: the writes of one turn leave at its end, one per connection, in order; a closing or
failing connection loses only its own writes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from llmops._writes import WriteBatch


class _Transport:
    def __init__(self, *, fail: bool = False) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("the socket is gone")
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True


def _t(**kwargs: Any) -> Any:
    return _Transport(**kwargs)


def test_the_writes_of_a_turn_leave_at_its_end_one_per_connection_in_order() -> None:
    async def main() -> None:
        batch = WriteBatch(asyncio.get_running_loop())
        first, second = _t(), _t()
        batch.write(first, b"HTTP/1.1 200 OK\r\n\r\n")
        batch.write(second, b"request")
        batch.write(first, b"body")
        assert first.writes == [] and second.writes == []
        assert batch.held(first) == 23 and batch.held(second) == 7 and batch.held(_t()) == 0
        await asyncio.sleep(0)
        assert first.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"] and second.writes == [b"request"]
        assert batch.held(first) == 0
        batch.write(first, b"next turn")  # a later turn is sent at its own end
        await asyncio.sleep(0)
        assert first.writes[-1] == b"next turn" and len(first.writes) == 2

    asyncio.run(main())


def test_flush_sends_at_once_and_later_writes_wait_for_their_turns_end() -> None:
    async def main() -> None:
        batch = WriteBatch(asyncio.get_running_loop())
        transport = _t()
        batch.write(transport, b"a")
        batch.flush()  # as a connection about to close does
        assert transport.writes == [b"a"]
        batch.write(transport, b"b")
        assert transport.writes == [b"a"]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert transport.writes == [b"a", b"b"]  # once: the flush already scheduled finds nothing more

    asyncio.run(main())


def test_a_closing_or_failing_connection_loses_only_its_own_writes(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        batch = WriteBatch(asyncio.get_running_loop())
        gone, failing, fine = _t(), _t(fail=True), _t()
        batch.write(gone, b"lost")
        batch.write(failing, b"fails")
        batch.write(fine, b"kept")
        gone.closing = True  # the peer left before the turn ended
        with caplog.at_level(logging.ERROR, logger="llmops.writes"):
            await asyncio.sleep(0)
        assert gone.writes == [] and not gone.aborted
        assert failing.aborted and "writing to a connection failed" in caplog.text
        assert fine.writes == [b"kept"]

    asyncio.run(main())
