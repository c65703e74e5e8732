"""Follow every job of a results file to its end: states, failures and hosting results, on a
small, fixed budget of calls, recorded as they are seen (:mod:`record`).

One pass asks about the jobs not yet final, in pages of 100 (VAS's maximum) instead of one show
per job: a *sweep* lists the service's jobs created in the windows of time around the followed
jobs' creations (``created_since``/``created_until``, oldest first) and so sees every followed
job, or learns it is absent; an *incremental* pass lists only what changed since the last pass
(``order=updated_at:DESC``, stopping at the first job older than the cursor). A show is made
only where a field is only in show: a SUCCEEDED job's pending ``hosting_result``, a result to
collect, and a job absent from a sweep that must have listed it (404 there: ``LOST``).

Every call goes through the pool's gate (:meth:`Pool.call`); the shows and a window's pages
after its first are kinds of work on the pool's workers (:meth:`Pool.each`), with no scheduler
here. What stays sequential is so by nature: a window's first page tells how many pages follow
(and whether to split it), and a changes pass reads one page to know if the next is needed.
Returns data (FollowStats); the CLI renders it. Exit codes are judged by :func:`exit_code` on
the jobs this run followed.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from sys import intern
from typing import IO, Any
from urllib.parse import unquote

import anyio
import orjson

from .answers import Answer, Kind, mask, one_line
from .client import DEFAULT_TIMEOUT, Endpoint, VasClient, open_session
from .durable import replaced, sync_dir
from .errors import StorageError, UsageError, innermost
from .journal import RunLock
from .pool import Pool, PoolSettings, Stopped
from .progress import Log, ProgressReporter
from .record import (
    HOSTING_PENDING,
    JobRecord,
    OffsetIndex,
    RecordReader,
    RecordWriter,
    collectable,
    compact,
    from_json,
    is_final,
    iter_raw,
    record_path,
)
from .results import Format, Outcome, ResultRow, iter_results, utc_at, utc_now
from .results import epoch as _epoch
from .vas import JOB_NOT_FOUND, service_of

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_STUCK_AFTER",
    "REPORT_COLUMNS",
    "FollowConfig",
    "FollowStats",
    "Follower",
    "default_report_path",
    "exit_code",
    "follow",
    "lock_results",
    "prepare_follow",
    "report_format",
]

DEFAULT_INTERVAL = 15.0  # seconds between passes: Huawei's own demos poll every 10 to 15 s
DEFAULT_STUCK_AFTER = 6 * 3600.0  # PENDING or ABNORMAL for longer: stuck
TOO_LARGE = "EXCEED_IN_SIZE"  # a hosting result VAS did not keep
EXPIRING_WITHIN = 6 * 3600.0  # a hosting result this close to its overdue time: warned about
LIST_LIMIT = 100  # VAS's maximum page
MAX_OFFSET = 100_000  # VAS documents offset 1 to 100000: a bigger window is split
SLACK_MS = 10 * 60 * 1000  # around creation times: our clock and the service's may differ
WINDOW_GAP_MS = 30 * 60 * 1000  # creations further apart than this are listed as two windows
CURSOR_SLACK = 5.0  # seconds: a "changes" pass re-reads jobs updated this long before the
# newest it saw last time (the service's own clock, to the second: ties and late writers)
FUTURE_SKEW = 3600.0  # seconds: an updated_at further ahead of our clock is not believed
# for the cursor (a hostile or broken service's 2100 held it there for the rest of the run)
SWEEP_EVERY = 10  # passes: a sweep finds jobs that vanished (an incremental list cannot)
CHEAP_SWEEP = 3  # list calls: a sweep this cheap is made every pass
TRUST_MISSES = 3  # jobs a filtered sweep missed and show found: stop filtering by time
COMPACT_MIN = 1000  # superseded lines: fewer are not worth a rewrite
SYNC_EVERY = 1.0  # seconds: the longest a seen change waits before it reaches the disk
ARREARS = frozenset({"FREEZING", "FROZEN"})
STUCK_STATES = frozenset({"PENDING", "ABNORMAL"})
FAILED_FINAL = frozenset({"FAILED", "CREATE_FAILED", "START_FAILED", "LOST"})
REPORT_COLUMNS = (
    "source",
    "name",
    "job_id",
    "state",
    "final",
    "error_code",
    "error_msg",
    "created_at",
    "updated_at",
    "hosting_status",
    "hosting_overdue_at",
    "checked_at",
)
_TASKS_URL = re.compile(r"(https?://[^/?#]+)/v2/([^/]+)/services/([^/]+)/tasks/?")


@dataclass(frozen=True, kw_only=True)
class FollowConfig:
    """Everything a status run needs, built once by the CLI."""

    results: Path
    format: Format
    credentials: Any  # what VasClient takes: Credentials or a provider; None: nothing to follow
    pool: PoolSettings
    endpoint: str | None = None  # --endpoint: base URL instead of the rows'
    follow: bool = False
    interval: float = DEFAULT_INTERVAL
    deadline: float | None = None  # seconds from ``started``: no pass starts after it
    started: float = field(default_factory=time.monotonic)
    report: Path | None = None
    collect: Path | None = None
    stuck_after: float = DEFAULT_STUCK_AFTER
    timeout: float = DEFAULT_TIMEOUT
    durable: bool = True
    only_service: str | None = None  # submit --follow: the service it submitted to


@dataclass
class FollowStats:
    """What a status run saw; the CLI renders it as the summary and the metrics."""

    videos: int = 0  # report rows
    followed: int = 0  # jobs not final when the run started (the ones the exit code judges)
    already_final: int = 0
    succeeded: int = 0  # of the followed, at the end
    failed: int = 0  # of the followed: FAILED, CREATE_FAILED, START_FAILED, LOST
    lost: int = 0
    not_final: int = 0
    by_state: dict[str, int] = field(default_factory=dict)  # the followed jobs, at the end
    unknown_states: dict[str, int] = field(default_factory=dict)
    arrears: int = 0  # FREEZING / FROZEN
    stuck: int = 0
    expiring: int = 0
    collected: int = 0
    overdue: int = 0  # hosting results that expired before they were collected
    too_large: int = 0  # hosting results VAS did not keep: EXCEED_IN_SIZE
    oldest_non_final_age: float | None = None  # seconds since creation
    passes: int = 0
    sweeps: int = 0
    list_calls: int = 0
    show_calls: int = 0
    calls: int = 0
    opening_calls: int = 0  # before the first VAS call: credentials, project id
    retries: int = 0
    throttles: int = 0
    first_errors: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None
    fatal: str | None = None
    signal: int | None = None
    report: str = ""
    record: str = ""
    elapsed: float = 0.0


def exit_code(stats: FollowStats) -> int:
    """3 fatal (credentials, forbidden, an account in arrears); 1 some followed job ended and
    did not succeed; 4 none of those but some still not final; 0 every one SUCCEEDED."""
    if stats.fatal is not None:
        return 3
    if stats.failed:
        return 1
    if stats.not_final:
        return 4
    return 0


def report_format(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise UsageError(f"{path}: cannot tell the report format from {suffix or 'no extension'!r};"
                     " name it .csv or .jsonl")  # fmt: skip


def default_report_path(results: Path, fmt: Format) -> Path:
    """``nightly.results.csv`` -> ``nightly.results.report.csv``, beside it."""
    resolved = results.resolve()
    return resolved.with_name(f"{resolved.stem}.report.{fmt}")


# -- the ledger, one row per video ---------------------------------------------------------------


LedgerRow = ResultRow  # the results file's row, as results.py reads it (strictly)


def iter_ledger(path: Path, fmt: Format, warn: Callable[[str], None]) -> Iterator[LedgerRow]:
    """The rows of a results file, read as strictly as a submit reads its ledger: a damaged
    line (other than a torn last one) stops with an error naming it."""
    del warn  # a torn last line is the only damage, and the submit that wrote it cuts it
    return iter_results(path, fmt)


_SUBMITTED_ROW = 1 << 40  # added to a submitted row's number: the index keeps the largest


class Videos:
    """Which ledger row stands for each video of each service (the report's rows): its latest
    ``submitted`` row, else its latest row (a video whose create failed still gets its report
    row). One offset index over the ledger (16 bytes a row; the largest value per video wins,
    and a submitted row counts ``_SUBMITTED_ROW`` more), then a second streaming read: no row
    is held in memory. The jobs followed are every submitted row's, not only these.

    The index is fed by the caller's own pass over the ledger (:meth:`add` for every row, then
    :meth:`done`), so that choosing the jobs to follow reads the ledger once, not twice."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self._path, self._format = path, fmt
        self._chosen = OffsetIndex()
        self._service = _ServiceKeys()

    def add(self, number: int, row: LedgerRow) -> None:
        """Row ``number`` (from 0) of the ledger, every row in order."""
        submitted = row.status == "submitted" and bool(row.job_id)
        key = self._service(row.service_url) + row.source
        self._chosen.add(key, number + (_SUBMITTED_ROW if submitted else 0))

    def done(self) -> None:
        """Every row added: the index is ready to be read."""
        self._chosen.freeze(largest=True)

    def __len__(self) -> int:
        return len(self._chosen)

    def __iter__(self) -> Iterator[LedgerRow]:
        chosen = self._chosen.offset
        service = _ServiceKeys()
        for number, row in enumerate(iter_ledger(self._path, self._format, lambda _m: None)):
            value = chosen(service(row.service_url) + row.source)
            if value is not None and value % _SUBMITTED_ROW == number:
                yield row


class _ServiceKeys:
    """A row's service as a key prefix (``project/service`` and a separator no source holds),
    cached: a ledger names few services."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}

    def __call__(self, service_url: str) -> str:
        key = self._keys.get(service_url)
        if key is None:
            key = self._keys[service_url] = service_of(service_url) + "\n"
        return key


# -- services ----------------------------------------------------------------------------------


def endpoint_of(service_url: str, override: str | None) -> Endpoint:
    """The endpoint a results row's ``service_url`` names (``--endpoint`` replaces its base)."""
    found = _TASKS_URL.fullmatch(service_url.strip())
    if not found:
        raise ValueError(f"cannot read the service from {service_url!r}")
    base = override.rstrip("/") if override else found.group(1)
    return Endpoint(
        base_url=base, project_id=unquote(found.group(2)), service_name=unquote(found.group(3))
    )


# -- one followed job ----------------------------------------------------------------------------


class _Job:
    """A followed job: what we know now, what the record holds, and where it lives."""

    __slots__ = ("created_ms", "judged", "now", "recorded", "service", "submitted")

    def __init__(
        self,
        now: JobRecord,
        recorded: JobRecord | None,
        service: int,
        created_ms: int,
        judged: bool,
        submitted: float | None,
    ) -> None:
        self.now = now
        self.recorded = recorded
        self.service = service
        self.created_ms = created_ms
        self.judged = judged  # not final when the run started: the exit code judges it
        self.submitted = submitted  # the ledger's submitted_at (epoch s): it existed by then

    def active(self, collecting: bool) -> bool:
        """Still to ask about: not final, or (collecting) a result available to save."""
        record = self.now
        if not record.final:
            return True
        return collecting and _collectable(record, time.time())


@dataclass(frozen=True, slots=True)
class _Page:
    """One list page as :meth:`Follower._list` read it."""

    count: int  # the answer's count of jobs (the page's length when it gives none)
    listed: int  # the jobs on the page
    newest: float | None  # the newest updated_at on it

    def contradicts(self, offset: int) -> bool:
        """Shorter than a page while the count says more follow: the count is wrong (a count
        of 10**9 for 2 jobs split the window and paged to offset 100,000: 10,000 calls)."""
        return self.listed < LIST_LIMIT and offset + self.listed < self.count


def _collectable(record: JobRecord, now: float) -> bool:
    return collectable(record.state, record.hosting_status, _epoch(record.hosting_overdue_at), now)


def _expiring(record: JobRecord, now: float) -> bool:
    """A result still to be had whose overdue time is within EXPIRING_WITHIN: warned about."""
    overdue = _epoch(record.hosting_overdue_at)
    if overdue is None or overdue - now >= EXPIRING_WITHIN:
        return False
    return collectable(record.state, record.hosting_status, overdue, now)


def _ended_at(record: JobRecord, submitted: float | None) -> str:
    """When a job seen final ended, as well as we know: the service's last change to it
    (``updated_at``) when that is before we saw it, else when we saw it. It was always when
    status first saw it, a night after the job ended, so ``prune --older-than`` waited a
    night more than asked.

    Never before the job existed: not before the ledger's ``submitted_at`` (our clock) nor
    the service's ``created_at``. An ``updated_at`` of 2000-01-01 was recorded as the final
    time, and ``prune`` (24 h by default) deleted jobs seconds after they ended. With neither
    bound known, ``updated_at`` is not believed: when we saw it."""
    updated, checked = _epoch(record.updated_at), _epoch(record.checked_at)
    existed = _newest(submitted, _epoch(record.created_at))
    if updated is None or checked is None or existed is None or updated >= checked:
        return record.checked_at
    # in our own form: prune reads no time without its zone
    return utc_at(min(max(updated, existed), checked))


def _iso_ms(value: object) -> str:
    """An overdue time as VAS gives it (epoch milliseconds, or already a date) as ISO 8601."""
    if isinstance(value, bool) or value is None or value == "":
        return ""
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else float(value)
        try:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
        except (OverflowError, OSError, ValueError):
            return str(value)
    text = str(value)
    if text.isdigit():
        return _iso_ms(int(text))
    return text


def _one_line(value: object, secrets: Sequence[str] = ()) -> str:
    """A value from the service as the report and the log may show it (:func:`one_line`),
    ``secrets`` masked first."""
    return one_line(mask("" if value is None else str(value), secrets))


def _hosting_of(task: dict[str, Any]) -> tuple[bool, str]:
    """Whether the task has a hosting output, and its result's overdue time if it says."""
    output = task.get("output")
    if not isinstance(output, dict) or "hosting" not in output:
        return False, ""
    hosting = output.get("hosting")
    overdue = hosting.get("result_json_overdue_at") if isinstance(hosting, dict) else None
    return True, _iso_ms(overdue)


# -- the run -----------------------------------------------------------------------------------


class _NullSink:
    """The pool writes rows only for creates and lookups; status makes neither."""

    def write(self, outcome: Outcome) -> None:  # pragma: no cover - never called
        raise AssertionError("status writes no results rows")

    def flush(self) -> None:
        pass


def lock_results(results: Path) -> RunLock:
    """Take the results file's lock, the one submit and prune take: a status while either
    runs on the same file raises LockedError (exit 75) before reading anything."""
    from .runner import lock_path  # the runner's name for the lock, shared with submit

    lock = RunLock(lock_path(results))
    lock.acquire(utc_now())
    return lock


def prepare_follow(config: FollowConfig, warn: Callable[[str], None]) -> Follower:
    """Read the record and the ledger and choose the jobs to follow; no request is sent. The
    caller holds the results file's lock. Raises UsageError for a damaged record or report
    path, before anything is sent."""
    follower = Follower(config, warn)
    follower.load()
    return follower


async def follow(
    follower: Follower, reporter: ProgressReporter, *, watch_signals: bool = True
) -> FollowStats:
    """The passes, then the report. SIGINT/SIGTERM (when ``watch_signals``) end the pass
    under way: the calls in flight finish and are recorded, then the report is written."""
    try:
        async with open_session(follower.config.pool.concurrency) as session:
            await follower.run(session, reporter, watch_signals=watch_signals)
    except* OSError as failed:
        raise StorageError(
            f"the status run stopped: writing {follower.record_file}, the report or a collected "
            f"result failed ({innermost(failed)}); what was recorded so far is kept"
        ) from None
    return follower.stats


class Follower:
    """One status run over one results file: the followed jobs and what happens to them."""

    def __init__(self, config: FollowConfig, warn: Callable[[str], None]) -> None:
        self.config = config
        self.reporter = ProgressReporter(Log(io.StringIO()), None)  # run() brings the real one
        self.notes: list[str] = []
        self.warn = warn
        self.stats = FollowStats()
        self.record_file = record_path(config.results)
        self.report_file = config.report or default_report_path(config.results, config.format)
        self.report_format = report_format(self.report_file)
        self.collecting = config.collect is not None
        self.jobs: dict[str, _Job] = {}
        self.services: list[Endpoint] = []
        self.clients: list[VasClient] = []
        self.cursor: list[float | None] = []  # per service: updated_at (epoch s) to list from
        self.videos: Videos | None = None
        self.index: OffsetIndex | None = None
        self.writer: RecordWriter | None = None
        self.pool: Pool | None = None
        self.stop_event = anyio.Event()
        self._empty_results: set[str] = set()  # AVAILABLE without data: said once a job
        self._unsynced = False
        self._expiring: dict[str, JobRecord] = {}  # final, result AVAILABLE, overdue soon
        self._there: list[_Job] = []  # this pass: jobs absent from a sweep that show found

    # -- before any request ------------------------------------------------------------------

    def load(self) -> None:
        """Read the record and the ledger; choose the jobs to follow. Everything that can be
        wrong with the files is found here, before the first request."""
        config, warn = self.config, self.warn
        self.stats.record = str(self.record_file)
        self.stats.report = str(self.report_file)
        if self.collecting:
            assert config.collect is not None
            try:
                _make_folder(config.collect, config.durable)
            except OSError as exc:
                raise UsageError(
                    f"{config.collect}: cannot create the --collect folder: {exc.strerror}"
                ) from None
        index, open_ = self._read_record()
        if index.lines - len(index) > max(len(index), COMPACT_MIN):
            dropped = compact(self.record_file, warn, durable=config.durable)
            self.notes.append(f"{self.record_file}: compacted ({dropped} superseded lines)")
            self._expiring.clear()
            index, open_ = self._read_record()
        self.index = index
        self.videos = videos = Videos(config.results, config.format)
        service_at: dict[str, int] = {}
        bad_services: set[str] = set()
        unfollowable: UsageError | None = None
        # Every job the ledger created is followed, not only each video's latest: a video's
        # job in another service, or the job a --resubmit replaced, fills the quota alike and
        # is pruned only once it is recorded final.
        for number, row in enumerate(iter_ledger(config.results, config.format, warn)):
            videos.add(number, row)
            job_id = row.job_id
            if row.status != "submitted" or not job_id or job_id in self.jobs:
                continue
            known = open_.pop(job_id, None)
            offset = index.offset(job_id)
            was_final = known is None and offset is not None and offset < 0
            if was_final and not self.collecting:
                self.stats.already_final += 1
                continue
            if was_final:  # collecting: a final job may still hold a result to save
                reader = self._reader()
                known = reader.get(job_id)
                if known is None or not _collectable(known, time.time()):
                    self.stats.already_final += 1
                    continue
            service = service_at.get(row.service_url)
            if service is None:
                if row.service_url in bad_services:
                    continue
                try:
                    endpoint = endpoint_of(row.service_url, config.endpoint)
                except ValueError as exc:
                    # A job that cannot be followed is never recorded final, so never pruned:
                    # it would fill the quota unseen. Only a hand edit writes such a row.
                    # Raised once the pass is over: a damaged line later on is named first.
                    unfollowable = unfollowable or UsageError(
                        f"{config.results}: the submitted row of {row.source} (job {job_id}): "
                        f"{exc}, so its job cannot be followed; repair its service_url (every "
                        "row batchsubmit writes has one); nothing was sent"
                    )
                    bad_services.add(row.service_url)
                    continue
                if config.only_service is not None and service_of(row.service_url) != service_of(
                    config.only_service
                ):
                    bad_services.add(row.service_url)
                    warn(
                        f"{config.results}: jobs of {row.service_url} are not followed by this "
                        "submit (another service); follow them with `batchsubmit status`"
                    )
                    continue
                service = service_at[row.service_url] = len(self.services)
                self.services.append(endpoint)
                self.cursor.append(None)
            record = known or JobRecord(
                job_id=job_id, source=row.source, name=row.name, state="", final=False
            )
            submitted = _epoch(row.submitted_at)
            created = _epoch(record.created_at) or submitted
            created_ms = int(created * 1000) if created is not None else 0
            judged = not record.final
            self.jobs[job_id] = _Job(record, known, service, created_ms, judged, submitted)
            if judged:
                self.stats.followed += 1
            else:
                self.stats.already_final += 1
        del open_
        if unfollowable is not None:
            raise unfollowable
        videos.done()
        self.stats.videos = len(videos)

    def _read_record(self) -> tuple[OffsetIndex, dict[str, JobRecord]]:
        """One pass over the record: where every job's latest line starts (for the report;
        a final job's as ~offset, negative, so one index tells both) and the latest record of
        every job not final (the only ones held in memory)."""
        index = OffsetIndex()
        open_: dict[str, JobRecord] = {}
        for at, number, data in iter_raw(self.record_file, self.warn):
            job_id = data["job_id"]
            self._expiring.pop(job_id, None)
            try:  # every line, final ones too: the report reads them after the requests
                record = from_json(data)
            except ValueError as exc:
                raise UsageError(
                    f"{self.record_file}:{number}: not a follow record line ({exc})"
                ) from None
            if data["final"]:
                index.add(job_id, ~at)
                open_.pop(job_id, None)
                if not self.collecting and _expiring(record, time.time()):
                    self._expiring[job_id] = record
                continue
            open_[job_id] = record
            index.add(job_id, at)
        index.freeze()
        return index, open_

    def _reader(self) -> RecordReader:
        if not hasattr(self, "_record_reader"):
            assert self.index is not None
            self._record_reader = RecordReader(self.record_file, self.index)
        return self._record_reader

    # -- the passes ----------------------------------------------------------------------------

    async def run(self, session: Any, reporter: ProgressReporter, *, watch_signals: bool) -> None:
        config = self.config
        self.reporter = reporter
        for note in self.notes:
            reporter.log("info", note)
        self.clients = [
            VasClient(session, endpoint, config.credentials, timeout=config.timeout)
            for endpoint in self.services
        ]
        with RecordWriter(self.record_file, self.warn, durable=config.durable) as writer:
            self.writer = writer
            try:
                if self.clients:
                    await self._passes(watch_signals)
                self._finish()
            finally:
                self._refresh_checked()
                writer.sync()
        self.write_report()

    async def _passes(self, watch_signals: bool) -> None:
        config = self.config
        self.pool = pool = Pool(
            self.clients[0],
            _NullSink(),
            self.reporter,
            config.pool,
            service_url=self.services[0].tasks_url,
            credentials=self.clients[0].provider,
        )
        active = sum(1 for job in self.jobs.values() if job.active(self.collecting))
        to_collect = active - self.stats.followed
        self.reporter.log(
            "info",
            f"following {self.stats.followed} jobs not yet final ({self.stats.already_final} "
            f"already final, {self.stats.videos} videos in {config.results})"
            + (f"; {to_collect} results to collect" if to_collect > 0 else ""),
        )
        async with anyio.create_task_group() as group:
            if watch_signals:
                from .runner import watch_signals as stop_on_signals

                await group.start(stop_on_signals, pool, lambda _signum: self.stop_event.set())
            if config.deadline is not None:
                group.start_soon(self._watch_deadline)
            group.start_soon(self._sync_often)
            try:
                await self._loop(pool)
            finally:
                group.cancel_scope.cancel()
        stats = self.stats
        stats.calls = pool.stats.calls
        stats.retries = pool.stats.retries
        stats.throttles = pool.stats.throttles
        stats.fatal = stats.fatal or pool.stats.fatal
        if stats.stop_reason is None:
            stats.stop_reason = pool.stats.stop_reason
        stats.signal = pool.stats.signal

    async def _loop(self, pool: Pool) -> None:
        config = self.config
        while True:
            if not any(job.active(self.collecting) for job in self.jobs.values()):
                return
            started = time.monotonic()
            await self._pass(pool)
            self.stats.passes += 1
            self._log_pass()
            assert self.writer is not None
            self.writer.sync()
            self._unsynced = False
            # The jobs' states as last known: seen so this pass, or recorded so and not
            # listed since (the list failed). Only those seen this pass counted, and a FROZEN
            # job the service could not be asked about was exit 4, "not final yet".
            arrears = {i: job.now.state for i, job in self.jobs.items() if job.now.state in ARREARS}
            if arrears:
                sample = ", ".join(f"{i} {s}" for i, s in list(arrears.items())[:3])
                self.stats.fatal = (
                    f"{len(arrears)} jobs are FREEZING or FROZEN ({sample}...): the account "
                    "is in arrears; top it up, then start the jobs again"
                )
                pool.stop("the account is in arrears")
                return
            if not config.follow or pool.stopping:
                return
            if not any(job.active(self.collecting) for job in self.jobs.values()):
                return
            wait = config.interval - (time.monotonic() - started)
            if wait > 0:
                with anyio.move_on_after(wait):
                    await self.stop_event.wait()
            if pool.stopping:
                return

    async def _pass(self, pool: Pool) -> None:
        """One pass: list (a sweep or what changed), then the shows only show can answer."""
        confirm: list[_Job] = []
        # A SUCCEEDED job waiting for its hosting result: only show can say more of it.
        listed: dict[int, list[_Job]] = {}
        for job in self.jobs.values():
            if not job.now.final and not self._needs_show(job):
                listed.setdefault(job.service, []).append(job)
        sweep = bool(listed) and self._sweep_due(listed)
        self._swept = sweep
        if sweep:
            self.stats.sweeps += 1
        for service, jobs in sorted(listed.items()):
            if sweep:
                confirm += await self._sweep(pool, service, jobs)
            else:
                before = self.stats.list_calls
                await self._changed(pool, service, jobs)
                self._last_changes_calls = self.stats.list_calls - before
        absent = {job.now.job_id for job in confirm}
        self._collected_already()
        # Many jobs missing from a filtered sweep: a few shows first. If those exist, the
        # filters are wrong for this service (or the clocks too far apart), and the next
        # unfiltered sweep lists the rest: one show per job would cost 5,000 calls for 5,000.
        first = confirm
        if self.time_filters and len(confirm) > 2 * TRUST_MISSES:
            first = confirm[: 2 * TRUST_MISSES]
        shows = first + [
            job
            for job in self.jobs.values()
            if job.now.job_id not in absent and self._needs_show(job)
        ]
        self._there = []
        # Shows not started because the run stopped are asked about next pass (or next run).
        await pool.each(shows, lambda job: self._show(pool, job, job.now.job_id in absent))
        there = self._there
        suspect = self.time_filters and len(there) >= max(TRUST_MISSES, len(first) // 2)
        if suspect and not await self._listed_unfiltered(pool, there[:TRUST_MISSES]):
            # Listed by no list at all, yet show has them: the service lists new jobs late
            # (a lagging index). The filters are not to blame: dropped, every later sweep
            # paged through every job of the service. The others missing are asked about
            # again next pass, not shown now (none is taken for LOST meanwhile).
            if not self._lag_said:
                self._lag_said = True
                self.warn(
                    f"{len(there)} jobs missing from lists exist, but no list names them, "
                    "with or without created_since/created_until: the service lists new "
                    "jobs late; they are asked about again next pass"
                )
            return
        if suspect:
            # Jobs a window did not list, yet an unfiltered list has them: the service does
            # not read created_since/created_until as epoch milliseconds (VAS-API.md:
            # unconfirmed), or its clock is far from ours.
            self.time_filters = False
            self.cursor = [None] * len(self.cursor)  # the next pass sweeps, unfiltered
            self.warn(
                f"{len(there)} jobs missing from lists filtered by creation time exist: "
                "listing without created_since/created_until from now on (more list calls)"
            )
        elif len(first) < len(confirm):  # the few were gone indeed: confirm the others
            rest = confirm[len(first) :]
            await pool.each(rest, lambda job: self._show(pool, job, True))

    async def _listed_unfiltered(self, pool: Pool, jobs: list[_Job]) -> bool:
        """Whether a list without time filters names any of ``jobs`` (each asked for by its
        id, ``id_like``): the proof that the filters, not the list, left them out."""
        for job in jobs:
            seen: set[str] = set()
            query: dict[str, str | int] = {"id_like": job.now.job_id, "limit": 10, "offset": 0}
            page = await self._list(pool, job.service, query, seen)
            if job.now.job_id in seen:
                return True
            if page is not None and page.count > 1:
                # More than one job "like" a 32-digit id: id_like is not read, so this list
                # cannot tell lag from misread filters. Unfiltered lists are the safe side:
                # more calls, while kept filters would leave these jobs unlisted every pass.
                return True
        return False

    def _collected_already(self) -> None:
        """A result saved by a run killed before it recorded COLLECTED: never fetched twice."""
        if not self.collecting:
            return
        for job in self.jobs.values():
            record = job.now
            if record.hosting_status == "AVAILABLE" and self._result_file(record).exists():
                self._change(job, replace(record, hosting_status="COLLECTED"))

    def _sweep_due(self, listed: dict[int, list[_Job]]) -> bool:
        """A sweep on the first pass, every SWEEP_EVERY-th, while a service to list has no
        cursor yet, and whenever it costs no more than listing the changes did (it also finds
        the jobs that vanished). A service with nothing to list has no say: its cursor stays
        unset, and it made every pass a sweep."""
        passes = self.stats.passes
        if passes % SWEEP_EVERY == 0 or any(self.cursor[s] is None for s in listed):
            return True
        last, changes = self._last_sweep_calls, self._last_changes_calls
        self._last_changes_calls = 0  # after one sweep, the changes are tried again
        return last <= CHEAP_SWEEP or changes >= last

    _last_sweep_calls = 0
    _last_changes_calls = 0
    _swept = False
    _lag_said = False  # the service lists new jobs late: said once a run
    time_filters = True  # list with created_since/created_until (epoch ms)

    def _needs_show(self, job: _Job) -> bool:
        record = job.now
        if not record.hosting or record.state != "SUCCEEDED":
            return False
        if record.hosting_status in HOSTING_PENDING:
            return True
        return self.collecting and record.hosting_status == "AVAILABLE"

    # -- listing ------------------------------------------------------------------------------

    async def _sweep(self, pool: Pool, service: int, jobs: list[_Job]) -> list[_Job]:
        """List every job created in the windows around ``jobs``' creations; returns the jobs
        a complete window should have listed and did not (to confirm with a show)."""
        before = self.stats.list_calls
        absent: list[_Job] = []
        seen: set[str] = set()
        # The cursor the next changes pass lists from: the service's newest change when the
        # sweep starts, read first (one job, newest first). Not the newest seen on the sweep's
        # pages: those are read one after another, and a job on an early page that changed
        # after it was read would be older than that, never listed again until a sweep.
        began = time.time()
        start = await self._list(pool, service, self._changes_query(jobs, limit=1), None)
        windows = _windows(sorted(job.created_ms for job in jobs))
        if not self.time_filters:
            windows = [(0, 1 << 62)]
        for since, until in windows:
            complete, _updated = await self._list_window(pool, service, since, until, seen)
            if complete:
                absent += [
                    j for j in jobs
                    if since <= j.created_ms <= until and j.now.job_id not in seen
                ]  # fmt: skip
        if start is not None and not pool.stopping:  # else the next pass sweeps again
            # No time believed there (no job, or one from the far future): our clock, when
            # the sweep began, less the slack the clocks may differ by
            fallback = began - SLACK_MS / 1000
            self.cursor[service] = start.newest if start.newest is not None else fallback
        self._last_sweep_calls = self.stats.list_calls - before
        return absent

    def _changes_query(self, jobs: list[_Job], limit: int = LIST_LIMIT) -> dict[str, str | int]:
        """Jobs of the service newest change first, from the oldest followed job's creation."""
        query: dict[str, str | int] = {"order": "updated_at:DESC", "limit": limit, "offset": 0}
        if self.time_filters:
            query["created_since"] = max(0, min(job.created_ms for job in jobs) - SLACK_MS)
        return query

    async def _list_window(
        self, pool: Pool, service: int, since: int, until: int, seen: set[str]
    ) -> tuple[bool, float | None]:
        """All pages of one window, the first to learn the count, the others at once. Returns
        whether every page came back, and the newest updated_at seen. A page the count
        contradicts ends the window, incomplete: its jobs not listed are not taken for
        absent (nor shown), only asked about again next pass."""
        query: dict[str, str | int] = {"order": "created_at:ASC", "limit": LIST_LIMIT, "offset": 0}
        if self.time_filters:
            query.update(created_since=since, created_until=until)
        first = await self._list(pool, service, query, seen)
        if first is None:
            return False, None
        newest = first.newest
        if first.contradicts(0):
            self._count_contradicted(first, 0)
            return False, newest
        if first.count > MAX_OFFSET and until - since > 1000 and self.time_filters:
            middle = (since + until) // 2
            a = await self._list_window(pool, service, since, middle, seen)
            b = await self._list_window(pool, service, middle + 1, until, seen)
            return a[0] and b[0], _newest(a[1], b[1], newest)
        complete, contradicted = True, False

        def offsets() -> Iterator[int]:  # read lazily: none after a page the count contradicts
            for offset in range(LIST_LIMIT, min(first.count, MAX_OFFSET), LIST_LIMIT):
                if contradicted:
                    return
                yield offset

        async def page(offset: int) -> None:
            nonlocal complete, contradicted, newest
            if contradicted:  # read ahead before the contradiction was seen: not sent
                return
            found = await self._list(pool, service, {**query, "offset": offset}, seen)
            if found is None:
                complete = False
                return
            newest = _newest(newest, found.newest)
            if found.contradicts(offset) and not contradicted:
                contradicted = True
                self._count_contradicted(found, offset)

        not_listed = await pool.each(offsets(), page)
        return complete and not contradicted and not not_listed and not pool.stopping, newest

    def _count_contradicted(self, page: _Page, offset: int) -> None:
        """Said once a run (and in the summary): the pages cannot all be believed."""
        key = "list count"
        if key in self.stats.first_errors:
            return
        text = (
            f"a list answered count {page.count}, but its page at offset {offset} holds "
            f"{page.listed} jobs: the count contradicts the pages"
        )
        self.stats.first_errors[key] = text
        self.warn(
            f"{text}; that window is neither paged further nor split, and its jobs not listed "
            "are asked about again next pass"
        )

    async def _changed(self, pool: Pool, service: int, jobs: list[_Job]) -> None:
        """The jobs updated since the cursor, newest first, page by page until one is older."""
        cursor = self.cursor[service]
        assert cursor is not None
        query = self._changes_query(jobs)
        newest: float | None = None
        offset = 0
        while offset < MAX_OFFSET:
            oldest: list[float] = []
            found = await self._list(pool, service, {**query, "offset": offset}, None, oldest)
            if found is None:
                return  # the cursor stays: the next pass reads this again
            newest = _newest(newest, found.newest)
            offset += LIST_LIMIT
            if offset >= found.count or not oldest or oldest[0] < cursor - CURSOR_SLACK:
                break
        if newest is not None and newest > cursor:
            self.cursor[service] = newest

    async def _list(
        self,
        pool: Pool,
        service: int,
        query: dict[str, str | int],
        seen: set[str] | None,
        oldest: list[float] | None = None,
    ) -> _Page | None:
        """One list page through the gate; applies what it shows to the followed jobs.
        Returns None when the page did not come back."""
        try:
            answer = await pool.call(self.clients[service].list_tasks, query)
        except Stopped:
            return None
        self.stats.list_calls += 1
        data = answer.data
        if answer.kind is not Kind.OK:
            self._call_failed("list", answer)
            return None
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(tasks, list):
            # Said as "HTTP 200 (request id ...)" alone, nobody could tell what was wrong.
            secrets = self.clients[service].secrets
            what = f"the answer is not {{count, tasks}}: {_not_a_page(data, secrets)}"
            self._unusable("list", answer, "MALFORMED", what)
            return None
        if _contradicts_itself(tasks):
            # One job twice on a page, in two states: which is true cannot be told, and taking
            # either (a SUCCEEDED twin of a RUNNING job) could make a job final and deletable.
            what = "the page lists one job twice with different states; not applied"
            self._unusable("list", answer, "CONTRADICTORY", what)
            return None
        newest: float | None = None
        least: float | None = None
        jobs = self.jobs
        checked = utc_now()  # one string for the page's jobs
        future = time.time() + FUTURE_SKEW
        for task in tasks:
            if not isinstance(task, dict):
                continue
            updated = _epoch(str(task.get("updated_at") or ""))
            if updated is not None:
                if updated <= future:
                    newest = _newest(newest, updated)
                else:
                    self._from_the_future(task, service)
                least = updated if least is None else min(least, updated)
            job = jobs.get(str(task.get("id") or ""))
            if job is None or job.service != service:
                continue
            if seen is not None:
                seen.add(job.now.job_id)
            if not job.now.final:
                self._apply(job, task, shown=False, checked=checked)
        if oldest is not None and least is not None:
            oldest.append(least)
        count = data.get("count")
        if not isinstance(count, int) or isinstance(count, bool):  # true is no count of 1
            count = len(tasks)
        return _Page(count=count, listed=len(tasks), newest=newest)

    def _from_the_future(self, task: dict[str, Any], service: int) -> None:
        """Said once a run: a job updated far ahead of our clock, not taken for the cursor
        (the newest change seen), which it would hold there: every changes pass would stop
        at its first page, taking the jobs below for unchanged."""
        if self._future_said:
            return
        self._future_said = True
        secrets = self.clients[service].secrets
        self.warn(
            f"a list says job {_one_line(task.get('id'), secrets)[:40]!r} was updated at "
            f"{_one_line(task.get('updated_at'), secrets)[:40]}, more than "
            f"{FUTURE_SKEW / 3600:g} h ahead of this machine's clock: not taken as the newest "
            "change (check the clocks)"
        )

    _future_said = False

    # -- show ---------------------------------------------------------------------------------

    async def _show(self, pool: Pool, job: _Job, absent: bool) -> None:
        try:
            answer = await pool.call(self.clients[job.service].show, job.now.job_id)
        except Stopped:
            return
        self.stats.show_calls += 1
        if answer.kind is Kind.OK and isinstance(answer.data, dict):
            if answer.data.get("id") != job.now.job_id:
                # An answer about another job (a cache, a proxy) says nothing about this one:
                # applied, its state and hosting result made this job final and deletable.
                named = _one_line(answer.data.get("id"), self.clients[job.service].secrets)
                what = f"the show of {job.now.job_id} answered about job {named[:80]!r}"
                self._unusable("show", answer, "WRONG_JOB", what)
                return
            if absent:
                self._there.append(job)
            self._apply(job, answer.data, shown=True)
            return
        if answer.status == 404 and answer.error_code == JOB_NOT_FOUND:
            record = job.now
            if not record.final:
                self._change(job, replace(record, state="LOST", checked_at=utc_now()))
                return
            self.warn(
                f"{record.job_id} ({record.source}): gone from the service before its hosting "
                "result was collected; it keeps its recorded state"
            )
            self._change(job, replace(record, hosting_status="LOST", checked_at=utc_now()))
            return
        if absent:
            self.warn(f"{job.now.job_id}: not listed, and show did not answer; asked again")
        self._call_failed("show", answer)

    def _unusable(self, what: str, answer: Answer, code: str, message: str) -> None:
        """A 200 answer that cannot be believed: a failed call (its jobs asked about again
        next pass), said with what is wrong with it."""
        failed = replace(answer, kind=Kind.UNAVAILABLE, error_code=code, error_msg=message)
        self._call_failed(what, failed)

    def _call_failed(self, what: str, answer: Answer) -> None:
        if answer.kind is Kind.FATAL:
            return  # the pool has stopped the run and says why
        key = f"{what} {answer.error_code or answer.status or answer.kind.value}"
        if key not in self.stats.first_errors:
            text = f"HTTP {answer.status} {answer.error_code} {answer.error_msg}".strip()
            if answer.request_id:
                text += f" (request id {answer.request_id})"
            self.stats.first_errors[key] = text
            self.warn(f"a {what} call failed: {text}; its jobs are asked about again next pass")

    # -- applying what the service says ---------------------------------------------------------

    def _apply(
        self, job: _Job, task: dict[str, Any], *, shown: bool, checked: str | None = None
    ) -> None:
        """What one task says about a followed job. Strings many jobs share (states, error
        codes and messages, times to the second) are interned: a job costs ~0.6 KB held."""
        old = job.now
        # The service's words about the job, in a 200 answer: every text masked like an error
        # answer's (a state or a time quoting the caller's token went into record and report)
        secrets = self.clients[job.service].secrets
        raw_state = task.get("state") or ""
        state = _one_line(raw_state, secrets)
        if state != raw_state and state in _KNOWN_STATES:
            # " SUCCEEDED\n" or "SUCCEEDED\u200b" is not VAS's name, whatever it looks like once
            # made one line: kept escaped, so it is never final (never pruned on its word)
            state = mask(ascii(raw_state)[1:-1], secrets)
        state = intern(state) or old.state
        error = task.get("error")
        code = message = ""
        if isinstance(error, dict):
            code = intern(_one_line(error.get("code") or error.get("error_code"), secrets))
            message = intern(_one_line(error.get("message") or error.get("error_msg"), secrets))
        if isinstance(task.get("output"), dict):
            hosting, overdue = _hosting_of(task)
            overdue = _one_line(overdue, secrets)
        elif old.state or old.hosting:  # an answer without the output: what we knew stands
            hosting, overdue = old.hosting, ""
        else:
            # Never seen with its output: whether a hosting result waits is unknown. Taken
            # for "none", a SUCCEEDED job was final at once and pruned with its result
            # uncollected; as "maybe", it is final only once a show has told.
            hosting, overdue = True, ""
        hosting_status = old.hosting_status
        result: Any = None
        if shown and hosting:
            result = task.get("hosting_result")
            if isinstance(result, dict):
                hosting_status = _one_line(result.get("status") or "", secrets) or hosting_status
                overdue = overdue or _one_line(_iso_ms(result.get("overdue_date")), secrets)
        if old.hosting_status == "COLLECTED" and hosting_status in ("AVAILABLE", "OVERDUE"):
            hosting_status = "COLLECTED"  # ours is saved: the service's copy no longer matters
        record = replace(
            old,
            state=state,
            error_code=code,
            error_msg=message,
            created_at=intern(_one_line(task.get("created_at") or old.created_at, secrets)),
            updated_at=intern(_one_line(task.get("updated_at") or old.updated_at, secrets)),
            hosting=hosting,
            hosting_status=intern(hosting_status),
            hosting_overdue_at=intern(overdue) if overdue else old.hosting_overdue_at,
            checked_at=checked or utc_now(),
        )
        if self.collecting and hosting_status == "AVAILABLE" and shown and isinstance(result, dict):
            data = result.get("data")
            if data is None or (isinstance(data, str) and not data.strip()):
                # Nothing to save: recorded COLLECTED, the job could be pruned with its
                # result never fetched. It stays AVAILABLE and is asked about again.
                if record.job_id not in self._empty_results:
                    self._empty_results.add(record.job_id)
                    self.reporter.log(
                        "warning",
                        f"{record.job_id} ({record.source}): its hosting result is AVAILABLE "
                        "but the answer holds no data; not collected, asked again next pass",
                    )
            else:
                self._save_result(record, data)
                record = replace(record, hosting_status="COLLECTED")
        elif hosting_status == "OVERDUE" and old.hosting_status == "AVAILABLE" and self.collecting:
            self.reporter.log(
                "error",
                f"{record.job_id} ({record.source}): its hosting result EXPIRED before it was "
                f"collected (overdue at {record.hosting_overdue_at or 'an unknown time'})",
            )
        self._change(job, record)

    def _change(self, job: _Job, record: JobRecord) -> None:
        """Recompute final; append to the record if anything but ``checked_at`` changed."""
        final = is_final(record.state, record.hosting, record.hosting_status)
        record = replace(
            record,
            final=final,
            final_at=(record.final_at or _ended_at(record, job.submitted)) if final else "",
        )
        became_final = final and not job.now.final
        job.now = record
        recorded = job.recorded
        if recorded is None or replace(recorded, checked_at="") != replace(record, checked_at=""):
            assert self.writer is not None
            self.writer.append(record)
            job.recorded = record
            self._unsynced = True
        if became_final and job.judged:
            self.reporter.outcome(_progress_outcome(record))

    def _save_result(self, record: JobRecord, data: Any) -> None:
        """Write a hosting result to ``<collect>/<job name>.<job id>.json`` (atomically, then
        synced): the JSON document ``data`` holds (VAS's result.json), or ``data`` itself."""
        target = self._result_file(record)
        if isinstance(data, str):
            try:
                orjson.loads(data)
                content = data.encode()
            except orjson.JSONDecodeError:
                content = orjson.dumps(data)
        else:
            content = orjson.dumps(data)
        # Its folder synced too: else a power cut after COLLECTED is recorded could lose the
        # file, and its result was never fetched again.
        try:
            with replaced(target, self.config.durable) as handle:
                handle.write(content)
                if not content.endswith(b"\n"):
                    handle.write(b"\n")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot save {target}: {exc.strerror}") from None
        self.stats.collected += 1

    def _result_file(self, record: JobRecord) -> Path:
        """``<job name>.<job id>.json``: the name alone is the same for a video's jobs in
        every service and after a --resubmit, and one job's result would replace another's
        (or be taken for it, by :meth:`_collected_already`)."""
        assert self.config.collect is not None
        return self.config.collect / f"{_safe_name(record.name)}.{_safe_name(record.job_id)}.json"

    # -- background tasks -----------------------------------------------------------------------

    async def _watch_deadline(self) -> None:
        assert self.pool is not None
        assert self.config.deadline is not None
        left = self.config.started + self.config.deadline - time.monotonic()
        await anyio.sleep(max(0.0, left))
        self.stats.stop_reason = "deadline reached"
        self.stop_event.set()
        self.pool.stop("deadline reached")

    async def _sync_often(self) -> None:
        assert self.writer is not None
        while True:
            await anyio.sleep(SYNC_EVERY)
            if self._unsynced:
                self._unsynced = False
                self.writer.sync()

    # -- the end ------------------------------------------------------------------------------

    def _refresh_checked(self) -> None:
        """One line per job whose only news is that we checked it again (appended once per
        run, not per pass: the record grows with changes, not with passes)."""
        writer = self.writer
        assert writer is not None
        for job in self.jobs.values():
            if job.recorded is not None and job.recorded.checked_at != job.now.checked_at:
                writer.append(job.now)
                job.recorded = job.now

    def _finish(self) -> None:
        stats = self.stats
        by_state: Counter[str] = Counter()
        unknown: Counter[str] = Counter()
        now = time.time()
        oldest: float | None = None
        # The followed jobs, and final ones whose hosting result expires soon (not collected)
        records = [job.now for job in self.jobs.values()]
        records += [r for r in self._expiring.values() if r.job_id not in self.jobs]
        for record in records:
            job = self.jobs.get(record.job_id)
            if job is not None and job.judged:
                state = record.state or "NOT_SEEN"
                by_state[state] += 1
                if record.final:
                    if record.state == "SUCCEEDED":
                        stats.succeeded += 1
                    elif record.state in FAILED_FINAL:
                        stats.failed += 1
                        stats.lost += record.state == "LOST"
                else:
                    stats.not_final += 1
                    created = _epoch(record.created_at)
                    if created is not None:
                        age = now - created
                        oldest = age if oldest is None else max(oldest, age)
            if record.state and record.state not in _KNOWN_STATES:
                unknown[record.state] += 1
            if record.state in ARREARS:
                stats.arrears += 1
            if record.state in STUCK_STATES and not record.final:
                since = _epoch(record.updated_at) or _epoch(record.created_at)
                if since is not None and now - since > self.config.stuck_after:
                    stats.stuck += 1
                    if stats.stuck <= 5:
                        self.warn(
                            f"{record.job_id} ({record.source}) has been {record.state} for "
                            f"{(now - since) / 3600:.1f} h: stuck?"
                        )
            if _expiring(record, now):
                stats.expiring += 1
                if stats.expiring <= 5:
                    self.warn(
                        f"{record.job_id} ({record.source}): its hosting result expires at "
                        f"{record.hosting_overdue_at}"
                        + ("" if self.collecting else "; save it with --collect DIR")
                    )
            if record.hosting_status == "OVERDUE":
                stats.overdue += 1
            if record.hosting_status == TOO_LARGE:
                stats.too_large += 1
                if stats.too_large <= 5:
                    self.warn(
                        f"{record.job_id} ({record.source}): its result was too large for VAS "
                        "to host (EXCEED_IN_SIZE): nothing to collect; give the job an obs "
                        "output (job.output) for results this large"
                    )
        stats.by_state = dict(sorted(by_state.items()))
        stats.unknown_states = dict(sorted(unknown.items()))
        stats.oldest_non_final_age = None if oldest is None else round(oldest, 3)
        stats.elapsed = time.monotonic() - self.config.started
        if stats.overdue and self.collecting:
            self.reporter.log(
                "error",
                f"{stats.overdue} hosting results expired (OVERDUE) before they were collected",
            )

    def _log_pass(self) -> None:
        final = sum(1 for job in self.jobs.values() if job.judged and job.now.final)
        states: Counter[str] = Counter(
            _pending_label(job.now.state) for job in self.jobs.values() if not job.now.final
        )
        text = ", ".join(f"{n} {s}" for s, n in states.most_common(6))
        self.reporter.log(
            "info",
            f"pass {self.stats.passes} ({'sweep' if self._swept else 'changes'}): "
            f"{final}/{self.stats.followed} final"
            + (f"; not final: {text}" if text else "")
            + f" ({self.stats.list_calls} list, {self.stats.show_calls} show calls so far)",
        )

    # -- the report ----------------------------------------------------------------------------

    def write_report(self) -> None:
        """One row per video of the ledger, its latest known state; written whole and renamed
        (durable.replaced), so a reader never sees half a report."""
        assert self.videos is not None
        path = self.report_file
        reader = self._reader()
        try:
            with replaced(path, self.config.durable) as raw:
                handle = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                write = _report_writer(handle, self.report_format)
                for row in self.videos:
                    write(self._report_row(row, reader))
                handle.detach()  # flushed into ``raw``, which replaced() syncs and closes
        except OSError as exc:
            raise StorageError(f"{path}: cannot write the report: {exc.strerror}") from None
        finally:
            reader.close()

    def _report_row(self, row: LedgerRow, reader: RecordReader) -> tuple[Any, ...]:
        record: JobRecord | None = None
        if row.status == "submitted" and row.job_id:
            job = self.jobs.get(row.job_id)
            record = job.now if job is not None else reader.get(row.job_id)
        if record is None:
            # No job (its create failed or is unknown), or one never seen yet: the ledger's word.
            return (
                row.source, row.name, row.job_id, "", False, row.error_code, row.error_msg,
                "", "", "", "", "",
            )  # fmt: skip
        return (
            row.source, row.name, row.job_id, record.state, record.final, record.error_code,
            record.error_msg, record.created_at, record.updated_at, record.hosting_status,
            record.hosting_overdue_at, record.checked_at,
        )  # fmt: skip


_KNOWN_STATES = frozenset(
    {
        "PENDING", "RECOVERING", "STARTING", "UPGRADING", "CREATE_FAILED", "START_FAILED",
        "RUNNING", "STOPPING", "STOPPED", "ABNORMAL", "SUCCEEDED", "FAILED", "DELETING",
        "FREEZING", "FROZEN", "LOST", "PRUNED",
    }
)  # fmt: skip


def _report_writer(handle: IO[str], fmt: Format) -> Callable[[tuple[Any, ...]], None]:
    """Rows in the results file's own conventions: CSV booleans "True"/"False", JSON booleans."""
    if fmt == "csv":
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(REPORT_COLUMNS)

        def csv_row(values: tuple[Any, ...]) -> None:
            writer.writerow(["True" if v is True else "False" if v is False else v for v in values])

        return csv_row

    def json_row(values: tuple[Any, ...]) -> None:
        handle.write(orjson.dumps(dict(zip(REPORT_COLUMNS, values, strict=True))).decode() + "\n")

    return json_row


def _pending_label(state: str) -> str:
    if state == "SUCCEEDED":
        return "SUCCEEDED (hosting result pending)"
    return state or "NOT_SEEN"


def _progress_outcome(record: JobRecord) -> Outcome:
    """The progress display counts outcomes: a job that ended is one (succeeded: "submitted",
    anything else: "failed")."""
    return Outcome(
        source=record.source,
        name=record.name,
        job_id=record.job_id,
        status="submitted" if record.state == "SUCCEEDED" else "failed",
        http_status=0,
        error_code=record.error_code,
        error_msg="",
        attempts=0,
        request_id="",
        submitted_at=record.checked_at,
        service_url="",
    )


def _make_folder(folder: Path, durable: bool) -> None:
    """``mkdir -p``, each folder it made synced into its parent (a result saved in a folder
    that a power cut takes away was recorded COLLECTED all the same)."""
    missing = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        sync_dir(made.parent, durable)


def _safe_name(name: str) -> str:
    """A job name as a file name (VAS names are letters, digits, - and _ already)."""
    cleaned = re.sub(r"[^\w.-]", "_", name).lstrip(".")
    return cleaned[:200] or "job"


def _not_a_page(data: Any, secrets: Sequence[str]) -> str:
    """What a 200 list answer that is not ``{count, tasks}`` is instead."""
    if not isinstance(data, dict):
        return f"it is {_json_kind(data, secrets)}"
    if "tasks" not in data:
        return "it has no tasks"
    return f"tasks is {_json_kind(data['tasks'], secrets)}"


def _json_kind(value: Any, secrets: Sequence[str]) -> str:
    """A JSON value named for a message; a string quoted short, masked first."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string ({_one_line(value, secrets)[:60]!r})"
    if isinstance(value, bool | int | float):
        return _one_line(orjson.dumps(value).decode(), secrets)  # true, 3
    if isinstance(value, list):
        return f"an array of {len(value)}"
    return "an object"


def _contradicts_itself(tasks: list[Any]) -> bool:
    """Whether a page lists one job id twice with different states."""
    states: dict[str, Any] = {}
    for task in tasks:
        if isinstance(task, dict):
            key = str(task.get("id") or "")
            state = task.get("state")
            if states.setdefault(key, state) != state:
                return True
    return False


def _newest(*values: float | None) -> float | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None


def _windows(created: list[int]) -> list[tuple[int, int]]:
    """Windows of creation times (epoch ms, sorted) to list: each time widened by SLACK_MS,
    neighbours closer than WINDOW_GAP_MS merged. A job with no known time (0) widens nothing:
    it gets a window of its own from 0, which only a sweep without a time answers."""
    windows: list[tuple[int, int]] = []
    for at in created:
        since, until = max(0, at - SLACK_MS), at + SLACK_MS
        if windows and since <= windows[-1][1] + WINDOW_GAP_MS:
            windows[-1] = (windows[-1][0], max(windows[-1][1], until))
        else:
            windows.append((since, until))
    return windows
