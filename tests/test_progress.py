"""Progress: counts that add up to what the run's summary says."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from batchsubmit import progress
from batchsubmit.pool import NOT_CREATED
from batchsubmit.progress import LineReporter, Log
from batchsubmit.results import Outcome

from .helpers import cli, cli_env


def _outcome(status: str, error_code: str = "") -> Outcome:
    return Outcome(
        source="obs://b/k.mp4",
        name="k",
        job_id="",
        status=status,
        http_status=0,
        error_code=error_code,
        error_msg="",
        attempts=0,
        request_id="",
        submitted_at="",
        service_url="",
    )


def test_a_lookup_that_found_no_job_is_not_a_failure_nor_done() -> None:
    """An earlier create found never made comes up again and is created: progress counts the
    video once (when created), and never as failed, so `done` cannot pass its total."""
    reporter = LineReporter(Log(io.StringIO()), total=1)
    reporter.outcome(_outcome("failed", NOT_CREATED))
    reporter.outcome(_outcome("submitted"))
    counts = reporter.counts
    assert (counts.done, counts.submitted, counts.failed) == (1, 1, 0)


def test_every_real_outcome_is_counted() -> None:
    """Submitted, failed and unknown outcomes each count once."""
    reporter = LineReporter(Log(io.StringIO()), total=3)
    for status in ("submitted", "failed", "unknown"):
        reporter.outcome(_outcome(status, "IVA.0004" if status == "failed" else ""))
    counts = reporter.counts
    assert (counts.done, counts.submitted, counts.failed, counts.unknown) == (3, 1, 1, 1)


def test_a_json_log_line_carries_text_that_is_not_utf8() -> None:
    """A path that is not UTF-8 reaches the log as surrogates (os.fsdecode): the JSON line
    shows its bytes escaped, in the message and in every field, and never crashes."""
    stream = io.StringIO()
    path = os.fsdecode(b"/tmp/missing\xff.toml")
    Log(stream, json=True).line("error", f"{path}: no such file", where=[path], n={"k": "\ud800"})
    line = orjson.loads(stream.getvalue())
    assert line["msg"] == "/tmp/missing\\xff.toml: no such file"
    assert (line["where"], line["n"]) == (["/tmp/missing\\xff.toml"], {"k": "\\ud800"})


def test_the_command_line_logs_a_non_utf8_path_as_json(tmp_path: Path) -> None:
    """`expand <a path that is not UTF-8> --log-format json`: exit 2 with one JSON line, as
    the text log gives, not a traceback."""
    missing = os.fsdecode(bytes(tmp_path) + b"/missing\xff.toml")
    done = subprocess.run(
        cli("expand", missing, "--log-format", "json"), capture_output=True, env=cli_env()
    )
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr
    assert orjson.loads(done.stderr)["msg"].endswith("missing\\xff.toml: no such manifest file")


def test_a_summary_names_a_non_utf8_path_as_the_log_does(tmp_path: Path) -> None:
    """A path that is not UTF-8 in a --summary (the error naming it, the results file) was
    a TypeError traceback and exit 1, with no summary and no metrics: the night's alert
    read last night's. It is shown escaped, as the JSON log shows it."""
    missing = os.fsdecode(bytes(tmp_path) + b"/missing\xff.toml")
    summary, metrics = tmp_path / "s.json", tmp_path / "m.prom"
    done = subprocess.run(
        cli("submit", missing, "--summary", str(summary), "--metrics", str(metrics)),
        capture_output=True,
        env=cli_env(),
    )
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr
    data = orjson.loads(summary.read_bytes())
    assert data["exit_code"] == 2
    assert data["error"].endswith("missing\\xff.toml: no such manifest file")
    assert "batchsubmit_last_run_exit_code 2\n" in metrics.read_text()


def test_the_lines_quiet_mode_dropped_are_said_in_the_logs_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed -q run that held more lines than it keeps said so with a bare text line
    ('... N earlier lines dropped ...') first: under --log-format json, the one line of the
    stream that was not a JSON object."""
    monkeypatch.setattr(progress, "QUIET_KEEP", 2)
    stream = io.StringIO()
    log = Log(stream, json=True, quiet=True)
    for n in range(5):
        log.line("info", f"line {n}")
    log.release()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["3 earlier lines dropped", "line 3", "line 4"]
    assert lines[0]["level"] == "warning"
    assert "ts" in lines[0]
