"""The worker pool: a streaming producer, workers, one pool-wide rate controller, retries, and
the rules that keep every job created exactly once with its row.

Data flow: ``work`` (an iterator, read lazily) → the feeder, which journals the intents of
a batch of jobs with one sync → a short queue of ready jobs → ``concurrency`` workers. A worker
owns one job at a time from its first call to its row, so when nothing goes wrong a job costs
no hand-off between tasks. A job that must wait (a backoff, the settle wait before a lookup)
lends its worker's place: a helper worker starts, up to ``backlog`` of them, and the in-flight
cap (slots held only for the call itself) keeps the total honest. The pool knows small
interfaces (an :class:`Api`, a :class:`Sink`, a journal, a :class:`Reporter`), not concrete
classes.

Exactly once: an intent is journalled, and synced, before the job can be taken; a create whose
answer is lost is looked up by name (after ``settle`` seconds, ``lookup_tries`` times) before it
is ever sent again, and an earlier run's create found absent is looked up once more right
before it is made again; of several jobs found for one video the oldest is recorded and the
others get ``duplicate`` rows; a run stopped while calls are in flight writes an ``unknown``
row for each, and the journal keeps its intent. The ready queue holds fewer than
``2 * concurrency`` jobs, so a killed run leaves fewer than ``3 * concurrency`` open intents to
look up.

Stop rules besides the operator's (--max-failures, --max-jobs, --deadline, signals): a fatal
answer (credentials, permissions, a full quota), an endpoint the run's first call cannot reach
at all, and the first ``same_failures`` jobs all failing alike with none succeeding.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import anyio
import anyio.abc

from .answers import QUOTA, UNREACHABLE, Answer, Kind, manifest_key_for, shorten
from .errors import BatchSubmitError
from .jobs import JobSpec
from .results import Outcome, utc_now
from .retry import DEFAULT_RETRY, RetryPolicy, next_wait
from .throttle import ControllerSettings, RateController

__all__ = [
    "NOT_CREATED",
    "Api",
    "Lookup",
    "Pool",
    "PoolSettings",
    "Reporter",
    "RunStats",
    "Sink",
    "Stopped",
    "Work",
]

NOT_CREATED = "BATCHSUBMIT.NOT_CREATED"
INTERRUPTED = "BATCHSUBMIT.INTERRUPTED"
DUPLICATE = "BATCHSUBMIT.DUPLICATE"


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    concurrency: int = 8  # calls in flight at most
    rate: float = 10.0  # create and lookup calls started per second at most; 0 = no limit
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


@dataclass(frozen=True, slots=True)
class Lookup:
    """Resolve an earlier create whose outcome is not known: find it by name, create nothing."""

    source: str
    name: str


Work: TypeAlias = JobSpec | Lookup


class Api(Protocol):
    async def create(self, body: bytes) -> Answer: ...
    async def list_page(self, name_like: str, offset: int, limit: int = ...) -> Answer: ...


class Sink(Protocol):
    def write(self, outcome: Outcome) -> None: ...
    def flush(self) -> None: ...


class Journal(Protocol):
    def intend(self, intents: list[tuple[str, str]]) -> None: ...
    async def commit(self) -> None: ...
    def settle(self, source: str) -> None: ...
    def checkpoint_due(self) -> bool: ...
    def checkpoint(self) -> None: ...


class Reporter(Protocol):
    def outcome(self, outcome: Outcome) -> None: ...
    def log(self, level: str, message: str) -> None: ...


@dataclass
class RunStats:
    """What a run did; the CLI renders it as the summary, the JSON summary and the metrics."""

    submitted: int = 0
    reconciled: int = 0
    failed: int = 0
    unknown: int = 0
    not_created: int = 0
    deferred: int = 0
    skipped: int = 0
    calls: int = 0
    retries: int = 0
    throttles: int = 0
    unavailable: int = 0
    ambiguous: int = 0
    lookups: int = 0
    first_errors: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None
    fatal: str | None = None
    learned_rate: float | None = None
    lowest_rate: float | None = None
    pauses: int = 0
    deferred_reason: str | None = None  # why jobs were deferred, and what to do, when it matters
    duplicates: list[str] = field(default_factory=list)  # ids of extra jobs found for a video
    signal: int | None = None
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Jobs submitted per second of the run."""
        return self.submitted / self.elapsed if self.elapsed > 0 else 0.0


class _Slots:
    """A semaphore for in-flight calls whose waiters are served in two classes: calls of jobs
    already under way (retries, lookups) before the first calls of new jobs; FIFO within each.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._urgent: deque[asyncio.Event] = deque()
        self._new: deque[asyncio.Event] = deque()

    async def acquire(self, first: bool) -> None:
        if self._free > 0 and not self._urgent and not self._new:
            self._free -= 1
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
        self._free += 1


class _Job:
    """What a create in progress knows about itself."""

    __slots__ = ("attempts", "row", "uncertain")

    def __init__(self) -> None:
        self.attempts = 0
        self.uncertain = False  # a create was sent and its outcome is not known yet
        self.row = ""  # the status of the row written for it, once written

    def sent(self) -> None:
        self.attempts += 1
        self.uncertain = True


class Stopped(Exception):
    """The run is stopping: nothing was sent for this call (its job is deferred)."""


_Stopped = Stopped


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
        journal: Journal | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._sink = sink
        self._reporter = reporter
        self._settings = settings
        self._service_url = service_url
        self._journal = journal
        self._clock = clock
        self._rng = random.Random(settings.seed)
        self._controller = RateController(settings.rate, settings.controller)
        self._inflight = _Slots(settings.concurrency)
        self._ready: deque[Work] = deque()  # journalled, not yet taken by a worker
        self._fed = asyncio.Event()  # replaced each time the feeder adds to ``_ready``
        self._hungry = asyncio.Event()  # ``_ready`` ran low
        self._fed_all = False
        self._unsynced: list[Work] = []  # taken from ``work``, intents not yet synced
        self._group: anyio.abc.TaskGroup | None = None
        self._workers = 0
        self._resting = 0  # workers whose job waits out a backoff or a settle wait
        self._rate_lock = anyio.Lock()
        # asyncio's own events (aiohttp ties us to asyncio): checked several times a job, and
        # anyio's wrapper doubles the cost of each check
        self._stopping = asyncio.Event()
        self._opened = asyncio.Event()
        self._probing = False
        self._work_scope: anyio.CancelScope | None = None
        # --max-jobs: places taken by jobs under way or created; a failed create gives its back
        self._jobs_taken = 0
        self._jobs_created = 0
        self._jobs_changed = asyncio.Event()
        self._alike: tuple[str, int] | None = ("", 0)  # the first failures' code, how many
        self._absent: dict[str, str] = {}  # earlier creates found absent: source -> name
        self._deadline = clock() + settings.deadline if settings.deadline is not None else math.inf
        self.stats = RunStats()
        self.lookup_found: set[str] = set()
        self.lookup_failed: set[str] = set()

    # -- stopping -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, reason: str) -> None:
        """Start nothing new; in-flight calls get ``grace`` seconds to finish."""
        if not self._stopping.is_set():
            self.stats.stop_reason = reason
            self._reporter.log(
                "warning",
                f"stopping ({reason}): starting nothing new, letting calls in flight finish",
            )
            self._stopping.set()
            self._opened.set()
            self._jobs_changed.set()

    def stop_now(self) -> None:
        """Cancel in-flight calls at once; each gets an ``unknown`` row."""
        self.stop("stopped at once")
        if self._work_scope is not None:
            self._work_scope.cancel()

    # -- the run ----------------------------------------------------------------------------

    async def run(self, work: Iterator[Work]) -> RunStats:
        """Process every item of ``work`` (or until stopped); the iterator is read lazily, a
        batch of ``concurrency`` items at a time, as the ready queue runs low."""
        work = iter(work)
        self._ready.clear()
        self._fed_all = False
        async with anyio.create_task_group() as services:
            services.start_soon(self._watch_stop)
            if self._deadline != math.inf:
                services.start_soon(self._watch_deadline)
            with anyio.CancelScope() as self._work_scope:
                async with anyio.create_task_group() as self._group:
                    self._group.start_soon(self._feed, work)
                    self._workers = self._settings.concurrency
                    for _ in range(self._workers):
                        self._group.start_soon(self._work)
            services.cancel_scope.cancel()
        if self._work_scope is not None and self._work_scope.cancel_called:
            self._abandon(work)
        self._finish_stats()
        return self.stats

    def _abandon(self, work: Iterator[Work]) -> None:
        """After a stop at once: what was journalled but never taken was never sent."""
        untaken = [*self._unsynced, *self._ready]
        for item in untaken:
            if isinstance(item, JobSpec):
                self._forget(item.source)
        self.stats.deferred += len(untaken) + sum(1 for _ in work)
        self._ready.clear()
        self._unsynced = []

    async def _watch_stop(self) -> None:
        await self._stopping.wait()
        await anyio.sleep(self._settings.grace)
        if self._work_scope is not None and not self._work_scope.cancel_called:
            self._reporter.log(
                "warning",
                f"calls still in flight after {self._settings.grace:g} s;"
                " cancelling them (their jobs are recorded as unknown)",
            )
            self._work_scope.cancel()

    async def _watch_deadline(self) -> None:
        await anyio.sleep(max(0.0, self._deadline - self._clock()))
        self.stop("deadline reached")

    def _finish_stats(self) -> None:
        stats = self.stats
        stats.elapsed = time.monotonic() - stats.started
        controller = self._controller
        stats.throttles = controller.throttles
        stats.pauses = controller.pauses
        stats.learned_rate = None if controller.rate == math.inf else controller.rate
        stats.lowest_rate = None if controller.lowest == math.inf else controller.lowest

    def _next(self, work: Iterator[Work]) -> Work | None:
        """The next item to start, or None: nothing left, or nothing more may start."""
        max_jobs = self._settings.max_jobs
        try:
            for item in work:
                if self._stopping.is_set():
                    self.stats.deferred += 1
                    continue
                if (
                    max_jobs is not None
                    and isinstance(item, JobSpec)
                    and self._jobs_created >= max_jobs
                ):
                    self.stats.stop_reason = f"--max-jobs {max_jobs} reached"
                    self.stats.deferred += 1
                    continue
                return item
        except BatchSubmitError as exc:
            # A listing that changed under us since the check before the first request.
            self.stats.fatal = f"the sources could not be read to the end: {exc}"
            self.stop("reading the sources failed")
        return None

    async def _feed(self, work: Iterator[Work]) -> None:
        """Keep ``_ready`` stocked: a batch of ``concurrency`` items whenever it runs low, their
        intents written and synced in one go (off the workers' path while the queue lasts).
        The rows written since the last batch are flushed first, so a killed run leaves
        fewer than ``3 * concurrency`` intents without a row in the file."""
        batch = self._settings.concurrency
        journal = self._journal
        ready = self._ready
        while True:
            items = self._unsynced = []
            while len(items) < batch and (item := self._next(work)) is not None:
                items.append(item)
            self._sink.flush()
            if journal is not None:
                intents = [(i.source, i.name) for i in items if isinstance(i, JobSpec)]
                if intents:
                    journal.intend(intents)
                    await journal.commit()
            ready.extend(items)
            self._unsynced = []
            if not items:
                self._fed_all = True
            fed, self._fed = self._fed, asyncio.Event()
            fed.set()
            if not items:
                return
            while len(ready) >= batch:
                self._hungry = asyncio.Event()
                await self._hungry.wait()

    async def _work(self) -> None:
        journal = self._journal
        ready = self._ready
        low = self._settings.concurrency
        while True:
            if not ready:
                if self._fed_all:
                    break
                await self._fed.wait()
                continue
            item = ready.popleft()
            if len(ready) < low:
                self._hungry.set()
            try:
                if isinstance(item, Lookup):
                    await self._resolve(item)
                else:
                    await self._create(item)
            except _Stopped:
                self.stats.deferred += 1
            except anyio.get_cancelled_exc_class():
                if isinstance(item, Lookup):
                    self.stats.deferred += 1
                raise
            if journal is not None and journal.checkpoint_due():
                journal.checkpoint()
            if self._workers - self._resting > self._settings.concurrency:
                break  # a helper whose job is done, or a worker whose place a helper took
        self._workers -= 1

    async def _rest(self, seconds: float) -> None:
        """Wait out a backoff or a settle wait, lending this worker's place to a helper."""
        settings = self._settings
        self._resting += 1
        try:
            if (
                self._workers - self._resting < settings.concurrency
                and self._workers < settings.concurrency + settings.backlog
                and self._group is not None
                and not self._stopping.is_set()
            ):
                self._workers += 1
                self._group.start_soon(self._work)
            await self._sleep_unless_stopped(seconds)
        finally:
            self._resting -= 1

    # -- one job ----------------------------------------------------------------------------

    async def _create(self, spec: JobSpec) -> None:
        limit = self._settings.max_jobs
        job = _Job()
        if limit is not None:
            try:
                await self._take_place(limit)
            except _Stopped:
                self._forget(spec.source)
                raise
        try:
            await self._create_job(spec, job)
        finally:
            if limit is not None:
                self._give_place(job)

    async def _take_place(self, limit: int) -> None:
        """--max-jobs counts what costs money: wait while the jobs under way could still
        reach the limit (one that fails gives its place back); once it is reached, defer."""
        while self._jobs_taken >= limit:
            if self._jobs_created >= limit or self._stopping.is_set():
                self.stats.stop_reason = self.stats.stop_reason or f"--max-jobs {limit} reached"
                raise _Stopped
            changed = self._jobs_changed
            if changed.is_set():
                changed = self._jobs_changed = asyncio.Event()
            await changed.wait()
        self._jobs_taken += 1

    def _give_place(self, job: _Job) -> None:
        """A job created, or maybe created (unknown), keeps its place under --max-jobs."""
        if job.row in ("submitted", "unknown"):
            self._jobs_created += 1
        else:
            self._jobs_taken -= 1
        self._jobs_changed.set()

    async def _create_job(self, spec: JobSpec, job: _Job) -> None:
        failures = throttles = 0
        try:
            earlier = self._absent.pop(spec.source, None)
            if earlier is not None and await self._found_before_create(spec, earlier):
                return
            while True:
                if self._stopping.is_set():
                    raise _Stopped
                answer = await self._call(
                    self._api.create, spec.body, sent=job.sent, first=not job.attempts
                )
                kind = answer.kind
                if kind is Kind.CREATED:
                    self._record(spec.source, spec.name, "submitted", answer, job.attempts, job=job)
                    return
                if kind is Kind.FATAL and answer.error_code == QUOTA:
                    job.uncertain = False  # refused: nothing was created; deferred, no row
                    raise _Stopped
                if kind is Kind.FAILED or kind is Kind.FATAL:
                    self._record(spec.source, spec.name, "failed", answer, job.attempts, job=job)
                    return
                if kind is Kind.AMBIGUOUS:
                    self.stats.ambiguous += 1
                    failures += 1
                    if await self._after_lost_answer(spec, answer, job):
                        return
                    # Looked for and not found: created again at once, right after the lookup.
                    wait = 0.0 if failures < self._settings.retry.attempts else None
                else:
                    if kind is Kind.THROTTLED:
                        throttles += 1
                    else:
                        failures += 1
                    wait = next_wait(self._settings.retry, answer, failures, throttles, self._rng)
                job.uncertain = False
                if wait is None:
                    self._record(spec.source, spec.name, "failed", answer, job.attempts, job=job)
                    return
                await self._rest(wait)
                self.stats.retries += 1  # counted once it is sure to be made (not stopped)
        except (_Stopped, anyio.get_cancelled_exc_class()) as exc:
            if job.uncertain:
                self._record(
                    spec.source, spec.name, "unknown", _interrupted(), job.attempts, job=job
                )
                if isinstance(exc, _Stopped):
                    return
            else:
                self._forget(spec.source)
                if not isinstance(exc, _Stopped):
                    self.stats.deferred += 1
            raise

    async def _found_before_create(self, spec: JobSpec, name: str) -> bool:
        """An earlier run's create of this video was looked for at the start of this run and
        not found: look once more right before creating it, as a lost create can surface late.
        True when the row is written (found, or the lookup failed: then nothing is created)."""
        found, lookup, others = await self._find(name, spec.source)
        if found == "":
            return False
        if found is None:
            answer = lookup or Answer(kind=Kind.AMBIGUOUS, error_msg="lookup failed")
            self._record(spec.source, spec.name, "unknown", answer, 0)
            return True
        self._record(
            spec.source,
            name,
            "submitted",
            Answer(kind=Kind.CREATED, job_id=found),
            0,
            reconciled=True,
        )
        self._record_duplicates(spec.source, name, found, others)
        return True

    async def _after_lost_answer(self, spec: JobSpec, answer: Answer, job: _Job) -> bool:
        """Look up a create whose answer was lost; True when the job's row has been written."""
        attempts = job.attempts
        try:
            await self._rest(self._settings.settle)
        except _Stopped:
            self._record(spec.source, spec.name, "unknown", answer, attempts, job=job)
            return True
        try:
            found, lookup, others = await self._find(
                spec.name, spec.source, self._settings.lookup_tries
            )
        except _Stopped:
            found, lookup, others = None, _interrupted(), []
        if found is None:
            failure = lookup or answer
            unknown = Answer(
                kind=Kind.AMBIGUOUS,
                status=answer.status,
                error_code=answer.error_code,
                error_msg=f"{answer.error_msg}; looking the job up failed: "
                f"{failure.error_code} {failure.error_msg}".strip(),
                request_id=answer.request_id,
            )
            self._record(spec.source, spec.name, "unknown", unknown, attempts, job=job)
            return True
        if found:
            self._record(
                spec.source,
                spec.name,
                "submitted",
                Answer(
                    kind=Kind.CREATED,
                    job_id=found,
                    status=answer.status,
                    request_id=answer.request_id,
                ),
                attempts,
                reconciled=True,
                job=job,
            )
            self._record_duplicates(spec.source, spec.name, found, others)
            return True
        return False

    async def _resolve(self, item: Lookup) -> None:
        """An uncertain create from an earlier run: record what the service has."""
        found, lookup, others = await self._find(item.name, item.source)
        if found is None:
            self.lookup_failed.add(item.source)
            answer = lookup or Answer(kind=Kind.AMBIGUOUS, error_msg="lookup failed")
            self._record(item.source, item.name, "unknown", answer, 0)
        elif found:
            self.lookup_found.add(item.source)
            self._record(
                item.source,
                item.name,
                "submitted",
                Answer(kind=Kind.CREATED, job_id=found),
                0,
                reconciled=True,
            )
            self._record_duplicates(item.source, item.name, found, others)
        else:
            self.stats.not_created += 1
            self._absent[item.source] = item.name
            absent = Answer(
                kind=Kind.FAILED,
                error_code=NOT_CREATED,
                error_msg="an earlier create's answer was lost; no such job exists, "
                "so it is created again when its source is next submitted",
            )
            self._record(
                item.source,
                item.name,
                "failed",
                absent,
                0,
                reconciled=True,
            )

    async def _find(
        self, name: str, source: str, tries: int = 1
    ) -> tuple[str | None, Answer | None, list[str]]:
        """The job called ``name`` reading ``source``: its id ("" if none, None if the lookup
        failed), the failed lookup's answer, and the ids of the other jobs found for it. While
        it finds none it looks again, ``lookup_spacing`` seconds apart, ``tries`` times in all.
        Of several, the oldest is the one recorded: the first create, which a rerun of the
        lookup will find again, whatever else is created later."""
        for attempt in range(max(1, tries)):
            if attempt:
                await self._rest(self._settings.lookup_spacing)
            matches, failure = await self._matches(name, source)
            if matches is None:
                return None, failure, []
            if matches:
                ids = [job_id for _created, job_id in sorted(matches)]
                if len(ids) > 1:
                    self._reporter.log(
                        "warning",
                        f"{source}: {len(ids)} jobs named {name} exist ({', '.join(ids)}); "
                        f"recording the oldest, {ids[0]}; the others are reported as duplicates",
                    )
                return ids[0], None, ids[1:]
        return "", None, []

    async def _matches(
        self, name: str, source: str
    ) -> tuple[list[tuple[str, str]] | None, Answer | None]:
        """(created_at, id) of every job called ``name`` reading ``source``; None if unknown."""
        bucket, _, key = source.removeprefix("obs://").partition("/")
        offset = 0
        matches: list[tuple[str, str]] = []
        while True:
            answer = await self._retrying(self._api.list_page, name, offset)
            if answer.kind is not Kind.OK:
                return None, answer
            data = answer.data if isinstance(answer.data, dict) else {}
            tasks = data.get("tasks") or []
            for task in tasks:
                if (
                    isinstance(task, dict)
                    and task.get("name") == name
                    and _reads(task, bucket, key)
                ):
                    matches.append((str(task.get("created_at", "")), str(task.get("id", ""))))
            offset += len(tasks)
            count = data.get("count")
            if not tasks or not isinstance(count, int) or offset >= count:
                break
        self.stats.lookups += 1
        return matches, None

    def _record_duplicates(self, source: str, name: str, kept: str, others: list[str]) -> None:
        """A row for each extra job of one video: the ledger never counts it, the operator
        deletes it (its id is in the row, the summary and the log)."""
        for job_id in others:
            self._record(
                source,
                name,
                "duplicate",
                Answer(
                    kind=Kind.CREATED,
                    job_id=job_id,
                    error_code=DUPLICATE,
                    error_msg=f"a second job for this video (a lost create that surfaced late); "
                    f"{kept}, the oldest, is the one recorded: delete this one",
                ),
                0,
            )

    async def call(self, call: Callable[..., Awaitable[Answer]], *args: Any) -> Answer:
        """The gate for every call that is not a create (show, list, delete, IAM, metadata):
        the same in-flight cap, rate controller, Retry-After, throttle learning, retries on
        transient answers and stop rules as creates. Raises :class:`Stopped` when the run
        stops before the call is sent."""
        return await self._retrying(call, *args)

    async def _retrying(self, call: Callable[..., Awaitable[Answer]], *args: Any) -> Answer:
        """A read: retried on anything transient, with the same rules as creates."""
        failures = throttles = 0
        while True:
            answer = await self._call(call, *args)
            kind = answer.kind
            if kind is Kind.THROTTLED:
                throttles += 1
            elif kind in (Kind.UNAVAILABLE, Kind.NOT_SENT):
                failures += 1
            else:
                return answer
            wait = next_wait(self._settings.retry, answer, failures, throttles, self._rng)
            if wait is None:
                return answer
            await self._rest(wait)
            self.stats.retries += 1

    # -- one call ---------------------------------------------------------------------------

    async def _call(
        self,
        call: Callable[..., Awaitable[Answer]],
        *args: Any,
        sent: Callable[[], None] | None = None,
        first: bool = False,
    ) -> Answer:
        """One call: an in-flight slot, a start allowed by the controller, then the call.

        Raises _Stopped only before anything is sent; ``sent`` is called just before sending.
        A job's first call queues behind every retry and lookup (``first``), so a job that
        waited out a backoff is not made to wait again behind the whole backlog of new ones.
        """
        probe = False
        if not self._opened.is_set():
            if self._probing:
                await self._opened.wait()
            else:
                self._probing = probe = True
        if self._stopping.is_set():
            raise _Stopped
        await self._inflight.acquire(first)
        try:
            if self._stopping.is_set():
                raise _Stopped
            await self._start_allowed()
            self.stats.calls += 1
            if sent is not None:
                sent()
            answer = await call(*args)
        finally:
            self._inflight.release()
        self._observe(answer, probe)
        if not self._opened.is_set():
            self._opened.set()
        return answer

    async def _start_allowed(self) -> None:
        controller = self._controller
        if controller.unlimited:
            controller.started(self._clock())
            return
        async with self._rate_lock:
            while True:
                if self._stopping.is_set():
                    raise _Stopped
                now = self._clock()
                delay = controller.delay(now)
                if delay <= 0:
                    controller.started(now)
                    return
                with anyio.move_on_after(delay):
                    await self._stopping.wait()

    def _observe(self, answer: Answer, probe: bool = False) -> None:
        controller = self._controller
        now = self._clock()
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
        # that call (its job waits that long instead of its backoff); only a sustained
        # majority of 503s slows or holds the pool, by the controller's share rule.
        if answer.retry_after is not None and kind is Kind.THROTTLED:
            paused = controller.pause(now, answer.retry_after)
            self._reporter.log(
                "info",
                f"the service asked to wait (Retry-After "
                f"{answer.retry_after:g} s): pausing all calls for {paused:g} s",
            )
        if kind is Kind.FATAL:
            if answer.error_code == QUOTA:
                self._quota_full(answer)
            elif self.stats.fatal is None:
                self.stats.fatal = f"{_describe(answer)}; {answer.advice}"
                self.stop("the service refused in a way every job would repeat")
        elif probe and kind is Kind.NOT_SENT and answer.error_code in UNREACHABLE:
            # The run's first call could not reach the endpoint at all: neither will the others.
            if self.stats.fatal is None:
                self.stats.fatal = (
                    f"{answer.error_msg}; check the endpoint (--endpoint, or service.region in "
                    "the manifest) and this machine's network (DNS, proxy, firewall)"
                )
            self.stop("the endpoint cannot be reached")

    def _quota_full(self, answer: Answer) -> None:
        """IVA.0012 mid-run (other tools share the quota): create nothing more, let the calls
        in flight finish, defer the rest, and say what to do."""
        stats = self.stats
        if stats.deferred_reason is None:
            stats.deferred_reason = (
                f"the account's job quota is full ({_describe(answer)}): the videos not yet "
                "created are deferred to the next run; make room with `batchsubmit prune "
                "RESULTS` (or `submit --make-room`)"
            )
            if not self._settings.quota_defers and stats.fatal is None:
                stats.fatal = stats.deferred_reason
        self.stop("the account's job quota is full")

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._stopping.wait()
        if self._stopping.is_set():
            raise _Stopped

    # -- rows -------------------------------------------------------------------------------

    def _record(
        self,
        source: str,
        name: str,
        status: str,
        answer: Answer,
        attempts: int,
        *,
        reconciled: bool = False,
        job: _Job | None = None,
    ) -> None:
        outcome = Outcome(
            source=source,
            name=name,
            job_id=answer.job_id,
            status=status,
            http_status=answer.status,
            error_code=answer.error_code,
            error_msg=shorten(answer.error_msg),
            attempts=attempts,
            request_id=answer.request_id,
            submitted_at=utc_now(),
            service_url=self._service_url,
            reconciled=reconciled,
        )
        self._sink.write(outcome)
        if job is not None:
            job.row = status
        stats = self.stats
        if status == "duplicate":
            # Not the video's outcome (its own row is written just before): no journal, no tick.
            stats.duplicates.append(answer.job_id)
            return
        if self._journal is not None:
            self._journal.settle(source)
        if status == "submitted":
            stats.submitted += 1
            stats.reconciled += reconciled
            self._alike = None
        elif status == "unknown":
            stats.unknown += 1
            stats.first_errors.setdefault(answer.error_code or "unknown", _describe(answer))
        elif answer.error_code != NOT_CREATED:
            stats.failed += 1
            stats.first_errors.setdefault(
                answer.error_code or str(answer.status), f"{source}: {_describe(answer)}"
            )
            limit = self._settings.max_failures
            if limit is not None and stats.failed >= limit:
                self.stop(f"--max-failures {limit} reached")
                stats.fatal = stats.fatal or f"{stats.failed} jobs failed (--max-failures {limit})"
            self._count_alike(answer)
        self._reporter.outcome(outcome)

    def _count_alike(self, answer: Answer) -> None:
        """The first ``same_failures`` jobs all failed with one 4xx code and none succeeded:
        the manifest is wrong for every job, so stop and name the key it most likely is."""
        needed = self._settings.same_failures
        alike = self._alike
        if not needed or alike is None:
            return
        code = answer.error_code or f"HTTP {answer.status}"
        if (
            answer.kind is not Kind.FAILED
            or not 400 <= answer.status < 500
            or answer.status in (408, 429)
            or (alike[1] and alike[0] != code)
        ):
            self._alike = None  # not a job's own fault, or not all alike: the rule is off
            return
        self._alike = alike = (code, alike[1] + 1)
        if alike[1] >= needed and self.stats.fatal is None:
            key = manifest_key_for(answer.error_code, answer.error_msg)
            self.stats.fatal = (
                f"the first {needed} jobs all failed with {_describe(answer)}, and none "
                f"succeeded: it most likely comes from {key} in the manifest; fix it and run "
                "again (the failed videos are submitted again then)"
            )
            self.stop(f"the first {needed} jobs failed alike")

    def _forget(self, source: str) -> None:
        """A job stopped before any create could have succeeded: no row, no open intent."""
        if self._journal is not None:
            self._journal.settle(source)


def _reads(task: dict[str, Any], bucket: str, key: str) -> bool:
    """Whether a listed task's input is this source (a same-named job for another video is not)."""
    data = (task.get("input") or {}).get("data") or []
    return any(
        isinstance(item, dict) and item.get("bucket") == bucket and item.get("path") == key
        for item in data
    )


def _interrupted() -> Answer:
    return Answer(
        kind=Kind.AMBIGUOUS,
        error_code=INTERRUPTED,
        error_msg="the run stopped before this create's outcome was known",
    )


def _describe(answer: Answer) -> str:
    parts = [f"HTTP {answer.status}" if answer.status else "", answer.error_code, answer.error_msg]
    text = shorten(" ".join(p for p in parts if p))
    if answer.request_id:
        text += f" (request id {answer.request_id})"
    return text or answer.kind.value
