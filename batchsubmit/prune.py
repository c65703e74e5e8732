"""prune and make-room: delete this ledger's finished jobs to stay under the saved-jobs quota.

VAS keeps at most 5,000 saved jobs per user, and only deleting frees room; deleting too early
loses a result. So a job goes only when all of this holds: its id is in this results file's
follow record (never a job of another ledger or tool); ``status`` recorded it final; it is not
already PRUNED or LOST; and a ``hosting`` result (kept on the service, deleted with the job)
was collected or has expired. What the service says now never makes a job eligible.

Crash model: before each delete its intent (a ``PRUNING`` line) is in ``<results>.prune``,
synced. A delete whose answer was heard becomes a ``PRUNED`` line in the follow record
(a 404 IVA.0005 too: already gone); the intent goes when the record is synced. A prune
killed with SIGKILL leaves intents; the next one deletes those again first (a delete is
idempotent: 202 or 404), so every deleted job ends up recorded and nothing else is touched.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import IO, Any

import anyio
import orjson

from .answers import Answer, Kind
from .auth import Credentials
from .client import DEFAULT_TIMEOUT, Endpoint, VasClient, open_session
from .credentials import CredentialProvider
from .durable import lines_joined
from .engine.loop import run as run_loop
from .errors import ApiError, FatalApiError, StorageError, UsageError
from .journal import RunLock
from .pool import Pool, PoolSettings, Stopped
from .record import JobRecord, RecordWriter, read_record, record_path
from .results import Format, Outcome, iter_results, utc_now
from .vas import JOB_NOT_FOUND, service_identity, service_of

__all__ = [
    "DEFAULT_OLDER_THAN",
    "DEFAULT_QUOTA",
    "PRUNED",
    "PruneConfig",
    "PruneRules",
    "PruneStats",
    "Room",
    "make_room",
    "prune",
    "prune_journal_path",
    "select",
]

DEFAULT_OLDER_THAN = 24 * 3600.0  # seconds: a morning report can still read last night's jobs
DEFAULT_QUOTA = 5000
MAX_SAVED_COUNT = 100_000  # the list pages 100,000 at most; VAS keeps 5000 jobs a user
PRUNED = "PRUNED"
PRUNING = "PRUNING"
GONE_CODE = JOB_NOT_FOUND  # the job does not exist: a 404 with any other code is not "gone"
GONE_LIMIT = 3  # "no such job" answers, none deleted yet at that service: a wrong endpoint?
# The hosting result is no longer on the service, never was (too large to host), or we have
# it: deleting the job loses nothing.
HOSTING_DONE = frozenset({"COLLECTED", "OVERDUE", "DELETED_MISTAKENLY", "EXCEED_IN_SIZE"})
# Final, but already gone from the service: nothing to delete, no room to free.
GONE_STATES = frozenset({PRUNED, "LOST"})
# The final states a job may be deleted in (obs-file inputs; VAS-API.md): a record that says
# final of any other state is not believed.
DELETABLE_STATES = frozenset({"SUCCEEDED", "FAILED", "CREATE_FAILED", "START_FAILED"})
ROOM_WAIT = 120.0  # seconds make-room waits for deleted jobs to disappear from the count
ROOM_POLL = 2.0  # seconds between count reads at most; the first comes sooner
ROOM_FIRST_POLL = 0.05
_SERVICE_URL = re.compile(r"(https?://[^/]+)/v2/([^/]+)/services/([^/]+)/tasks")


@dataclass(frozen=True, kw_only=True)
class PruneRules:
    """Which recorded jobs may go. ``limit``: at most this many (make-room: only as many as
    needed)."""

    older_than: float = DEFAULT_OLDER_THAN
    keep: int = 0
    limit: int | None = None
    service_url: str | None = None  # only this service's jobs (make-room counts one service)


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Everything a prune needs, built once by the CLI."""

    results: Path
    format: Format
    credentials: Credentials | CredentialProvider | None  # None: a dry run, or nothing to do
    pool: PoolSettings
    rules: PruneRules = field(default_factory=PruneRules)
    base_url: str | None = None  # --endpoint: instead of the one in the results rows
    dry_run: bool = False
    durable: bool = True
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A job that may be deleted, with what it was deleted under."""

    record: JobRecord
    final_at: float  # epoch seconds
    service_url: str
    redo: bool = False  # a killed prune's intent: its delete was sent already


@dataclass
class Selection:
    chosen: list[Candidate]
    held: Counter[str]  # why the other jobs of the record stay: reason -> jobs
    gone: int = 0  # already PRUNED or LOST


@dataclass
class PruneStats:
    """What a prune did (or would do); the CLI renders it."""

    selected: int = 0
    # deletes answered 2xx, by service (vas.service_of): make-room's room is its own service's
    deleted_of: Counter[str] = field(default_factory=Counter)
    gone: int = 0  # answered 404 IVA.0005: already gone, recorded PRUNED too
    failed: int = 0
    resumed: int = 0  # intents left by a killed prune, deleted again first
    deferred: int = 0  # not sent: the prune stopped first
    already: int = 0  # PRUNED or LOST before this run
    held: dict[str, int] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    opening_calls: int = 0  # before the first VAS call: credentials, project id
    retries: int = 0
    first_errors: dict[str, str] = field(default_factory=dict)
    fatal: str | None = None
    stop_reason: str | None = None
    signal: int | None = None
    elapsed: float = 0.0

    @property
    def deleted(self) -> int:
        """Deletes answered 2xx."""
        return sum(self.deleted_of.values())

    @property
    def pruned(self) -> int:
        return self.deleted + self.gone


@dataclass
class Room:
    """What make-room found and did before tonight's first create."""

    quota: int
    planned: int
    # the service's saved-job count before and after pruning; None: not read (nothing to
    # create tonight, a signal, or it could not be read), never shown as a measured 0
    saved_before: int | None = None
    saved_after: int | None = None
    room: int = 0  # creates that fit tonight
    deferred: int = 0  # planned creates that do not fit: deferred to the next night
    reason: str | None = None
    prune: PruneStats = field(default_factory=PruneStats)
    # why make-room could not finish (the count unreadable, a prune that failed): nothing is
    # created tonight, and what it did until then is still reported
    error: FatalApiError | None = None


# -- selection (pure) ---------------------------------------------------------------------------


def select(
    records: Mapping[str, JobRecord],
    services: Mapping[str, str],
    rules: PruneRules,
    now: float,
) -> Selection:
    """The jobs the rules let go, oldest recorded final time first; and why the rest stay."""
    held: Counter[str] = Counter()
    final: list[Candidate] = []
    gone = 0
    # the service make-room counted, however a row spells its endpoint (as the ledger counts)
    service = lru_cache(maxsize=64)(service_of)
    wanted = None if rules.service_url is None else service(rules.service_url)
    for record in records.values():
        if record.state in GONE_STATES:
            gone += 1
            continue
        if not record.final or record.state not in DELETABLE_STATES:
            held["not final"] += 1
            continue
        final_at = _epoch(record.final_at)
        if final_at is None:
            held["no recorded final time"] += 1
            continue
        created = _epoch(record.created_at)
        if created is not None and final_at < created:
            # Recorded by an older status from a service's far-past updated_at (2000-01-01):
            # not believed, the job's own creation stands in (a later time: it waits longer).
            final_at = created
        service_url = services.get(record.job_id)
        if service_url is None:
            held["not in the results file"] += 1
            continue
        if wanted is not None and service(service_url) != wanted:
            held["another service"] += 1
            continue
        final.append(Candidate(record=record, final_at=final_at, service_url=service_url))
    final.sort(key=lambda c: (c.final_at, c.record.created_at, c.record.job_id))
    if rules.keep:
        kept = final[-rules.keep :]
        held["kept by --keep"] += len(kept)
        final = final[: -rules.keep]
    chosen: list[Candidate] = []
    for candidate in final:
        if _hosting_pending(candidate.record, now):
            held["hosting result not collected"] += 1
        elif now - candidate.final_at < rules.older_than:
            held["final too recently"] += 1
        elif rules.limit is not None and len(chosen) >= rules.limit:
            held["not needed"] += 1
        else:
            chosen.append(candidate)
    return Selection(chosen=chosen, held=held, gone=gone)


def _hosting_pending(record: JobRecord, now: float) -> bool:
    """Whether deleting the job would lose a hosting result nobody has yet: a SUCCEEDED job's
    result until it was collected (or expired), another job's only if the service said it had
    one (a job that never succeeded has none)."""
    if not record.hosting or record.hosting_status in HOSTING_DONE:
        return False
    overdue = _epoch(record.hosting_overdue_at)
    born = _epoch(record.created_at) or _epoch(record.final_at)
    # An overdue time is believed only after the job's creation (or, not known, its end): 0,
    # -1 or 1970 for a result the service calls AVAILABLE is no expiry, and deleting on its
    # word lost the result.
    if overdue is not None and overdue <= now and born is not None and overdue > born:
        return False
    return record.state == "SUCCEEDED" or record.hosting_status not in ("", "NOT_GENERATED")


def _epoch(text: str) -> float | None:
    """Seconds since the epoch from ISO 8601 or epoch milliseconds (VAS's ``*_overdue_at``)."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return int(text) / 1000.0
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # no zone: cannot tell its age, so it is not old enough
    return moment.timestamp()


# -- the results file: which service each job belongs to --------------------------------------


def job_services(results: Path, fmt: Format, wanted: Iterable[str]) -> dict[str, str]:
    """job id -> ``service_url`` from the submitted rows of the results file, for ``wanted``
    (read as strictly as a submit reads its ledger; no file yet: nothing)."""
    wanted = set(wanted)
    found: dict[str, str] = {}
    if not results.exists():
        return found
    for row in iter_results(results, fmt):
        if row.status == "submitted" and row.job_id in wanted and row.service_url:
            found[row.job_id] = row.service_url
    return found


def first_service(results: Path, fmt: Format) -> str | None:
    """The ``service_url`` of the first submitted row (for the project id and region of the
    credentials), or None when no job was ever submitted: nothing to prune, no credentials."""
    if not results.exists():
        return None
    for row in iter_results(results, fmt):
        if row.status == "submitted" and row.service_url:
            return row.service_url
    return None


def endpoint_for(service_url: str, base_url: str | None) -> Endpoint:
    found = _SERVICE_URL.fullmatch(service_url)
    if not found:
        raise UsageError(f"cannot read the service from {service_url!r} in the results file")
    return Endpoint(
        base_url=base_url or found.group(1),
        project_id=found.group(2),
        service_name=found.group(3),
    )


# -- the intent journal -------------------------------------------------------------------------


def prune_journal_path(results: Path) -> Path:
    resolved = results.resolve()
    return resolved.with_name(resolved.name + ".prune")


def read_prune_intents(path: Path) -> dict[str, str]:
    """job id -> service_url of deletes that may have been sent without their PRUNED line."""
    found: dict[str, str] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the prune journal: {exc.strerror}") from None
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            job_id, service_url = item["job_id"], item["service_url"]
            if not isinstance(job_id, str) or not isinstance(service_url, str):
                raise TypeError
            if not job_id or not _SERVICE_URL.fullmatch(service_url):
                # read at once: the deletes would stop on it later as "in the results file"
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            if number == len(lines) and not lines_joined(line):
                continue  # a torn last line (no newline): it was never synced, nor sent
            # Damage anywhere else is an intent lost: a delete that may have been sent
            # would never get its PRUNED line (its job read LOST later). Stop, naming it.
            raise UsageError(
                f"{path}:{number}: damaged prune journal line (not a PRUNING intent with a "
                "job_id and the service_url of its tasks); it may hold a delete that was sent: "
                "repair or restore the file, then run again"
            ) from None
        found[job_id] = service_url
    return found


def _read_journal_and_rows(
    config: PruneConfig, records: Mapping[str, JobRecord]
) -> tuple[dict[str, str], dict[str, str]]:
    """The prune journal's intents, and job id -> service_url of the submitted rows of the
    recorded and intended jobs (one read of the results file for both)."""
    intents = read_prune_intents(prune_journal_path(config.results))
    rows = job_services(config.results, config.format, {*records, *intents})
    _check_intents(config, intents, rows)
    return intents, rows


def _check_intents(
    config: PruneConfig, intents: Mapping[str, str], rows: Mapping[str, str]
) -> None:
    """Each intent names the service its job's row names: a redone delete is sent to the
    intent's URL, so one damaged into another host's (a flipped byte still reads as a tasks
    URL) would send a signed DELETE there. An intent whose job has no submitted row is left
    to the record's rules (its redo needs a record anyway)."""
    path = prune_journal_path(config.results)
    for job_id, service_url in intents.items():
        row = rows.get(job_id)
        if row is not None and row != service_url:
            raise UsageError(
                f"{path}: the intent to delete job {job_id[:64]!r} names {service_url[:200]!r}, "
                f"but its row in {config.results} names {row[:200]!r}: a damaged prune journal; "
                "repair or restore the file, then run again"
            )


class _IntentJournal:
    """``PRUNING`` lines, each synced before its delete is sent."""

    def __init__(self, path: Path, inherited: dict[str, str], durable: bool) -> None:
        self.path = path
        self.open: dict[str, str] = dict(inherited)
        self._durable = durable
        self._rewrite()  # no torn line of a killed run for the next one to glue onto
        self._file: IO[bytes] = path.open("ab")

    def intend(self, job_id: str, service_url: str) -> None:
        self.open[job_id] = service_url
        line = {"job_id": job_id, "state": PRUNING, "service_url": service_url, "at": utc_now()}
        self._file.write(orjson.dumps(line) + b"\n")
        self._file.flush()
        if self._durable:
            os.fdatasync(self._file.fileno())

    def settle(self, job_id: str) -> None:
        self.open.pop(job_id, None)

    def close(self) -> None:
        """Called once the follow record is synced: keep only intents still open."""
        self._file.close()
        if not self.open:
            self.path.unlink(missing_ok=True)
            return
        self._rewrite()

    def _rewrite(self) -> None:
        """Replace the file with the open intents, atomically."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as handle:
            for job_id, service_url in self.open.items():
                line = {"job_id": job_id, "state": PRUNING, "service_url": service_url}
                handle.write(orjson.dumps(line) + b"\n")
            handle.flush()
            if self._durable:
                os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        if self._durable:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


# -- running ------------------------------------------------------------------------------------


Warn = Callable[[str], None]
LogFn = Callable[[str, str], None]


class _NoSink:
    """The pool's results sink: prune writes no results rows."""

    def write(self, outcome: Outcome) -> None:
        pass

    def flush(self) -> None:
        pass


class _Reporter:
    def __init__(self, log: LogFn) -> None:
        self._log = log

    def outcome(self, outcome: Outcome) -> None:
        pass

    def log(self, level: str, message: str) -> None:
        self._log(level, message)


def prune(config: PruneConfig, warn: Warn, log: LogFn) -> PruneStats:
    """``batchsubmit prune``: take the results file's lock, then delete what the rules allow."""
    from .runner import lock_path

    lock = RunLock(lock_path(config.results))
    lock.acquire(utc_now())
    try:
        if config.dry_run:
            return plan_prune(config, warn)
        return run_loop(_prune_locked, config, warn, log, None)
    finally:
        lock.release()


def plan_prune(config: PruneConfig, warn: Warn) -> PruneStats:
    """What a prune would delete now; sends nothing."""
    started = time.monotonic()
    records = read_record(record_path(config.results), warn)
    intents, rows = _read_journal_and_rows(config, records)
    selection = select(records, rows, config.rules, time.time())
    stats = _stats_for(selection)
    resumed = [job_id for job_id in intents if records.get(job_id, None) is not None]
    stats.resumed = sum(1 for j in resumed if records[j].state != PRUNED)
    for candidate in selection.chosen:
        stats.jobs.append(_job_entry(candidate, "would be deleted"))
    stats.elapsed = time.monotonic() - started
    return stats


def _stats_for(selection: Selection) -> PruneStats:
    return PruneStats(
        selected=len(selection.chosen),
        already=selection.gone,
        held=dict(sorted(selection.held.items())),
    )


def _job_entry(candidate: Candidate, outcome: str) -> dict[str, Any]:
    record = candidate.record
    return {
        "job_id": record.job_id,
        "source": record.source,
        "name": record.name,
        "state": record.state,
        "final_at": record.final_at,
        "outcome": outcome,
    }


async def _prune_locked(
    config: PruneConfig,
    warn: Warn,
    log: LogFn,
    rules: PruneRules | None,
    tally: _GoneTally | None = None,
) -> PruneStats:
    """Delete what ``rules`` (default: the config's) allow; the caller holds the lock.
    ``tally``: what the "no such job" guard learnt in earlier rounds (make-room's)."""
    # Read here, under the lock the deletes are made under, never taken from the CLI's plan:
    # that read's lock was let go while the credentials came, and another prune or status
    # may have recorded jobs since (a job PRUNED meanwhile would be deleted again, its 404
    # counted towards the "no such job" stop). Make-room's rounds read what the last wrote.
    records = read_record(record_path(config.results), warn)
    intents, rows = _read_journal_and_rows(config, records)
    selection = select(records, rows, rules or config.rules, time.time())
    stats = _stats_for(selection)
    started = time.monotonic()
    # Intents of a killed prune first: those deletes may have been sent.
    redo: list[Candidate] = []
    for job_id, service_url in intents.items():
        record = records.get(job_id)
        if record is not None and record.state != PRUNED:
            redo.append(Candidate(record=record, final_at=0.0, service_url=service_url, redo=True))
    chosen_ids = {c.record.job_id for c in redo}
    work = redo + [c for c in selection.chosen if c.record.job_id not in chosen_ids]
    stats.resumed = len(redo)
    if redo:
        log("info", f"{len(redo)} deletes of an earlier prune that stopped unrecorded: redone")
    if not work:
        _drop_settled_journal(config.results, intents, records)
        stats.elapsed = time.monotonic() - started
        return stats
    credentials = config.credentials
    if credentials is None:
        raise UsageError("prune needs credentials to delete jobs (only --dry-run runs without)")
    try:
        writer = RecordWriter(record_path(config.results), warn, durable=config.durable)
        still_open = {c.record.job_id: c.service_url for c in redo}
        journal = _IntentJournal(prune_journal_path(config.results), still_open, config.durable)
        try:
            async with open_session(config.pool.concurrency) as session:
                clients: dict[str, VasClient] = {}
                for url in sorted({c.service_url for c in work}):
                    endpoint = endpoint_for(url, config.base_url)
                    clients[url] = VasClient(session, endpoint, credentials, timeout=config.timeout)
                first = next(iter(clients.values()))
                pool = Pool(
                    first,
                    _NoSink(),
                    _Reporter(log),
                    config.pool,
                    service_url=next(iter(clients)),
                    credentials=first.provider,
                )
                async with anyio.create_task_group() as group:
                    from .runner import watch_signals

                    await group.start(watch_signals, pool, partial(setattr, stats, "signal"))
                    await _delete_all(
                        pool, clients, work, writer, journal, stats, tally or _GoneTally()
                    )
                    group.cancel_scope.cancel()
                _take_pool_stats(stats, pool)
        finally:
            writer.close()  # syncs the PRUNED lines: only then may their intents go
            journal.close()
        if stats.pruned:
            _refresh_report(config, warn)
    except OSError as exc:
        raise StorageError(
            f"the prune stopped: writing {record_path(config.results)} or its prune journal "
            f"failed ({exc}); the next prune redoes the deletes that were under way"
        ) from None
    stats.elapsed = time.monotonic() - started
    return stats


def _refresh_report(config: PruneConfig, warn: Warn) -> None:
    """The report ``status`` wrote beside the results file shows each job's latest state:
    rewrite it from the record, so the pruned jobs read PRUNED there too (sends nothing)."""
    from .follow import FollowConfig, default_report_path, prepare_follow

    if not default_report_path(config.results, config.format).exists():
        return
    follow = FollowConfig(
        results=config.results,
        format=config.format,
        credentials=None,
        pool=config.pool,
        durable=config.durable,
    )
    prepare_follow(follow, warn).write_report()


def _drop_settled_journal(
    results: Path, intents: Mapping[str, str], records: Mapping[str, JobRecord]
) -> None:
    """A prune journal whose every intent is recorded PRUNED (or whose jobs left the record)
    has nothing left to redo."""
    if intents and all(records.get(j) is None or records[j].state == PRUNED for j in intents):
        prune_journal_path(results).unlink(missing_ok=True)


def _take_pool_stats(stats: PruneStats, pool: Pool) -> None:
    stats.calls = pool.stats.calls
    stats.retries = pool.stats.retries
    stats.fatal = stats.fatal or pool.stats.fatal
    stats.stop_reason = pool.stats.stop_reason
    if pool.stats.signal is not None:
        stats.signal = pool.stats.signal


async def _delete_all(
    pool: Pool,
    clients: Mapping[str, VasClient],
    work: list[Candidate],
    writer: RecordWriter,
    journal: _IntentJournal,
    stats: PruneStats,
    tally: _GoneTally,
) -> None:
    """The deletes, oldest first, as a kind of work on the pool's workers (``concurrency`` at
    a time, every call through the gate). A job not started because the prune stopped is
    deferred: its intent was never written, so nothing is left to redo for it."""

    unconfirmed = _Unconfirmed(pool, writer, journal, stats, tally)

    async def delete(candidate: Candidate) -> None:
        client = clients[candidate.service_url]
        await _delete_one(pool, client, candidate, writer, journal, stats, unconfirmed)

    not_started = await pool.each(work, delete)  # read after the await: the deletes under
    stats.deferred += len(not_started)  # way count their own deferrals into stats meanwhile
    unconfirmed.finish()


@dataclass
class _GoneTally:
    """What the "no such job" guard knows across the rounds of one make-room (each round is
    a prune of its own): a guard new each round, with a limit of 1 or 2 deletes a round,
    never held GONE_LIMIT answers, and make-room went on (a gone job frees no room) until
    every eligible job of the ledger was recorded PRUNED at a wrong endpoint."""

    known: set[str] = field(default_factory=set)  # services where a delete succeeded
    unconfirmed: Counter[str] = field(default_factory=Counter)  # recorded gone, unconfirmed


class _Unconfirmed:
    """ "No such job" believed only where the endpoint is known to hold this ledger's jobs.

    ``prune --endpoint`` naming another region or account answers 404 IVA.0005 to every
    delete; recorded PRUNED, those jobs were never deleted where they are, and filled the
    quota for good (PRUNED is never retried). So until a delete at a service succeeds, its
    "already gone" jobs are held, unrecorded; ``GONE_LIMIT`` of them (counted across
    make-room's rounds) stop the prune (exit 3), unrecorded and without an intent (a 404
    deleted nothing; kept, the next prune redid it as a sent delete and believed the same
    404), so the next prune chooses them again. A few, at the end of a run
    with nothing else to delete, are recorded gone: jobs deleted by hand in the console. A
    killed prune's delete sent again where its job was created is gone because it was sent:
    recorded at once (sent again at another ``--endpoint``, it is held like the others)."""

    def __init__(
        self,
        pool: Pool,
        writer: RecordWriter,
        journal: _IntentJournal,
        stats: PruneStats,
        tally: _GoneTally,
    ) -> None:
        self._pool, self._writer, self._journal, self._stats = pool, writer, journal, stats
        self._tally = tally
        self._held: dict[str, list[Candidate]] = {}
        self._tripped = False

    def gone(self, candidate: Candidate, asked_at: str) -> None:
        """``asked_at``: the tasks URL the delete went to (``--endpoint`` replaces the row's):
        the one the message names, since the row's may be right where this one is not."""
        url = candidate.service_url
        if url in self._tally.known or (candidate.redo and _same_endpoint(asked_at, url)):
            # A redo's delete went out before, where its job was created: gone. Redone at
            # another --endpoint, it is held like any other (the one before may have timed
            # out at that same wrong endpoint).
            _record_pruned(candidate, self._writer, self._journal, self._stats, gone=True)
            return
        held = self._held.setdefault(url, [])
        held.append(candidate)
        unconfirmed = len(held) + self._tally.unconfirmed[url]
        if unconfirmed >= GONE_LIMIT and not self._tripped:
            self._tripped = True
            self._stats.fatal = (
                f"{unconfirmed} deletes at {asked_at} answered 'no such job' ({GONE_CODE}) and "
                "none there succeeded: is this the endpoint the jobs were created at "
                "(--endpoint)? "
                "Nothing was recorded for them; the next prune sends them again. Jobs deleted "
                "by hand: run `batchsubmit status RESULTS --follow` first"
            )
            self._pool.stop("deletes find no job at this endpoint")

    def deleted(self, candidate: Candidate) -> None:
        url = candidate.service_url
        self._tally.known.add(url)
        for held in self._held.pop(url, []):
            _record_pruned(held, self._writer, self._journal, self._stats, gone=True)

    def finish(self) -> None:
        for held in self._held.values():
            for candidate in held:
                if self._tripped:
                    # Answered 404: this delete did nothing. Its intent goes (kept, the next
                    # prune took it for a killed prune's sent delete and recorded it gone on
                    # the same 404); the job is still unrecorded, so it is chosen again.
                    self._journal.settle(candidate.record.job_id)
                    self._stats.failed += 1
                    self._stats.jobs.append(
                        _job_entry(candidate, "not recorded: 'no such job' at this endpoint")
                    )
                else:
                    _record_pruned(candidate, self._writer, self._journal, self._stats, True)
                    self._tally.unconfirmed[candidate.service_url] += 1
        self._held.clear()


def _same_endpoint(asked_at: str, service_url: str) -> bool:
    """Whether a delete sent to ``asked_at`` went to the endpoint ``service_url`` names."""
    try:
        return service_identity(asked_at).endpoint == service_identity(service_url).endpoint
    except ValueError:
        return False


def _record_pruned(
    candidate: Candidate,
    writer: RecordWriter,
    journal: _IntentJournal,
    stats: PruneStats,
    gone: bool,
) -> None:
    record = candidate.record
    now = utc_now()
    writer.append(replace(record, state=PRUNED, final=True, checked_at=now, updated_at=now))
    writer.flush()
    journal.settle(record.job_id)  # the intent file is rewritten only after the record's sync
    if gone:
        stats.gone += 1
        outcome = f"{PRUNED} (already gone)"
    else:
        stats.deleted_of[service_of(candidate.service_url)] += 1
        outcome = PRUNED
    stats.jobs.append(_job_entry(candidate, outcome))


async def _delete_one(
    pool: Pool,
    client: VasClient,
    candidate: Candidate,
    writer: RecordWriter,
    journal: _IntentJournal,
    stats: PruneStats,
    unconfirmed: _Unconfirmed | None = None,
) -> None:
    record = candidate.record
    job_id = record.job_id
    journal.intend(job_id, candidate.service_url)
    deleter = _deleter(client)
    sent = False

    async def send(job: str) -> Answer:
        nonlocal sent
        sent = True
        return await deleter(job)

    try:
        answer = await pool.call(send, job_id)
    except Stopped:
        if not sent:
            journal.settle(job_id)  # never sent
            stats.deferred += 1
            return
        # Stopped in the backoff after a try that was sent (a 5xx, a timeout): the job may
        # be gone already. The intent stays, so the next prune sends it again and records it.
        stats.failed += 1
        stats.jobs.append(_job_entry(candidate, "interrupted after it was sent: redone next time"))
        return
    if answer.kind is Kind.OK:
        _record_pruned(candidate, writer, journal, stats, gone=False)
        if unconfirmed is not None:
            unconfirmed.deleted(candidate)
        return
    if answer.status == 404 and answer.error_code == GONE_CODE:
        if unconfirmed is None:
            _record_pruned(candidate, writer, journal, stats, gone=True)
        else:
            unconfirmed.gone(candidate, client.tasks_url)
        return
    stats.failed += 1
    text = _describe(answer)
    stats.first_errors.setdefault(
        answer.error_code or str(answer.status or answer.kind.value), text
    )
    stats.jobs.append(_job_entry(candidate, f"failed: {text}"))
    if answer.kind in (Kind.FAILED, Kind.FATAL) and answer.status and answer.status < 500:
        journal.settle(job_id)  # refused: the job is still there, nothing to redo
    # else (5xx, timeout after sending): the delete may have happened; the intent stays, and
    # the next prune sends it again before anything else


def _deleter(client: VasClient) -> Callable[[str], Awaitable[Answer]]:
    """``client.delete``, with a 2xx answer read as done: a 202 has no body, which the
    classifier of reads would take for a garbled answer and retry."""

    async def delete(job_id: str) -> Answer:
        answer = await client.delete(job_id)
        if 200 <= answer.status < 300 and answer.kind is not Kind.OK:
            return replace(answer, kind=Kind.OK, error_msg="")
        return answer

    return delete


def _describe(answer: Answer) -> str:
    parts = [f"HTTP {answer.status}" if answer.status else "", answer.error_code, answer.error_msg]
    text = " ".join(p for p in parts if p) or answer.kind.value
    if answer.request_id:
        text += f" (request id {answer.request_id})"
    return text


# -- make-room ----------------------------------------------------------------------------------


async def make_room(
    config: PruneConfig,
    planned: int,
    quota: int,
    warn: Warn,
    log: LogFn,
    *,
    service_url: str,
    wait: float | None = None,
    poll: float = ROOM_POLL,
) -> Room:
    """Before tonight's first create: read the saved-job count (VAS's list ``count`` for this
    service: the API lists one service at a time, so jobs of other services are not seen), and
    if ``planned`` creates do not fit under ``quota``, prune eligible jobs of this ledger (the
    prune rules without a minimum age), oldest first, only as many as needed, then wait for
    them to leave the count. What still does not fit is deferred. A count that cannot be read
    or a prune that fails is ``Room.error``: every planned create deferred, and what was done
    until then (the count, the deletes) reported. The caller holds the lock."""
    wait = ROOM_WAIT if wait is None else wait
    room = Room(quota=quota, planned=planned)
    if planned == 0 or config.credentials is None:
        return room  # nothing to create tonight: no room to make
    endpoint = endpoint_for(service_url, config.base_url)
    try:
        async with open_session(1) as session:
            client = VasClient(session, endpoint, config.credentials, timeout=config.timeout)
            gate = Pool(
                client,
                _NoSink(),
                _Reporter(log),
                config.pool,
                service_url=service_url,
                credentials=client.provider,
            )
            saved = await _watched(gate, _saved_jobs(gate, client, quota))
            if saved is None:  # a signal: nothing pruned, nothing created tonight
                room.prune.signal = gate.stats.signal
                return room
            room.saved_before = room.saved_after = saved
            needed = saved + planned - quota
            if needed > 0:
                log(
                    "info",
                    f"make-room: {saved} saved jobs + {planned} to create is over the "
                    f"quota of {quota}: pruning up to {needed} finished, recorded jobs",
                )
                room.prune = await _prune_for_room(config, warn, log, needed, service_url)
                if room.prune.fatal:
                    error = ApiError(0, "", room.prune.fatal)
                    raise FatalApiError(error, "make-room could not prune")
                if room.prune.signal is not None:
                    return room
                expected = saved - room.prune.deleted_of[service_of(service_url)]
                room.saved_after = None  # until it is read again
                counted = await _watched(
                    gate, _wait_for_count(gate, client, expected, wait, poll, quota)
                )
                if counted is None:
                    room.prune.signal = gate.stats.signal
                    return room
                room.saved_after = saved = counted
    except FatalApiError as exc:
        room.error = exc
        room.deferred = planned
        room.reason = f"{exc}; nothing was submitted"
        return room
    room.room = max(0, min(planned, quota - saved))
    room.deferred = planned - room.room
    if room.deferred:
        room.reason = (
            f"the saved-jobs quota: {saved} of {quota} saved, room for {room.room} of "
            f"{planned} creates tonight; {room.deferred} deferred to the next run (no finished, "
            "recorded and collected job of this ledger was left to prune; run `batchsubmit "
            "status RESULTS --follow` and `batchsubmit prune RESULTS`, or delete other jobs)"
        )
        log("warning", f"make-room: {room.reason}")
    return room


async def _prune_for_room(
    config: PruneConfig, warn: Warn, log: LogFn, needed: int, service_url: str
) -> PruneStats:
    """Prune until ``needed`` deletes were accepted: a job found already gone (404) was not in
    the count, so it frees no room and the next oldest eligible one goes in its place."""
    total = PruneStats()
    tally = _GoneTally()
    while needed > 0:
        rules = PruneRules(older_than=0.0, limit=needed, service_url=service_url)
        stats = await _prune_locked(config, warn, log, rules, tally)
        for name in ("selected", "gone", "failed", "resumed", "deferred", "calls"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        total.retries += stats.retries
        total.deleted_of += stats.deleted_of
        total.jobs += stats.jobs
        total.held = stats.held
        total.first_errors = {**stats.first_errors, **total.first_errors}
        total.fatal, total.signal = stats.fatal, stats.signal
        total.already = stats.already
        # A redone intent of another service (a killed prune's) is deleted too, but frees no
        # room in this service's count: only this service's deletes count against ``needed``.
        mine = stats.deleted_of[service_of(service_url)]
        needed -= mine
        if stats.pruned == 0 or stats.fatal or stats.signal is not None or stats.failed:
            break
    return total


async def _watched(gate: Pool, counting: Awaitable[int]) -> int | None:
    """A count read with SIGINT/SIGTERM watched (they stop ``gate``): None if a signal came.
    The prune between two counts watches signals in its own pool."""
    from .runner import watch_signals

    found: int | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        await group.start(watch_signals, gate)
        try:
            found = await counting
        except Stopped:
            pass  # a signal: _saved_jobs turns any other stop into an error
        except Exception as exc:  # raised below, outside the group (not as an ExceptionGroup)
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return None if gate.stats.signal is not None else found  # a count read as it came: stop


async def _saved_jobs(gate: Pool, client: VasClient, quota: int = DEFAULT_QUOTA) -> int:
    """The account's saved jobs as this service's list sees them (``count`` of a 1-job page).
    ``quota``: --quota; a raised one raises what count is believed."""
    try:
        answer = await gate.call(client.list_tasks, {"limit": 1})
    except Stopped:
        if gate.stats.signal is not None:
            raise
        why = gate.stats.fatal or "the run stopped"  # the first call found no endpoint
        raise FatalApiError(
            ApiError(0, "", why), "make-room cannot read the saved-job count"
        ) from None
    data = answer.data if isinstance(answer.data, dict) else {}
    count, tasks = data.get("count"), data.get("tasks")
    problem = answer.error_msg or "no count"
    if answer.kind is Kind.OK and isinstance(count, int) and not isinstance(count, bool):
        # Believed only when it could be true: make-room deletes by it. A count beyond what
        # the list can page (VAS keeps 5000 jobs a user), or a count of jobs on a page that
        # shows none, deleted every finished, recorded job of the ledger on its word.
        ceiling = max(MAX_SAVED_COUNT, 2 * quota)
        if count > ceiling:
            problem = f"a count of {count} saved jobs (over {ceiling}) is not believed"
        elif count > 0 and not (isinstance(tasks, list) and tasks):
            problem = f"a count of {count} saved jobs, but the page of one lists none"
        elif count >= 0:
            return count
    error = ApiError(answer.status, answer.error_code, problem)
    raise FatalApiError(
        error,
        "make-room cannot read the saved-job count, so it cannot tell whether tonight's "
        "jobs fit under the quota (run without --make-room to submit anyway)",
    )


async def _wait_for_count(
    gate: Pool, client: VasClient, expected: int, wait: float, poll: float, quota: int
) -> int:
    """Deletes are asynchronous (DELETING, then gone): poll the count until it reaches
    ``expected`` or ``wait`` runs out; the last count read."""
    deadline = time.monotonic() + wait
    pause = ROOM_FIRST_POLL
    while True:
        count = await _saved_jobs(gate, client, quota)
        if count <= expected or time.monotonic() >= deadline:
            return count
        await anyio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, poll)


def describe_held(held: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in held.items() if n) or "none"
