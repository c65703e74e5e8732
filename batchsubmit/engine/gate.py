"""The gate every call to the service passes, whatever kind of work makes it.

One call through :meth:`Gate.send`:

1. the first-call probe: the run's first call is made alone; the others wait for its answer,
   so an answer every call would repeat (401/403, an endpoint that cannot be reached) stops
   the run after one call;
2. stop: once the run is stopping nothing new is sent (:class:`Stopped`);
3. an in-flight slot (``concurrency`` at most; calls of jobs already under way first);
4. a start allowed by the pool-wide :class:`~batchsubmit.throttle.RateController` (GCRA
   pacing, sliding window, AIMD on 429, gateway hints, the 503 circuit breaker);
5. the call itself, then :meth:`Gate._observe`: throttle learning, Retry-After (a 429's pauses
   every call: it is about the caller; a 503's delays only that job, through
   :func:`~batchsubmit.retry.next_wait`), and the stop rules of an answer.

:meth:`Gate.call` adds the retries of a read (show, list, delete) on transient answers.
The gate knows answers by their :class:`~batchsubmit.answers.Kind` only; what a refusal means
for the run (a full quota defers, a 401 is fatal) is the ``refused`` hook's business.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..answers import UNREACHABLE, Answer, Kind
from ..errors import ApiError, CredentialsUnavailable, FatalApiError
from ..retry import RetryPolicy, next_wait
from ..throttle import ControllerSettings, RateController
from .stats import RunStats

__all__ = ["Gate", "Rest", "Stopped"]

T = TypeVar("T")
Rest = Callable[[float], Awaitable[None]]
Log = Callable[[str, str], None]

_UNREACHABLE_ADVICE = (
    "check the endpoint (--endpoint, or service.region in the manifest) and this machine's "
    "network (DNS, proxy, firewall)"
)


class Stopped(Exception):
    """The run is stopping: nothing was sent for this call (its job is deferred)."""


class Slots:
    """A semaphore for in-flight calls whose waiters are served in two classes: calls of jobs
    already under way (retries, lookups) before the first calls of new jobs; FIFO within each.
    """

    def __init__(self, slots: int) -> None:
        self.free = slots
        self._urgent: deque[asyncio.Event] = deque()
        self._new: deque[asyncio.Event] = deque()

    def take(self) -> bool:
        """A free slot at once, if there is one and nobody is queued for it."""
        if self.free > 0 and not self._urgent and not self._new:
            self.free -= 1
            return True
        return False

    async def acquire(self, first: bool) -> None:
        if self.take():
            return
        event = asyncio.Event()  # aiohttp ties us to asyncio; its Event is 7x cheaper to make
        queue = self._new if first else self._urgent
        queue.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release()  # the slot was handed over as we were cancelled: pass it on
            else:
                queue.remove(event)
            raise

    def release(self) -> None:
        """Hand the slot straight to the next waiter, or free it."""
        for queue in (self._urgent, self._new):
            if queue:
                queue.popleft().set()
                return
        self.free += 1


class Gate:
    """In-flight cap, rate controller, Retry-After, probe and stop rules for every call."""

    def __init__(
        self,
        stats: RunStats,
        log: Log,
        *,
        concurrency: int,
        rate: float,
        retry: RetryPolicy,
        controller: ControllerSettings,
        refused: Callable[[Answer], None],
        clock: Callable[[], float],
        seed: int | None = None,
    ) -> None:
        self.stats = stats
        self.log = log
        self._retry = retry
        self._refused = refused
        self.clock = clock
        self._rng = random.Random(seed)
        self.controller = RateController(rate, controller)
        self.slots = Slots(concurrency)
        self._rate_lock = anyio.Lock()
        # asyncio's own events (aiohttp ties us to asyncio): checked several times a job, and
        # anyio's wrapper doubles the cost of each check
        self.stopped = asyncio.Event()
        self._opened = asyncio.Event()  # the first call has been answered
        self._probing = False
        self.on_stop: list[Callable[[], None]] = []  # what else must wake when the run stops
        # Before a call takes its slot: renew credentials that are due (through :meth:`other`).
        self.prepare: Callable[[], Awaitable[None]] | None = None

    # -- stopping -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    def stop(self, reason: str) -> None:
        """Start nothing new; what is in flight finishes (the engine's grace bounds it)."""
        if not self.stopped.is_set():
            self.stats.stop_reason = reason
            self.log(
                "warning",
                f"stopping ({reason}): starting nothing new, letting calls in flight finish",
            )
            self.stopped.set()
            self._opened.set()
            for wake in self.on_stop:
                wake()

    def refuse(self, answer: Answer, text: str, reason: str, advice: str = "") -> None:
        """An answer every further call would repeat: the run stops as fatal."""
        error = ApiError(answer.status, answer.error_code, answer.error_msg, answer.request_id)
        self.stats.fail(FatalApiError(error, answer.advice or advice), text)
        self.stop(reason)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the run stops; raises :class:`Stopped` if it did."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self.stopped.wait()
        if self.stopped.is_set():
            raise Stopped

    # -- calls ------------------------------------------------------------------------------

    async def call(
        self, call: Callable[..., Awaitable[Answer]], *args: Any, rest: Rest | None = None
    ) -> Answer:
        """A read (list, show, delete): retried on anything transient, waiting by ``rest``
        (the engine's, which lends the caller's place) between tries."""
        failures = throttles = 0
        while True:
            answer = await self.send(call, *args)
            kind = answer.kind
            if kind is Kind.THROTTLED:
                throttles += 1
            elif kind in (Kind.UNAVAILABLE, Kind.NOT_SENT):
                failures += 1
            else:
                return answer
            wait = self.next_wait(answer, failures, throttles)
            if wait is None:
                return answer
            await (rest or self.sleep)(wait)
            self.stats.retries += 1  # counted once it is sure to be made (not stopped)

    def next_wait(self, answer: Answer, failures: int, throttles: int) -> float | None:
        """The backoff (or the answer's Retry-After) before the next try; None: give up."""
        return next_wait(self._retry, answer, failures, throttles, self._rng)

    @property
    def attempts(self) -> int:
        return self._retry.attempts

    async def send(
        self,
        call: Callable[..., Awaitable[Answer]],
        *args: Any,
        sent: Callable[[], None] | None = None,
        first: bool = False,
    ) -> Answer:
        """One call. Raises :class:`Stopped` only before anything is sent; ``sent`` is called
        just before sending. A job's ``first`` call queues behind every retry and lookup, so a
        job that waited out a backoff is not made to wait again behind all the new ones."""
        probe = False
        if not self._opened.is_set():
            if self._probing:
                await self._opened.wait()
            else:
                self._probing = probe = True
        if self.stopped.is_set():
            raise Stopped
        slots = self.slots
        try:
            if self.prepare is not None:
                await self.prepare()
            if not slots.take():
                await slots.acquire(first)
            try:
                await self._start()
                if sent is not None:
                    sent()
                answer = await call(*args)
            finally:
                slots.release()
            self._observe(answer, probe)
        finally:
            if probe:
                self._opened.set()  # answered, stopped or cancelled: the others may go
        return answer

    async def other(self, call: Callable[[], Awaitable[T]]) -> T:
        """A call that is not one of the service's (credentials from IAM or the ECS metadata
        service): the same stop rule, start from the rate controller and retry policy, each
        try counted. It takes no in-flight slot: calls that hold one may be waiting for it (a
        401, a secret that fell due after the gate's ``prepare``), and there is one renewal at
        a time, so it is at most one call beyond the cap, to another host. What it retries is
        :class:`~batchsubmit.errors.CredentialsUnavailable` (a 429, a 5xx, an answer lost
        after connecting), with the backoff (or Retry-After) of a read; once the tries are
        spent, or on any other error, the error is its caller's."""
        failures = throttles = 0
        while True:
            await self._start()
            try:
                return await call()
            except CredentialsUnavailable as exc:
                if exc.throttled:
                    throttles += 1
                else:
                    failures += 1
                kind = Kind.THROTTLED if exc.throttled else Kind.UNAVAILABLE
                answer = Answer(kind=kind, retry_after=exc.retry_after)
                wait = self.next_wait(answer, failures, throttles)
                if wait is None:
                    tries = failures + throttles
                    if tries == 1:
                        raise
                    raise CredentialsUnavailable(f"{exc} (tried {tries} times)") from None
                # rare (IAM or metadata busy), and the operator should see why a run waited
                self.log("warning", f"{str(exc).rstrip('.')}; trying again in {wait:.1f} s")
            await self.sleep(wait)
            self.stats.retries += 1

    async def _start(self) -> None:
        """Once a call holds its slot: the stop rule, then its start from the rate controller
        (waiting only when it paces), counted."""
        if self.stopped.is_set():
            raise Stopped
        controller = self.controller
        if controller.unlimited:
            controller.started(self.clock())
        else:
            await self._paced()
        self.stats.calls += 1

    async def _paced(self) -> None:
        """Wait for the start the rate controller allows (one waiter at a time, in order)."""
        controller = self.controller
        async with self._rate_lock:
            while True:
                if self.stopped.is_set():
                    raise Stopped
                now = self.clock()
                delay = controller.delay(now)
                if delay <= 0:
                    controller.started(now)
                    return
                with anyio.move_on_after(delay):
                    await self.stopped.wait()

    def _observe(self, answer: Answer, probe: bool) -> None:
        controller = self.controller
        now = self.clock()
        kind = answer.kind
        if kind is Kind.THROTTLED:
            controller.throttled(now, answer.rate_hint)
        elif answer.rate_hint is not None:
            controller.observed_limit(now, answer.rate_hint)
        unavailable = kind is Kind.UNAVAILABLE
        if unavailable:
            self.stats.unavailable += 1
        controller.answered(now, unavailable)
        # Retry-After on a 429 is about the caller: every call waits. On a 503 it is about
        # that call (its job waits that long instead of its backoff, see next_wait); only a
        # sustained majority of 503s slows or holds the pool, by the controller's share rule.
        if answer.retry_after is not None and kind is Kind.THROTTLED:
            paused = controller.pause(now, answer.retry_after)
            self.log(
                "info",
                f"the service asked to wait (Retry-After "
                f"{answer.retry_after:g} s): pausing all calls for {paused:g} s",
            )
        if kind is Kind.FATAL:
            self._refused(answer)
        elif probe and kind is Kind.NOT_SENT and answer.error_code in UNREACHABLE:
            # The run's first call could not reach the endpoint at all: neither will the others.
            self.refuse(
                answer,
                f"{answer.error_msg}; {_UNREACHABLE_ADVICE}",
                "the endpoint cannot be reached",
                _UNREACHABLE_ADVICE,
            )

    def finish(self) -> None:
        """Copy what the controller learned into the stats."""
        stats, controller = self.stats, self.controller
        stats.throttles = controller.throttles
        stats.pauses = controller.pauses
        stats.learned_rate = controller.rate
        stats.lowest_rate = None if controller.lowest == math.inf else controller.lowest
