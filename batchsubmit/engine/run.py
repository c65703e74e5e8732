"""The engine: a producer feeding a bounded stream to workers in one task group.

    work (an iterator, read lazily)
      → producer: takes a batch of ``batch`` items it may start (:meth:`Work.admit`;
        ``concurrency`` unless the kind of work asks for more),
        readies them together (:meth:`Work.prepare`: the exactly-once rules journal and sync
        the batch's intents there, one sync a batch), sends them into the stream
      → a bounded stream (:class:`Ready`): refilled a batch at a time once it holds fewer
        than ``concurrency`` items
      → ``concurrency`` workers, each running one item at a time to its end (:meth:`Work.run`);
        every call an item makes goes through the :class:`~.gate.Gate`.

An item that must wait (a backoff, the settle wait before a lookup) waits by :meth:`rest`,
which lends its worker's place: a helper worker starts, up to ``backlog`` of them, and the
gate's in-flight cap keeps the calls honest. A worker whose place is no longer needed ends.
So a killed run leaves fewer than ``concurrency + 2 * batch`` items readied and not finished,
plus the items resting.

Stops: the gate's (fatal answers, the operator's stop) start nothing new; ``grace`` seconds
later, or at once with :meth:`stop_now`, the calls still in flight are cancelled. An item never
started is handed back to :meth:`Work.defer`, the one place deferred work is counted.
The engine knows nothing of VAS: a kind of work is a :class:`Work`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.abc

from ..errors import BatchSubmitError
from .gate import Gate, Stopped

__all__ = ["Engine", "Ready", "Work"]

T = TypeVar("T")


class Work(Protocol[T]):
    """A kind of work: what the engine asks of it for each item."""

    def admit(self, item: T) -> bool:
        """False: the item may not start (a limit reached); it is deferred."""

    async def prepare(self, batch: list[T]) -> None:
        """Before any item of ``batch`` is taken by a worker (journal the intents)."""

    async def run(self, item: T) -> None:
        """The item to its end; raises :class:`Stopped` when the run stopped first."""

    def defer(self, item: T) -> None:
        """The item is left for the next run (no row); counted here, once."""


class Ready(Generic[T]):
    """The bounded stream from the producer to the workers: the producer refills it a batch at
    a time once it holds fewer than ``low`` items, so it holds fewer than ``2 * low``.

    Not anyio's memory object stream: that hands each item over with an event and a trip
    through the event loop (the producer woken once an item), which cost a quarter of the
    engine's CPU a job in the pool benchmark; here one wake-up serves a batch."""

    def __init__(self, low: int) -> None:
        self._items: deque[T] = deque()
        self._low = low
        self._closed = False
        # asyncio's own events (aiohttp ties us to asyncio): anyio's wrapper costs twice as much
        self._fed = asyncio.Event()  # replaced each time items are added
        self._hungry = asyncio.Event()  # fewer than ``low`` items are left

    def put(self, batch: list[T]) -> None:
        self._items.extend(batch)
        fed, self._fed = self._fed, asyncio.Event()
        fed.set()

    def close(self) -> None:
        """No more items: workers finding it empty end."""
        self._closed = True
        self._fed.set()

    async def hungry(self) -> None:
        """Until fewer than ``low`` items are left."""
        while len(self._items) >= self._low:
            self._hungry = asyncio.Event()
            await self._hungry.wait()

    def take(self) -> T | None:
        """The next item if one is there (no coroutine made: the common case)."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if len(items) < self._low:
            self._hungry.set()
        return item

    async def get(self) -> T | None:
        """The next item, or None once closed and empty."""
        items = self._items
        while not items:
            if self._closed:
                return None
            await self._fed.wait()
        item = items.popleft()
        if len(items) < self._low:
            self._hungry.set()
        return item

    def drain(self) -> list[T]:
        items, self._items = list(self._items), deque()
        return items


class Engine(Generic[T]):
    """Runs the items of one pass through a :class:`Work`; reusable for several passes."""

    def __init__(
        self,
        gate: Gate,
        *,
        concurrency: int,
        backlog: int,
        grace: float,
        deadline: float,
        batch: int | None = None,
    ) -> None:
        self._gate = gate
        self._size = concurrency
        self._batch_size = max(batch or concurrency, concurrency)
        self._backlog = backlog
        self._grace = grace
        self._deadline = deadline  # on the gate's clock; inf: none
        self._group: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._pass: tuple[Work[T], Ready[T]] | None = None
        self._workers = 0  # worker tasks running
        self._resting = 0  # of them, how many wait in :meth:`rest`
        self._unready: list[T] = []  # taken from the iterator, not yet in the stream

    def stop_now(self) -> None:
        """Cancel what is in flight (the stop itself is the gate's)."""
        if self._scope is not None:
            self._scope.cancel()

    @property
    def busy(self) -> int:
        """Worker tasks running: 0 between passes."""
        return self._workers

    async def run(self, items: Iterator[T], work: Work[T]) -> None:
        """Every item of ``items`` run, deferred, or (stopped at once) handed back."""
        ready = Ready[T](self._size)
        self._pass = (work, ready)
        try:
            async with anyio.create_task_group() as services:
                services.start_soon(self._watch_stop)
                if self._deadline != math.inf:
                    services.start_soon(self._watch_deadline)
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    async with anyio.create_task_group() as self._group:
                        self._group.start_soon(self._produce, items, work, ready)
                        for _ in range(self._size):
                            self._start_worker()
                services.cancel_scope.cancel()
        finally:
            self._group = self._pass = self._scope = None
        if scope.cancel_called:  # stopped at once: what was readied was never sent
            for item in [*self._unready, *ready.drain(), *items]:
                work.defer(item)
        self._unready = []

    async def rest(self, seconds: float) -> None:
        """Wait out a backoff or a settle wait, lending this worker's place to a helper.
        Raises :class:`Stopped` if the run stops meanwhile."""
        self._resting += 1
        try:
            if (
                self._workers - self._resting < self._size
                and self._workers < self._size + self._backlog
                and not self._gate.stopping
            ):
                self._start_worker()
            await self._gate.sleep(seconds)
        finally:
            self._resting -= 1

    # -- tasks ------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._group is not None and self._pass is not None:  # a run is under way
            self._group.start_soon(self._worker, *self._pass)
            self._workers += 1

    async def _produce(self, items: Iterator[T], work: Work[T], ready: Ready[T]) -> None:
        try:
            while batch := self._batch(items, work):
                self._unready = batch
                await work.prepare(batch)
                ready.put(batch)
                self._unready = []
                await ready.hungry()
        finally:
            ready.close()

    def _batch(self, items: Iterator[T], work: Work[T]) -> list[T]:
        """Up to ``batch`` items that may start; the others are deferred."""
        batch: list[T] = []
        try:
            for item in items:
                if self._gate.stopping or not work.admit(item):
                    work.defer(item)
                    continue
                batch.append(item)
                if len(batch) >= self._batch_size:
                    break
        except BatchSubmitError as exc:
            # A listing that changed under us since the check before the first request.
            self._gate.stats.fail(exc, f"the sources could not be read to the end: {exc}")
            self._gate.stop("reading the sources failed")
        return batch

    async def _worker(self, work: Work[T], ready: Ready[T]) -> None:
        try:
            while True:
                item = ready.take()
                if item is None and (item := await ready.get()) is None:
                    return
                try:
                    await work.run(item)
                except Stopped:
                    work.defer(item)
                if self._workers - self._resting > self._size:
                    return  # a helper whose job is done, or a worker whose place it took
        finally:
            self._workers -= 1

    async def _watch_stop(self) -> None:
        await self._gate.stopped.wait()
        await anyio.sleep(self._grace)
        if self._scope is not None and not self._scope.cancel_called:
            self._gate.log(
                "warning",
                f"calls still in flight after {self._grace:g} s;"
                " cancelling them (their jobs are recorded as unknown)",
            )
            self._scope.cancel()

    async def _watch_deadline(self) -> None:
        await anyio.sleep(max(0.0, self._deadline - self._gate.clock()))
        self._gate.stop("deadline reached")
