"""The pool: creates and lookups run on the engine, every other call through its gate.

A thin facade over the rooms that do the work, each readable alone:

- :mod:`batchsubmit.engine.run`: producer → bounded stream → workers, lending a waiting
  job's place, stop and deadline;
- :mod:`batchsubmit.engine.gate`: the one gate every call passes (in-flight cap, rate
  controller, Retry-After, the first-call probe, stop rules of an answer);
- :mod:`batchsubmit.exactly_once`: intent → create → lost answer → settle → lookup → row;
- :mod:`batchsubmit.outcomes`: rows, counts, and the stop rules the counts drive.

``Pool.run(work)`` runs one pass of creates (:class:`~batchsubmit.jobs.JobSpec`) and lookups
(:class:`Lookup`); ``Pool.call(fn, *args)`` is the gate for any other call (show, list,
delete, IAM), inside or outside a pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .answers import Answer, credentials_failed
from .engine.each import Each
from .engine.gate import Gate, Stopped
from .engine.run import Engine
from .engine.stats import RunStats
from .errors import CredentialError
from .exactly_once import Api, Lookup, Once, Timing, Work
from .outcomes import DUPLICATE, NOT_CREATED, JobLimit, Journal, Reporter, Rows, Sink
from .retry import DEFAULT_RETRY, RetryPolicy
from .throttle import ControllerSettings

__all__ = [
    "DUPLICATE",
    "NOT_CREATED",
    "Api",
    "Journal",
    "Lookup",
    "Pool",
    "PoolSettings",
    "Reporter",
    "RunStats",
    "Sink",
    "Stopped",
    "Work",
    "new_gate",
]

T = TypeVar("T")


class Refreshing(Protocol):
    """Credentials that renew themselves (:class:`~batchsubmit.credentials.CredentialProvider`)."""

    @property
    def refreshable(self) -> bool: ...

    @property
    def source_name(self) -> str: ...

    def route(self, route: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> None: ...

    async def ensure(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    concurrency: int = 8  # calls in flight at most
    rate: float = 10.0  # calls started per second at most; 0 = no limit
    retry: RetryPolicy = DEFAULT_RETRY
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    backlog: int = 256  # jobs that may wait out a backoff while others take their place
    # A create whose answer was lost is looked for ``settle`` seconds later, and again every
    # ``lookup_spacing`` seconds, ``lookup_tries`` times in all, before it is made again: by
    # default over 15 s, so a create that reached the service late, or a list that shows new
    # jobs a few seconds late, is found rather than duplicated.
    settle: float = 5.0
    lookup_tries: int = 3
    lookup_spacing: float = 5.0
    grace: float = 30.0  # after a stop, how long in-flight calls may take to finish
    max_jobs: int | None = None  # jobs created at most (submitted or unknown; not failed ones)
    max_failures: int | None = None
    # The first ``same_failures`` jobs all failing with one 4xx code, none succeeding: the
    # manifest is wrong for every job, so the run stops (fatal). 0: never.
    same_failures: int = 10
    # The account's job quota full mid-run (IVA.0012): the rest is deferred either way; fatal
    # unless this is set (submit --make-room: tonight's run does what fits).
    quota_defers: bool = False
    deadline: float | None = None  # seconds after the start: start nothing new after it
    seed: int | None = None


INTENT_BATCH_MAX = 256  # creates one journal sync covers, at most
INTENTS_AHEAD = 0.1  # seconds of calls at the rate limit that one sync covers


def intent_batch(concurrency: int, rate: float) -> int:
    """How many creates one journal sync covers: at least one per worker, and about
    ``INTENTS_AHEAD`` seconds of calls at the rate limit, at most ``INTENT_BATCH_MAX`` (that
    many when there is no limit). At 10 calls/s nothing changes (one sync a worker each); at
    hundreds a second, a sync per 64 jobs was a quarter of the journal's CPU. A killed run
    leaves about two batches more intents to look up: a fraction of a second of calls."""
    wanted = INTENT_BATCH_MAX if rate <= 0 else math.ceil(rate * INTENTS_AHEAD)
    return max(concurrency, min(INTENT_BATCH_MAX, wanted))


def new_gate(
    settings: PoolSettings,
    stats: RunStats,
    log: Callable[[str, str], None],
    refused: Callable[[Answer], None] = lambda _answer: None,
    clock: Callable[[], float] = time.monotonic,
) -> Gate:
    """A gate with ``settings``' in-flight cap, rate, retry policy and controller: a pool's,
    or one of its own for the calls made before the run's pool exists (the first credentials
    and the project id, from IAM or the ECS metadata service)."""
    return Gate(
        stats,
        log,
        concurrency=settings.concurrency,
        rate=settings.rate,
        retry=settings.retry,
        controller=settings.controller,
        refused=refused,
        clock=clock,
        seed=settings.seed,
    )


class Pool:
    """Runs work through the service; one Pool per run, reusable for several passes."""

    def __init__(
        self,
        api: Api,
        sink: Sink,
        reporter: Reporter,
        settings: PoolSettings,
        *,
        service_url: str,
        credentials: Refreshing | None,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.monotonic,
        recorded: Callable[[str], bool] = lambda _job_id: False,
    ) -> None:
        """``credentials``: the provider the clients sign with (None: plain keys), so that its
        renewals (IAM tokens, ECS metadata keys) are calls through this pool's gate too: renewed
        before a call takes its slot, each renewal a call of its own. Required, so that no site
        can forget it and let renewals go around the gate."""
        s = settings
        self._settings = settings
        self.stats = RunStats()
        self._gate = gate = new_gate(s, self.stats, reporter.log, self._refused, clock)
        self._deadline = clock() + s.deadline if s.deadline is not None else math.inf
        self._engine: Engine[Work] = self._new_engine(intent_batch(s.concurrency, s.rate))
        self._passes: set[Engine[Any]] = {self._engine}
        self._rows = Rows(
            sink,
            reporter,
            journal,
            gate,
            service_url=service_url,
            max_failures=s.max_failures,
            same_failures=s.same_failures,
            quota_defers=s.quota_defers,
        )
        limit = JobLimit(gate, s.max_jobs)
        gate.on_stop.append(limit.wake)
        timing = Timing(
            settle=s.settle, lookup_tries=s.lookup_tries, lookup_spacing=s.lookup_spacing
        )
        self._once = Once(
            api, gate, self._engine.rest, self._rows, journal, timing, limit, recorded
        )
        if credentials is not None and credentials.refreshable:
            credentials.route(gate.other)
            gate.prepare = self._renewer(credentials)

    def _new_engine(self, batch: int | None = None) -> Engine[Any]:
        s = self._settings
        return Engine(
            self._gate,
            concurrency=s.concurrency,
            backlog=s.backlog,
            grace=s.grace,
            deadline=self._deadline,
            batch=batch,
        )

    def _refused(self, answer: Answer) -> None:
        self._rows.refused(answer)

    def _renewer(self, credentials: Refreshing) -> Callable[[], Awaitable[None]]:
        """The gate's ``prepare``: credentials that are due renewed before a call takes its
        slot. A renewal that failed after its retries stops the run as fatal there and the
        call is not sent (:class:`Stopped`): letting it try would be a second round of the
        same retries before the same stop."""

        async def renew_due() -> None:
            try:
                await credentials.ensure()
            except CredentialError as exc:
                self._refused(credentials_failed(credentials.source_name, exc))
                raise Stopped from None

        return renew_due

    # -- the public API -------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._gate.stopping

    def stop(self, reason: str) -> None:
        """Start nothing new; in-flight calls get ``grace`` seconds to finish."""
        self._gate.stop(reason)

    def stop_now(self) -> None:
        """Cancel in-flight calls at once; each create among them gets an ``unknown`` row."""
        self._gate.stop("stopped at once")
        for engine in list(self._passes):
            engine.stop_now()

    @property
    def lookup_found(self) -> set[str]:
        return self._once.found

    @property
    def lookup_failed(self) -> set[str]:
        return self._once.failed

    @property
    def held(self) -> set[str]:
        """Sources the create pass must leave out: their lookup found them, failed or never ran."""
        return self._once.held

    @property
    def busy(self) -> int:
        """Worker tasks still running (0 between passes)."""
        return self._engine.busy

    async def run(self, work: Iterator[Work]) -> RunStats:
        """Process every item of ``work`` (or until stopped); the iterator is read lazily, a
        batch (:func:`intent_batch`) at a time."""
        await self._engine.run(iter(work), self._once)
        self.stats.elapsed = time.monotonic() - self.stats.started
        self._gate.finish()
        return self.stats

    async def call(self, call: Callable[..., Awaitable[Answer]], *args: Any) -> Answer:
        """The gate for every call that is not a create (show, list, delete, IAM, metadata):
        the same in-flight cap, rate controller, Retry-After, throttle learning, retries on
        transient answers and stop rules as creates. Raises :class:`Stopped` when the run
        stops before the call is sent."""
        return await self._gate.call(call, *args, rest=self._engine.rest)

    async def each(self, items: Iterable[T], handle: Callable[[T], Awaitable[None]]) -> list[T]:
        """``handle`` on every item, ``concurrency`` at a time, on the engine's workers (100,000
        shows are not 100,000 tasks); ``handle`` calls through :meth:`call`. Returns the items
        not started because the run stopped."""
        engine: Engine[T] = self._new_engine()
        work = Each(handle)
        self._passes.add(engine)
        try:
            await engine.run(iter(items), work)
        finally:
            self._passes.discard(engine)
        return work.skipped
