"""Exactly once: each video's job created once and recorded once. The rules, top to bottom.

1. **Intent.** Before a worker may take a create, its intent (source, name) is journalled and
   the batch synced (:meth:`Once.prepare`, one sync a batch, sized by
   :func:`~batchsubmit.pool.intent_batch`). A run killed at any moment leaves, for every
   create that might have happened without a row, an intent.
2. **Create.** A created job gets its ``submitted`` row; a refusal its ``failed`` row; a 429
   or 503 is retried after its backoff (no row yet).
3. **Lost answer.** An ambiguous answer (a timeout, a reset, a 5xx after the create) means the
   job may exist: it is never sent again before it has been looked for.
4. **Settle.** The lookup waits ``settle`` seconds first: a create that reached the service
   late, or a list that shows new jobs a few seconds late, is then found, not duplicated.
5. **Lookup.** By name, ``lookup_tries`` times, ``lookup_spacing`` apart, matching the input
   too (a same-named job for another video is not ours). Found: ``submitted`` (reconciled).
   The lookup failed: ``unknown``, never sent again in this run. Absent: created again. A page
   that is not ``{count, tasks: [jobs]}``, or holds a job that could be ours but cannot be
   read or has an id that cannot be one, is a failed call (:func:`read_page`), never "absent".
6. **Row.** :class:`~batchsubmit.outcomes.Rows` writes it; the journal then lets the intent go.

And around them:

- **Earlier runs.** A :class:`Lookup` resolves an intent or ``unknown`` row left by an earlier
  run: found, ``submitted``; the lookup failed, ``unknown``; absent, ``failed`` NOT_CREATED,
  and the source is looked up once more right before this run creates it again. An intent is
  answered only by a row written since it was journalled (a killed ``--resubmit`` leaves
  intents for videos with last night's rows), and only this service's intents are resolved:
  another service's stay in the journal as they are (runner.py's ``Prepared``).
- **Recorded jobs.** A job a row of the ledger names already (last night's, found by name
  after a ``--resubmit``'s lost answer) is never taken for the job of a create made since.
- **The hold.** A source this run looked up and found, or failed to look up, is held: the
  runner leaves it out of the plan (:attr:`Once.held`), and :meth:`Once.run` never creates it.
- **Several matches.** The oldest job is recorded (the first create, which any later lookup
  finds again); every other gets a ``duplicate`` row and its id goes in RunStats.duplicates.
- **Stops.** A create stopped or cancelled after it was sent and before its outcome was known
  gets an ``unknown`` row (the next run looks it up); one never sent is deferred, no row.
- **Ledger identity** (which rows count a video as done) is results.py's Ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeAlias

import anyio

from .answers import QUOTA, Answer, Kind, mask, shorten
from .engine.gate import Gate, Rest, Stopped
from .jobs import JobSpec
from .outcomes import DUPLICATE, INTERRUPTED, NOT_CREATED, JobLimit, Journal, Rows
from .vas import usable_task_id

__all__ = ["Api", "Lookup", "Once", "Page", "Work", "read_page"]


@dataclass(frozen=True, slots=True)
class Lookup:
    """Resolve an earlier create whose outcome is not known: find it by name, create nothing.
    ``ready``: not before this time (epoch seconds): a killed run's last creates get the same
    settle wait as a lost answer before they are looked for."""

    source: str
    name: str
    ready: float = 0.0


Work: TypeAlias = JobSpec | Lookup


class Api(Protocol):
    async def create(self, body: bytes) -> Answer: ...
    async def list_page(self, name_like: str, offset: int, limit: int = ...) -> Answer: ...
    @property
    def secrets(self) -> tuple[str, ...]: ...  # masked in what a lookup page makes us say


@dataclass(frozen=True, kw_only=True)
class Timing:
    settle: float
    lookup_tries: int
    lookup_spacing: float


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


Found: TypeAlias = tuple[str | None, Answer | None, list[str]]


class Once:
    """Creates and lookups as one kind of work on the engine (see the module's rules)."""

    def __init__(
        self,
        api: Api,
        gate: Gate,
        rest: Rest,
        rows: Rows,
        journal: Journal | None,
        timing: Timing,
        limit: JobLimit,
        recorded: Callable[[str], bool] = lambda _job_id: False,
    ) -> None:
        """``recorded``: whether a job id is in a row of the ledger already (an earlier
        night's job of the video): a lookup never takes it for the job of a create since."""
        self._api = api
        self._recorded = recorded
        self._gate = gate
        self._rest = rest
        self._rows = rows
        self._journal = journal
        self._timing = timing
        self._limit = limit
        self._stats = gate.stats
        self.found: set[str] = set()  # earlier creates this run's lookup found
        self.failed: set[str] = set()  # earlier creates whose lookup failed in this run
        self._absent: dict[str, str] = {}  # earlier creates found absent: source -> name
        self._unlooked: set[str] = set()  # earlier creates not looked up: the run stopped

    @property
    def held(self) -> set[str]:
        """Sources never to create in this run: their lookup found the job, failed, or never
        ran (the run stopped first: never created blind, and counted once, as deferred)."""
        return self.found | self.failed | self._unlooked

    # -- the engine's questions -------------------------------------------------------------

    def admit(self, item: Work) -> bool:
        return isinstance(item, Lookup) or self._limit.admit()

    async def prepare(self, batch: list[Work]) -> None:
        """1. Intent: journalled and synced before any of the batch can be sent. Rows written
        since the last batch reach the file first, so few intents are ever without a row."""
        self._rows.sink.flush()
        if self._journal is not None:
            intents = [(i.source, i.name) for i in batch if isinstance(i, JobSpec)]
            if intents:
                self._journal.intend(intents)
                await self._journal.commit()

    async def run(self, item: Work) -> None:
        if isinstance(item, Lookup):
            try:
                await self._resolve(item)
            except anyio.get_cancelled_exc_class():
                self.defer(item)
                raise
        elif item.source in self.found or item.source in self.failed:
            if self._journal is not None:  # the hold: its row is written already
                self._journal.settle(item.source)
        else:
            await self._create(item)
        journal = self._journal
        if journal is not None and journal.checkpoint_due():
            journal.checkpoint()

    def defer(self, item: Work) -> None:
        """Left for the next run, no row: the one place deferred work is counted."""
        self._stats.deferred += 1
        if isinstance(item, Lookup):
            self._unlooked.add(item.source)  # its intent stays for the next run
        elif self._journal is not None:
            self._journal.settle(item.source)  # nothing was created: no intent to keep

    # -- 2. create --------------------------------------------------------------------------

    async def _create(self, spec: JobSpec) -> None:
        job = _Job()
        if self._limit.limit is not None:
            await self._limit.take()
        try:
            await self._create_job(spec, job)
        except Stopped:
            if not job.uncertain:
                raise  # never sent, or refused: the engine defers it
            self._row(job, spec, "unknown", _interrupted())
        except anyio.get_cancelled_exc_class():
            if job.uncertain:
                self._row(job, spec, "unknown", _interrupted())
            else:
                self.defer(spec)
            raise
        finally:
            self._limit.give(job.row)

    async def _create_job(self, spec: JobSpec, job: _Job) -> None:
        gate = self._gate
        earlier = self._absent.pop(spec.source, None)
        if earlier is not None and await self._found_before_create(spec, earlier):
            return
        failures = throttles = 0
        while True:
            if gate.stopping:
                raise Stopped
            answer = await gate.send(
                self._api.create,
                spec.body,
                sent=lambda: self._sending(spec, job),
                first=not job.attempts,
            )
            kind = answer.kind
            if kind is Kind.CREATED:
                return self._row(job, spec, "submitted", answer)
            if kind is Kind.FATAL and answer.error_code == QUOTA:
                job.uncertain = False  # refused: nothing was created; deferred, no row
                raise Stopped
            if kind is Kind.FAILED or kind is Kind.FATAL:
                return self._row(job, spec, "failed", answer)
            if kind is Kind.AMBIGUOUS:  # 3. lost answer
                self._stats.ambiguous += 1
                failures += 1
                if await self._after_lost_answer(spec, answer, job):
                    return
                # Looked for and not found: created again at once, right after the lookup.
                wait = 0.0 if failures < gate.attempts else None
            else:
                if kind is Kind.THROTTLED:
                    throttles += 1
                else:
                    failures += 1
                wait = gate.next_wait(answer, failures, throttles)
            job.uncertain = False
            if wait is None:
                return self._row(job, spec, "failed", answer)
            await self._rest(wait)
            self._stats.retries += 1  # counted once it is sure to be made (not stopped)

    def _sending(self, spec: JobSpec, job: _Job) -> None:
        """Just before a create goes out (after its slot, its start under --rate, any pause):
        the next run's settle wait counts from here if this run is killed."""
        job.sent()
        if self._journal is not None:
            self._journal.sending(spec.source, spec.name)

    # -- 3.-5. lost answer, settle, lookup --------------------------------------------------

    async def _after_lost_answer(self, spec: JobSpec, answer: Answer, job: _Job) -> bool:
        """Look up a create whose answer was lost; True when the job's row has been written."""
        try:
            await self._rest(self._timing.settle)  # 4. settle
        except Stopped:
            self._row(job, spec, "unknown", answer)
            return True
        try:
            found, lookup, others = await self._find(
                spec.name, spec.source, self._timing.lookup_tries
            )
        except Stopped:
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
            self._row(job, spec, "unknown", unknown)
            return True
        if not found:
            return False
        created = Answer(
            kind=Kind.CREATED, job_id=found, status=answer.status, request_id=answer.request_id
        )
        self._row(job, spec, "submitted", created, reconciled=True)
        self._duplicates(spec.source, spec.name, found, others)
        return True

    async def _found_before_create(self, spec: JobSpec, name: str) -> bool:
        """An earlier run's create of this video was looked for at the start of this run and
        not found: look once more right before creating it, as a lost create can surface late.
        True when the row is written (found, or the lookup failed: then nothing is created)."""
        found, lookup, others = await self._find(name, spec.source)
        if found == "":
            return False
        if found is None:
            answer = lookup or Answer(kind=Kind.AMBIGUOUS, error_msg="lookup failed")
            self._rows.write(spec.source, spec.name, "unknown", answer, 0)
            return True
        created = Answer(kind=Kind.CREATED, job_id=found)
        self._rows.write(spec.source, name, "submitted", created, 0, reconciled=True)
        self._duplicates(spec.source, name, found, others)
        return True

    async def _resolve(self, item: Lookup) -> None:
        """An uncertain create from an earlier run: record what the service has."""
        wait = item.ready - time.time()
        if wait > 0:
            await self._rest(wait)  # 4. settle, for a create a killed run made moments ago
        # 5. as many lookups as a lost answer gets: a service that lists new jobs late
        tries = self._timing.lookup_tries
        found, lookup, others = await self._find(item.name, item.source, tries)
        write = self._rows.write
        if found is None:
            self.failed.add(item.source)
            answer = lookup or Answer(kind=Kind.AMBIGUOUS, error_msg="lookup failed")
            write(item.source, item.name, "unknown", answer, 0)
        elif found:
            self.found.add(item.source)
            created = Answer(kind=Kind.CREATED, job_id=found)
            write(item.source, item.name, "submitted", created, 0, reconciled=True)
            self._duplicates(item.source, item.name, found, others)
        else:
            self._stats.not_created += 1
            self._absent[item.source] = item.name
            absent = Answer(
                kind=Kind.FAILED,
                error_code=NOT_CREATED,
                error_msg="an earlier create's answer was lost; no such job exists, "
                "so it is created again when its source is next submitted",
            )
            write(item.source, item.name, "failed", absent, 0, reconciled=True)

    async def _find(self, name: str, source: str, tries: int = 1) -> Found:
        """The job called ``name`` reading ``source``: its id ("" if none, None if the lookup
        failed), the failed lookup's answer, and the ids of the other jobs found for it. While
        it finds none it looks again, ``lookup_spacing`` seconds apart, ``tries`` times in all.
        Of several, the oldest is the one recorded: the first create, which a rerun of the
        lookup will find again, whatever else is created later."""
        for attempt in range(max(1, tries)):
            if attempt:
                await self._rest(self._timing.lookup_spacing)
            matches, failure = await self._matches(name, source)
            if matches is None:
                return None, failure, []
            if matches:
                ids = [job_id for _created, job_id in sorted(matches)]
                if len(ids) > 1:
                    self._gate.log(
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
            answer = await self._gate.call(
                self._lookup_page, name, bucket, key, offset, rest=self._rest
            )
            if answer.kind is not Kind.OK:
                return None, answer
            page: Page = answer.data
            matches += [m for m in page.matches if not self._recorded(m[1])]
            offset += page.tasks
            if not page.tasks or offset >= page.count:
                break
        self._stats.lookups += 1
        return matches, None

    async def _lookup_page(self, name: str, bucket: str, key: str, offset: int) -> Answer:
        """One page of the lookup, read (:func:`read_page`): an answer it cannot read is a call
        that failed (retried, then the job's outcome stays unknown), never "no such job"."""
        answer = await self._api.list_page(name, offset)
        if answer.kind is not Kind.OK:
            return answer
        page = read_page(answer.data, name, bucket, key, self._api.secrets)
        if isinstance(page, str):
            return Answer(
                kind=Kind.UNAVAILABLE,
                status=answer.status,
                request_id=answer.request_id,
                error_msg=f"unusable answer to the lookup by name: {page}",
            )
        return replace(answer, data=page)

    # -- 6. rows ----------------------------------------------------------------------------

    def _row(
        self, job: _Job, spec: JobSpec, status: str, answer: Answer, *, reconciled: bool = False
    ) -> None:
        job.row = status
        self._rows.write(
            spec.source, spec.name, status, answer, job.attempts, reconciled=reconciled
        )

    def _duplicates(self, source: str, name: str, kept: str, others: list[str]) -> None:
        """A row for each extra job of one video: the ledger never counts it, the operator
        deletes it (its id is in the row, the summary and the log)."""
        for job_id in others:
            extra = Answer(
                kind=Kind.CREATED,
                job_id=job_id,
                error_code=DUPLICATE,
                error_msg=f"a second job for this video (a lost create that surfaced late); "
                f"{kept}, the oldest, is the one recorded: delete this one",
            )
            self._rows.write(source, name, "duplicate", extra, 0)


@dataclass(frozen=True, slots=True)
class Page:
    """What one page of a lookup by name says: ``count`` jobs match the name in all, ``tasks``
    are on this page, and ``matches`` (created_at, id) are this video's job."""

    count: int
    tasks: int
    matches: tuple[tuple[str, str], ...]


def read_page(
    data: Any, name: str, bucket: str, key: str, secrets: Sequence[str] = ()
) -> Page | str:
    """A lookup page (``{"count": int, "tasks": [TaskDetails...]}``) read for the job ``name``
    reading ``bucket``/``key``, or what makes it unusable (``secrets`` masked in it). Fail
    closed: a task that could be this job but cannot be read, or whose id cannot be one,
    spoils the page (skipping it could create the video a second time); only a task whose
    name is another's is passed over."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    count, tasks = data.get("count"), data.get("tasks")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return "no 'count' number"
    if tasks is None and count == 0:
        tasks = []  # nothing matched, said by the count alone (an empty list may be left out)
    if not isinstance(tasks, list):
        return "no 'tasks' list"
    matches: list[tuple[str, str]] = []
    for number, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("name"), str):
            return f"task {number} has no 'name' string"
        if task["name"] != name:
            continue  # name_like matches parts of names: another job's
        reads = _reads(task, bucket, key)
        if reads is None:
            return f"task {number} is named {name} and its 'input' cannot be read"
        if not reads:
            continue  # the same name for another video
        job_id, created_at = task.get("id"), task.get("created_at")
        if not usable_task_id(job_id):
            shown = _shown(job_id, secrets)
            return f"task {number} is this video's job but its id {shown} cannot be one"
        if not isinstance(created_at, str):
            return f"task {number} is this video's job but has no 'created_at' string"
        matches.append((created_at, str(job_id)))
    return Page(count, len(tasks), tuple(matches))


def _reads(task: dict[str, Any], bucket: str, key: str) -> bool | None:
    """Whether a listed task's input is this source (a same-named job for another video is
    not); None when its input is not ``{"data": [objects...]}``: it might be."""
    given = task.get("input")
    data = given.get("data") if isinstance(given, dict) else None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        return None
    return any(item.get("bucket") == bucket and item.get("path") == key for item in data)


def _shown(value: Any, secrets: Sequence[str]) -> str:
    """A value from the service, quoted (repr escapes controls), ``secrets`` masked, then cut
    short for a message."""
    return shorten(mask(repr(value), secrets), 40)


def _interrupted() -> Answer:
    return Answer(
        kind=Kind.AMBIGUOUS,
        error_code=INTERRUPTED,
        error_msg="the run stopped before this create's outcome was known",
    )
