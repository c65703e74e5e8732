"""The simplest kind of work: one async function for each item (shows, list pages, deletes).

``Each(handle)`` on an :class:`~.run.Engine` runs ``handle(item)`` for every item,
``concurrency`` at a time; ``handle`` makes its calls through the gate (``Pool.call``), so they
share the in-flight cap, the rate controller and the stop rules with everything else. Items
not started when the run stops are kept in :attr:`Each.skipped`. A kind of work with rules of
its own (the creates) is a class like this one: see :mod:`batchsubmit.exactly_once`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Each"]

T = TypeVar("T")


class Each(Generic[T]):
    def __init__(self, handle: Callable[[T], Awaitable[None]]) -> None:
        self._handle = handle
        self.skipped: list[T] = []

    def admit(self, item: T) -> bool:
        return True

    async def prepare(self, batch: list[T]) -> None:
        pass

    async def run(self, item: T) -> None:
        await self._handle(item)

    def defer(self, item: T) -> None:
        self.skipped.append(item)
