"""Bad input is refused before any request: exit 2, a message naming the option or file and
what is wrong, never a traceback, and nothing created that a later error could lose."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from batchsubmit import arguments
from batchsubmit.cli import main
from batchsubmit.commands.common import check_endpoint, check_outputs_apart
from batchsubmit.errors import ManifestError, UsageError
from batchsubmit.manifest import load_manifest
from batchsubmit.results import COLUMNS

from .helpers import (
    LiveEmulator,
    config_for,
    run_cli,
    run_submit,
    submit_args,
    video_keys,
    write_manifest,
)

# What each bad path is, made under a test's directory: (name, how to make it).
Maker = Callable[[Path], str]


def _directory(tmp: Path) -> str:
    (tmp / "folder.csv").mkdir()
    return str(tmp / "folder.csv")


def _missing_parent(tmp: Path) -> str:
    return str(tmp / "missing" / "x.csv")


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe.csv")
    return str(tmp / "pipe.csv")


def _loop(tmp: Path) -> str:
    """A symlink to itself: no file at all (pathlib raises RuntimeError before 3.13)."""
    (tmp / "loop.csv").symlink_to(tmp / "loop.csv")
    return str(tmp / "loop.csv")


def _file(tmp: Path) -> str:
    (tmp / "file.csv").write_text("x", encoding="utf-8")
    return str(tmp / "file.csv")


def _under_a_file(tmp: Path) -> str:
    return _file(tmp) + "/sub"


def _device(tmp: Path) -> str:
    """A character device: a private /dev/null node when root may make one (so a broken rule
    replaces or writes beside that one, never the machine's), else /dev/null itself (which
    nobody else may replace)."""
    if os.geteuid() != 0:
        return os.devnull
    node = tmp / "null.csv"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return str(node)


# What the message says is wrong with each.
SAYS: dict[Maker, str] = {
    _directory: "is a directory",
    _missing_parent: "does not exist",
    _fifo: "is a FIFO",
    _device: "is a character device",
    _loop: "symbolic link",
    _file: "is not a directory",
    _under_a_file: "is not a directory",
}
OUTPUT_FILES: list[tuple[str, Maker]] = [
    ("--summary", _directory),
    ("--summary", _missing_parent),
    ("--summary", _device),
    ("--metrics", _directory),
    ("--metrics", _missing_parent),
    ("--metrics", _fifo),
    ("--summary", _loop),
    ("--report", _loop),
    ("--report", _directory),
    ("--report", _missing_parent),
    ("--collect", _file),
    ("--collect", _under_a_file),
]
RESULTS_FILES: list[Maker] = [_directory, _fifo, _device, _loop]


@pytest.fixture
def ledger(tmp_path: Path, live_emulator: LiveEmulator) -> tuple[Path, Path]:
    """A manifest and a results file with jobs on the live emulator (status, prune and
    reconcile have something to ask it about)."""
    manifest = write_manifest(tmp_path, video_keys(3))
    results = tmp_path / "r.csv"
    # in this process: a CLI process would cost ~0.5 s of imports for each of many cases
    stats, _ = anyio.run(run_submit, config_for(manifest, live_emulator.url, results))
    assert stats.submitted == 3
    return manifest, results


def _refused(done: subprocess.CompletedProcess[str], named: str, make: Maker) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert named in last, done.stderr
    assert SAYS[make] in last, done.stderr


@pytest.mark.parametrize(("option", "make"), OUTPUT_FILES)
def test_output_paths_are_checked_before_any_job_is_created(
    tmp_path: Path, live_emulator: LiveEmulator, option: str, make: Maker
) -> None:
    """--summary, --metrics, --report and --collect are written after the jobs were created:
    a typo there is exit 2 before the first create, not an error once the night's jobs exist
    (and, for --summary /dev/null as root, never a device replaced by a file)."""
    manifest = write_manifest(tmp_path, video_keys(3))
    path = make(tmp_path)
    args = submit_args(manifest, live_emulator.url, tmp_path / "r.csv", option, path)
    done = run_cli(*args, "--follow", "--interval", "0.01", timeout=30)
    _refused(done, option, make)
    assert sum(live_emulator.emulator.calls.values()) == 0
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("make", RESULTS_FILES)
def test_a_results_path_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, live_emulator: LiveEmulator, make: Maker
) -> None:
    """A directory, a FIFO or a device as the results file: exit 2 naming it, before any
    request, in every command that takes one (a device took the rows and kept none, and the
    lock and journal went beside it into /dev; a FIFO hung the ledger read forever)."""
    manifest = write_manifest(tmp_path, video_keys(3))
    path = make(tmp_path)
    for args in (
        [*submit_args(manifest, live_emulator.url, Path(path)), "--format", "csv"],
        [
            "check",
            str(manifest),
            "--endpoint",
            live_emulator.url,
            "--results",
            path,
            "--format",
            "csv",
        ],
        ["status", path, "--format", "csv"],
        ["prune", path, "--format", "csv"],
        ["prune", path, "--format", "csv", "--dry-run"],
        ["reconcile", path, "--format", "csv"],
    ):
        done = run_cli(*args, timeout=30)
        _refused(done, path, make)
        assert "regular file" in done.stderr, args
    assert sum(live_emulator.emulator.calls.values()) == 0
    assert not Path(path + ".lock").exists()


@pytest.mark.parametrize(
    ("command", "option", "make"),
    [
        ("status", "--summary", _directory),
        ("status", "--metrics", _missing_parent),
        ("status", "--report", _directory),
        ("status", "--collect", _file),
        ("prune", "--summary", _device),
    ],
)
def test_status_and_prune_check_their_outputs_first(
    ledger: tuple[Path, Path],
    live_emulator: LiveEmulator,
    tmp_path: Path,
    command: str,
    option: str,
    make: Maker,
) -> None:
    """status and prune write their summary, metrics and report at the end too: a bad path
    is exit 2 before they ask the service anything."""
    _manifest, results = ledger
    before = sum(live_emulator.emulator.calls.values())
    path = make(tmp_path)
    extra = ["--older-than", "0"] if command == "prune" else ["--follow", "--interval", "0.01"]
    done = run_cli(command, str(results), option, path, *extra, timeout=30)
    _refused(done, option, make)
    assert sum(live_emulator.emulator.calls.values()) == before


@pytest.mark.parametrize(
    ("command", "option", "target"),
    [
        ("submit", "--summary", "results"),
        ("submit", "--metrics", "./results"),
        ("submit", "--report", "results"),
        ("submit", "--summary", "manifest"),
        ("submit", "--summary", "results.journal"),
        ("status", "--report", "results"),
        ("status", "--summary", "results.follow.jsonl"),
        ("prune", "--summary", "results"),
    ],
)
def test_an_output_naming_the_results_file_or_the_manifest_is_refused(
    ledger: tuple[Path, Path],
    live_emulator: LiveEmulator,
    command: str,
    option: str,
    target: str,
) -> None:
    """--summary, --metrics and --report are replaced whole at the end: given the results
    file (in any spelling), a file beside it or the manifest, they replaced it once the jobs
    were created (every row lost, the next night refused its own ledger). Exit 2 before any
    request, the file untouched."""
    manifest, results = ledger
    where = {
        "results": results,
        "./results": results.parent / "." / results.name,
        "manifest": manifest,
    }.get(target) or results.with_name(results.name + target.removeprefix("results"))
    where.write_bytes(where.read_bytes() if where.exists() else b"x\n")
    kept = {p: p.read_bytes() for p in (results, manifest, where)}
    before = sum(live_emulator.emulator.calls.values())
    if command == "submit":
        follow = ("--follow", "--interval", "0.01")
        args = [*submit_args(manifest, live_emulator.url, results), *follow]
    else:
        args = [command, str(results)]
    done = run_cli(*args, option, str(where), timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert option in done.stderr, done.stderr
    assert "would be overwritten" in done.stderr, done.stderr
    assert sum(live_emulator.emulator.calls.values()) == before
    assert {p: p.read_bytes() for p in kept} == kept


def test_a_failure_summary_never_replaces_the_results_file(
    ledger: tuple[Path, Path], live_emulator: LiveEmulator
) -> None:
    """An error before the run (here a missing listing) still writes a failure summary: it
    replaced the results file given as --summary, before the outputs were ever compared."""
    manifest, results = ledger
    manifest.write_text(
        manifest.read_text(encoding="utf-8") + '[[source]]\nlisting = "missing.txt"\n',
        encoding="utf-8",
    )
    kept = results.read_bytes()
    done = run_cli(*submit_args(manifest, live_emulator.url, results), "--summary", str(results))
    assert done.returncode == 2, done.stderr
    assert "no such listing file" in done.stderr
    assert results.read_bytes() == kept


BAD_ENDPOINTS = ["http://127.0.0.1:99999", "http://[::1", "http://[::1]:70000", "http://a_b:80"]


@pytest.mark.parametrize("url", BAD_ENDPOINTS)
def test_a_bad_endpoint_is_exit_2_naming_the_option_in_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """A port out of range or an unclosed IPv6 bracket in --endpoint or --obs-endpoint: exit
    2 naming the option, never a traceback from deep in the client, in every command (also
    where the run would not have used it: a typo must not wait for the night it matters)."""
    manifest = write_manifest(tmp_path, video_keys(1))
    results = tmp_path / "r.csv"
    results.write_text(",".join(COLUMNS) + "\r\n", encoding="utf-8")
    for option in ("--endpoint", "--obs-endpoint"):
        for args in (
            ["submit", str(manifest)],
            ["submit", str(manifest), "--dry-run"],
            ["submit", str(manifest), "--emulator"],
            ["check", str(manifest)],
        ):
            assert main([*args, option, url]) == 2, (args, option)
            assert option in capsys.readouterr().err.splitlines()[-1]
    for command in ("status", "prune", "reconcile"):
        assert main([command, str(results), "--endpoint", url]) == 2, command
        assert "--endpoint" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("password", ["S3CRET-PW", "S3/CRET-PW", "S3@CRET-PW", "S3 CRET#?PW"])
def test_a_password_in_a_refused_endpoint_is_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], password: str
) -> None:
    """An endpoint typed with credentials in it is refused (no user part), and the message
    shows the URL with the password hidden, from the command line and from the manifest,
    whatever characters it holds (one with a '/' or '@' was shown whole or in part)."""
    manifest = write_manifest(tmp_path, video_keys(1))
    url = f"https://ops:{password}@iva.cn-north-4.myhuaweicloud.com"
    assert main(["submit", str(manifest), "--dry-run", "--endpoint", url]) == 2
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace('region = "cn-north-4"', f"endpoint = {url!r}"), "utf-8")
    assert main(["submit", str(manifest), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "S3" not in err, err
    assert "CRET" not in err, err
    assert err.count("ops:***@iva.") == 2


@pytest.mark.parametrize(
    "url",
    [
        *BAD_ENDPOINTS,
        "HTTP://LocalHost:8080/",
        "https://IVA.cn-north-4.MyHuaweiCloud.com:443",
        "http://[::1]:8080",
        "http://[::1]",
        "http://x:80",
        "http://x/path",
        "http://user@x",
        "ftp://x",
    ],
)
def test_the_command_line_and_the_manifest_take_one_endpoint_rule(tmp_path: Path, url: str) -> None:
    """--endpoint and service.endpoint accept the same URLs and spell each the same way, so a
    service is one ledger key whichever of the two named it."""
    manifest = write_manifest(tmp_path, [])
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace('region = "cn-north-4"', f"endpoint = {url!r}"), "utf-8")
    try:
        expected: str | None = load_manifest(manifest).service.endpoint
    except ManifestError:
        expected = None
    try:
        typed: str | None = check_endpoint(url)
    except UsageError:
        typed = None
    assert typed == expected


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "-1"],
        ["--port", "99999"],
        ["--quota", "-5"],
        ["--token-ttl", "1e308"],
        ["--credential-ttl", "1e308"],
        ["--latency", "1e308"],
        ["--slow-seconds", "-1"],
    ],
)
def test_the_emulators_numbers_are_bounded(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`batchsubmit emulator` refuses a port out of range (99999 listened on another port),
    a negative quota and lifetimes that overflow every token's expiry (each login a 500):
    exit 2 naming the option. (Parsed only: an emulator let through would serve forever.)"""
    with pytest.raises(SystemExit) as raised:
        arguments.parser().parse_args(["emulator", *args])
    assert raised.value.code == 2
    assert f"argument {args[0]}" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--max-jobs", "--concurrency", "--lookups", "--quota"])
def test_a_count_of_thousands_of_digits_is_too_big_not_not_a_number(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """int() refuses strings of over 4,300 digits with ValueError: the count was said to be
    "not a whole number", and the message echoed all 5,000 digits."""
    with pytest.raises(SystemExit) as raised:
        arguments.parser().parse_args(["submit", "m.toml", option, "9" * 5000])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be between 1 and " in err
    assert "not a number of 5,000 digits" in err
    assert "9" * 100 not in err


def test_the_emulator_says_why_it_cannot_listen(tmp_path: Path) -> None:
    """A port in use, an address not this machine's or a host name that does not resolve:
    exit 2 naming host and port, not a traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for host, where in (
            ("127.0.0.1", f"127.0.0.1 port {port}"),
            ("nonexist.invalid", f"nonexist.invalid port {port}"),
        ):
            done = run_cli("emulator", "--host", host, "--port", port, timeout=20)
            assert done.returncode == 2, done.stderr
            assert "Traceback" not in done.stderr
            assert f"cannot listen on {where}" in done.stderr


def test_status_report_through_a_symlink_loop_is_exit_2_not_a_traceback(tmp_path: Path) -> None:
    """status kept --report apart from the results file before checking it: Path.resolve()
    raised RuntimeError on a loop (Python 3.11/3.12), a traceback where it was exit 2."""
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    for report in (loop, loop / "x.csv"):
        with pytest.raises(UsageError, match="--report"):
            check_outputs_apart(tmp_path / "r.csv", [("--report", report)])
