"""The command line: exit codes, messages that name what is wrong, no secret in any output."""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from batchsubmit import arguments
from batchsubmit.arguments import (
    _age,
    _duration,
    check_options,
    emulator_options,
    expand_options,
    prune_options,
    reconcile_options,
    status_options,
    submit_options,
)
from batchsubmit.auth import Credentials
from batchsubmit.cli import main
from batchsubmit.client import Endpoint
from batchsubmit.commands.check import CheckOptions
from batchsubmit.commands.common import check_endpoint as _check_endpoint
from batchsubmit.commands.common import config as _config
from batchsubmit.commands.common import is_terminal as _is_terminal
from batchsubmit.commands.emulator import EmulatorOptions
from batchsubmit.commands.emulator import faults as _emulator_faults
from batchsubmit.commands.expand import ExpandOptions
from batchsubmit.commands.prune import PruneOptions
from batchsubmit.commands.reconcile import ReconcileOptions
from batchsubmit.commands.status import StatusOptions
from batchsubmit.commands.submit import SubmitOptions
from batchsubmit.emulator import EMULATOR_PROJECT_ID, EMULATOR_SK
from batchsubmit.jobs import SpecBuilder
from batchsubmit.journal import RunLock
from batchsubmit.manifest import load_manifest
from batchsubmit.results import COLUMNS, Outcome, ResultsWriter, iter_rows
from batchsubmit.runner import lock_path
from batchsubmit.sources import ObjectRef

from .helpers import (
    QUICK,
    LiveEmulator,
    cli,
    cli_env,
    emulator_client,
    run_cli,
    submit_args,
    video_keys,
    write_manifest,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-that-must-never-be-printed-0123456789"


def test_sample_manifest_runs_against_the_emulator(tmp_path: Path) -> None:
    """The README's quick start: the sample manifest against the embedded emulator."""
    results = tmp_path / "r.csv"
    done = run_cli(
        "submit", str(ROOT / "samples" / "nightly.toml"), "--emulator", "--results", str(results)
    )
    assert done.returncode == 0, done.stderr
    assert "EMULATOR" in done.stderr
    assert results.read_text(encoding="utf-8").count(",submitted,") == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[service\nname = 1", "nightly.toml:1: TOML syntax error"),
        (
            '[service]\nname = "video-analyze"\nversion = "1.0"\nregion = "cn-north-4"\n'
            'colour = "red"\n[job]\noutput = "obs://out-bucket/x/"\n[[source]]\npaths = []\n',
            "nightly.toml:5: service.colour: unknown key",
        ),
        (
            '[service]\nname = "video-analyze"\nversion = "1.0"\nregion = "cn-north-4"\n'
            '[job]\noutput = "obs://out-bucket/x/"\nname = "{nope}"\n[[source]]\npaths = []\n',
            "job.name: unknown placeholder {nope}",
        ),
    ],
)
def test_broken_manifest_exits_2_before_any_request(
    tmp_path: Path, live_emulator: LiveEmulator, text: str, expected: str
) -> None:
    """A broken manifest: exit 2, the message names file and line or key, nothing is sent."""
    manifest = tmp_path / "nightly.toml"
    manifest.write_text(text, encoding="utf-8")
    done = run_cli("submit", str(manifest), "--endpoint", live_emulator.url)
    assert done.returncode == 2
    assert expected in done.stderr
    assert sum(live_emulator.emulator.calls.values()) == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"obs://in-bucket/a.mp4\nthis is not a path\n", "listing.txt:2: not an obs:// path"),
        (b"obs://in-bucket/a.mp4\nobs://in-bucket/\xff.mp4\n", "listing.txt:2: not UTF-8"),
        (b"obs://In_Bucket/a.mp4\n", "listing.txt:1: 'In_Bucket'"),
        (b"obs://in-bucket/a\x07.mp4\n", "listing.txt:1: control character"),
        ("obs://in-bucket/a.mp4\r\n".encode("utf-16"), "listing.txt:1: UTF-16 text"),
    ],
)
def test_bad_listing_exits_2_naming_the_line(
    tmp_path: Path, live_emulator: LiveEmulator, line: bytes, expected: str
) -> None:
    """A bad listing line: exit 2 naming file:line, and no request, even for earlier good lines."""
    manifest = write_manifest(tmp_path, [])
    (tmp_path / "listing.txt").write_bytes(line)
    done = run_cli("submit", str(manifest), "--endpoint", live_emulator.url)
    assert done.returncode == 2
    assert expected in done.stderr
    assert sum(live_emulator.emulator.calls.values()) == 0


def test_missing_credentials_exit_2(tmp_path: Path) -> None:
    """No AK/SK in the environment: exit 2 naming the variables, before any request."""
    manifest = write_manifest(tmp_path, video_keys(3))
    env = {k: v for k, v in cli_env().items() if k != "HUAWEICLOUD_SDK_SK"}
    done = run_cli("submit", str(manifest), "--endpoint", "http://127.0.0.1:9", env=env)
    assert done.returncode == 2
    assert "HUAWEICLOUD_SDK_SK" in done.stderr


def test_secret_never_appears_in_any_output(tmp_path: Path, live_emulator: LiveEmulator) -> None:
    """With a wrong SK: exit 3; the SK is in no log line, results row, summary or metric."""
    manifest = write_manifest(tmp_path, video_keys(3))
    env = cli_env() | {"HUAWEICLOUD_SDK_SK": SECRET, "HUAWEICLOUD_SDK_SECURITY_TOKEN": SECRET}
    files = [tmp_path / "r.csv", tmp_path / "s.json", tmp_path / "m.prom"]
    done = run_cli(
        "submit",
        str(manifest),
        "--endpoint",
        live_emulator.url,
        "--results",
        str(files[0]),
        "--summary",
        str(files[1]),
        "--metrics",
        str(files[2]),
        "--log-format",
        "json",
        env=env,
    )
    assert done.returncode == 3
    assert "APIGW.0301" in done.stderr
    for text in [done.stdout, done.stderr, *(f.read_text() for f in files)]:
        assert SECRET not in text


def test_expand_prints_job_specs(tmp_path: Path) -> None:
    """expand: one JSON line per video with its create body; no credentials needed."""
    manifest = write_manifest(tmp_path, video_keys(5))
    done = run_cli("expand", str(manifest), env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    specs = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(specs) == 5
    assert specs[0]["body"]["name"] == specs[0]["name"]
    assert specs[0]["body"]["input"]["data"][0]["bucket"] == "in-bucket"
    assert "not videos" in done.stderr


def test_dry_run_sends_nothing_and_respects_the_ledger(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """--dry-run lists what would be sent (what the ledger says is done is left out)."""
    keys = video_keys(6)
    manifest = write_manifest(tmp_path, keys[:4])
    results = tmp_path / "r.csv"
    assert (
        run_cli(
            "submit", str(manifest), "--endpoint", live_emulator.url, "--results", str(results)
        ).returncode
        == 0
    )
    write_manifest(tmp_path, keys)
    calls = sum(live_emulator.emulator.calls.values())
    done = run_cli(
        "submit",
        str(manifest),
        "--endpoint",
        live_emulator.url,
        "--results",
        str(results),
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert sum(live_emulator.emulator.calls.values()) == calls


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("90m", 5400),
        ("1h30m", 5400),
        ("45s", 45),
        ("10", 10),
        ("7d", 604800),
        ("1d12h", 129600),
    ],
)
def test_deadline_durations(text: str, seconds: float) -> None:
    """--deadline takes 2h, 90m, 1h30m, 45s or plain seconds, and days: the README's "at most
    7 days" was refused as "7d" (though `prune --older-than 7d` took it)."""
    assert _duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("0s", 0), ("7d", 604800), ("24h", 86400), ("1d6h", 108000)]
)
def test_ages_take_the_same_durations(text: str, seconds: float) -> None:
    assert _age(text) == seconds


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "m.toml", "--rate", "-1"],
        ["submit", "m.toml", "--concurrency", "0"],
        ["submit", "m.toml", "--deadline", "soon"],
        ["submit", "m.toml", "--format", "xml"],
    ],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    """Bad option values are usage errors (exit 2)."""
    with pytest.raises(SystemExit) as raised:
        main(args)
    assert raised.value.code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "m.toml", "--log-format", "json", "--concurrency", "0"],
        ["status", "r.csv", "--log-format=json", "-q", "--bogus"],
        ["--bogus", "submit", "m.toml", "--log-format", "json"],
    ],
)
def test_bad_arguments_are_refused_in_json_under_log_format_json(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse's refusal (usage lines, then the error) was text on a stderr that
    --log-format json promises is one JSON object a line: it is one error line now."""
    with pytest.raises(SystemExit) as raised:
        main(args)
    assert raised.value.code == 2
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    assert lines[0]["level"] == "error"
    assert "error: " in lines[0]["msg"]


def test_emulator_and_endpoint_together_are_refused(tmp_path: Path) -> None:
    """--endpoint beside --emulator was ignored without a word: the operator meant one."""
    manifest = write_manifest(tmp_path, video_keys(1))
    done = run_cli("submit", str(manifest), "--emulator", "--endpoint", "http://127.0.0.1:9")
    assert done.returncode == 2, done.stderr
    assert "--emulator and --endpoint" in done.stderr
    assert not list(tmp_path.glob("*.csv"))


def test_bad_endpoint_exits_2(tmp_path: Path) -> None:
    """--endpoint must be an http(s) URL without a path."""
    manifest = write_manifest(tmp_path, video_keys(1))
    done = run_cli("submit", str(manifest), "--endpoint", "ftp://example.com/x")
    assert done.returncode == 2
    assert "--endpoint" in done.stderr


def test_expand_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    """`expand | head`: no traceback when the reader goes away."""
    manifest = write_manifest(tmp_path, video_keys(3000))
    with subprocess.Popen(
        cli("expand", str(manifest)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env()
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read().decode()
        process.wait(30)
    assert "Traceback" not in err
    assert process.returncode == 141


@pytest.mark.parametrize(
    "args",
    [
        ["--timeout", "0"],
        ["--timeout", "-1"],
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--timeout", "1e9"],
        ["--concurrency", "1000000000"],
        ["--rate", "1e12"],
        ["--rate", "nan"],
        ["--max-jobs", "-1"],
        ["--max-jobs", "1000000000000"],
        ["--max-failures", "0"],
        ["--deadline", "0s"],
        ["--deadline", "100000h"],
        ["--deadline", "8d"],
    ],
)
def test_absurd_numbers_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A typo'd number (no timeout, 10**9 workers, a deadline of years) is refused with exit 2
    and the option named, before anything is read or sent."""
    with pytest.raises(SystemExit) as raised:
        main(["submit", "m.toml", *args])
    assert raised.value.code == 2
    assert args[0] in capsys.readouterr().err


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for where, option in _options(sub):
                    yield f"{name} {where}", option
        elif not isinstance(action, argparse._HelpAction):
            yield "/".join(action.option_strings) or action.dest, action


def test_every_option_has_help_showing_its_default() -> None:
    """`--help` explains every option and argument of every command, and says its default:
    what an option left out does, "none" included (``--summary``, ``--metrics`` and check's
    ``--format`` said nothing)."""
    for where, action in _options(arguments.parser()):
        assert action.help, f"{where}: no help text"
        takes_value = action.option_strings and action.nargs != 0
        if takes_value or action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"{where}: help does not show the default"


def test_help_says_quota_zero_means_unlimited() -> None:
    """`--quota 0` reads as "unlimited", never as "no jobs"."""
    helps = {where: action.help or "" for where, action in _options(arguments.parser())}
    assert "0 = unlimited" in helps["emulator --quota"]


def test_the_hosting_fates_help_reads_as_a_sentence() -> None:
    """`--p-hosting-late` said "share of jobs that with a hosting output: a result that
    arrives late", a sentence with no verb."""
    helps = {where: action.help or "" for where, action in _options(arguments.parser())}
    for option in ("emulator --p-hosting-late", "emulator --p-hosting-too-large"):
        assert "that with" not in helps[option], helps[option]
        assert helps[option].startswith("share of jobs that have a hosting output, whose result")


def test_reconcile_with_nothing_to_do_succeeds(tmp_path: Path) -> None:
    """A nightly `reconcile` on a clean ledger is success (exit 0), with one line saying so."""
    results = tmp_path / "r.csv"
    results.write_text(",".join(COLUMNS) + "\r\n", encoding="utf-8")
    done = run_cli("reconcile", str(results))
    assert done.returncode == 0, done.stderr
    assert "nothing to reconcile" in done.stderr


def test_results_through_a_symlink_share_the_lock(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """Two spellings of one results file are one ledger: a run through a symlink finds the
    lock held through the real name (exit 75) and sends nothing."""
    manifest = write_manifest(tmp_path, video_keys(3))
    real = tmp_path / "out.csv"
    real.write_text(",".join(COLUMNS) + "\r\n", encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    lock = RunLock(lock_path(real))
    lock.acquire("now")
    try:
        done = run_cli(*submit_args(manifest, live_emulator.url, link))
    finally:
        lock.release()
    assert done.returncode == 75, done.stderr
    assert sum(live_emulator.emulator.calls.values()) == 0


def test_a_results_file_with_a_second_hard_link_is_refused(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """A hard link is another name for the file that no lock or journal follows (they are
    named after one name): two runs through the two names would create the same jobs twice.
    Every command refuses it (exit 2) before any request, saying what to do."""
    manifest = write_manifest(tmp_path, video_keys(3))
    real = tmp_path / "out.csv"
    real.write_text(",".join(COLUMNS) + "\r\n", encoding="utf-8")
    os.link(real, tmp_path / "hard.csv")
    for name in ("out.csv", "hard.csv"):
        results = str(tmp_path / name)
        for args in (
            submit_args(manifest, live_emulator.url, tmp_path / name),
            ["status", results],
            ["prune", results, "--dry-run"],
            ["reconcile", results],
        ):
            done = run_cli(*args)
            assert done.returncode == 2, (args, done.stderr)
            assert "2 hard links" in done.stderr
            assert "Traceback" not in done.stderr
    assert sum(live_emulator.emulator.calls.values()) == 0


def test_a_zero_sized_terminal_gets_progress_lines() -> None:
    """A 0x0 terminal (cron wrappers, `script` without a size) shows lines, not a bar."""
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as stream:
            assert stream.isatty()
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
            assert not _is_terminal(stream)
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            assert _is_terminal(stream)
    finally:
        os.close(leader)
        os.close(follower)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("HTTP://LocalHost:8080/", "http://localhost:8080"),
        ("https://IVA.cn-north-4.MyHuaweiCloud.com", "https://iva.cn-north-4.myhuaweicloud.com"),
    ],
)
def test_endpoint_scheme_and_host_are_case_insensitive(typed: str, expected: str) -> None:
    """`--endpoint HTTP://...` is accepted, and written the one way the ledger expects."""
    assert _check_endpoint(typed) == expected


def test_unknown_region_is_warned_about(tmp_path: Path) -> None:
    """A region the SDK does not list (a typo such as cn-nowhere-9) gets a warning naming the
    known ones; a dry run sends nothing to find that out."""
    manifest = write_manifest(tmp_path, video_keys(1))
    text = manifest.read_text(encoding="utf-8")
    assert "cn-north-4" in text
    manifest.write_text(text.replace("cn-north-4", "cn-nowhere-9"), encoding="utf-8")
    done = run_cli("submit", str(manifest), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "cn-nowhere-9" in done.stderr
    assert "cn-north-4" in done.stderr.split("cn-nowhere-9", 1)[1]


def test_reconcile_takes_two_spellings_of_one_service_as_one(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """Unknown rows written through `localhost` and through `127.0.0.1` name one service:
    `reconcile` resolves both instead of refusing "several services"."""
    results = tmp_path / "r.csv"
    writer = ResultsWriter(results, "csv", lambda _m: None)
    port = live_emulator.url.rsplit(":", 1)[1]
    for host, key in (("localhost", "a.mp4"), ("127.0.0.1", "b.mp4")):
        writer.write(
            Outcome(
                source=f"obs://in-bucket/{key}",
                name=f"{key[0]}-000000000000",
                job_id="",
                status="unknown",
                http_status=0,
                error_code="TIMEOUT",
                error_msg="",
                attempts=1,
                request_id="",
                submitted_at="2026-12-01T00:00:00.000Z",
                service_url=f"http://{host}:{port}/v2/{EMULATOR_PROJECT_ID}/services/"
                "video-analyze/tasks",
            )
        )
    writer.close()
    done = run_cli("reconcile", str(results), *QUICK)
    assert done.returncode == 0, done.stderr
    assert "2 outcomes to resolve" in done.stderr


def test_emulator_runs_jobs_with_the_lives_its_options_give(tmp_path: Path) -> None:
    """`batchsubmit emulator --time-scale --p-failed` set the lives of the standalone
    emulator's jobs; fate shares that add up to more than 1 are refused (exit 2), no traceback."""
    done = run_cli("emulator", "--p-failed", "0.7", "--p-frozen", "0.5", "--port", "0")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    parsed = arguments.parser().parse_args(["emulator", "--time-scale", "1000", "--p-failed", "1"])
    faults = _emulator_faults(emulator_options(parsed))
    assert (faults.jobs.time_scale, faults.jobs.p_failed) == (1000.0, 1.0)


def test_duplicates_and_the_credential_source_reach_every_report(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """Two jobs for one video (a lost create that surfaced late): the final line names the
    extra one to delete, the summary lists its id and counts it, the metrics count it, and the
    summary says where the credentials came from (never what they are)."""
    keys = video_keys(2)
    manifest = write_manifest(tmp_path, keys)
    results = tmp_path / "r.csv"
    loaded = load_manifest(manifest)
    spec = SpecBuilder(loaded.service, loaded.job).build(ObjectRef("in-bucket", keys[0]))
    emulator = live_emulator.emulator
    with emulator_client(live_emulator.url) as create:
        older = create(spec.body)
        emulator.tasks[older]["created_at"] = "2026-01-01T00:00:00Z"
        newer = create(spec.body)
    journal = results.with_name(results.name + ".journal")
    journal.write_bytes(orjson.dumps({"source": spec.source, "name": spec.name}) + b"\n")
    summary, metrics = tmp_path / "s.json", tmp_path / "m.prom"
    done = run_cli(
        *submit_args(manifest, live_emulator.url, results),
        "--summary",
        str(summary),
        "--metrics",
        str(metrics),
    )
    assert done.returncode == 0, done.stderr
    data = orjson.loads(summary.read_bytes())
    assert (data["counts"]["duplicates"], data["duplicates"]) == (1, [newer])
    assert data["credentials"].startswith("environment")
    assert EMULATOR_SK not in summary.read_text() + done.stderr
    assert f"delete them: {newer}" in done.stderr.splitlines()[-1]
    assert 'batchsubmit_jobs{outcome="duplicates"} 1\n' in metrics.read_text()


def test_the_lookup_wait_is_configurable_and_bounded() -> None:
    """`--settle` and `--lookups` set how long a lost create is looked for before it may be
    made again (a service that lists new jobs late needs more); absurd values are refused."""
    parsed = arguments.parser().parse_args(["submit", "m.toml", "--settle", "20", "--lookups", "5"])
    endpoint = Endpoint(base_url="http://x", project_id=EMULATOR_PROJECT_ID, service_name="s")
    options = submit_options(parsed).run
    pool = _config(options, None, Path("r.csv"), "csv", endpoint, Credentials("ak", "sk")).pool
    assert (pool.settle, pool.lookup_spacing, pool.lookup_tries) == (20.0, 20.0, 5)
    for bad in (["--settle", "-1"], ["--settle", "1e9"], ["--lookups", "0"]):
        with pytest.raises(SystemExit):
            arguments.parser().parse_args(["submit", "m.toml", *bad])


def test_each_commands_options_default_as_its_command_line_does() -> None:
    """The options each command takes are built from the parsed arguments in arguments.py; with
    nothing typed they equal the settings' named defaults, so a default changed in one place
    and not the other fails here."""
    given = Path("m.toml")
    cases: list[tuple[list[str], Callable[[argparse.Namespace], object], object]] = [
        (["submit", "m.toml"], submit_options, SubmitOptions(manifest=given)),
        (["reconcile", "m.toml"], reconcile_options, ReconcileOptions(results=given)),
        (["prune", "m.toml"], prune_options, PruneOptions(results=given)),
        (["status", "m.toml"], status_options, StatusOptions(results=given)),
        (["check", "m.toml"], check_options, CheckOptions(manifest=given)),
        (["expand", "m.toml"], expand_options, ExpandOptions(manifest=given)),
        (["emulator"], emulator_options, EmulatorOptions()),
    ]
    for argv, build, expected in cases:
        assert build(arguments.parser().parse_args(argv)) == expected, argv
    typed = submit_options(
        arguments.parser().parse_args(
            ["submit", "m.toml", "--max-jobs", "3", "--follow", "--quota", "9"]
        )
    )
    assert (typed.run.max_jobs, typed.follow.follow, typed.quota) == (3, True, 9)


def _row(source: str, status: str, service_url: str, job_id: str = "") -> Outcome:
    return Outcome(
        source=source,
        name=source.rsplit("/", 1)[-1].replace(".", "-") + "-000000000000",
        job_id=job_id,
        status=status,
        http_status=0 if status == "unknown" else 200,
        error_code="TIMEOUT" if status == "unknown" else "",
        error_msg="",
        attempts=1,
        request_id="",
        submitted_at="2026-12-01T00:00:00.000Z",
        service_url=service_url,
    )


def test_a_second_reconcile_has_nothing_to_do(tmp_path: Path, live_emulator: LiveEmulator) -> None:
    """Unknown rows a later row resolved are not open: after a reconcile resolved the file's
    unknowns, the next one says "nothing to reconcile" (exit 0) without credentials, also when
    the resolved unknowns were of two services (not "unknown outcomes for several services")."""
    results = tmp_path / "r.csv"
    tasks = f"{live_emulator.url}/v2/{EMULATOR_PROJECT_ID}/services/video-analyze/tasks"
    writer = ResultsWriter(results, "csv", lambda _m: None)
    writer.write(_row("obs://in-bucket/a.mp4", "unknown", tasks))
    writer.close()
    done = run_cli("reconcile", str(results), "--rate", "0", "--settle", "0", "--lookups", "1")
    assert done.returncode == 0, done.stderr
    assert "1 outcomes to resolve" in done.stderr
    other = tasks.replace("video-analyze", "other-service")
    writer = ResultsWriter(results, "csv", lambda _m: None)
    writer.write(_row("obs://in-bucket/b.mp4", "unknown", other))
    writer.write(_row("obs://in-bucket/b.mp4", "submitted", other, "f" * 32))
    writer.close()
    assert [row[2] for row in iter_rows(results, "csv")] == [
        "unknown",
        "failed",
        "unknown",
        "submitted",
    ]
    calls = sum(live_emulator.emulator.calls.values())
    no_keys = {k: v for k, v in cli_env().items() if not k.startswith("HUAWEICLOUD_SDK_")}
    again = run_cli("reconcile", str(results), env=no_keys)
    assert again.returncode == 0, again.stderr
    assert "nothing to reconcile" in again.stderr
    assert sum(live_emulator.emulator.calls.values()) == calls


def test_a_signal_while_the_arguments_are_parsed_is_an_exit_code_and_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() handles SIGTERM from its first line: one while argparse runs is exit 130/143,
    said, not a traceback (here a Ctrl-C, raised where the parser is built)."""

    from batchsubmit import cli

    def interrupted(_argv: list[str]) -> argparse.Namespace:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_parse", interrupted)
    assert main(["submit", "m.toml"]) == 130
    assert "SIGINT received while starting" in capsys.readouterr().err


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_signal_raised_inside_a_task_group_is_still_the_signal(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    wrapped: bool,
) -> None:
    """The CLI's SIGTERM handler raises; between a pool's phases (no watcher listening) it is
    raised inside a task group and reaches main() wrapped in an exception group: that was a
    traceback and exit 1 ("some jobs failed"). Any other error in a group is left alone."""
    from batchsubmit import cli

    def terminated(*_args: object) -> int:
        signal = cli._Terminated()
        raise (
            BaseExceptionGroup("tasks", [BaseExceptionGroup("inner", [signal])])
            if wrapped
            else signal
        )

    def failed(*_args: object) -> int:
        raise BaseExceptionGroup("tasks", [cli._Terminated(), ValueError("a bug")])

    summary = tmp_path / "last.json"
    monkeypatch.setitem(cli._COMMANDS, "submit", terminated)
    assert main(["submit", "m.toml", "--summary", str(summary)]) == 143
    assert "SIGTERM received; stopped at once" in capsys.readouterr().err
    assert orjson.loads(summary.read_bytes())["exit_code"] == 143
    monkeypatch.setitem(cli._COMMANDS, "submit", failed)
    with pytest.raises(BaseExceptionGroup):
        main(["submit", "m.toml"])
