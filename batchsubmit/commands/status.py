"""``batchsubmit status``: follow the jobs of a results file to their end, write the report."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ..errors import UsageError
from ..pool import PoolSettings
from ..progress import Log
from ..results import Format, format_for
from .common import Env, check_endpoint, ledger_credentials, real, warner


@dataclass(frozen=True)
class StatusResult:
    """The follow's stats and the exit code follow.exit_code judged from them."""

    stats: Any
    judged: int
    started: float


def follow_config(
    args: argparse.Namespace,
    results: Path,
    fmt: Format,
    credentials: Any,
    **extra: Any,
) -> Any:
    from ..follow import FollowConfig, report_format

    if args.report is not None:
        report_format(args.report)  # a bad extension is exit 2 before any request
    always = extra.pop("always_follow", False)
    return FollowConfig(
        results=results,
        format=fmt,
        credentials=credentials,
        pool=PoolSettings(concurrency=args.concurrency, rate=args.rate),
        follow=args.follow or always,
        interval=args.interval,
        report=real(args.report) if args.report is not None else None,
        collect=args.collect,
        stuck_after=args.stuck_after,
        timeout=args.timeout,
        **extra,
    )


def run(args: argparse.Namespace, log: Log, env: Env) -> StatusResult:
    from ..follow import exit_code, follow, iter_ledger, lock_results, prepare_follow

    started = time.time()
    warn = warner(log)
    results = real(args.results)
    fmt = format_for(results, args.format)
    if not results.is_file():
        raise UsageError(f"{results}: no such results file")
    endpoint = check_endpoint(args.endpoint) if args.endpoint else None
    follow_config(args, results, fmt, None)  # options first: exit 2 before anything else
    # The lock before reading: a submit appending to the ledger now would make this run
    # follow half of tonight's jobs (exit 75 instead; README "Following jobs").
    lock = lock_results(results)
    try:
        first = next(
            (r.service_url for r in iter_ledger(results, fmt, lambda _m: None) if r.job_id), None
        )
        credentials = None
        if first is not None:  # nothing to follow needs no credentials
            credentials = ledger_credentials(env, log, first, endpoint)
        config = follow_config(
            args, results, fmt, credentials, endpoint=endpoint, deadline=args.deadline
        )
        follower = prepare_follow(config, warn)
        reporter = env.reporter(log, follower.stats.followed)
        try:
            stats = anyio.run(follow, follower, reporter)
        finally:
            reporter.close()
    finally:
        lock.release()
    return StatusResult(stats, exit_code(stats), started)
