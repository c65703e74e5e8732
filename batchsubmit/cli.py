"""The command line: argparse, the environment, rendering, exit codes.

The only module that reads the environment, prints or exits. ``main()`` maps the error tree
to the documented exit codes; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import anyio
import orjson

from .auth import Credentials
from .client import DEFAULT_TIMEOUT, Endpoint, open_session
from .credentials import Choice, CredentialProvider, find_source, open_provider, region_of
from .errors import BatchSubmitError, CredentialError, UsageError
from .jobs import JobSpec
from .journal import journal_services
from .manifest import Manifest, load_manifest
from .obs import spool_prefixes
from .pool import PoolSettings, RunStats
from .progress import Log, make_reporter
from .prune import (
    DEFAULT_OLDER_THAN,
    DEFAULT_QUOTA,
    PruneConfig,
    PruneRules,
    PruneStats,
    Room,
    describe_held,
    first_service,
    make_room,
    plan_prune,
    prune,
)
from .results import Format, Ledger, format_for, iter_rows, read_ledger, utc_now
from .runner import (
    ExpandSummary,
    RunConfig,
    count_work,
    journal_path,
    plan,
    prepare,
    reconcile,
    submit,
)
from .sources import ExpandStats
from .vas import REGIONS, service_identity

if TYPE_CHECKING:
    from .emulator import Faults

__all__ = ["EXIT", "main"]

EXIT = {
    "ok": 0,
    "some_failed": 1,
    "usage": 2,
    "fatal": 3,
    "locked": 75,
    "SIGINT": 130,
    "SIGTERM": 143,
    "SIGPIPE": 141,
}
DEFAULT_CONCURRENCY = 8
DEFAULT_RATE = 10.0
# Bounds on every number an operator types: a typo must be refused, not obeyed (10**9
# workers, a timeout of "never"). Each is far beyond what VAS's gateway (~200 calls/s) allows.
MAX_CONCURRENCY = 1024
MAX_RATE = 10_000.0
MAX_COUNT = 100_000_000  # --max-jobs, --max-failures
TIMEOUT_RANGE = (0.1, 3600.0)  # seconds
MAX_DEADLINE = 7 * 24 * 3600.0  # seconds
DEFAULT_SETTLE, MAX_SETTLE = PoolSettings.settle, 600.0  # seconds
DEFAULT_LOOKUPS, MAX_LOOKUPS = PoolSettings.lookup_tries, 20
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    log = Log(
        sys.stderr,
        json=getattr(args, "log_format", "text") == "json",
        quiet=getattr(args, "quiet", False),
    )
    try:
        code: int = args.command(args, log)
    except BatchSubmitError as exc:
        log.line("error", str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        log.line("error", "interrupted")
        code = EXIT["SIGINT"]
    except BrokenPipeError:
        # stdout was closed early (`batchsubmit expand M | head`): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT["SIGPIPE"]
    if code != 0 and log.quiet:
        log.release()
    return code


# -- parsing ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchsubmit",
        description="Submit one Huawei Cloud VAS job per video, in bulk, exactly once.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("submit", help="submit the manifest's videos (the nightly command)")
    run.add_argument("manifest", type=Path, help="the TOML manifest")
    _results_options(run)
    _pool_options(run)
    _lookup_options(run)
    run.add_argument(
        "--endpoint",
        metavar="URL",
        help="base URL to use instead of the manifest's endpoint/region (default: the manifest's)",
    )
    run.add_argument(
        "--obs-endpoint",
        metavar="URL",
        help="OBS base URL for live prefix sources (default: the manifest's, else the region's)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="expand and validate, print what would be sent (JSONL), send nothing; needs a "
        "project id (for the ledger's service) but no AK/SK unless prefixes are listed live",
    )
    run.add_argument(
        "--emulator",
        action="store_true",
        help="run against the built-in VAS emulator: no real job is created",
    )
    run.add_argument(
        "--resubmit", action="store_true", help="ignore the ledger: submit every source again"
    )
    run.add_argument(
        "--max-jobs",
        type=_count,
        metavar="N",
        help="create at most N jobs in this run (submitted or unknown: what costs money); "
        "the rest are deferred (default: no limit)",
    )
    run.add_argument(
        "--deadline",
        type=_duration,
        metavar="DURATION",
        help="after this long (e.g. 2h, 90m, 1h30m, 45s; at most 7 days), start nothing new; "
        "the rest is deferred (default: none)",
    )
    run.add_argument(
        "--max-failures",
        type=_count,
        metavar="N",
        help="stop the run (exit 3) after N failed jobs (default: no limit)",
    )
    _room_options(run)
    _follow_options(run, submit=True)
    run.set_defaults(command=_submit)

    fix = commands.add_parser(
        "reconcile", help="resolve unknown outcomes in a results file; create nothing"
    )
    _ledger_arguments(fix)
    _pool_options(fix)
    _lookup_options(fix)
    fix.set_defaults(command=_reconcile)

    _prune_parser(commands)
    _status_parser(commands)
    _check_parser(commands)

    expand = commands.add_parser("expand", help="print the job specs as JSONL; no network")
    expand.add_argument("manifest", type=Path, help="the TOML manifest")
    _log_format_option(expand)
    expand.set_defaults(command=_expand)

    emulator = commands.add_parser(
        "emulator",
        help="run the VAS emulator standalone (and, behind options, a fake IAM and ECS metadata)",
    )
    emulator.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    emulator.add_argument(
        "--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)"
    )
    emulator.add_argument(
        "--p503",
        type=_probability,
        metavar="SHARE",
        default=0.0,
        help="share of calls answered 503 IVA.0010 (default: %(default)s)",
    )
    emulator.add_argument(
        "--rate-limit",
        type=_rate,
        default=0.0,
        metavar="N",
        help="calls per second per operation before 429 APIG.0308; 0 = no limit "
        "(default: %(default)s)",
    )
    emulator.add_argument(
        "--latency",
        type=_emulator_seconds,
        default=0.0,
        metavar="SECONDS",
        help="delay before every call is answered (default: %(default)s)",
    )
    emulator.add_argument(
        "--lost",
        type=_probability,
        metavar="SHARE",
        default=0.0,
        help="share of creates whose answer is lost after the job is created "
        "(default: %(default)s)",
    )
    emulator.add_argument(
        "--error-after-create",
        type=_probability,
        metavar="SHARE",
        default=0.0,
        help="share of creates answered 500/502/504 after the job is created "
        "(default: %(default)s)",
    )
    emulator.add_argument(
        "--slow",
        type=_probability,
        metavar="SHARE",
        default=0.0,
        help="share of creates answered only after --slow-seconds (default: %(default)s)",
    )
    emulator.add_argument(
        "--slow-seconds",
        type=_emulator_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how late a --slow create is answered (default: %(default)s)",
    )
    emulator.add_argument(
        "--retry-after",
        type=_emulator_seconds,
        default=None,
        metavar="SECONDS",
        help="send Retry-After on 429 and 503 answers (default: none, as the real gateway)",
    )
    emulator.add_argument(
        "--quota",
        type=int,
        default=5000,
        metavar="N",
        help="saved jobs at most, then 400 IVA.0012; 0 = unlimited (default: %(default)s)",
    )
    emulator.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the fault draws, for a reproducible run (default: none, random)",
    )
    jobs = emulator.add_argument_group(
        "how jobs live", "after a create, jobs go PENDING, STARTING, RUNNING, then a final state"
    )
    jobs.add_argument(
        "--time-scale",
        type=_emulator_positive,
        default=1.0,
        metavar="X",
        help="emulated seconds per real second: 60 runs a job's 7 to 27 s life in well under "
        "a second (default: 1.0)",
    )
    for option, fate in (
        ("--p-failed", "end FAILED (error ALG.002)"),
        ("--p-create-failed", "end CREATE_FAILED"),
        ("--p-start-failed", "end START_FAILED"),
        ("--p-unknown-state", "pass through SCHEDULING, a state outside VAS's list"),
        ("--p-vanish", "vanish (deleted by someone else: show answers 404)"),
        ("--p-hosting-late", "with a hosting output: a result that arrives late"),
        ("--p-frozen", "end FROZEN (the account in arrears)"),
    ):
        jobs.add_argument(
            option, type=_probability, default=0.0, metavar="SHARE",
            help=f"share of jobs that {fate} (default: 0.0)",
        )  # fmt: skip
    emulator.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON (default: %(default)s)",
    )
    emulator.add_argument(
        "--log-requests",
        action="store_true",
        help="log one line per request: method, path, status, error code, request id; "
        "never a header, body or secret (default: off)",
    )
    identity = emulator.add_argument_group(
        "fake IAM and ECS metadata",
        "served on the same port; tokens and temporary credentials "
        "are accepted by VAS calls only as issued and until they expire (401 IVA.0001)",
    )
    identity.add_argument(
        "--iam-user",
        type=_iam_user,
        action="append",
        default=[],
        metavar="NAME:DOMAIN:PASSWORD",
        help="serve IAM password login (POST /v3/auth/tokens) for this user; repeatable "
        "(default: no IAM login)",
    )
    identity.add_argument(
        "--token-ttl",
        type=_emulator_seconds,
        default=86400.0,
        metavar="SECONDS",
        help="lifetime of IAM tokens (default: %(default)s, IAM's 24 h)",
    )
    identity.add_argument(
        "--metadata",
        action="store_true",
        help="serve ECS metadata: PUT /meta-data/latest/api/token and GET "
        "/openstack/latest/securitykey (temporary AK/SK) (default: off)",
    )
    identity.add_argument(
        "--credential-ttl",
        type=_emulator_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime of temporary credentials from --metadata (default: %(default)s)",
    )
    identity.add_argument(
        "--no-agency",
        action="store_true",
        help="with --metadata: a server without an agency, securitykey answers 401 "
        "'Please configure Cloud Service Agency first' (default: off)",
    )
    identity.add_argument(
        "--region",
        default="cn-north-4",
        help="the project's name in IAM: GET /v3/projects?name=REGION (always served) "
        "answers the emulator's project id (default: %(default)s)",
    )
    emulator.set_defaults(command=_emulator)
    return parser


class _Version(argparse.Action):
    """--version, looked up only when asked for (importlib.metadata is slow to import)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from . import __version__

        parser.exit(message=f"batchsubmit {__version__}\n")


def _ledger_arguments(parser: argparse.ArgumentParser) -> None:
    """RESULTS, --format and --endpoint: the commands that work from a ledger, no manifest."""
    parser.add_argument("results", type=Path, help="the results file (.csv or .jsonl)")
    parser.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        help="results format (default: from the extension)",
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="base URL to use instead of the one in the results rows (default: the rows')",
    )


def _results_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        metavar="PATH",
        help="results file, also the ledger (default: beside the manifest)",
    )
    parser.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        help="results format (default: from the extension, else csv)",
    )
    parser.add_argument("--summary", type=Path, metavar="PATH", help="write a JSON summary")
    parser.add_argument(
        "--metrics",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics (node_exporter textfile collector)",
    )


def _pool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"calls in flight at most, 1 to {MAX_CONCURRENCY} (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        metavar="R",
        help=f"calls started per second at most, 0 = no limit, at most {MAX_RATE:g} "
        f"(default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="seconds a call may take in all before a create is looked up "
        f"({TIMEOUT_RANGE[0]:g} to {TIMEOUT_RANGE[1]:g}; default {DEFAULT_TIMEOUT:g})",
    )
    _log_format_option(parser)
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing if all went well, everything if not (for cron)",
    )


def _lookup_options(parser: argparse.ArgumentParser) -> None:
    """How a create whose answer was lost is looked up (submit and reconcile)."""
    parser.add_argument(
        "--settle",
        type=_settle,
        default=DEFAULT_SETTLE,
        metavar="SECONDS",
        help="after a create whose answer was lost, wait this long before looking the job up "
        f"by name, and between lookups (0 to {MAX_SETTLE:g}; default {DEFAULT_SETTLE:g}): "
        "long enough for the service to list a job it just made",
    )
    parser.add_argument(
        "--lookups",
        type=_lookups,
        default=DEFAULT_LOOKUPS,
        metavar="N",
        help=f"lookups of a lost create before it may be made again (1 to {MAX_LOOKUPS}; "
        f"default {DEFAULT_LOOKUPS})",
    )


def _log_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stderr as text or one JSON object each (default text)",
    )


def _whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high:,}, not {value:,}")
    return value


def _count(text: str) -> int:
    return _whole(text, 1, MAX_COUNT)


def _concurrency(text: str) -> int:
    return _whole(text, 1, MAX_CONCURRENCY)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _rate(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(
            f"must be 0 (no limit) or a positive number up to {MAX_RATE:g}, not {text!r}"
        )
    return value


def _settle(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= MAX_SETTLE:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_SETTLE:g} seconds, not {text!r}")
    return value


def _lookups(text: str) -> int:
    return _whole(text, 1, MAX_LOOKUPS)


def _timeout(text: str) -> float:
    value = _number(text)
    low, high = TIMEOUT_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"must be between {low:g} and {high:g} seconds, not {text!r} "
            "(a call without a time limit could hang the run forever)"
        )
    return value


def _probability(text: str) -> float:
    value = _rate(text)
    if value > 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _duration(text: str) -> float:
    found = _DURATION.fullmatch(text.strip())
    if not text.strip() or not found or not any(found.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 2h, 90m, 1h30m, 45s)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in found.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 0 < total <= MAX_DEADLINE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a duration must be more than 0 and at most 7 days (168h)"
        )
    return total


# -- commands -----------------------------------------------------------------------------------


def _expand(args: argparse.Namespace, log: Log) -> int:
    manifest = load_manifest(args.manifest)
    summary = ExpandSummary(ExpandStats())
    _print_specs(plan(manifest, None, (), summary, _warner(log)), None)
    _log_expand(log, summary.expand)
    return EXIT["ok"]


def _print_specs(specs: Iterable[JobSpec], url: str | None) -> None:
    """One JSON object per spec on stdout: its source, name and body (and URL for a dry run)."""
    out = sys.stdout.buffer
    start = b'{"url":' + orjson.dumps(url) + b"," if url else b"{"
    for spec in specs:
        out.write(
            start
            + b'"source":'
            + orjson.dumps(spec.source)
            + b',"name":'
            + orjson.dumps(spec.name)
            + b',"body":'
            + spec.body
            + b"}\n"
        )
    out.flush()


def _log_expand(log: Log, stats: ExpandStats) -> None:
    videos = stats.objects - stats.filtered - stats.duplicates
    text = (
        f"expanded {videos} videos from {stats.objects} objects ({stats.filtered} not "
        f"videos, {stats.duplicates} duplicates, {stats.folders} folders)"
    )
    if stats.filtered_examples:
        text += "; not videos, e.g. " + ", ".join(stats.filtered_examples)
    log.line("info", text)


def _submit(args: argparse.Namespace, log: Log) -> int:
    started = time.time()
    manifest = load_manifest(args.manifest)
    fmt = format_for(args.results, args.format) if args.results else (args.format or "csv")
    results = _real(args.results or _default_results(manifest.path, args.emulator, fmt))
    if args.emulator and _live(manifest):
        raise UsageError(
            f"{manifest.path}: live OBS prefixes cannot be listed with --emulator "
            "(it has no OBS); use a listing file, or run against real OBS"
        )
    if args.dry_run:
        return _dry_run(args, log, manifest, results, fmt)
    if args.emulator:
        return anyio.run(_submit_emulated, args, log, manifest, results, fmt, started)
    credentials = _credentials(
        log, project_id=manifest.service.project_id, endpoint=manifest.service.endpoint
    )
    endpoint = _endpoint(args, manifest, credentials)
    _warn_unknown_region(log, endpoint)
    config = _config(args, manifest, results, fmt, endpoint, credentials)
    return anyio.run(_run_submit, config, args, log, started)


def _real(path: Path) -> Path:
    """The results file itself, not the spelling typed: a symlink or another path to the same
    file must share its lock and journal, or two runs could submit the same videos at once."""
    return path.resolve()


def _default_results(manifest: Path, emulated: bool, fmt: Format) -> Path:
    """Beside the manifest, so cron's working directory does not matter."""
    kind = ".emulator" if emulated else ""
    return manifest.with_name(f"{manifest.stem}{kind}.results.{fmt}")


def _endpoint(
    args: argparse.Namespace, manifest: Manifest, credentials: CredentialProvider | None = None
) -> Endpoint:
    """``credentials`` know the project id (given or looked up); without them it must be given."""
    if credentials is not None:
        project_id = credentials.project_id
        if not project_id:
            raise CredentialError(
                "no project id: set service.project_id in the manifest or "
                "HUAWEICLOUD_SDK_PROJECT_ID (a custom endpoint has no region to look it up by)"
            )
    else:
        project_id = _offline_project_id(manifest)
    base = _check_endpoint(args.endpoint) if args.endpoint else manifest.service.endpoint
    return Endpoint(base_url=base, project_id=project_id, service_name=manifest.service.name)


def _check_endpoint(url: str, option: str = "--endpoint") -> str:
    """An http(s) base URL without a path; scheme and host are case-insensitive, so they are
    written in lower case (the same service must always be spelled the same way)."""
    found = re.fullmatch(r"(https?)://([^/\s?#@]+)/?", url.strip(), re.IGNORECASE)
    if not found:
        raise UsageError(
            f"{option} {url!r}: give an http(s) URL without a path, query or user name, "
            "e.g. https://iva.cn-north-4.myhuaweicloud.com"
        )
    return f"{found.group(1).lower()}://{found.group(2).lower()}"


_REGION_HOST = re.compile(r"https?://iva\.([a-z0-9-]+)\.myhuaweicloud\.com(?::443)?", re.I)


def _warn_unknown_region(log: Log, endpoint: Endpoint) -> None:
    """A region name outside the SDK's list is most likely a typo (cn-nowhere-9): say so
    before the run spends its first call finding out."""
    found = _REGION_HOST.fullmatch(endpoint.base_url)
    if found and found.group(1).lower() not in REGIONS:
        log.line(
            "warning",
            f"region {found.group(1)!r} is not one the official SDK knows "
            f"({', '.join(REGIONS)}); check service.region if the endpoint cannot be reached",
        )


def _credentials(
    log: Log | None = None, *, project_id: str | None = None, endpoint: str | None = None
) -> CredentialProvider:
    """The first credential source found (environment, IAM password, profile file, ECS
    metadata; see credentials.py), its first credentials fetched, and the project id (given,
    else looked up in IAM for the endpoint's region). Exit 2 before any VAS request if none."""
    warn = _warner(log if log is not None else Log(sys.stderr))
    region = region_of(endpoint)
    choice = find_source(
        os.environ, home=Path.home(), warn=warn, project_id=project_id, region=region
    )
    provider: CredentialProvider = anyio.run(_open_credentials, choice, region, warn)
    if log is not None:
        log.line("info", f"credentials from {provider.source_name}")
    return provider


async def _open_credentials(choice: Choice, region: str | None, warn: Any) -> CredentialProvider:
    async with open_session(2) as session:
        return await open_provider(choice, session, region=region, warn=warn)


def _offline_project_id(manifest: Manifest) -> str:
    """The project id without asking IAM (a dry run sends nothing): the manifest's, else the
    environment's or the profile file's."""
    choice = find_source(
        os.environ,
        home=Path.home(),
        warn=lambda _message: None,
        project_id=manifest.service.project_id,
    )
    if choice.project_id is None:
        raise CredentialError(
            "no project id: set service.project_id in the manifest or HUAWEICLOUD_SDK_PROJECT_ID "
            "(a dry run sends nothing, so it cannot look it up in IAM)"
        )
    return choice.project_id


def _config(
    args: argparse.Namespace,
    manifest: Manifest | None,
    results: Path,
    fmt: Format,
    endpoint: Endpoint,
    credentials: Credentials | CredentialProvider,
) -> RunConfig:
    pool = PoolSettings(
        concurrency=args.concurrency,
        rate=args.rate,
        settle=getattr(args, "settle", DEFAULT_SETTLE),
        lookup_spacing=getattr(args, "settle", DEFAULT_SETTLE),
        lookup_tries=getattr(args, "lookups", DEFAULT_LOOKUPS),
        max_jobs=getattr(args, "max_jobs", None),
        max_failures=getattr(args, "max_failures", None),
        deadline=getattr(args, "deadline", None),
    )
    return RunConfig(
        manifest=manifest,
        endpoint=endpoint,
        credentials=credentials,
        results=results,
        format=fmt,
        pool=pool,
        resubmit=getattr(args, "resubmit", False),
        timeout=args.timeout,
    )


async def _submit_emulated(
    args: argparse.Namespace,
    log: Log,
    manifest: Manifest,
    results: Path,
    fmt: Format,
    started: float,
) -> int:
    from .emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Emulator, Faults

    emulator = Emulator(Faults())
    async with emulator.serve() as url:
        log.line(
            "warning",
            f"EMULATOR: submitting to the built-in VAS emulator at {url}; "
            "no real job is created and nothing leaves this machine",
        )
        endpoint = Endpoint(
            base_url=url, project_id=EMULATOR_PROJECT_ID, service_name=manifest.service.name
        )
        config = _config(
            args, manifest, results, fmt, endpoint, Credentials(EMULATOR_AK, EMULATOR_SK)
        )
        code = await _run_submit(config, args, log, started)
        log.line(
            "warning",
            f"EMULATOR: {len(emulator.tasks)} jobs exist on the emulator; they vanish with it",
        )
        return code


async def _run_submit(config: RunConfig, args: argparse.Namespace, log: Log, started: float) -> int:
    manifest = config.manifest
    assert manifest is not None
    warn = _warner(log)
    prepared = prepare(config, warn)
    spool = tempfile.TemporaryDirectory(prefix="batchsubmit-")
    try:
        if _live(manifest):
            manifest = await _spooled(
                manifest, args, config.credentials, Path(spool.name), log, config.pool
            )
            config = replace(config, manifest=manifest)
        uncertain = prepared.uncertain
        ledger = None if config.resubmit else prepared.ledger
        counted = count_work(manifest, ledger, uncertain, lambda _m: None)
        _log_plan(log, counted, len(uncertain), config, prepared.ledger)
        room = None
        if getattr(args, "make_room", False):
            room, config = await _make_room(config, args, log, counted)
        planned = counted.planned
        if config.pool.max_jobs is not None:
            planned = min(planned, config.pool.max_jobs)
        reporter = make_reporter(
            log, planned + len(uncertain), sys.stderr, bar=_is_terminal(sys.stderr)
        )
        try:
            stats, summary = await submit(config, prepared, reporter, warn, counted.repeats)
        finally:
            reporter.close()
        followed = await _follow_after_submit(config, args, log, stats, started)
    finally:
        prepared.lock.release()
        spool.cleanup()
    if room is not None:
        _room_stats(stats, room)
    code = _exit_code(stats)
    _report(args, log, stats, code, started, config.results, summary, _source_name(config))
    if room is not None:
        _report_room(args, log, room)
    if followed is not None:
        code = _report_follow_after_submit(args, log, followed, code)
    return code


def _live(manifest: Manifest) -> bool:
    return any(source.prefix is not None for source in manifest.sources)


async def _spooled(
    manifest: Manifest,
    args: argparse.Namespace,
    credentials: Credentials | CredentialProvider,
    directory: Path,
    log: Log,
    settings: PoolSettings,
) -> Manifest:
    """List live OBS prefixes now, before any VAS request (errors exit 2), each page through
    a gate with the run's in-flight cap, rate and retry policy."""
    endpoint = _check_endpoint(args.obs_endpoint, "--obs-endpoint") if args.obs_endpoint else None
    return await spool_prefixes(
        manifest,
        endpoint or manifest.service.obs_endpoint,
        credentials,
        directory,
        _warner(log),
        lambda message: log.line("info", message),
        settings=settings,
        log=log.line,
    )


def _log_plan(
    log: Log, counted: ExpandSummary, uncertain: int, config: RunConfig, ledger: Ledger
) -> None:
    _log_expand(log, counted.expand)
    log.line(
        "info",
        f"{counted.planned} to submit, {counted.skipped} already submitted "
        f"(ledger {config.results}), {uncertain} earlier outcomes to resolve first; "
        f"{config.endpoint.tasks_url}",
    )
    _log_ledger_services(log, ledger, config.results)


def _log_ledger_services(log: Log, ledger: Ledger, results: Path) -> None:
    """Rows the ledger holds for this service under another endpoint count as done; rows of
    another project or service count for nothing. Both are said, never silently applied."""
    if ledger.other_endpoint:
        log.line(
            "info",
            f"{results}: {ledger.other_endpoint} rows name this project and service under "
            f"another endpoint (e.g. {ledger.other_endpoint_url}); they count as done here",
        )
    if ledger.other_services:
        log.line(
            "warning",
            f"{results}: {ledger.other_services} rows belong to another project or service "
            f"(e.g. {ledger.other_service_url}); they do not count as done for this one",
        )


def _dry_run(
    args: argparse.Namespace, log: Log, manifest: Manifest, results: Path, fmt: Format
) -> int:
    warn = _warner(log)
    if args.emulator:
        from .emulator import EMULATOR_PROJECT_ID

        endpoint = Endpoint(
            base_url="http://127.0.0.1:0",
            project_id=EMULATOR_PROJECT_ID,
            service_name=manifest.service.name,
        )
    else:
        endpoint = _endpoint(args, manifest)
        _warn_unknown_region(log, endpoint)
    ledger = None
    if not args.resubmit:
        ledger = read_ledger(results, fmt, endpoint.tasks_url, warn)
    summary = ExpandSummary(ExpandStats())
    with tempfile.TemporaryDirectory(prefix="batchsubmit-") as spool:
        if _live(manifest):
            settings = PoolSettings(concurrency=args.concurrency, rate=args.rate)
            manifest = anyio.run(
                _spooled, manifest, args, _credentials(), Path(spool), log, settings
            )
        _print_specs(plan(manifest, ledger, (), summary, warn), endpoint.tasks_url)
    _log_expand(log, summary.expand)
    log.line(
        "info",
        f"dry run: {summary.planned} jobs would be submitted, {summary.skipped} "
        "already submitted; nothing was sent",
    )
    return EXIT["ok"]


def _reconcile(args: argparse.Namespace, log: Log) -> int:
    started = time.time()
    warn = _warner(log)
    results = _real(args.results)
    fmt = format_for(results, args.format)
    endpoint = _endpoint_from_results(results, fmt, args.endpoint)
    if endpoint is None:
        # Nothing to do is success: a nightly `reconcile` must not raise an alarm every night.
        log.line("info", f"{results}: no unknown rows and no open intents; nothing to reconcile")
        return EXIT["ok"]
    credentials = _credentials(log, project_id=endpoint.project_id, endpoint=endpoint.base_url)
    config = _config(args, None, results, fmt, endpoint, credentials)
    prepared = prepare(config, warn)
    try:
        uncertain = prepared.uncertain
        log.line("info", f"{len(uncertain)} outcomes to resolve in {results}")
        reporter = make_reporter(log, len(uncertain), sys.stderr, bar=_is_terminal(sys.stderr))
        try:
            stats = anyio.run(reconcile, config, prepared, reporter, warn)
        finally:
            reporter.close()
    finally:
        prepared.lock.release()
    code = _exit_code(stats)
    _report(args, log, stats, code, started, results, None, _source_name(config))
    return code


def _endpoint_from_results(results: Path, fmt: Format, override: str | None) -> Endpoint | None:
    """The service the unknown rows and open intents belong to, from their ``service_url``;
    None when there are none (nothing to reconcile). Rows of one project and service reached
    through several endpoints are one service (the newest endpoint is used)."""
    urls = [row[3] for row in iter_rows(results, fmt) if row[2] == "unknown"]
    urls += sorted(journal_services(journal_path(results)))
    services: dict[tuple[str, str], str] = {}
    for url in urls:
        try:
            identity = service_identity(url)
        except ValueError:
            raise UsageError(f"{results}: cannot read the service from {url!r}") from None
        key = (identity.project_id, identity.service_name)
        services.pop(key, None)
        services[key] = f"{identity.endpoint}"
    if not services:
        return None
    if len(services) > 1:
        names = ", ".join(f"{p}/{n}" for p, n in sorted(services))
        raise UsageError(
            f"{results}: unknown outcomes for several services ({names});"
            " reconcile each with its own results file"
        )
    (project_id, service_name), base = services.popitem()
    if override:
        base = _check_endpoint(override)
    return Endpoint(base_url=base, project_id=project_id, service_name=service_name)


def _emulator_faults(args: argparse.Namespace) -> Faults:
    """The emulator's faults and job lives from its options (ValueError if they conflict)."""
    from .emulator import Faults, Lifecycle

    return Faults(
        p503=args.p503,
        rate_limit=args.rate_limit,
        latency=args.latency,
        p_lost=args.lost,
        p_5xx_after_create=args.error_after_create,
        p_slow=args.slow,
        slow_seconds=args.slow_seconds,
        retry_after=args.retry_after,
        quota=args.quota,
        seed=args.seed,
        jobs=Lifecycle(
            time_scale=args.time_scale,
            p_failed=args.p_failed,
            p_create_failed=args.p_create_failed,
            p_start_failed=args.p_start_failed,
            p_unknown_state=args.p_unknown_state,
            p_vanish=args.p_vanish,
            p_hosting_late=args.p_hosting_late,
            p_frozen=args.p_frozen,
        ),
    )


def _emulator_positive(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1e6:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1e6, not {text!r}")
    return value


def _emulator_seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text!r}")
    return value


def _iam_user(text: str) -> Any:
    from .emulator_iam import IamUser

    try:
        return IamUser.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None  # never echo the password


def _emulator(args: argparse.Namespace, log: Log) -> int:
    from .emulator import (
        EMULATOR_AK,
        EMULATOR_PROJECT_ID,
        EMULATOR_SK,
        Emulator,
        RequestRecord,
    )
    from .emulator_iam import IdentityOptions

    try:
        faults = _emulator_faults(args)
    except ValueError as exc:  # e.g. fate shares that add up to more than 1
        raise UsageError(f"emulator: {exc}") from None
    identity = IdentityOptions(
        users=tuple(args.iam_user),
        projects_api=True,  # GET /v3/projects?name=REGION: project id discovery, as the SDK does
        token_ttl=args.token_ttl,
        metadata=args.metadata,
        agency=not args.no_agency,
        credential_ttl=args.credential_ttl,
        region=args.region,
    )

    def log_request(record: RequestRecord) -> None:
        log.line(
            "info",
            f"request {record}",
            method=record.method,
            path=record.path,
            status=record.status,
            error_code=record.error_code,
            request_id=record.request_id,
        )

    async def serve() -> None:
        emulator = Emulator(
            faults,
            identity=identity,
            request_log=log_request if args.log_requests else None,
        )
        async with emulator.serve(args.host, args.port) as url:
            log.line(
                "info",
                f"VAS emulator listening on {url} (project {EMULATOR_PROJECT_ID}, quota "
                f"{args.quota or 'unlimited'}); Ctrl-C stops it. Point a run at it with the "
                "lines on stdout (the SK is a documented throwaway that opens only this emulator)",
            )
            lines = [
                f"export HUAWEICLOUD_SDK_AK={EMULATOR_AK} HUAWEICLOUD_SDK_SK={EMULATOR_SK} "
                f"HUAWEICLOUD_SDK_PROJECT_ID={EMULATOR_PROJECT_ID}",
                f"# then: batchsubmit submit MANIFEST --endpoint {url}",
            ]
            for user in identity.users:
                lines.append(
                    f"# IAM login instead of AK/SK: export HUAWEICLOUD_SDK_IAM_ENDPOINT={url} "
                    f"BATCHSUBMIT_IAM_USER={user.name} BATCHSUBMIT_IAM_DOMAIN={user.domain} "
                    "BATCHSUBMIT_IAM_PASSWORD=<the password given to --iam-user>"
                )
            if identity.metadata:
                lines.append(
                    f"# ECS metadata instead of AK/SK: export BATCHSUBMIT_METADATA_URL={url} "
                    f"HUAWEICLOUD_SDK_IAM_ENDPOINT={url}"
                )
            print("\n".join(lines), flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                async for _signum in received:
                    break
        issued = emulator.identity
        counts = (
            f"; IAM tokens issued {issued.tokens_issued}, temporary credentials issued "
            f"{issued.credentials_issued}, calls refused as expired {issued.refused_expired}"
            if identity.users or identity.metadata
            else ""
        )
        log.line("info", f"emulator stopped; {len(emulator.tasks)} jobs were created{counts}")

    anyio.run(serve)
    return EXIT["ok"]


# -- rendering ----------------------------------------------------------------------------------


def _warner(log: Log) -> Any:
    return lambda message: log.line("warning", message)


def _is_terminal(stream: TextIO) -> bool:
    """A terminal with a size: a 0x0 one (some cron wrappers, `script` without a size) shows
    no bar, so it gets progress lines instead."""
    try:
        if not stream.isatty():
            return False
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return size.columns > 0


def _exit_code(stats: RunStats) -> int:
    if stats.signal is not None:
        return EXIT["SIGINT"] if stats.signal == signal.SIGINT else EXIT["SIGTERM"]
    if stats.fatal is not None:
        return EXIT["fatal"]
    if stats.failed or stats.unknown:
        return EXIT["some_failed"]
    return EXIT["ok"]


def _source_name(config: RunConfig) -> str | None:
    """Where the run's credentials came from (never a secret), for the summary."""
    return getattr(config.credentials, "source_name", None)


def _summary_data(
    stats: RunStats,
    code: int,
    started: float,
    results: Path,
    summary: ExpandSummary | None,
    credentials: str | None = None,
) -> dict[str, Any]:
    return {
        "version": 1,
        "exit_code": code,
        "started_at": _iso(started),
        "ended_at": utc_now(),
        "elapsed_seconds": round(stats.elapsed, 3),
        "results": str(results),
        "counts": {
            "submitted": stats.submitted,
            "skipped": stats.skipped,
            "failed": stats.failed,
            "unknown": stats.unknown,
            "deferred": stats.deferred,
            "reconciled": stats.reconciled,
            "not_created": stats.not_created,
            "duplicates": len(stats.duplicates),
        },
        "duplicates": list(stats.duplicates),
        "deferred_reason": _deferred_reason(stats, results),
        "credentials": credentials,
        "calls": stats.calls,
        "retries": stats.retries,
        "throttles": stats.throttles,
        "unavailable": stats.unavailable,
        "ambiguous": stats.ambiguous,
        "lookups": stats.lookups,
        "achieved_rate": round(stats.rate, 3),
        "learned_rate": None if stats.learned_rate is None else round(stats.learned_rate, 3),
        "lowest_rate": None if stats.lowest_rate is None else round(stats.lowest_rate, 3),
        "stop_reason": stats.stop_reason,
        "fatal": stats.fatal,
        "first_errors": stats.first_errors,
        "expanded": None
        if summary is None
        else {
            "objects": summary.expand.objects,
            "not_videos": summary.expand.filtered,
            "duplicates": summary.expand.duplicates,
            "folders": summary.expand.folders,
            "truncated_listings": summary.expand.truncated_listings,
            "empty_prefixes": list(summary.expand.empty_prefixes),
        },
    }


def _deferred_reason(stats: RunStats, results: Path) -> str | None:
    """Why jobs were deferred, with the real results path in the advice."""
    reason = stats.deferred_reason
    return reason.replace("RESULTS", str(results)) if reason else None


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _report(
    args: argparse.Namespace,
    log: Log,
    stats: RunStats,
    code: int,
    started: float,
    results: Path,
    summary: ExpandSummary | None,
    credentials: str | None = None,
) -> None:
    data = _summary_data(stats, code, started, results, summary, credentials)
    if getattr(args, "summary", None):
        _write_atomically(args.summary, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    if getattr(args, "metrics", None):
        _write_atomically(args.metrics, _prometheus(data, stats).encode())
    counts = data["counts"]
    line = (
        f"{counts['submitted']} submitted ({counts['reconciled']} found by lookup), "
        f"{counts['failed']} failed, {counts['unknown']} unknown, {counts['skipped']} skipped "
        f"as already submitted, {counts['deferred']} deferred in {stats.elapsed:.1f} s "
        f"({stats.rate:.1f} jobs/s; {stats.retries} retries, {stats.throttles} throttled); "
        f"results in {results}"
    )
    if counts["not_created"]:
        line += (
            f"; {counts['not_created']} earlier creates were looked up and found never made"
            " (submitted again when their source comes up)"
        )
    if stats.duplicates:
        line += (
            f"; {len(stats.duplicates)} duplicate jobs found for videos already recorded "
            f"(delete them: {', '.join(stats.duplicates[:10])}"
            + (", ..." if len(stats.duplicates) > 10 else "")
            + "; every id is in the summary and in the results' duplicate rows)"
        )
    if stats.stop_reason:
        line += f"; stopped: {stats.stop_reason}"
    if data["deferred_reason"] and data["deferred_reason"] != stats.stop_reason:
        line += f"; deferred: {data['deferred_reason']}"
    level = "info" if code == 0 else "error"
    if stats.fatal:
        log.line("error", f"run stopped: {stats.fatal}")
    for kind, message in stats.first_errors.items():
        log.line("error", f"first {kind} error: {message}")
    log.line(level, f"done: {line}", exit_code=code)


def _prometheus(data: dict[str, Any], stats: RunStats) -> str:
    lines = [
        "# HELP batchsubmit_jobs Jobs of the last run by outcome.",
        "# TYPE batchsubmit_jobs gauge",
    ]
    lines += [f'batchsubmit_jobs{{outcome="{k}"}} {v}' for k, v in data["counts"].items()]
    gauges = [
        ("calls", "Calls made to the service.", stats.calls),
        ("retries", "Calls made again after a transient error.", stats.retries),
        ("throttles", "429 answers (throttled by the gateway).", stats.throttles),
        ("unavailable", "503 answers.", stats.unavailable),
        ("elapsed_seconds", "How long the last run took.", round(stats.elapsed, 3)),
        ("achieved_rate", "Jobs submitted per second.", round(stats.rate, 3)),
        (
            "learned_rate",
            "The rate the controller ended at (calls/s; -1: no limit).",
            -1 if stats.learned_rate is None else round(stats.learned_rate, 3),
        ),
        (
            "last_run_end_timestamp_seconds",
            "When the last run ended (Unix time).",
            round(time.time(), 3),
        ),
        ("last_run_exit_code", "The last run's exit code.", data["exit_code"]),
    ]
    for name, help_text, value in gauges:
        lines += [
            f"# HELP batchsubmit_{name} {help_text}",
            f"# TYPE batchsubmit_{name} gauge",
            f"batchsubmit_{name} {value}",
        ]
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


# -- prune and make-room (the saved-jobs quota) -------------------------------------------------


def _room_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--make-room",
        action="store_true",
        help="before the first create, read the saved-job count and, if tonight's jobs do not "
        "fit under --quota, prune this ledger's finished, recorded, collected jobs (oldest "
        "first, only as many as needed); what still does not fit is deferred (exit 0)",
    )
    parser.add_argument(
        "--quota",
        type=_count,
        default=DEFAULT_QUOTA,
        metavar="N",
        help=f"saved jobs the account may hold, for --make-room (default {DEFAULT_QUOTA})",
    )


def _prune_parser(commands: Any) -> None:
    prune = commands.add_parser(
        "prune",
        help="delete this ledger's jobs that are final, recorded and collected (saved-jobs quota)",
    )
    _ledger_arguments(prune)
    prune.add_argument(
        "--older-than",
        type=_age,
        default=DEFAULT_OLDER_THAN,
        metavar="DURATION",
        help="only jobs recorded final at least this long ago (e.g. 24h, 90m, 7d, 0; default 24h)",
    )
    prune.add_argument(
        "--keep",
        type=_kept,
        default=0,
        metavar="N",
        help="keep the newest N final jobs whatever their age (default 0)",
    )
    prune.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be deleted (JSONL) and how much room it frees; send nothing",
    )
    prune.add_argument("--summary", type=Path, metavar="PATH", help="write a JSON summary")
    _pool_options(prune)
    prune.set_defaults(command=_prune)


def _age(text: str) -> float:
    """A minimum age: 0, or a duration (h, m, s, or whole days with d)."""
    stripped = text.strip()
    if stripped in ("0", "0s"):
        return 0.0
    if stripped.endswith("d") and stripped[:-1].isdigit():
        days = int(stripped[:-1])
        if not 0 < days <= 3650:
            raise argparse.ArgumentTypeError(f"{text!r}: days must be between 1 and 3650")
        return days * 86400.0
    found = _DURATION.fullmatch(stripped)
    if not stripped or not found or not any(found.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 24h, 90m, 7d, 0)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in found.groups())
    return hours * 3600 + minutes * 60 + seconds


def _kept(text: str) -> int:
    return _whole(text, 0, MAX_COUNT)


def _prune(args: argparse.Namespace, log: Log) -> int:
    started = time.time()
    results = _real(args.results)
    fmt = format_for(results, args.format)
    base_url = _check_endpoint(args.endpoint) if args.endpoint else None
    first = None if args.dry_run else first_service(results, fmt)
    credentials = None
    if first is not None:  # a dry run, or a ledger with no job, needs no credentials
        found = re.fullmatch(r"(https?://[^/]+)/v2/([^/]+)/services/[^/]+/tasks", first)
        credentials = _credentials(
            log,
            project_id=found.group(2) if found else None,
            endpoint=base_url or (found.group(1) if found else None),
        )
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
    warn = _warner(log)
    say = lambda level, message: log.line(level, message)  # noqa: E731
    if args.dry_run:
        stats = _plan_prune_locked(config, warn)
        _print_jsonl(stats.jobs)
    else:
        stats = prune(config, warn, say)
    code = _prune_exit_code(stats)
    _report_prune(args, log, stats, code, started, results)
    return code


def _plan_prune_locked(config: PruneConfig, warn: Any) -> PruneStats:
    """A dry run reads under the lock too: a running `status` may be appending."""
    from .journal import RunLock
    from .runner import lock_path

    lock = RunLock(lock_path(config.results))
    lock.acquire(utc_now())
    try:
        return plan_prune(config, warn)
    finally:
        lock.release()


def _print_jsonl(items: Iterable[dict[str, Any]]) -> None:
    out = sys.stdout.buffer
    for item in items:
        out.write(orjson.dumps(item) + b"\n")
    out.flush()


def _prune_exit_code(stats: PruneStats) -> int:
    if stats.signal is not None:
        return EXIT["SIGINT"] if stats.signal == signal.SIGINT else EXIT["SIGTERM"]
    if stats.fatal is not None:
        return EXIT["fatal"]
    if stats.failed:
        return EXIT["some_failed"]
    return EXIT["ok"]


def _prune_summary(
    stats: PruneStats, code: int, started: float, results: Path, dry: bool
) -> dict[str, Any]:
    return {
        "version": 1,
        "command": "prune",
        "dry_run": dry,
        "exit_code": code,
        "started_at": _iso(started),
        "ended_at": utc_now(),
        "elapsed_seconds": round(stats.elapsed, 3),
        "results": str(results),
        "counts": {
            "selected": stats.selected,
            "pruned": stats.pruned,
            "deleted": stats.deleted,
            "already_gone": stats.gone,
            "failed": stats.failed,
            "redone": stats.resumed,
            "deferred": stats.deferred,
            "pruned_before": stats.already,
        },
        "room_freed": stats.selected if dry else stats.pruned,
        "held": stats.held,
        "calls": stats.calls,
        "retries": stats.retries,
        "stop_reason": stats.stop_reason,
        "fatal": stats.fatal,
        "first_errors": stats.first_errors,
        "jobs": stats.jobs,
    }


def _report_prune(
    args: argparse.Namespace, log: Log, stats: PruneStats, code: int, started: float, results: Path
) -> None:
    from .record import record_path

    data = _prune_summary(stats, code, started, results, args.dry_run)
    if args.summary:
        _write_atomically(args.summary, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    if not record_path(results).exists():
        log.line(
            "info",
            f"no follow record yet ({record_path(results).name}): prune deletes only jobs that "
            f"`batchsubmit status {results.name}` has recorded final",
        )
    held = describe_held(stats.held)
    if args.dry_run:
        line = (
            f"dry run: {stats.selected} jobs would be deleted, freeing room for "
            f"{stats.selected} saved jobs; kept: {held}; nothing was sent"
        )
        if stats.resumed:
            line += f"; {stats.resumed} deletes of a stopped prune would be redone first"
        log.line("info", line)
        return
    if stats.fatal:
        log.line("error", f"prune stopped: {stats.fatal}")
    for kind, message in stats.first_errors.items():
        log.line("error", f"first {kind} error: {message}")
    line = (
        f"pruned {stats.pruned} jobs ({stats.gone} were already gone), {stats.failed} deletes "
        f"failed, {stats.deferred} not sent; kept: {held}; recorded in "
        f"{results.name}.follow.jsonl"
    )
    if stats.resumed:
        line += f"; {stats.resumed} deletes of an earlier prune redone"
    if stats.stop_reason:
        line += f"; stopped: {stats.stop_reason}"
    log.line("info" if code == 0 else "error", f"done: {line}", exit_code=code)


async def _make_room(
    config: RunConfig, args: argparse.Namespace, log: Log, counted: ExpandSummary
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
        args.quota,
        _warner(log),
        say,
        service_url=config.endpoint.tasks_url,
    )
    if room.prune.signal is not None:  # stopped while pruning: create nothing tonight
        log.line("error", "make-room was stopped by a signal; nothing was submitted")
        raise SystemExit(EXIT["SIGINT"] if room.prune.signal == signal.SIGINT else EXIT["SIGTERM"])
    # IVA.0012 mid-run anyway (other tools share the quota): defer the rest, not fatal.
    pool = replace(config.pool, quota_defers=True)
    if room.deferred:
        pool = replace(pool, max_jobs=room.room)
    return room, replace(config, pool=pool)


def _room_stats(stats: RunStats, room: Room) -> None:
    """The quota, not --max-jobs, is why the rest waits for the next night."""
    if not room.deferred:
        return
    stats.deferred_reason = stats.deferred_reason or room.reason
    if stats.stop_reason and stats.stop_reason.startswith("--max-jobs"):
        stats.stop_reason = room.reason


def _report_room(args: argparse.Namespace, log: Log, room: Room) -> None:
    """Add make-room's figures to the summary and the metrics the run just wrote."""
    data = {
        "quota": room.quota,
        "planned": room.planned,
        "saved_before": room.saved_before,
        "saved_after": room.saved_after,
        "pruned": room.prune.pruned,
        "prune_failed": room.prune.failed,
        "room": room.room,
        "deferred": room.deferred,
        "reason": room.reason,
    }
    log.line(
        "info",
        f"make-room: {room.saved_before} saved jobs before, {room.prune.pruned} pruned, "
        f"{room.saved_after} after; room for {room.room} of {room.planned}, "
        f"{room.deferred} deferred (quota {room.quota})",
    )
    if getattr(args, "summary", None) and args.summary.exists():
        summary = orjson.loads(args.summary.read_bytes())
        summary["room"] = data
        _write_atomically(args.summary, orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    if getattr(args, "metrics", None) and args.metrics.exists():
        lines = [args.metrics.read_text()]
        gauges = [
            ("saved_jobs", "Saved jobs the service counted before make-room.", room.saved_before),
            ("quota", "The saved-jobs quota make-room planned for.", room.quota),
            ("pruned", "Jobs make-room deleted to make room.", room.prune.pruned),
            ("quota_deferred", "Creates deferred because the quota had no room.", room.deferred),
        ]
        for name, help_text, value in gauges:
            lines.append(
                f"# HELP batchsubmit_{name} {help_text}\n# TYPE batchsubmit_{name} gauge\n"
                f"batchsubmit_{name} {value}\n"
            )
        _write_atomically(args.metrics, "".join(lines).encode())


# -- status and submit --follow ----------------------------------------------------------------

MIN_INTERVAL = 0.01  # seconds (tests); the rate controller still spaces the calls
MAX_INTERVAL = 24 * 3600.0
EXIT_NOT_FINAL = 4  # status: some followed jobs are not final yet


def _interval(text: str) -> float:
    value = _number(text)
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds, not {text!r}"
        )
    return value


def _follow_options(parser: argparse.ArgumentParser, *, submit: bool) -> None:
    from .follow import DEFAULT_INTERVAL, DEFAULT_STUCK_AFTER

    parser.add_argument(
        "--follow",
        action="store_true",
        help="after the creates, follow every job of the ledger until it is final or "
        "--deadline (exit 0/1/4 as for status)"
        if submit
        else "pass again every --interval until every job is final or --deadline",
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between passes with --follow (default {DEFAULT_INTERVAL:g}, as "
        "Huawei's own samples poll; calls never go faster than --rate)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="the report, one row per video (.csv or .jsonl; default: beside the results "
        "file, <results>.report.<format>)",
    )
    parser.add_argument(
        "--collect",
        type=Path,
        metavar="DIR",
        help="save each AVAILABLE hosting result to DIR/<job name>.json, once (default: not saved)",
    )
    parser.add_argument(
        "--stuck-after",
        type=_duration,
        default=DEFAULT_STUCK_AFTER,
        metavar="DURATION",
        help="a job PENDING or ABNORMAL longer than this is reported stuck (default 6h)",
    )


def _status_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="follow the jobs of a results file to their end and write the report",
    )
    _ledger_arguments(status)
    _follow_options(status, submit=False)
    status.add_argument(
        "--deadline",
        type=_duration,
        metavar="DURATION",
        help="with --follow, start no pass after this long (e.g. 2h, 90m; default: none)",
    )
    status.add_argument("--summary", type=Path, metavar="PATH", help="write a JSON summary")
    status.add_argument(
        "--metrics",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics (node_exporter textfile collector)",
    )
    _pool_options(status)
    status.set_defaults(command=_status)


def _follow_config(
    args: argparse.Namespace,
    results: Path,
    fmt: Format,
    credentials: Any,
    **extra: Any,
) -> Any:
    from .follow import FollowConfig, report_format

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
        report=_real(args.report) if args.report is not None else None,
        collect=args.collect,
        stuck_after=args.stuck_after,
        timeout=args.timeout,
        **extra,
    )


def _status(args: argparse.Namespace, log: Log) -> int:
    from .follow import exit_code, follow, iter_ledger, lock_results, prepare_follow

    started = time.time()
    warn = _warner(log)
    results = _real(args.results)
    fmt = format_for(results, args.format)
    if not results.is_file():
        raise UsageError(f"{results}: no such results file")
    endpoint = _check_endpoint(args.endpoint) if args.endpoint else None
    _follow_config(args, results, fmt, None)  # options first: exit 2 before anything else
    # The lock before reading: a submit appending to the ledger now would make this run
    # follow half of tonight's jobs (exit 75 instead; README "Following jobs").
    lock = lock_results(results)
    try:
        first = next(
            (r.service_url for r in iter_ledger(results, fmt, lambda _m: None) if r.job_id), None
        )
        credentials = None
        if first is not None:  # nothing to follow needs no credentials
            found = re.fullmatch(r"(https?://[^/]+)/v2/([^/]+)/services/[^/]+/tasks", first)
            credentials = _credentials(
                log,
                project_id=found.group(2) if found else None,
                endpoint=endpoint or (found.group(1) if found else None),
            )
        config = _follow_config(
            args, results, fmt, credentials, endpoint=endpoint, deadline=args.deadline
        )
        follower = prepare_follow(config, warn)
        reporter = make_reporter(
            log, follower.stats.followed, sys.stderr, bar=_is_terminal(sys.stderr)
        )
        try:
            stats = anyio.run(follow, follower, reporter)
        finally:
            reporter.close()
    finally:
        lock.release()
    code = _follow_exit(stats, exit_code(stats))
    _report_status(args, log, stats, code, started)
    return code


def _follow_exit(stats: Any, judged: int) -> int:
    if stats.signal is not None:
        return EXIT["SIGINT"] if stats.signal == signal.SIGINT else EXIT["SIGTERM"]
    return judged


async def _follow_after_submit(
    config: RunConfig, args: argparse.Namespace, log: Log, stats: RunStats, started: float
) -> Any:
    """``submit --follow``: under the submit's lock, follow every job of the ledger; the
    submit's --deadline bounds the whole command. None when there is nothing to follow for."""
    from .follow import follow, prepare_follow

    if not getattr(args, "follow", False):
        return None
    if stats.signal is not None or stats.fatal is not None:
        log.line("warning", "not following the jobs: the submit did not end normally")
        return None
    deadline = None
    if args.deadline is not None:
        deadline = max(0.0, args.deadline - (time.time() - started))
    follow_config = _follow_config(
        args,
        config.results,
        config.format,
        config.credentials,
        always_follow=True,
        deadline=deadline,
        only_service=config.endpoint.tasks_url,
        durable=config.durable,
    )
    follower = prepare_follow(follow_config, _warner(log))
    reporter = make_reporter(log, follower.stats.followed, sys.stderr, bar=_is_terminal(sys.stderr))
    try:
        return await follow(follower, reporter)
    finally:
        reporter.close()


def _combined_exit(submit_code: int, follow_code: int) -> int:
    """submit --follow: the worse of the two parts wins, in the order 3, 1, 4, 0 (a signal or
    a usage error of the submit part first)."""
    if submit_code not in (0, 1, 3, EXIT_NOT_FINAL):
        return submit_code
    if follow_code not in (0, 1, 3, EXIT_NOT_FINAL):
        return follow_code
    for code in (3, 1, EXIT_NOT_FINAL):
        if code in (submit_code, follow_code):
            return code
    return 0


def _report_follow_after_submit(
    args: argparse.Namespace, log: Log, stats: Any, submit_code: int
) -> int:
    from .follow import exit_code

    follow_code = _follow_exit(stats, exit_code(stats))
    code = _combined_exit(submit_code, follow_code)
    data = _status_summary(stats, follow_code, time.time() - stats.elapsed)
    if getattr(args, "summary", None) and args.summary.exists():
        summary = orjson.loads(args.summary.read_bytes())
        summary["follow"] = data
        summary["exit_code"] = code
        _write_atomically(args.summary, orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    if getattr(args, "metrics", None) and args.metrics.exists():
        text = args.metrics.read_text()
        text = re.sub(
            r"^batchsubmit_last_run_exit_code .*$",
            f"batchsubmit_last_run_exit_code {code}",
            text,
            flags=re.MULTILINE,
        )
        _write_atomically(args.metrics, (text + _follow_prometheus(data)).encode())
    _log_follow(log, stats, follow_code, data)
    if code != submit_code:
        log.line("info", f"exit {code}: submit part {submit_code}, follow part {follow_code}")
    return code


def _status_summary(stats: Any, code: int, started: float) -> dict[str, Any]:
    return {
        "version": 1,
        "command": "status",
        "exit_code": code,
        "started_at": _iso(started),
        "ended_at": utc_now(),
        "elapsed_seconds": round(stats.elapsed, 3),
        "report": stats.report,
        "record": stats.record,
        "counts": {
            "videos": stats.videos,
            "followed": stats.followed,
            "already_final": stats.already_final,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "lost": stats.lost,
            "not_final": stats.not_final,
            "stuck": stats.stuck,
            "expiring": stats.expiring,
            "collected": stats.collected,
            "overdue": stats.overdue,
            "arrears": stats.arrears,
        },
        "by_state": stats.by_state,
        "unknown_states": stats.unknown_states,
        "oldest_non_final_age_seconds": stats.oldest_non_final_age,
        "passes": stats.passes,
        "sweeps": stats.sweeps,
        "calls": stats.calls,
        "list_calls": stats.list_calls,
        "show_calls": stats.show_calls,
        "retries": stats.retries,
        "throttles": stats.throttles,
        "stop_reason": stats.stop_reason,
        "fatal": stats.fatal,
        "first_errors": stats.first_errors,
    }


def _follow_prometheus(data: dict[str, Any]) -> str:
    lines = [
        "# HELP batchsubmit_follow_jobs Followed jobs of the last status run by outcome.",
        "# TYPE batchsubmit_follow_jobs gauge",
    ]
    lines += [f'batchsubmit_follow_jobs{{outcome="{k}"}} {v}' for k, v in data["counts"].items()]
    lines += [
        "# HELP batchsubmit_follow_state Followed jobs by their latest VAS state.",
        "# TYPE batchsubmit_follow_state gauge",
    ]
    lines += [
        f'batchsubmit_follow_state{{state="{_label(k)}"}} {v}' for k, v in data["by_state"].items()
    ]
    age = data["oldest_non_final_age_seconds"]
    gauges = [
        ("follow_calls", "Calls the status run made (list and show).", data["calls"]),
        ("follow_list_calls", "List calls of the status run.", data["list_calls"]),
        ("follow_show_calls", "Show calls of the status run.", data["show_calls"]),
        ("follow_passes", "Passes of the status run.", data["passes"]),
        (
            "follow_oldest_non_final_age_seconds",
            "Age of the oldest job not final (-1: none).",
            -1 if age is None else age,
        ),
        ("follow_exit_code", "The status part's exit code.", data["exit_code"]),
    ]
    for name, help_text, value in gauges:
        lines += [
            f"# HELP batchsubmit_{name} {help_text}",
            f"# TYPE batchsubmit_{name} gauge",
            f"batchsubmit_{name} {value}",
        ]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _report_status(
    args: argparse.Namespace, log: Log, stats: Any, code: int, started: float
) -> None:
    data = _status_summary(stats, code, started)
    if args.summary:
        _write_atomically(args.summary, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    if args.metrics:
        text = _follow_prometheus(data) + (
            "# HELP batchsubmit_last_run_end_timestamp_seconds When the last run ended.\n"
            "# TYPE batchsubmit_last_run_end_timestamp_seconds gauge\n"
            f"batchsubmit_last_run_end_timestamp_seconds {round(time.time(), 3)}\n"
            "# HELP batchsubmit_last_run_exit_code The last run's exit code.\n"
            "# TYPE batchsubmit_last_run_exit_code gauge\n"
            f"batchsubmit_last_run_exit_code {code}\n"
        )
        _write_atomically(args.metrics, text.encode())
    _log_follow(log, stats, code, data)


def _log_follow(log: Log, stats: Any, code: int, data: dict[str, Any]) -> None:
    if stats.fatal:
        log.line("error", f"status stopped: {stats.fatal}")
    for kind, message in stats.first_errors.items():
        log.line("error", f"first {kind} error: {message}")
    if stats.unknown_states:
        names = ", ".join(f"{n} {s}" for s, n in stats.unknown_states.items())
        log.line("warning", f"states outside VAS's list (kept verbatim, not final): {names}")
    counts = data["counts"]
    line = (
        f"{counts['followed']} jobs followed: {counts['succeeded']} succeeded, "
        f"{counts['failed']} failed ({counts['lost']} lost), {counts['not_final']} not final "
        f"({counts['stuck']} stuck); {counts['already_final']} already final; "
        f"{stats.passes} passes, {stats.list_calls} list + {stats.show_calls} show calls in "
        f"{stats.elapsed:.1f} s"
    )
    if counts["collected"] or counts["overdue"]:
        line += f"; {counts['collected']} results collected, {counts['overdue']} overdue"
    if stats.stop_reason:
        line += f"; stopped: {stats.stop_reason}"
    line += f"; report in {stats.report}"
    level = "info" if code == 0 else ("warning" if code == EXIT_NOT_FINAL else "error")
    log.line(level, f"done: {line}", exit_code=code)


# -- check --------------------------------------------------------------------------------------


def _check_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="check credentials, endpoint, subscription, quota and buckets; create nothing",
    )
    check.add_argument("manifest", type=Path, help="the TOML manifest")
    check.add_argument(
        "--endpoint",
        metavar="URL",
        help="base URL to use instead of the manifest's endpoint/region (default: the manifest's)",
    )
    check.add_argument(
        "--obs-endpoint",
        metavar="URL",
        help="OBS base URL (default: the manifest's, else the region's)",
    )
    check.add_argument(
        "--results",
        type=Path,
        metavar="PATH",
        help="the results file whose ledger tonight's planned creates are counted against "
        "(default: beside the manifest)",
    )
    check.add_argument("--format", choices=("csv", "jsonl"), help="results format")
    check.add_argument(
        "--timeout",
        type=_timeout,
        default=5.0,
        metavar="SECONDS",
        help="seconds each network step may take (default 5)",
    )
    check.add_argument(
        "--quota",
        type=_count,
        default=5000,
        metavar="N",
        help="saved jobs the account may hold (default 5000, VAS's quota)",
    )
    _log_format_option(check)
    check.set_defaults(command=_check)


def _check(args: argparse.Namespace, log: Log) -> int:
    """One line per check on stdout; exit 0 when all pass (warnings allowed), 3 when one fails."""
    from urllib.request import getproxies, proxy_bypass

    from .check import CheckPlan, run_checks

    manifest = load_manifest(args.manifest)
    base = _check_endpoint(args.endpoint) if args.endpoint else manifest.service.endpoint
    obs = (
        _check_endpoint(args.obs_endpoint, "--obs-endpoint")
        if args.obs_endpoint
        else manifest.service.obs_endpoint
    )
    fmt = format_for(args.results, args.format) if args.results else (args.format or "csv")
    results = _real(args.results or _default_results(manifest.path, False, fmt))
    region = region_of(manifest.service.endpoint)
    choice: Choice | CredentialError
    try:
        choice = find_source(
            os.environ,
            home=Path.home(),
            warn=_warner(log),
            project_id=manifest.service.project_id,
            region=region,
        )
    except CredentialError as exc:
        choice = exc
    host = urlsplit(base).hostname or ""
    scheme = urlsplit(base).scheme
    proxy = None if proxy_bypass(host) else getproxies().get(scheme)
    plan = CheckPlan(
        manifest=manifest,
        base_url=base,
        obs_endpoint=obs,
        choice=choice,
        region=region,
        results=results,
        format=fmt,
        proxy=proxy,
        timeout=args.timeout,
        quota=args.quota,
    )

    async def checks() -> list[Any]:
        async with open_session(4) as session:
            return await run_checks(plan, session, _warner(log))

    found = anyio.run(checks)
    for result in found:
        print(f"{result.status} {result.name}: {result.detail}", flush=True)
    failed = [r for r in found if r.status == "FAIL"]
    if failed:
        log.line(
            "error", f"check: {len(failed)} of {len(found)} checks failed; nothing was created"
        )
        return EXIT["fatal"]
    log.line("info", f"check: all {len(found)} checks passed; nothing was created")
    return EXIT["ok"]
