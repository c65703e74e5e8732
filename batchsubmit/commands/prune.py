"""``batchsubmit prune``: delete this ledger's final, recorded, collected jobs (the quota)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..pool import PoolSettings
from ..progress import Log
from ..prune import PruneConfig, PruneRules, PruneStats, first_service, plan_prune, prune
from ..results import format_for, utc_now
from .common import Env, check_endpoint, ledger_credentials, real, warner


@dataclass(frozen=True)
class PruneResult:
    stats: PruneStats
    started: float
    results: Path
    dry_run: bool


def run(args: argparse.Namespace, log: Log, env: Env) -> PruneResult:
    started = time.time()
    results = real(args.results)
    fmt = format_for(results, args.format)
    base_url = check_endpoint(args.endpoint) if args.endpoint else None
    first = None if args.dry_run else first_service(results, fmt)
    credentials = None
    if first is not None:  # a dry run, or a ledger with no job, needs no credentials
        credentials = ledger_credentials(env, log, first, base_url)
    config = PruneConfig(
        results=results,
        format=fmt,
        credentials=credentials,
        pool=PoolSettings(concurrency=args.concurrency, rate=args.rate),
        rules=PruneRules(older_than=args.older_than, keep=args.keep),
        base_url=base_url,
        dry_run=args.dry_run,
        timeout=args.timeout,
    )
    warn = warner(log)
    say = lambda level, message: log.line(level, message)  # noqa: E731
    stats = plan_locked(config, warn) if args.dry_run else prune(config, warn, say)
    return PruneResult(stats, started, results, args.dry_run)


def plan_locked(config: PruneConfig, warn: Any) -> PruneStats:
    """A dry run reads under the lock too: a running `status` may be appending."""
    from ..journal import RunLock
    from ..runner import lock_path

    lock = RunLock(lock_path(config.results))
    lock.acquire(utc_now())
    try:
        return plan_prune(config, warn)
    finally:
        lock.release()
