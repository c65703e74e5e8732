"""One run, start to end: lock, ledger, journal, the passes through the pool, and signals.

Returns data (RunStats); the CLI renders it. Order matters and is the point of this module:
everything that can be wrong with the input is found before the first request, and
uncertain creates from earlier runs are resolved before anything new is created.
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import anyio
import anyio.abc

from .auth import Credentials
from .client import DEFAULT_TIMEOUT, Endpoint, VasClient, open_session
from .credentials import CredentialProvider
from .engine.loop import signals_received
from .errors import StorageError, innermost
from .jobs import JobSpec, SpecBuilder
from .journal import Intent, Journal, RunLock, read_intents
from .manifest import Manifest
from .pool import Lookup, Pool, PoolSettings, RunStats
from .progress import ProgressReporter
from .results import Format, Ledger, ResultsWriter, epoch, read_ledger, utc_now
from .sources import ExpandStats, ObjectRef, Repeats, find_repeats, iter_objects
from .vas import service_of

__all__ = ["ExpandSummary", "RunConfig", "count_work", "plan", "reconcile", "submit"]

GC_THRESHOLD = 10_000  # allocations between collections of the youngest generation
FLUSH_EVERY = 1.0  # seconds: the longest a written row waits in the buffer during a run


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run needs, built once by the CLI."""

    manifest: Manifest | None
    endpoint: Endpoint
    credentials: Credentials | CredentialProvider
    results: Path
    format: Format
    pool: PoolSettings
    resubmit: bool = False
    durable: bool = True
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class ExpandSummary:
    """What planning saw: sources expanded, and how many were skipped as already done."""

    expand: ExpandStats
    skipped: int = 0
    uncertain: int = 0
    planned: int = 0
    repeats: Repeats | None = None


def plan(
    manifest: Manifest,
    ledger: Ledger | None,
    uncertain: Collection[str],
    summary: ExpandSummary,
    warn: Callable[[str], None],
    repeats: Repeats | None = None,
) -> Iterator[JobSpec]:
    """The job specs still to submit, streamed: done sources and unresolved ones are skipped."""
    build = SpecBuilder(manifest.service, manifest.job).build
    for ref in _pending(manifest, ledger, uncertain, summary, warn, repeats):
        yield build(ref)


def _pending(
    manifest: Manifest,
    ledger: Ledger | None,
    uncertain: Collection[str],
    summary: ExpandSummary,
    warn: Callable[[str], None],
    repeats: Repeats | None,
) -> Iterator[ObjectRef]:
    for ref in iter_objects(manifest, summary.expand, warn, repeats):
        if _tally(ref.url, ledger, uncertain, summary):
            yield ref


def _tally(
    url: str, ledger: Ledger | None, uncertain: Collection[str], summary: ExpandSummary
) -> bool:
    """Count one video as skipped (done before this run), held (its outcome is unknown, or
    this run's lookup already recorded it) or planned; True if planned."""
    if ledger is not None:
        if url in uncertain:
            summary.uncertain += 1
            return False
        if ledger.is_done(url):
            summary.skipped += 1
            return False
    summary.planned += 1
    return True


def count_work(
    manifest: Manifest,
    ledger: Ledger | None,
    uncertain: Collection[str],
    warn: Callable[[str], None],
) -> ExpandSummary:
    """The pass over the sources before any request: it finds every bad line, the repeats
    (kept in the summary for the pass that submits) and the total. Only when some path may
    repeat does it take a second pass, to count exactly."""
    summary = ExpandSummary(ExpandStats())
    repeats = find_repeats(
        manifest, summary.expand, lambda url: _tally(url, ledger, uncertain, summary)
    )
    if len(repeats):
        summary = ExpandSummary(ExpandStats())
        for _ in _pending(manifest, ledger, uncertain, summary, warn, repeats):
            pass
    summary.repeats = repeats
    return summary


def journal_path(results: Path) -> Path:
    return results.with_name(results.name + ".journal")


def lock_path(results: Path) -> Path:
    return results.with_name(results.name + ".lock")


@contextmanager
def reading_locked(results: Path) -> Iterator[None]:
    """Hold the results' lock while reading them for a command that writes nothing (a dry
    run, reconcile's first look): while another run holds it, and appends rows and intents,
    LockedError (exit 75) rather than figures about files being written."""
    lock = RunLock(lock_path(results))
    lock.acquire(utc_now())
    try:
        yield
    finally:
        lock.release()


@dataclass
class Prepared:
    """A locked results file with its ledger and open intents, ready for the pool:
    ``intents`` this service's, ``kept`` another service's (left for that service)."""

    lock: RunLock
    ledger: Ledger
    intents: list[Intent]
    kept: list[Intent] = field(default_factory=list)

    @cached_property
    def uncertain(self) -> dict[str, str]:
        """Creates whose outcome is unknown, source to job name (read once: the ledger and the
        journal as the run found them): open intents with no row
        written since they were journalled (after them in the file: not by the clock), and
        unknown rows not since resolved. A row from
        before does not answer an intent: after a killed --resubmit, every video has last
        night's row, and the jobs the run made would be left without one. (An intent of an
        older journal, without its time, is answered by any ``submitted`` row, as before.)"""
        ledger = self.ledger
        found = {
            i.source: i.name
            for i in self.intents
            if not (
                i.source in ledger.answered if i.at or i.after >= 0 else ledger.is_done(i.source)
            )
        }
        found.update(ledger.unknown)
        return found

    @cached_property
    def _times(self) -> dict[str, str]:
        """When each of this service's intents was journalled (last sent), by source."""
        return {i.source: i.at for i in self.intents}

    def lookups(self, settle: float) -> Iterator[Lookup]:
        """A lookup for each uncertain create; an intent's not before ``settle`` seconds after
        it was journalled (a run killed a moment ago: the service may not list its last jobs
        yet, the reason a lost answer waits as long)."""
        now = time.time()
        for source, name in self.uncertain.items():
            at = epoch(self._times.get(source, ""))
            # never later than a settle from now: an intent from a clock ahead of this one (a
            # results file moved from another machine, a clock stepped back) must not stall
            yield Lookup(source, name, 0.0 if at is None else min(at, now) + settle)

    def inherited(self) -> list[Intent]:
        """The uncertain creates as the journal keeps them: an intent with its own time, an
        unknown row as of now (its lookup, and any create after it, come in this run)."""
        now = utc_now()
        return [Intent(s, n, at=self._times.get(s) or now) for s, n in self.uncertain.items()]


def prepare(config: RunConfig, warn: Callable[[str], None]) -> Prepared:
    """Take the lock, then read the ledger and the journal; raises LockedError (exit 75)."""
    lock = RunLock(lock_path(config.results))
    lock.acquire(utc_now())
    service = config.endpoint.tasks_url
    try:
        intents = read_intents(journal_path(config.results), warn)
        ours = service_of(service)
        mine = [i for i in intents if not i.service_url or service_of(i.service_url) == ours]
        kept = [i for i in intents if i.service_url and service_of(i.service_url) != ours]
        times = {i.source: i.at for i in mine if i.at}
        after = {i.source: (i.after, i.anchor) for i in mine if i.after >= 0}
        ledger = read_ledger(
            config.results, config.format, service, warn, intents=times, after=after
        )
    except BaseException:
        lock.release()
        raise
    if kept:
        services = sorted({i.service_url for i in kept})
        warn(
            f"{journal_path(config.results)}: {len(kept)} open intents of another service "
            f"({', '.join(services[:2])}) are left as they are, for that service's next "
            "submit to resolve"
        )
    return Prepared(lock, ledger, mine, kept)


async def submit(
    config: RunConfig,
    prepared: Prepared,
    reporter: ProgressReporter,
    warn: Callable[[str], None],
    repeats: Repeats | None = None,
) -> tuple[RunStats, ExpandSummary]:
    """Resolve what earlier runs left uncertain, then submit what is new (``repeats`` from
    :func:`count_work` saves a pass)."""
    manifest = config.manifest
    assert manifest is not None
    uncertain = prepared.uncertain
    summary = ExpandSummary(ExpandStats())
    ledger = None if config.resubmit else prepared.ledger

    async def passes(pool: Pool) -> None:
        if uncertain:
            reporter.log(
                "info",
                f"resolving {len(uncertain)} earlier creates whose outcome "
                "is unknown, by looking them up by name",
            )
            await _resolve(pool, prepared, config.pool.settle, reporter)
        # Held: a lookup that failed (the job may exist: never create it blind) and one that
        # found the job (its row is written; counting it as skipped too would count it
        # twice). A lookup that found no job leaves its source to be created. Run even when
        # stopping: the engine defers what it may not start, so every video is counted.
        await pool.run(plan(manifest, ledger, pool.held, summary, warn, repeats))

    stats = await _with_pool(config, prepared, reporter, warn, passes)
    stats.skipped = summary.skipped
    return stats, summary


async def reconcile(
    config: RunConfig,
    prepared: Prepared,
    reporter: ProgressReporter,
    warn: Callable[[str], None],
) -> RunStats:
    """Resolve unknown rows and open intents by lookup only; create nothing."""

    async def passes(pool: Pool) -> None:
        await _resolve(pool, prepared, config.pool.settle, reporter)

    return await _with_pool(config, prepared, reporter, warn, passes)


async def _resolve(
    pool: Pool, prepared: Prepared, settle: float, reporter: ProgressReporter
) -> None:
    """The lookups of earlier uncertain creates, saying so when they first wait out a
    killed run's last creates (the service may list them late)."""
    lookups = list(prepared.lookups(settle))
    wait = max((lookup.ready for lookup in lookups), default=0.0) - time.time()
    if wait >= 1:
        reporter.log(
            "info",
            f"waiting up to {wait:.0f} s before looking up the last creates of a run that "
            "was killed a moment ago (--settle: the service may list new jobs late)",
        )
    await pool.run(iter(lookups))


async def _with_pool(
    config: RunConfig,
    prepared: Prepared,
    reporter: ProgressReporter,
    warn: Callable[[str], None],
    passes: Callable[[Pool], Awaitable[None]],
) -> RunStats:
    """Open the results, the journal and a session; run the passes; close all in order.

    A write that fails (disk full, permissions) stops the run with StorageError: rows written
    so far stay, and the journal keeps the intents of calls that were under way.
    """
    try:
        writer = ResultsWriter(config.results, config.format, warn)
        journal = Journal(
            journal_path(config.results),
            durable=config.durable,
            inherited=prepared.inherited(),
            kept=prepared.kept,
            service_url=config.endpoint.tasks_url,
            before_checkpoint=writer.sync,
            position=writer.mark,
        )
        try:
            async with open_session(config.pool.concurrency) as session:
                client = VasClient(
                    session, config.endpoint, config.credentials, timeout=config.timeout
                )
                pool = Pool(
                    client,
                    writer,
                    reporter,
                    config.pool,
                    service_url=config.endpoint.tasks_url,
                    credentials=client.provider,
                    journal=journal,
                    recorded=prepared.ledger.recorded,
                )
                with fewer_collections():
                    async with anyio.create_task_group() as group:
                        await group.start(watch_signals, pool)
                        group.start_soon(_flush_rows, writer)
                        await passes(pool)
                        group.cancel_scope.cancel()
            return pool.stats
        finally:
            writer.sync()
            journal.close()
            writer.close()
    except* OSError as failed:
        raise StorageError(_storage_message(config, failed.exceptions[0])) from None


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The pool makes short-lived containers by the dozen per job, and at Python's default
    thresholds (every 700 allocations) the collector's scans of every live task, future and
    connection cost CPU. During a run: collect every ``GC_THRESHOLD`` allocations, and leave
    what already exists (imports, manifest, ledger) out of the scans. Kept on the benchmark's
    word (issue 13, pinned A/B): with journal syncs in a thread, 137 -> 129 us a create (5%)."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _storage_message(config: RunConfig, exc: BaseException) -> str:
    return (
        f"the run stopped: writing {config.results} or its journal failed ({innermost(exc)}); rows "
        "written so far are kept, and the next run resolves the calls that were under way"
    )


async def _flush_rows(writer: ResultsWriter) -> None:
    """Rows reach the file within ``FLUSH_EVERY`` seconds, for anyone watching it, even when
    the pool's batches come slowly."""
    while True:
        await anyio.sleep(FLUSH_EVERY)
        writer.flush()


async def watch_signals(
    pool: Pool,
    on_signal: Callable[[int], None] | None = None,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """SIGINT/SIGTERM, for every command that runs a pool: the first stops it gently (nothing
    new starts, calls in flight finish and are recorded), the second at once (calls cut off
    are resolved next time). ``on_signal`` hears the first, for the command's own stats.

    Start it with ``await group.start(watch_signals, ...)``: it reports started once the
    receiver is in place. Started with ``start_soon``, the work after it ran first, while
    the CLI's handler (which raises) was still there: a SIGTERM then was raised inside the
    work's task group, a traceback and exit 1 instead of a gentle stop."""
    with signals_received(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        async for signum in received:
            if pool.stats.signal is not None:
                pool.stop_now()
                continue
            pool.stats.signal = int(signum)
            if on_signal is not None:
                on_signal(int(signum))
            pool.stop(f"{signal.Signals(signum).name} received; a second one stops at once")
