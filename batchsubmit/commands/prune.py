"""``batchsubmit prune``: delete this ledger's final, recorded, collected jobs (the quota)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..progress import Log
from ..prune import (
    DEFAULT_OLDER_THAN,
    PruneConfig,
    PruneRules,
    PruneStats,
    first_service,
    plan_prune,
    prune,
)
from ..results import Format, format_for
from ..runner import reading_locked
from .common import (
    Env,
    PoolOptions,
    check_endpoint,
    check_outputs_apart,
    ledger_credentials,
    opening_calls,
    real,
    warner,
)


@dataclass(frozen=True, kw_only=True)
class PruneOptions:
    """``batchsubmit prune``: the results file, its format (None: from the extension), the
    endpoint to use instead of the rows' (None: the rows'), which final jobs go (recorded
    final at least ``older_than`` seconds ago, the newest ``keep`` kept), and whether this is
    a dry run that sends nothing."""

    results: Path
    format: Format | None = None
    endpoint: str | None = None
    older_than: float = DEFAULT_OLDER_THAN
    keep: int = 0
    dry_run: bool = False
    pool: PoolOptions = field(default_factory=PoolOptions)
    # --summary and --metrics (None: not asked for), checked apart from the results file
    written: tuple[tuple[str, Path | None], ...] = ()


@dataclass(frozen=True)
class PruneResult:
    stats: PruneStats
    started: float
    results: Path
    dry_run: bool


def run(options: PruneOptions, log: Log, env: Env) -> PruneResult:
    started = time.time()
    results = real(options.results)
    check_outputs_apart(results, options.written)
    fmt = format_for(results, options.format)
    base_url = check_endpoint(options.endpoint) if options.endpoint else None
    if not results.exists():  # the first night: nothing to prune, and no lock file left
        _check_directory(options.results, results)
        return PruneResult(PruneStats(), started, results, options.dry_run)
    first = None if options.dry_run else first_service(results, fmt)
    config = PruneConfig(
        results=results,
        format=fmt,
        credentials=None,
        pool=options.pool.settings(),
        rules=PruneRules(older_than=options.older_than, keep=options.keep),
        base_url=base_url,
        dry_run=options.dry_run,
        timeout=options.pool.timeout,
    )
    warn = warner(log)
    # A dry run, a ledger with no job, or nothing to delete needs no credentials: a nightly
    # prune with nothing to do succeeds on a machine whose credentials are for submit only.
    # This plan only says whether to fetch them: its lock is let go for the fetch (an IAM
    # login, with retries), and prune() reads the record again under its own lock, on
    # purpose (see _prune_locked).
    if first is not None and _has_work(plan_locked(config, lambda _message: None)):
        credentials = ledger_credentials(env, log, first, base_url, options.pool)
        config = replace(config, credentials=credentials)
    say = lambda level, message: log.line(level, message)  # noqa: E731
    stats = plan_locked(config, warn) if options.dry_run else prune(config, warn, say)
    stats.opening_calls = opening_calls(config.credentials)
    return PruneResult(stats, started, results, options.dry_run)


def _check_directory(typed: Path, results: Path) -> None:
    """A missing results file is the first night only where a submit could write it: with no
    directory either, it is a typo that would read "nothing to prune" (silent under -q) on
    every night, so it is a usage error."""
    if not results.parent.is_dir():
        raise UsageError(
            f"results file {typed}: the directory {results.parent} does not exist, so no run "
            "has written this results file; check the path (a results file not written yet "
            "in an existing directory is nothing to prune)"
        )


def _has_work(plan: PruneStats) -> bool:
    return plan.selected > 0 or plan.resumed > 0


def plan_locked(config: PruneConfig, warn: Any) -> PruneStats:
    """A dry run reads under the lock too: a running `status` may be appending."""
    with reading_locked(config.results):
        return plan_prune(config, warn)
