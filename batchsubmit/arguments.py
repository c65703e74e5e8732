"""The command line's grammar: every command, option and argument type, and each command's
frozen options built from the parsed arguments (one function per command, so no command sees
argparse). Pure: nothing here reads the environment, prints or exits but argparse's own
``--help``, ``--version`` and usage errors.

Every number an operator types has bounds: a typo must be refused (exit 2, naming the option),
not obeyed.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .client import DEFAULT_TIMEOUT
from .commands import check as check_command
from .commands.check import CheckOptions
from .commands.common import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE,
    PoolOptions,
    RunOptions,
)
from .commands.emulator import EmulatorOptions
from .commands.expand import ExpandOptions
from .commands.prune import PruneOptions
from .commands.reconcile import ReconcileOptions
from .commands.status import FollowOptions, StatusOptions
from .commands.submit import SubmitOptions
from .pool import PoolSettings
from .prune import DEFAULT_OLDER_THAN, DEFAULT_QUOTA

__all__ = [
    "check_options",
    "emulator_options",
    "expand_options",
    "json_logs",
    "parser",
    "prune_options",
    "reconcile_options",
    "status_options",
    "submit_options",
    "unparsed",
]

# Bounds on every number an operator types: a typo must be refused, not obeyed (10**9
# workers, a timeout of "never"). Each is far beyond what VAS's gateway (~200 calls/s) allows.
MAX_CONCURRENCY = 1024
MAX_RATE = 10_000.0
MAX_COUNT = 100_000_000  # --max-jobs, --max-failures
TIMEOUT_RANGE = (0.1, 3600.0)  # seconds
MAX_DEADLINE = 7 * 24 * 3600.0  # seconds
SUMMARY_HELP = "write a JSON summary of the run (default: none)"
DEFAULT_SETTLE, MAX_SETTLE = PoolSettings.settle, 600.0  # seconds
DEFAULT_LOOKUPS, MAX_LOOKUPS = PoolSettings.lookup_tries, 20
_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"(?:{_NUMBER}d)?(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s?)?")
MAX_AGE_DAYS = 3650


# -- parsing ------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchsubmit",
        description="Submit one Huawei Cloud VAS job per video, in bulk, exactly once.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", dest="name")

    run = commands.add_parser("submit", help="submit the manifest's videos (the nightly command)")
    run.add_argument("manifest", type=Path, help="the TOML manifest")
    _results_options(run)
    _pool_options(run)
    _lookup_options(run)
    _endpoint_option(run)
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

    fix = commands.add_parser(
        "reconcile", help="resolve unknown outcomes in a results file; create nothing"
    )
    _ledger_arguments(fix)
    _pool_options(fix)
    _lookup_options(fix)

    _prune_parser(commands)
    _status_parser(commands)
    _check_parser(commands)

    expand = commands.add_parser("expand", help="print the job specs as JSONL; no network")
    expand.add_argument("manifest", type=Path, help="the TOML manifest")
    _log_format_option(expand)

    emulator = commands.add_parser(
        "emulator",
        help="run the VAS emulator standalone (and, behind options, a fake IAM and ECS metadata)",
    )
    _emulator_options(emulator)
    return parser


def _emulator_options(emulator: argparse.ArgumentParser) -> None:
    """The emulator's address, faults, job lives and fake identity services."""
    default = " (default: %(default)s)"
    named = EmulatorOptions  # the defaults, named once
    emulator.add_argument("--host", default=named.host, help="address to listen on" + default)
    emulator.add_argument(
        "--port",
        type=_port,
        default=named.port,
        help="port, 0 to 65535; 0 picks a free one" + default,
    )
    faults: list[tuple[str, Any, object, str | None, str]] = [
        (
            "--p503", _probability, named.p503, "SHARE",
            "share of calls answered 503 IVA.0010" + default,
        ),
        (
            "--rate-limit", _rate, named.rate_limit, "N",
            "calls per second per operation before 429 APIG.0308; 0 = no limit" + default,
        ),
        (
            "--latency", _emulator_seconds, named.latency, "SECONDS",
            "delay before every call is answered" + default,
        ),
        (
            "--lost", _probability, named.lost, "SHARE",
            "share of creates whose answer is lost after the job is created" + default,
        ),
        (
            "--error-after-create", _probability, named.error_after_create, "SHARE",
            "share of creates answered 500/502/504 after the job is created" + default,
        ),
        (
            "--slow", _probability, named.slow, "SHARE",
            "share of creates answered only after --slow-seconds" + default,
        ),
        (
            "--slow-seconds", _emulator_seconds, named.slow_seconds, "SECONDS",
            "how late a --slow create is answered" + default,
        ),
        (
            "--list-lag", _emulator_seconds, named.list_lag, "SECONDS",
            "seconds after its create before a job shows in lists (show finds it at once)"
            + default,
        ),
        (
            "--retry-after", _emulator_seconds, named.retry_after, "SECONDS",
            "send Retry-After on 429 and 503 answers (default: none, as the real gateway)",
        ),
        (
            "--quota", _kept, named.quota, "N",
            "saved jobs at most, then 400 IVA.0012; 0 = unlimited" + default,
        ),
        (
            "--seed", int, named.seed, None,
            "seed of the fault draws, for a reproducible run (default: none, random)",
        ),
    ]  # fmt: skip
    for option, kind, value, metavar, text in faults:
        emulator.add_argument(option, type=kind, default=value, metavar=metavar, help=text)
    jobs = emulator.add_argument_group(
        "how jobs live", "after a create, jobs go PENDING, STARTING, RUNNING, then a final state"
    )
    jobs.add_argument(
        "--time-scale",
        type=_emulator_positive,
        default=named.time_scale,
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
        ("--p-hosting-late", "have a hosting output, whose result arrives late"),
        ("--p-hosting-too-large", "have a hosting output, whose result is too large to host"),
        ("--p-frozen", "end FROZEN (the account in arrears)"),
    ):
        jobs.add_argument(
            option, type=_probability, default=getattr(named, option[2:].replace("-", "_")),
            metavar="SHARE",
            help=f"share of jobs that {fate} (default: 0.0)",
        )  # fmt: skip
    emulator.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON" + default,
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
        default=named.token_ttl,
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
        default=named.credential_ttl,
        metavar="SECONDS",
        help="lifetime of temporary credentials from --metadata" + default,
    )
    identity.add_argument(
        "--no-agency",
        action="store_true",
        help="with --metadata: a server without an agency, securitykey answers 401 "
        "'Please configure Cloud Service Agency first' (default: off)",
    )
    identity.add_argument(
        "--iam-outage",
        type=_kept,
        default=0,
        metavar="N",
        help="a fault: the first N calls to IAM and ECS metadata answer 503 (an outage that "
        "ends; batchsubmit retries them) (default: %(default)s)",
    )
    identity.add_argument(
        "--region",
        default=named.region,
        help="the project's name in IAM: GET /v3/projects?name=REGION (always served) "
        "answers the emulator's project id (default: %(default)s)",
    )


class _Version(argparse.Action):
    """--version, with the event loop this machine runs commands on."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from . import __version__
        from .engine.loop import loop_name

        parser.exit(message=f"batchsubmit {__version__} (event loop: {loop_name()})\n")


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
        help="results format (default: from the extension, .csv or .jsonl)",
    )
    _output_options(parser)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary", type=Path, metavar="PATH", help=SUMMARY_HELP)
    parser.add_argument(
        "--metrics",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics (node_exporter textfile collector; default: none)",
    )


def _endpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="base URL to use instead of the manifest's endpoint/region (default: the manifest's)",
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
        help="seconds a call may take in all (a create's job is then looked up by name) "
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
        help="after a create whose answer was lost (or a killed run's last), wait this long "
        f"before looking the job up by name, and between lookups (0 to {MAX_SETTLE:g}; "
        f"default {DEFAULT_SETTLE:g}): long enough for the service to list a job it just made",
    )
    parser.add_argument(
        "--lookups",
        type=_lookups,
        default=DEFAULT_LOOKUPS,
        metavar="N",
        help="lookups of a lost create (or one a killed run left) before it may be made again "
        f"(1 to {MAX_LOOKUPS}; default {DEFAULT_LOOKUPS})",
    )


def json_logs(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for JSON log lines, read without parsing it: arguments that do
    not parse must be refused in that format too."""
    return raw_value(argv, "--log-format") == "json"


def raw_value(argv: Sequence[str], option: str) -> str | None:
    """The value ``argv`` gives ``option`` (the last one wins), read without parsing it, as
    argparse reads it when it can: ``--option VALUE`` or ``--option=VALUE``, up to ``--``."""
    value: str | None = None
    for at, word in enumerate(argv):
        if word == "--":
            break
        if word == option and at + 1 < len(argv):
            value = argv[at + 1]
        elif word.startswith(option + "="):
            value = word.partition("=")[2]
    return value


def unparsed(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | None:
    """For arguments that did not parse: the command they name, and what they give the
    options a failure summary needs (``--summary``, ``--metrics``, ``--make-room``,
    ``--follow``), read without parsing them; None if no command is named. A value that
    looks like an option (``--summary --metrics m``: argparse's own refusal) is no path."""
    options = _command_options(parser)
    # the first word that is not an option: the top level takes no option with a value
    name = next((word for word in argv if not word.startswith("-")), None)
    if name is None or name not in options:
        return None
    found = argparse.Namespace(name=name)
    words = argv[: argv.index("--")] if "--" in argv else argv
    for option in ("--summary", "--metrics"):
        value = raw_value(argv, option) if option in options[name] else None
        setattr(found, option[2:], Path(value) if value and not value.startswith("-") else None)
    for option in ("--make-room", "--follow"):
        setattr(found, option[2:].replace("-", "_"), option in words)
    return found


def _command_options(parser: argparse.ArgumentParser) -> dict[str, frozenset[str]]:
    """Each command's option strings, by command name."""
    found: dict[str, frozenset[str]] = {}
    for action in parser._actions:  # argparse keeps its commands nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found[name] = frozenset(command._option_string_actions)
    return found


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
        digits = text.strip().lstrip("+-").replace("_", "")
        if digits.isdecimal():  # int() refuses over 4,300 digits: a number, just far too big
            raise argparse.ArgumentTypeError(
                f"must be between {low} and {high:,}, not a number of {len(digits):,} digits"
            ) from None
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


def _seconds(text: str, examples: str) -> float:
    """A duration in days, hours, minutes and seconds (``1d12h``, ``90m``, ``45s``, ``10``),
    the same grammar for every option that takes one."""
    found = _DURATION.fullmatch(text.strip())
    if not text.strip() or not found or not any(found.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. {examples})")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in found.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def _duration(text: str) -> float:
    total = _seconds(text, "2h, 90m, 1h30m, 45s, 1d")
    if not 0 < total <= MAX_DEADLINE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a duration must be more than 0 and at most 7 days (168h)"
        )
    return total


def _emulator_positive(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1e6:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1e6, not {text!r}")
    return value


MAX_EMULATOR_SECONDS = 366 * 24 * 3600.0  # a year: a lifetime or delay beyond it is a typo


def _emulator_seconds(text: str) -> float:
    """Delays and lifetimes: 0 to a year (1e308 s overflowed every token's expiry: IAM 500)."""
    value = _number(text)
    if not 0 <= value <= MAX_EMULATOR_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be 0 to {MAX_EMULATOR_SECONDS:,.0f} seconds (a year), not {text!r}"
        )
    return value


def _port(text: str) -> int:
    """A TCP port; out of range was a traceback (-1) or another port silently (99999)."""
    return _whole(text, 0, 65535)


def _iam_user(text: str) -> Any:
    from .emulator_iam import IamUser

    try:
        return IamUser.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None  # never echo the password


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
    prune.add_argument("--summary", type=Path, metavar="PATH", help=SUMMARY_HELP)
    _pool_options(prune)


def _age(text: str) -> float:
    """A minimum age: 0, or a duration (d, h, m, s)."""
    total = _seconds(text, "24h, 90m, 7d, 0")
    if total > MAX_AGE_DAYS * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: an age is at most {MAX_AGE_DAYS} days")
    return total


def _kept(text: str) -> int:
    """A count that may be 0."""
    return _whole(text, 0, MAX_COUNT)


# -- status and submit --follow ----------------------------------------------------------------

MIN_INTERVAL = 0.01  # seconds (tests); the rate controller still spaces the calls
MAX_INTERVAL = 24 * 3600.0


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
        "file, its name without the extension + .report.<format>: r.csv -> r.report.csv)",
    )
    parser.add_argument(
        "--collect",
        type=Path,
        metavar="DIR",
        help="save each AVAILABLE hosting result to DIR/<job name>.<job id>.json, once "
        "(default: not saved)",
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
    _output_options(status)
    _pool_options(status)


# -- check --------------------------------------------------------------------------------------


def _check_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="check credentials, endpoint, subscription, quota and buckets; create nothing",
    )
    check.add_argument("manifest", type=Path, help="the TOML manifest")
    _endpoint_option(check)
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
    check.add_argument(
        "--format", choices=("csv", "jsonl"), help="results format (default: from the extension)"
    )
    check.add_argument(
        "--timeout",
        type=_timeout,
        default=check_command.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="seconds each network step may take (default 5)",
    )
    check.add_argument(
        "--quota",
        type=_count,
        default=check_command.DEFAULT_QUOTA,
        metavar="N",
        help="saved jobs the account may hold (default 5000, VAS's quota)",
    )
    _log_format_option(check)


# -- options: each command's settings from the parsed arguments, in one place each ------------


def _pool_settings(args: argparse.Namespace) -> PoolOptions:
    return PoolOptions(concurrency=args.concurrency, rate=args.rate, timeout=args.timeout)


def _follow_settings(args: argparse.Namespace) -> FollowOptions:
    return FollowOptions(
        follow=args.follow,
        interval=args.interval,
        report=args.report,
        collect=args.collect,
        stuck_after=args.stuck_after,
    )


def _written(args: argparse.Namespace) -> tuple[tuple[str, Path | None], ...]:
    """--summary and --metrics, for the commands to keep apart from their results file."""
    given = (
        ("--summary", getattr(args, "summary", None)),
        ("--metrics", getattr(args, "metrics", None)),
    )
    return tuple((option, path) for option, path in given if path is not None)


def submit_options(args: argparse.Namespace) -> SubmitOptions:
    return SubmitOptions(
        written=_written(args),
        manifest=args.manifest,
        results=args.results,
        format=args.format,
        endpoint=args.endpoint,
        obs_endpoint=args.obs_endpoint,
        dry_run=args.dry_run,
        emulator=args.emulator,
        run=RunOptions(
            pool=_pool_settings(args),
            settle=args.settle,
            lookups=args.lookups,
            max_jobs=args.max_jobs,
            max_failures=args.max_failures,
            deadline=args.deadline,
            resubmit=args.resubmit,
        ),
        make_room=args.make_room,
        quota=args.quota,
        follow=_follow_settings(args),
    )


def reconcile_options(args: argparse.Namespace) -> ReconcileOptions:
    return ReconcileOptions(
        written=_written(args),
        results=args.results,
        format=args.format,
        endpoint=args.endpoint,
        run=RunOptions(pool=_pool_settings(args), settle=args.settle, lookups=args.lookups),
    )


def prune_options(args: argparse.Namespace) -> PruneOptions:
    return PruneOptions(
        written=_written(args),
        results=args.results,
        format=args.format,
        endpoint=args.endpoint,
        older_than=args.older_than,
        keep=args.keep,
        dry_run=args.dry_run,
        pool=_pool_settings(args),
    )


def status_options(args: argparse.Namespace) -> StatusOptions:
    return StatusOptions(
        written=_written(args),
        results=args.results,
        format=args.format,
        endpoint=args.endpoint,
        deadline=args.deadline,
        follow=_follow_settings(args),
        pool=_pool_settings(args),
    )


def check_options(args: argparse.Namespace) -> CheckOptions:
    return CheckOptions(
        manifest=args.manifest,
        endpoint=args.endpoint,
        obs_endpoint=args.obs_endpoint,
        results=args.results,
        format=args.format,
        timeout=args.timeout,
        quota=args.quota,
    )


def expand_options(args: argparse.Namespace) -> ExpandOptions:
    return ExpandOptions(manifest=args.manifest)


def emulator_options(args: argparse.Namespace) -> EmulatorOptions:
    return EmulatorOptions(
        host=args.host,
        port=args.port,
        p503=args.p503,
        rate_limit=args.rate_limit,
        latency=args.latency,
        lost=args.lost,
        error_after_create=args.error_after_create,
        slow=args.slow,
        slow_seconds=args.slow_seconds,
        list_lag=args.list_lag,
        retry_after=args.retry_after,
        quota=args.quota,
        seed=args.seed,
        time_scale=args.time_scale,
        p_failed=args.p_failed,
        p_create_failed=args.p_create_failed,
        p_start_failed=args.p_start_failed,
        p_unknown_state=args.p_unknown_state,
        p_vanish=args.p_vanish,
        p_hosting_late=args.p_hosting_late,
        p_hosting_too_large=args.p_hosting_too_large,
        p_frozen=args.p_frozen,
        log_requests=args.log_requests,
        iam_users=tuple(args.iam_user),
        token_ttl=args.token_ttl,
        metadata=args.metadata,
        credential_ttl=args.credential_ttl,
        agency=not args.no_agency,
        iam_outage=args.iam_outage,
        region=args.region,
    )
