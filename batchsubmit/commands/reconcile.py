"""``batchsubmit reconcile``: resolve the unknown outcomes of a results file; create nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..client import Endpoint
from ..engine.loop import run as run_loop
from ..errors import UsageError
from ..journal import journal_services
from ..pool import RunStats
from ..progress import Log
from ..results import Format, format_for, iter_rows, read_ledger
from ..runner import ExpandSummary, journal_path, prepare, reading_locked, reconcile
from ..vas import service_identity
from .common import (
    Env,
    RunOptions,
    check_endpoint,
    check_outputs_apart,
    config,
    credentials,
    opening_calls,
    real,
    source_name,
    warner,
)


@dataclass(frozen=True, kw_only=True)
class ReconcileOptions:
    """``batchsubmit reconcile``: the results file, its format (None: from the extension), the
    endpoint to use instead of the rows' (None: the rows'), and how the lookups run."""

    results: Path
    format: Format | None = None
    endpoint: str | None = None
    run: RunOptions = field(default_factory=RunOptions)
    # --summary and --metrics (None: not asked for), checked apart from the results file
    written: tuple[tuple[str, Path | None], ...] = ()


@dataclass(frozen=True)
class RunResult:
    """A submit or reconcile run: its stats (None: nothing to do), for the summary and metrics."""

    results: Path
    started: float
    stats: RunStats | None
    expanded: ExpandSummary | None = None
    credentials: str | None = None


def run(options: ReconcileOptions, log: Log, env: Env) -> RunResult:
    started = time.time()
    warn = warner(log)
    override = check_endpoint(options.endpoint) if options.endpoint else None  # even unused
    results = real(options.results)
    check_outputs_apart(results, options.written)
    fmt = format_for(results, options.format)
    if not results.is_file():
        raise UsageError(f"{results}: no such results file")
    with reading_locked(results):  # never "nothing to reconcile" about files being written
        endpoint = endpoint_from_results(results, fmt, override)  # (prepare() locks again)
    if endpoint is None:
        # Nothing to do is success: a nightly `reconcile` must not raise an alarm every night.
        return RunResult(results, started, None)
    provider = credentials(
        env,
        log,
        project_id=endpoint.project_id,
        endpoint=endpoint.base_url,
        pool=options.run.pool,
    )
    run_config = config(options.run, None, results, fmt, endpoint, provider)
    prepared = prepare(run_config, warn)
    try:
        uncertain = prepared.uncertain
        log.line("info", f"{len(uncertain)} outcomes to resolve in {results}")
        reporter = env.reporter(log, len(uncertain))
        try:
            stats = run_loop(reconcile, run_config, prepared, reporter, warn)
        finally:
            reporter.close()
        stats.opening_calls = opening_calls(provider)
    finally:
        prepared.lock.release()
    return RunResult(results, started, stats, None, source_name(run_config))


def endpoint_from_results(results: Path, fmt: Format, override: str | None) -> Endpoint | None:
    """The service the open unknown rows and open intents belong to, from their
    ``service_url``; None when there are none (nothing to reconcile). An unknown row a later
    row resolved (a lookup found the job, or found none) is not open: the ledger reader says
    which are (``Ledger.unknown``), so a second reconcile has nothing to do and needs no
    credentials. Rows of one project and service reached through several endpoints are one
    service (the newest endpoint is used)."""
    rows = [row[3] for row in iter_rows(results, fmt) if row[2] == "unknown"]
    intents = sorted(journal_services(journal_path(results)))
    services: dict[tuple[str, str], str] = {}
    named: dict[tuple[str, str], str] = {}  # a row's URL for each service, to read its ledger
    for url in rows + intents:
        try:
            identity = service_identity(url)
        except ValueError:
            raise UsageError(f"{results}: cannot read the service from {url!r}") from None
        key = (identity.project_id, identity.service_name)
        services.pop(key, None)
        services[key] = f"{identity.endpoint}"
        named.setdefault(key, url)
    journaled = {_key(url) for url in intents}
    for key in [k for k in services if k not in journaled]:
        if not read_ledger(results, fmt, named[key], lambda _m: None).unknown:
            del services[key]  # every unknown row of it was resolved since
    if not services:
        return None
    if len(services) > 1:
        names = ", ".join(f"{p}/{n}" for p, n in sorted(services))
        raise UsageError(
            f"{results}: unknown outcomes for several services ({names}); run each service's "
            "`batchsubmit submit` with this results file: each resolves its own first"
        )
    (project_id, service_name), base = services.popitem()
    if override:
        base = check_endpoint(override)
    return Endpoint(base_url=base, project_id=project_id, service_name=service_name)


def _key(url: str) -> tuple[str, str]:
    identity = service_identity(url)
    return identity.project_id, identity.service_name
