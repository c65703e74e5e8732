"""``batchsubmit status``: follow the jobs of a results file to their end, write the report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.loop import run as run_loop
from ..errors import UsageError
from ..follow import DEFAULT_INTERVAL, DEFAULT_STUCK_AFTER
from ..progress import Log
from ..results import Format, format_for
from .common import (
    Env,
    PoolOptions,
    check_endpoint,
    check_output_directory,
    check_output_file,
    check_outputs_apart,
    ledger_credentials,
    opening_calls,
    real,
    warner,
)


@dataclass(frozen=True, kw_only=True)
class FollowOptions:
    """How jobs are followed (status, and submit --follow): pass again every ``interval``
    seconds until every job is final (``follow``), where the report goes (None: beside the
    results file), where hosting results are saved (None: not saved), and when a job counts
    as stuck."""

    follow: bool = False
    interval: float = DEFAULT_INTERVAL
    report: Path | None = None
    collect: Path | None = None
    stuck_after: float = DEFAULT_STUCK_AFTER


@dataclass(frozen=True, kw_only=True)
class StatusOptions:
    """``batchsubmit status``: the results file, its format (None: from the extension), the
    endpoint to use instead of the rows' (None: the rows'), and --deadline (None: none)."""

    results: Path
    format: Format | None = None
    endpoint: str | None = None
    deadline: float | None = None
    follow: FollowOptions = field(default_factory=FollowOptions)
    pool: PoolOptions = field(default_factory=PoolOptions)
    # --summary and --metrics (None: not asked for), checked apart from the results file
    written: tuple[tuple[str, Path | None], ...] = ()


@dataclass(frozen=True)
class StatusResult:
    """The follow's stats and the exit code follow.exit_code judged from them."""

    stats: Any
    judged: int
    started: float


def check_follow_options(options: FollowOptions) -> None:
    """--report and --collect, before any request: they are written only after the jobs were
    created and followed, too late to learn of a typo."""
    from ..follow import report_format

    if options.report is not None:
        report_format(options.report)
        check_output_file(options.report, "--report")
    if options.collect is not None:
        check_output_directory(options.collect, "--collect")


def follow_config(
    options: FollowOptions,
    pool: PoolOptions,
    results: Path,
    fmt: Format,
    credentials: Any,
    **extra: Any,
) -> Any:
    from ..follow import FollowConfig

    check_follow_options(options)
    always = extra.pop("always_follow", False)
    return FollowConfig(
        results=results,
        format=fmt,
        credentials=credentials,
        pool=pool.settings(),
        follow=options.follow or always,
        interval=options.interval,
        report=options.report.resolve() if options.report is not None else None,
        collect=options.collect,
        stuck_after=options.stuck_after,
        timeout=pool.timeout,
        **extra,
    )


def run(options: StatusOptions, log: Log, env: Env) -> StatusResult:
    from ..follow import exit_code, follow, iter_ledger, lock_results, prepare_follow

    started = time.time()
    warn = warner(log)
    results = real(options.results)
    check_outputs_apart(results, (*options.written, ("--report", options.follow.report)))
    fmt = format_for(results, options.format)
    if not results.is_file():
        raise UsageError(f"{results}: no such results file")
    endpoint = check_endpoint(options.endpoint) if options.endpoint else None
    # The options first: exit 2 before anything else.
    follow_config(options.follow, options.pool, results, fmt, None)
    # The lock before reading: a submit appending to the ledger now would make this run
    # follow half of tonight's jobs (exit 75 instead; README "Following jobs").
    lock = lock_results(results)
    try:
        first = next(
            (r.service_url for r in iter_ledger(results, fmt, lambda _m: None) if r.job_id), None
        )
        credentials = None
        if first is not None:  # nothing to follow needs no credentials
            credentials = ledger_credentials(env, log, first, endpoint, options.pool)
        config = follow_config(
            options.follow,
            options.pool,
            results,
            fmt,
            credentials,
            endpoint=endpoint,
            deadline=options.deadline,
        )
        follower = prepare_follow(config, warn)
        reporter = env.reporter(log, follower.stats.followed, succeeded="succeeded")
        try:
            stats = run_loop(follow, follower, reporter)
        finally:
            reporter.close()
        stats.opening_calls = opening_calls(credentials)
    finally:
        lock.release()
    return StatusResult(stats, exit_code(stats), started)
