"""What several commands share: the process environment as cli.py hands it in, the pool and
run settings, endpoints, credentials, the run's config and the plan lines logged before the
first request."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from ..auth import Credentials
from ..client import DEFAULT_TIMEOUT, Endpoint, open_session
from ..credentials import (
    Choice,
    CredentialProvider,
    Route,
    find_source,
    open_provider,
    region_of,
)
from ..engine.loop import run as run_loop
from ..errors import CredentialError, UsageError
from ..manifest import Manifest
from ..obs import Spooled, spool_prefixes
from ..pool import PoolSettings, RunStats, new_gate
from ..progress import Log, ProgressReporter, make_reporter
from ..render import expand_line
from ..results import Format, Ledger
from ..runner import ExpandSummary, RunConfig
from ..vas import BASE_URL, REGIONS, hide_password, normalise_base_url

DEFAULT_CONCURRENCY = 8
DEFAULT_RATE = 10.0
DEFAULT_SETTLE = PoolSettings.settle
DEFAULT_LOOKUPS = PoolSettings.lookup_tries


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """How hard a command may call the service: calls in flight, calls started per second
    (0: no limit) and the seconds one call may take in all."""

    concurrency: int = DEFAULT_CONCURRENCY
    rate: float = DEFAULT_RATE
    timeout: float = DEFAULT_TIMEOUT

    def settings(self) -> PoolSettings:
        """The pool (or gate) settings these give: the cap and the rate, the rest default."""
        return PoolSettings(concurrency=self.concurrency, rate=self.rate)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """A submit's or reconcile's settings beyond the pool: how a lost create is looked up, the
    run's limits (None: none), and whether the ledger is ignored."""

    pool: PoolOptions = field(default_factory=PoolOptions)
    settle: float = DEFAULT_SETTLE
    lookups: int = DEFAULT_LOOKUPS
    max_jobs: int | None = None
    max_failures: int | None = None
    deadline: float | None = None
    resubmit: bool = False


@dataclass(frozen=True)
class Env:
    """What a command may take from the process, read by cli.py and handed in: the
    environment variables, the home directory (looked up only when needed), stderr for the
    progress bar, stdout (looked up when written), and the proxy for a URL (from the
    *_proxy variables)."""

    environ: Mapping[str, str]
    home: Callable[[], Path]
    stderr: TextIO
    stdout: Callable[[], BinaryIO]
    print: Callable[[str], None]
    proxy_for: Callable[[str], str | None]

    def write(self, chunks: Iterable[bytes]) -> None:
        out = self.stdout()
        for chunk in chunks:
            out.write(chunk)
        out.flush()

    def reporter(
        self, log: Log, total: int | None, *, succeeded: str = "submitted"
    ) -> ProgressReporter:
        """``succeeded``: what the progress line calls a success (status: "succeeded")."""
        return make_reporter(
            log, total, self.stderr, bar=is_terminal(self.stderr), succeeded=succeeded
        )


def warner(log: Log) -> Any:
    return lambda message: log.line("warning", message)


def is_terminal(stream: TextIO) -> bool:
    """A terminal with a size: a 0x0 one (some cron wrappers, `script` without a size) shows
    no bar, so it gets progress lines instead."""
    try:
        if not stream.isatty():
            return False
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return size.columns > 0


def _kind(mode: int) -> str | None:
    """What a path that is not a regular file is, in words (None: a regular file)."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def _writable_directory(directory: Path, path: Path, option: str) -> None:
    if not directory.is_dir():
        raise UsageError(f"{option} {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the directory {directory} is not writable")


def check_output_file(path: Path, option: str) -> None:
    """--summary, --metrics, --report: written (replaced atomically, through a temporary file
    beside it) only when the run ends, so checked before it starts: a typo must not cost a
    night's report after the jobs were created."""
    try:
        mode: int | None = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot use it: {exc.strerror}") from None
    kind = None if mode is None else _kind(mode)
    if kind is not None:
        raise UsageError(f"{option} {path}: is {kind}; give the path of a file to write")
    _writable_directory(path.absolute().parent, path, option)


# Files beside the results file that share its name: each is the run's own state.
_BESIDE_RESULTS = (
    (".journal", "its write-ahead journal"),
    (".journal.tmp", "its journal's checkpoint"),
    (".lock", "its lock file"),
    (".follow.jsonl", "its follow record"),
    (".prune", "its prune journal"),
)


def check_outputs_apart(
    results: Path,
    written: Iterable[tuple[str, Path | None]],
    inputs: Iterable[tuple[str, Path]] = (),
) -> None:
    """--summary, --metrics and --report are replaced whole when the command ends: one that
    names the results file (the ledger), a file beside it, the manifest or a listing (in
    any spelling: a symlink, ./x) would destroy it after the jobs were created. Refused before
    any request, as is one path given to two of them."""
    resolved = results.resolve()
    taken: dict[Path, str] = {resolved: f"the results file {results}"}
    for suffix, what in _BESIDE_RESULTS:
        taken[resolved.with_name(resolved.name + suffix)] = f"{what} ({results}{suffix})"
    for what, path in inputs:
        try:
            taken.setdefault(path.resolve(), f"{what} {path}")
        except (OSError, RuntimeError):
            continue  # an input that cannot be resolved is said so where it is read
    for option, output in written:
        if output is None:
            continue
        try:
            target = output.resolve()
        except (OSError, RuntimeError):  # a symlink loop: RuntimeError before Python 3.13
            # (status checks --report here first: a loop was a traceback, not exit 2)
            raise UsageError(f"{option} {output}: cannot use it: a symbolic link loop") from None
        if target in taken:
            raise UsageError(
                f"{option} {output}: is {taken[target]}; it would be overwritten when the run "
                "ends; give another path"
            )
        taken[target] = f"also the path of {option}"


def check_output_directory(path: Path, option: str = "--collect") -> None:
    """--collect: a directory, or one that can be created (the nearest existing ancestor is a
    writable directory), checked before the run starts."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            raise UsageError(f"{option} {path}: {existing} is a dangling symlink")
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the directory {existing} is not writable")


def real(path: Path, option: str = "results file") -> Path:
    """The results file itself, not the spelling typed: a symlink or another path to the same
    file must share its lock and journal, or two runs could submit the same videos at once.
    A file with a second hard link is refused: the lock and the journal are named after one
    of its names, and a run through the other link would see neither. Anything but a regular
    file (or none yet) is refused too: a device takes rows and keeps none, a FIFO blocks the
    ledger read forever, and the lock and journal would go beside it (into /dev). A symlink
    loop names no file at all."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: RuntimeError before Python 3.13
        raise UsageError(
            f"{option} {path}: is a symbolic link loop; the results file must be a regular "
            "file (or not exist yet)"
        ) from None
    try:
        found = resolved.stat()
    except OSError:
        return resolved  # not there yet (or unreadable: reading it says why)
    kind = _kind(found.st_mode)
    if kind is not None:
        raise UsageError(
            f"{option} {path}: is {kind}; the results file must be a regular file "
            "(or not exist yet)"
        )
    links = found.st_nlink
    if links > 1:
        raise UsageError(
            f"{resolved}: the results file has {links} hard links; its lock and journal are "
            "kept beside one name, so two runs through two links could create the same jobs "
            "twice. Keep one name (a symlink is fine) and remove the other links"
        )
    return resolved


def default_results(manifest: Path, emulated: bool, fmt: Format) -> Path:
    """Beside the manifest, so cron's working directory does not matter."""
    kind = ".emulator" if emulated else ""
    return manifest.with_name(f"{manifest.stem}{kind}.results.{fmt}")


def check_endpoint(url: str, option: str = "--endpoint") -> str:
    """An http(s) base URL without a path, by the manifest's rule (vas.BASE_URL, then
    vas.normalise_base_url: a port in range, the IPv6 brackets closed), normalised the same
    way (scheme and host in lower case, the default port dropped): the same service must
    always be spelled the same way, and an endpoint the manifest refuses is refused here."""
    problem = "give an http(s) URL without a path, query or user name"
    if BASE_URL.fullmatch(url.strip()):
        try:
            return normalise_base_url(url)
        except ValueError as exc:
            problem = f"{str(exc).lower()}; {problem}"
    shown = hide_password(url)
    raise UsageError(
        f"{option} {shown!r}: {problem}, e.g. https://iva.cn-north-4.myhuaweicloud.com"
    )


def endpoint(
    override: str | None,
    manifest: Manifest,
    env: Env,
    credentials: CredentialProvider | None = None,
) -> Endpoint:
    """``override`` is --endpoint (None: the manifest's). ``credentials`` know the project id
    (given or looked up); without them it must be given."""
    if credentials is not None:
        project_id = credentials.project_id
        if not project_id:
            raise CredentialError(
                "no project id: set service.project_id in the manifest or "
                "HUAWEICLOUD_SDK_PROJECT_ID (a custom endpoint has no region to look it up by)"
            )
    else:
        project_id = offline_project_id(manifest, env)
    base = check_endpoint(override) if override else manifest.service.endpoint
    return Endpoint(base_url=base, project_id=project_id, service_name=manifest.service.name)


_REGION_HOST = re.compile(r"https?://iva\.([a-z0-9-]+)\.myhuaweicloud\.com(?::443)?", re.I)


def warn_unknown_region(log: Log, endpoint: Endpoint) -> None:
    """A region name outside the SDK's list is most likely a typo (cn-nowhere-9): say so
    before the run spends its first call finding out."""
    found = _REGION_HOST.fullmatch(endpoint.base_url)
    if found and found.group(1).lower() not in REGIONS:
        log.line(
            "warning",
            f"region {found.group(1)!r} is not one the official SDK knows "
            f"({', '.join(REGIONS)}); check service.region if the endpoint cannot be reached",
        )


def credentials(
    env: Env,
    log: Log | None = None,
    *,
    project_id: str | None = None,
    endpoint: str | None = None,
    pool: PoolOptions | None = None,
) -> CredentialProvider:
    """The first credential source found (environment, IAM password, profile file, ECS
    metadata; see credentials.py), its first credentials fetched, and the project id (given,
    else looked up in IAM for the endpoint's region). Those calls go through a gate with the
    command's in-flight cap and rate and the run's retry policy: an IAM answering 503 for a
    moment is waited out, not a failed night. Exit 2 before any VAS request if there are no
    usable credentials, 3 if IAM or the metadata service did not answer after the retries."""
    shown = log if log is not None else Log(env.stderr)
    warn = warner(shown)
    region = region_of(endpoint)
    choice = find_source(
        env.environ, home=env.home(), warn=warn, project_id=project_id, region=region
    )
    gate = new_gate((pool or PoolOptions()).settings(), RunStats(), shown.line)
    provider: CredentialProvider = run_loop(_open_credentials, choice, region, warn, gate.other)
    provider.opening_calls = gate.stats.calls
    if log is not None:
        log.line("info", f"credentials from {provider.source_name}")
    return provider


async def _open_credentials(
    choice: Choice, region: str | None, warn: Any, route: Route
) -> CredentialProvider:
    async with open_session(2) as session:
        return await open_provider(choice, session, region=region, warn=warn, route=route)


def offline_project_id(manifest: Manifest, env: Env) -> str:
    """The project id without asking IAM (a dry run sends nothing): the manifest's, else the
    environment's or the profile file's."""
    choice = find_source(
        env.environ,
        home=env.home(),
        warn=lambda _message: None,
        project_id=manifest.service.project_id,
    )
    if choice.project_id is None:
        raise CredentialError(
            "no project id: set service.project_id in the manifest or HUAWEICLOUD_SDK_PROJECT_ID "
            "(a dry run sends nothing, so it cannot look it up in IAM)"
        )
    return choice.project_id


def ledger_credentials(
    env: Env, log: Log, service_url: str, base_url: str | None, pool: PoolOptions
) -> CredentialProvider:
    """Credentials for the service a ledger row names (its project id and region)."""
    found = re.fullmatch(r"(https?://[^/]+)/v2/([^/]+)/services/[^/]+/tasks", service_url)
    return credentials(
        env,
        log,
        project_id=found.group(2) if found else None,
        endpoint=base_url or (found.group(1) if found else None),
        pool=pool,
    )


def config(
    options: RunOptions,
    manifest: Manifest | None,
    results: Path,
    fmt: Format,
    endpoint: Endpoint,
    credentials: Credentials | CredentialProvider,
) -> RunConfig:
    pool = PoolSettings(
        concurrency=options.pool.concurrency,
        rate=options.pool.rate,
        settle=options.settle,
        lookup_spacing=options.settle,
        lookup_tries=options.lookups,
        max_jobs=options.max_jobs,
        max_failures=options.max_failures,
        deadline=options.deadline,
    )
    return RunConfig(
        manifest=manifest,
        endpoint=endpoint,
        credentials=credentials,
        results=results,
        format=fmt,
        pool=pool,
        resubmit=options.resubmit,
        timeout=options.pool.timeout,
    )


def opening_calls(credentials: object) -> int:
    """The calls that fetched the first credentials and the project id (0 for plain keys)."""
    return int(getattr(credentials, "opening_calls", 0))


def source_name(config: RunConfig) -> str | None:
    """Where the run's credentials came from (never a secret), for the summary."""
    return getattr(config.credentials, "source_name", None)


def live(manifest: Manifest) -> bool:
    return any(source.prefix is not None for source in manifest.sources)


async def spooled(
    manifest: Manifest,
    obs_endpoint: str | None,
    credentials: Credentials | CredentialProvider,
    directory: Path,
    log: Log,
    settings: PoolSettings,
    timeout: float = DEFAULT_TIMEOUT,
) -> Spooled:
    """List live OBS prefixes now, before any VAS request (errors exit 2), each page through
    a gate with the run's in-flight cap, rate and retry policy. ``obs_endpoint`` is
    --obs-endpoint (None: the manifest's)."""
    endpoint = check_endpoint(obs_endpoint, "--obs-endpoint") if obs_endpoint else None
    return await spool_prefixes(
        manifest,
        endpoint or manifest.service.obs_endpoint,
        credentials,
        directory,
        warner(log),
        lambda message: log.line("info", message),
        settings=settings,
        log=log.line,
        timeout=timeout,
    )


def log_plan(
    log: Log, counted: ExpandSummary, uncertain: int, config: RunConfig, ledger: Ledger
) -> None:
    log.line("info", expand_line(counted.expand))
    log.line(
        "info",
        f"{counted.planned} to submit, {counted.skipped} already submitted "
        f"(ledger {config.results}), {uncertain} earlier outcomes to resolve first; "
        f"{config.endpoint.tasks_url}",
    )
    log_ledger_services(log, ledger, config.results)


def log_ledger_services(log: Log, ledger: Ledger, results: Path) -> None:
    """Rows the ledger holds for this service under another endpoint count as done; rows of
    another project or service count for nothing. Both are said, never silently applied."""
    if ledger.other_endpoint:
        log.line(
            "info",
            f"{results}: {ledger.other_endpoint} rows name this project and service under "
            f"another endpoint (e.g. {ledger.other_endpoint_url}); they count as this "
            f"service's here ({ledger.other_endpoint_done} submitted, so done)",
        )
    if ledger.other_services:
        log.line(
            "warning",
            f"{results}: {ledger.other_services} rows belong to another project or service "
            f"(e.g. {ledger.other_service_url}); they do not count as done for this one",
        )
