"""``batchsubmit submit``: the nightly command, with its dry run, the embedded emulator,
--make-room (the saved-jobs quota) and --follow after the creates."""

from __future__ import annotations

import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..auth import Credentials
from ..client import Endpoint
from ..engine.loop import run as run_loop
from ..errors import FatalApiError, UsageError
from ..manifest import Manifest, load_manifest
from ..outcomes import QUOTA_FULL
from ..pool import RunStats
from ..progress import Log
from ..prune import DEFAULT_QUOTA, PruneConfig, Room, make_room
from ..render import expand_line, spec_lines
from ..results import Format, format_for, read_ledger
from ..runner import (
    ExpandSummary,
    RunConfig,
    count_work,
    plan,
    prepare,
    reading_locked,
    submit,
)
from ..sources import ExpandStats, spool_directory
from .common import (
    Env,
    RunOptions,
    check_endpoint,
    check_outputs_apart,
    config,
    credentials,
    default_results,
    endpoint,
    live,
    log_plan,
    opening_calls,
    real,
    source_name,
    spooled,
    warn_unknown_region,
    warner,
)
from .reconcile import RunResult
from .status import FollowOptions, check_follow_options, follow_config


@dataclass(frozen=True, kw_only=True)
class SubmitOptions:
    """``batchsubmit submit``: the manifest; the results file (None: beside the manifest) and
    its format (None: from the extension, else csv); the endpoints to use instead of the
    manifest's (None: the manifest's); a dry run, the built-in emulator; the run's settings;
    --make-room under ``quota``; and the follow after the creates (``follow.follow``)."""

    manifest: Path
    results: Path | None = None
    format: Format | None = None
    endpoint: str | None = None
    obs_endpoint: str | None = None
    dry_run: bool = False
    emulator: bool = False
    run: RunOptions = field(default_factory=RunOptions)
    make_room: bool = False
    quota: int = DEFAULT_QUOTA
    follow: FollowOptions = field(default_factory=FollowOptions)
    # --summary and --metrics (None: not asked for), checked apart from the results file
    written: tuple[tuple[str, Path | None], ...] = ()


@dataclass(frozen=True)
class DryRun:
    """What a dry run planned (the specs are already on stdout)."""

    summary: ExpandSummary


@dataclass(frozen=True)
class SubmitResult:
    """The run, make-room's figures and the follow's stats when asked for, and what to say
    after the report (the embedded emulator's jobs vanish with it)."""

    run: RunResult
    stats: RunStats
    room: Room | None
    followed: Any
    epilogue: str | None = None


def run(options: SubmitOptions, log: Log, env: Env) -> SubmitResult | DryRun:
    started = time.time()
    # Both endpoints now, whether or not this run gets to use them: a typo is exit 2 always.
    options = replace(
        options,
        endpoint=check_endpoint(options.endpoint) if options.endpoint else None,
        obs_endpoint=check_endpoint(options.obs_endpoint, "--obs-endpoint")
        if options.obs_endpoint
        else None,
    )
    if options.emulator and options.endpoint:
        raise UsageError(
            f"--emulator and --endpoint {options.endpoint}: the built-in emulator has its own "
            "endpoint; give one of the two"
        )
    manifest = load_manifest(options.manifest)
    fmt: Format = (
        format_for(options.results, options.format)
        if options.results
        else (options.format or "csv")
    )
    results = real(
        options.results or default_results(manifest.path, options.emulator, fmt), "--results"
    )
    check_follow_options(options.follow)  # written after the creates: checked before them
    check_outputs_apart(
        results,
        (*options.written, ("--report", options.follow.report)),
        [("the manifest", manifest.path)]
        + [("the listing", s.listing) for s in manifest.sources if s.listing is not None],
    )
    if options.emulator and live(manifest):
        raise UsageError(
            f"{manifest.path}: live OBS prefixes cannot be listed with --emulator "
            "(it has no OBS); use a listing file, or run against real OBS"
        )
    if options.dry_run:
        return dry_run(options, log, env, manifest, results, fmt)
    if options.emulator:
        emulated: SubmitResult = run_loop(
            submit_emulated, options, log, env, manifest, results, fmt, started
        )
        return emulated
    provider = credentials(
        env,
        log,
        project_id=manifest.service.project_id,
        endpoint=manifest.service.endpoint,
        pool=options.run.pool,
    )
    found = endpoint(options.endpoint, manifest, env, provider)
    warn_unknown_region(log, found)
    run_config = config(options.run, manifest, results, fmt, found, provider)
    done: SubmitResult = run_loop(run_submit, run_config, options, log, env, started)
    return done


async def submit_emulated(
    options: SubmitOptions,
    log: Log,
    env: Env,
    manifest: Manifest,
    results: Path,
    fmt: Format,
    started: float,
) -> SubmitResult:
    from ..emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Emulator, Faults

    emulator = Emulator(Faults())
    async with emulator.serve() as url:
        log.line(
            "warning",
            f"EMULATOR: submitting to the built-in VAS emulator at {url}; "
            "no real job is created and nothing leaves this machine",
        )
        emulated = Endpoint(
            base_url=url, project_id=EMULATOR_PROJECT_ID, service_name=manifest.service.name
        )
        run_config = config(
            options.run, manifest, results, fmt, emulated, Credentials(EMULATOR_AK, EMULATOR_SK)
        )
        done = await run_submit(run_config, options, log, env, started)
        jobs = len(emulator.tasks)
        epilogue = f"EMULATOR: {jobs} jobs exist on the emulator; they vanish with it"
        return replace(done, epilogue=epilogue)


async def run_submit(
    config: RunConfig, options: SubmitOptions, log: Log, env: Env, started: float
) -> SubmitResult:
    manifest = config.manifest
    assert manifest is not None
    warn = warner(log)
    prepared = prepare(config, warn)
    # Only for live prefixes: a nightly run must not leave an empty directory in /tmp every
    # time (one SIGKILL leaves behind is removed by the next run).
    spool = spool_directory() if live(manifest) else None
    listing_calls = 0
    try:
        if spool is not None:
            listed = await spooled(
                manifest,
                options.obs_endpoint,
                config.credentials,
                Path(spool.name),
                log,
                config.pool,
                config.timeout,
            )
            manifest, listing_calls = listed.manifest, listed.calls
            config = replace(config, manifest=manifest)
        uncertain = prepared.uncertain
        ledger = None if config.resubmit else prepared.ledger
        counted = count_work(manifest, ledger, uncertain, lambda _m: None)
        log_plan(log, counted, len(uncertain), config, prepared.ledger)
        room = None
        if options.make_room:
            room, config = await _make_room(config, options.quota, log, counted)
        failed = None if room is None else room.error  # the summary and metrics still written
        if failed is not None:
            stats, summary, followed = _failed_in_room(failed, counted), counted, None
        elif room is not None and room.prune.signal is not None:
            stats, summary, followed = _stopped_in_room(room, counted), counted, None
        else:
            planned = counted.planned
            if config.pool.max_jobs is not None:
                planned = min(planned, config.pool.max_jobs)
            reporter = env.reporter(log, planned + len(uncertain))
            try:
                stats, summary = await submit(config, prepared, reporter, warn, counted.repeats)
            finally:
                reporter.close()
            followed = await _follow_after_submit(config, options, log, env, stats, started)
    finally:
        prepared.lock.release()
        if spool is not None:
            spool.cleanup()
    if room is not None:
        _room_stats(stats, room)
    stats.opening_calls = opening_calls(config.credentials) + listing_calls
    done = RunResult(config.results, started, stats, summary, source_name(config))
    return SubmitResult(done, stats, room, followed)


def dry_run(
    options: SubmitOptions, log: Log, env: Env, manifest: Manifest, results: Path, fmt: Format
) -> DryRun:
    warn = warner(log)
    if options.emulator:
        from ..emulator import EMULATOR_PROJECT_ID

        target = Endpoint(
            base_url="http://127.0.0.1:0",
            project_id=EMULATOR_PROJECT_ID,
            service_name=manifest.service.name,
        )
    else:
        target = endpoint(options.endpoint, manifest, env)
        warn_unknown_region(log, target)
    ledger = None
    if not options.run.resubmit:
        # tonight's run may be appending: exit 75, not a guess (no file yet: no lock file)
        with reading_locked(results) if results.exists() else nullcontext():
            ledger = read_ledger(results, fmt, target.tasks_url, warn)
    summary = ExpandSummary(ExpandStats())
    with ExitStack() as stack:
        if live(manifest):
            spool = stack.enter_context(spool_directory())
            pool = options.run.pool
            listed = run_loop(
                spooled,
                manifest,
                options.obs_endpoint,
                credentials(env, log, pool=pool),
                Path(spool),
                log,
                pool.settings(),
                pool.timeout,
            )
            manifest = listed.manifest
        env.write(spec_lines(plan(manifest, ledger, (), summary, warn), target.tasks_url))
    log.line("info", expand_line(summary.expand))
    return DryRun(summary)


async def _make_room(
    config: RunConfig, quota: int, log: Log, counted: ExpandSummary
) -> tuple[Room, RunConfig]:
    """--make-room: prune until tonight's creates fit under --quota, else cap them."""
    # Lookups of earlier uncertain creates may end in creates too: count them as planned.
    planned = counted.planned + counted.uncertain
    if config.pool.max_jobs is not None:
        planned = min(planned, config.pool.max_jobs)
    prune_config = PruneConfig(
        results=config.results,
        format=config.format,
        credentials=config.credentials,
        pool=config.pool,
        durable=config.durable,
        timeout=config.timeout,
    )
    say = lambda level, message: log.line(level, message)  # noqa: E731
    room = await make_room(
        prune_config,
        planned,
        quota,
        warner(log),
        say,
        service_url=config.endpoint.tasks_url,
    )
    if room.prune.signal is not None or room.error is not None:  # create nothing tonight
        return room, config
    # IVA.0012 mid-run anyway (other tools share the quota): defer the rest, not fatal.
    pool = replace(config.pool, quota_defers=True)
    if room.deferred:
        pool = replace(pool, max_jobs=room.room)
    return room, replace(config, pool=pool)


def _stopped_in_room(room: Room, counted: ExpandSummary) -> RunStats:
    """A signal while make-room pruned: nothing was created, every planned create waits for
    the next night, and the run ends with the signal's exit code like any stopped run (its
    summary and metrics written: a nightly script must not keep last night's exit 0)."""
    stopped = "make-room was stopped by a signal; nothing was submitted"
    return RunStats(
        skipped=counted.skipped,
        deferred=counted.planned,
        calls=room.prune.calls,
        retries=room.prune.retries,
        stop_reason=stopped,
        deferred_reason=stopped,
        signal=room.prune.signal,
        elapsed=room.prune.elapsed,
    )


def _failed_in_room(error: FatalApiError, counted: ExpandSummary) -> RunStats:
    """make-room could not tell whether tonight's creates fit (the count unreadable, the
    endpoint unreachable, a prune that failed): nothing was created, every planned create
    waits, and the run ends as fatal (exit 3) with its summary and metrics written."""
    stats = RunStats(skipped=counted.skipped, deferred=counted.planned)
    stats.fail(error)
    stats.stop_reason = stats.deferred_reason = f"{error}; nothing was submitted"
    return stats


def _room_stats(stats: RunStats, room: Room) -> None:
    """The quota, not --max-jobs, is why the rest waits for the next night. A quota filled
    mid-run (another service's jobs, which make-room's count does not see) deferred the rest
    for the quota too: ``batchsubmit_quota_deferred`` counts them."""
    if stats.stop_reason == QUOTA_FULL:
        room.deferred = max(room.deferred, stats.deferred)
        room.reason = stats.deferred_reason  # the quota filled during the run, not before
    if not room.deferred:
        return
    stats.deferred_reason = stats.deferred_reason or room.reason
    if stats.stop_reason and stats.stop_reason.startswith("--max-jobs"):
        stats.stop_reason = room.reason


async def _follow_after_submit(
    config: RunConfig,
    options: SubmitOptions,
    log: Log,
    env: Env,
    stats: RunStats,
    started: float,
) -> Any:
    """``submit --follow``: under the submit's lock, follow every job of the ledger; the
    submit's --deadline bounds the whole command. None when there is nothing to follow for."""
    from ..follow import follow, prepare_follow

    if not options.follow.follow:
        return None
    if stats.signal is not None or stats.fatal is not None:
        log.line("warning", "not following the jobs: the submit did not end normally")
        return None
    deadline = None
    if options.run.deadline is not None:
        deadline = max(0.0, options.run.deadline - (time.time() - started))
    settings = follow_config(
        options.follow,
        options.run.pool,
        config.results,
        config.format,
        config.credentials,
        always_follow=True,
        deadline=deadline,
        only_service=config.endpoint.tasks_url,
        durable=config.durable,
    )
    follower = prepare_follow(settings, warner(log))
    reporter = env.reporter(log, follower.stats.followed, succeeded="succeeded")
    try:
        return await follow(follower, reporter)
    finally:
        reporter.close()
