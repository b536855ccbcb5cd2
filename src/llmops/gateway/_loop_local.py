"""One object per event loop (connection pools, deadline sweepers): a gateway is used from more than one loop, as
tests and ``asyncio.run`` calls do, and what one loop owns must not be used from another."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LoopLocal"]

T = TypeVar("T")


class LoopLocal(Generic[T]):
    """``make(loop)`` once per running loop; those of closed loops are dropped when another is made.

    >>> pools = LoopLocal(lambda loop: Pool(loop))  # doctest: +SKIP
    >>> pools.get()                                  # doctest: +SKIP  (the running loop's)
    """

    __slots__ = ("_by_loop", "_make")

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._make = make
        self._by_loop: dict[int, tuple[asyncio.AbstractEventLoop, T]] = {}

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(id(loop))
        if found is not None and found[0] is loop:
            return found[1]
        for key in [key for key, (old, _) in self._by_loop.items() if old.is_closed()]:
            del self._by_loop[key]  # loops of finished asyncio.run calls
        value = self._make(loop)
        self._by_loop[id(loop)] = (loop, value)
        return value

    def __iter__(self) -> Iterator[T]:
        return (value for _, value in self._by_loop.values())

    def clear(self) -> None:
        self._by_loop.clear()
