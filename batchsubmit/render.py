"""Rendering: every summary dict, Prometheus text and final log line of the commands.

Builders (``*_summary``, ``*_prometheus``, ``*_line``) are pure functions of result values;
the ``report_*`` functions write what the operator asked for (--summary, --metrics, each file
replaced atomically) and log the final lines. cli.py calls them; commands never do.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .durable import replaced
from .errors import StorageError
from .pool import RunStats
from .progress import Log, printable
from .prune import PruneStats, Room, describe_held
from .results import utc_now
from .runner import ExpandSummary
from .sources import ExpandStats

if TYPE_CHECKING:
    from .jobs import JobSpec

EXIT_NOT_FINAL = 4  # status: some followed jobs are not final yet


@dataclass(frozen=True)
class Outputs:
    """The files a command was asked to write its summary and metrics to (None: not asked)."""

    summary: Path | None = None
    metrics: Path | None = None


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def gauge_lines(gauges: Iterable[tuple[str, str, object]]) -> list[str]:
    lines: list[str] = []
    for name, help_text, value in gauges:
        lines += [
            f"# HELP batchsubmit_{name} {help_text}",
            f"# TYPE batchsubmit_{name} gauge",
            f"batchsubmit_{name} {value}",
        ]
    return lines


def write_atomically(path: Path, data: bytes) -> None:
    try:
        with replaced(path, durable=False) as handle:
            handle.write(data)
    except OSError as exc:
        # written when the run ends, after its requests: not a usage error (exit 2 says
        # "before any request"), but an output that could not be written (exit 3)
        raise StorageError(f"{path}: cannot write: {exc.strerror}") from None


def json_bytes(data: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
    except TypeError:  # a path that is not UTF-8 (surrogates): shown as the log shows it
        return orjson.dumps(printable(data), option=orjson.OPT_INDENT_2) + b"\n"


def failure_summary(command: str, code: int, message: str, parts: Iterable[str] = ()) -> bytes:
    """The summary of a run that ended with an error before its own was written: the keys
    of the command's own summary (and ``parts``, what its options add: "room", "follow"),
    null where nothing was measured, so a reader finds the same keys whatever the night."""
    data: dict[str, Any] = dict.fromkeys([*_summary_keys(command), *parts])
    data.update(version=1, command=command, exit_code=code, ended_at=utc_now(), error=message)
    return json_bytes(data)


def _summary_keys(command: str) -> list[str]:
    from .follow import FollowStats

    if command == "submit":
        return list(summary_data(RunStats(), 0, 0.0, Path(), None))
    if command == "status":
        return list(status_summary(FollowStats(), 0, 0.0))
    if command == "prune":
        return list(prune_summary(PruneStats(), 0, 0.0, Path(), False))
    return []


def failure_prometheus(_command: str, code: int, _message: str) -> bytes:
    """The metrics of such a run: when it ended and its exit code, under the names every
    run's metrics use, so that an alert on them fires."""
    return last_run_gauges(code).encode()


def last_run_gauges(code: int) -> str:
    """When the run ended and its exit code: the two gauges every metrics file ends with."""
    return (
        "# HELP batchsubmit_last_run_end_timestamp_seconds When the last run ended.\n"
        "# TYPE batchsubmit_last_run_end_timestamp_seconds gauge\n"
        f"batchsubmit_last_run_end_timestamp_seconds {round(time.time(), 3)}\n"
        "# HELP batchsubmit_last_run_exit_code The last run's exit code.\n"
        "# TYPE batchsubmit_last_run_exit_code gauge\n"
        f"batchsubmit_last_run_exit_code {code}\n"
    )


# -- expand, dry run, check ---------------------------------------------------------------------


def expand_line(stats: ExpandStats) -> str:
    videos = stats.objects - stats.filtered - stats.duplicates
    text = (
        f"expanded {videos} videos from {stats.objects} objects ({stats.filtered} not "
        f"videos, {stats.duplicates} duplicates, {stats.folders} folders)"
    )
    if stats.filtered_examples:
        text += "; not videos, e.g. " + ", ".join(stats.filtered_examples)
    return text


def spec_lines(specs: Iterable[JobSpec], url: str | None) -> Iterator[bytes]:
    """One JSON object per spec: its source, name and body (and URL for a dry run)."""
    start = b'{"url":' + orjson.dumps(url) + b"," if url else b"{"
    for spec in specs:
        yield (
            start
            + b'"source":'
            + orjson.dumps(spec.source)
            + b',"name":'
            + orjson.dumps(spec.name)
            + b',"body":'
            + spec.body
            + b"}\n"
        )


def jsonl_lines(items: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for item in items:
        yield orjson.dumps(item) + b"\n"


def dry_run_line(summary: ExpandSummary) -> str:
    return (
        f"dry run: {summary.planned} jobs would be submitted, {summary.skipped} "
        "already submitted; nothing was sent"
    )


def check_line(result: Any) -> str:
    return f"{result.status} {result.name}: {result.detail}"


def check_final_line(found: list[Any], failed: list[Any]) -> str:
    if failed:
        return f"check: {len(failed)} of {len(found)} checks failed; nothing was created"
    return f"check: all {len(found)} checks passed; nothing was created"


def nothing_to_reconcile_line(results: Path) -> str:
    return f"{results}: no unknown rows and no open intents; nothing to reconcile"


# -- submit and reconcile -----------------------------------------------------------------------


def deferred_reason(stats: RunStats, results: Path) -> str | None:
    """Why jobs were deferred, with the real results path in the advice."""
    reason = stats.deferred_reason
    return reason.replace("RESULTS", str(results)) if reason else None


def summary_data(
    stats: RunStats,
    code: int,
    started: float,
    results: Path,
    summary: ExpandSummary | None,
    credentials: str | None = None,
) -> dict[str, Any]:
    return {
        "version": 1,
        "command": "submit",  # reconcile writes no summary
        "exit_code": code,
        "error": None,
        "started_at": iso(started),
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
        "deferred_reason": deferred_reason(stats, results),
        "credentials": credentials,
        "calls": stats.calls,
        "opening_calls": stats.opening_calls,
        "retries": stats.retries,
        "throttles": stats.throttles,
        "unavailable": stats.unavailable,
        "ambiguous": stats.ambiguous,
        "lookups": stats.lookups,
        "achieved_rate": round(stats.rate, 3),
        "learned_rate": _finite(stats.learned_rate),
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
            "unsubmittable_keys": list(summary.expand.unsubmittable),
        },
    }


def prometheus(data: dict[str, Any], stats: RunStats) -> str:
    learned: list[tuple[str, str, object]] = []
    if stats.learned_rate is not None:  # None: no pass ran (make-room stopped first), no gauge
        rate = _prometheus_float(stats.learned_rate)
        learned.append(("learned_rate", "The rate the controller ended at (calls/s).", rate))
    lines = [
        "# HELP batchsubmit_jobs Jobs of the last run by outcome.",
        "# TYPE batchsubmit_jobs gauge",
    ]
    lines += [f'batchsubmit_jobs{{outcome="{k}"}} {v}' for k, v in data["counts"].items()]
    lines += gauge_lines(
        [
            ("calls", "Calls made to the service.", stats.calls),
            (
                "opening_calls",
                "Calls before the first VAS call (credentials, project id, OBS listing).",
                stats.opening_calls,
            ),
            ("retries", "Calls made again after a transient error.", stats.retries),
            ("throttles", "429 answers (throttled by the gateway).", stats.throttles),
            ("unavailable", "503 answers.", stats.unavailable),
            ("elapsed_seconds", "How long the last run took.", round(stats.elapsed, 3)),
            ("achieved_rate", "Jobs submitted per second.", round(stats.rate, 3)),
            *learned,
            (
                "last_run_end_timestamp_seconds",
                "When the last run ended (Unix time).",
                round(time.time(), 3),
            ),
            ("last_run_exit_code", "The last run's exit code.", data["exit_code"]),
        ]
    )
    return "\n".join(lines) + "\n"


def _finite(rate: float | None) -> float | None:
    """A rate for JSON, which has no infinity: null for no limit, as for none measured."""
    return None if rate is None or rate == math.inf else round(rate, 3)


def _prometheus_float(value: float) -> str:
    return "+Inf" if value == math.inf else str(round(value, 3))


def run_line(data: dict[str, Any], stats: RunStats, results: Path) -> str:
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
    return line


def report_run(
    outputs: Outputs,
    log: Log,
    stats: RunStats,
    code: int,
    started: float,
    results: Path,
    summary: ExpandSummary | None,
    credentials: str | None = None,
) -> None:
    data = summary_data(stats, code, started, results, summary, credentials)
    line = run_line(data, stats, results)
    level = "info" if code == 0 else "error"
    if stats.fatal:
        log.line("error", f"run stopped: {stats.fatal}")
    for kind, message in stats.first_errors.items():
        log.line("error", f"first {kind} error: {message}")
    log.line(level, f"done: {line}", exit_code=code)
    # after the final line: a summary that cannot be written must not hide what the run did
    if outputs.summary:
        write_atomically(outputs.summary, json_bytes(data))
    if outputs.metrics:
        write_atomically(outputs.metrics, prometheus(data, stats).encode())


# -- make-room and prune ------------------------------------------------------------------------


def room_data(room: Room) -> dict[str, Any]:
    return {
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


def room_line(room: Room) -> str:
    if room.saved_before is None:
        return (
            f"make-room: the saved-job count was not read; {room.prune.pruned} pruned, "
            f"{room.deferred} of {room.planned} deferred (quota {room.quota})"
        )
    after = "not counted again" if room.saved_after is None else f"{room.saved_after} after"
    return (
        f"make-room: {room.saved_before} saved jobs before, {room.prune.pruned} pruned, "
        f"{after}; room for {room.room} of {room.planned}, "
        f"{room.deferred} deferred (quota {room.quota})"
    )


def room_prometheus(room: Room) -> str:
    gauges: list[tuple[str, str, int]] = []
    if room.saved_before is not None:  # a count not read is no gauge, not a measured 0
        gauges.append(
            ("saved_jobs", "Saved jobs the service counted before make-room.", room.saved_before)
        )
    gauges += [
        ("quota", "The saved-jobs quota make-room planned for.", room.quota),
        ("pruned", "Jobs make-room deleted to make room.", room.prune.pruned),
        (
            "quota_deferred",
            "Creates deferred for the quota (no room, or no count to tell).",
            room.deferred,
        ),
    ]
    return "".join(
        f"# HELP batchsubmit_{name} {help_text}\n# TYPE batchsubmit_{name} gauge\n"
        f"batchsubmit_{name} {value}\n"
        for name, help_text, value in gauges
    )


def _amend_summary(outputs: Outputs, **keys: Any) -> None:
    """Add ``keys`` to the summary the submit part just wrote (make-room's, the follow's)."""
    if outputs.summary and outputs.summary.exists():
        summary = orjson.loads(outputs.summary.read_bytes())
        summary.update(keys)
        write_atomically(outputs.summary, json_bytes(summary))


def report_not_followed(outputs: Outputs) -> None:
    """submit --follow whose submit part did not end normally: the summary the submit part
    just wrote has its "follow" key all the same (null: nothing followed)."""
    _amend_summary(outputs, follow=None)


def report_room(outputs: Outputs, log: Log, room: Room) -> None:
    """Add make-room's figures to the summary and the metrics the run just wrote."""
    log.line("info", room_line(room))
    _amend_summary(outputs, room=room_data(room))
    if outputs.metrics and outputs.metrics.exists():
        text = outputs.metrics.read_text() + room_prometheus(room)
        write_atomically(outputs.metrics, text.encode())


def prune_summary(
    stats: PruneStats, code: int, started: float, results: Path, dry: bool
) -> dict[str, Any]:
    return {
        "version": 1,
        "command": "prune",
        "dry_run": dry,
        "exit_code": code,
        "error": None,
        "started_at": iso(started),
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
        "opening_calls": stats.opening_calls,
        "retries": stats.retries,
        "stop_reason": stats.stop_reason,
        "fatal": stats.fatal,
        "first_errors": stats.first_errors,
        "jobs": stats.jobs,
    }


def prune_dry_line(stats: PruneStats) -> str:
    line = (
        f"dry run: {stats.selected} jobs would be deleted, freeing room for "
        f"{stats.selected} saved jobs; kept: {describe_held(stats.held)}; nothing was sent"
    )
    if stats.resumed:
        line += f"; {stats.resumed} deletes of a stopped prune would be redone first"
    return line


def prune_line(stats: PruneStats, results: Path) -> str:
    line = (
        f"pruned {stats.pruned} jobs ({stats.gone} were already gone), {stats.failed} deletes "
        f"failed, {stats.deferred} not sent; kept: {describe_held(stats.held)}; recorded in "
        f"{results.name}.follow.jsonl"
    )
    if stats.resumed:
        line += f"; {stats.resumed} deletes of an earlier prune redone"
    if stats.stop_reason:
        line += f"; stopped: {stats.stop_reason}"
    return line


def report_prune(
    outputs: Outputs,
    log: Log,
    stats: PruneStats,
    code: int,
    started: float,
    results: Path,
    dry_run: bool,
) -> None:
    from .record import record_path

    data = prune_summary(stats, code, started, results, dry_run)
    if not results.exists():  # the first night (or a typo: say which file was looked at)
        log.line("info", f"no results file {results} yet: nothing to prune")
    elif not record_path(results).exists():
        log.line(
            "info",
            f"no follow record yet ({record_path(results).name}): prune deletes only jobs that "
            f"`batchsubmit status {results.name}` has recorded final",
        )
    if dry_run:
        log.line("info", prune_dry_line(stats))
    else:
        if stats.fatal:
            log.line("error", f"prune stopped: {stats.fatal}")
        for kind, message in stats.first_errors.items():
            log.line("error", f"first {kind} error: {message}")
        level = "info" if code == 0 else "error"
        log.line(level, f"done: {prune_line(stats, results)}", exit_code=code)
    if outputs.summary:  # last: a summary that cannot be written hides nothing said above
        write_atomically(outputs.summary, json_bytes(data))


# -- status and submit --follow -----------------------------------------------------------------


def status_summary(stats: Any, code: int, started: float) -> dict[str, Any]:
    return {
        "version": 1,
        "command": "status",
        "exit_code": code,
        "error": None,
        "started_at": iso(started),
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
            "too_large": stats.too_large,
            "arrears": stats.arrears,
        },
        "by_state": stats.by_state,
        "unknown_states": stats.unknown_states,
        "oldest_non_final_age_seconds": stats.oldest_non_final_age,
        "passes": stats.passes,
        "sweeps": stats.sweeps,
        "calls": stats.calls,
        "opening_calls": stats.opening_calls,
        "list_calls": stats.list_calls,
        "show_calls": stats.show_calls,
        "retries": stats.retries,
        "throttles": stats.throttles,
        "stop_reason": stats.stop_reason,
        "fatal": stats.fatal,
        "first_errors": stats.first_errors,
    }


def follow_prometheus(data: dict[str, Any]) -> str:
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
        f'batchsubmit_follow_state{{state="{label(k)}"}} {v}' for k, v in data["by_state"].items()
    ]
    age = data["oldest_non_final_age_seconds"]
    lines += gauge_lines(
        [
            ("follow_calls", "Calls the status run made (list and show).", data["calls"]),
            ("follow_list_calls", "List calls of the status run.", data["list_calls"]),
            ("follow_show_calls", "Show calls of the status run.", data["show_calls"]),
            (
                "follow_opening_calls",
                "Calls before the status run's first VAS call (credentials, project id).",
                data.get("opening_calls", 0),
            ),
            ("follow_passes", "Passes of the status run.", data["passes"]),
            (
                "follow_oldest_non_final_age_seconds",
                "Age of the oldest job not final (-1: none).",
                -1 if age is None else age,
            ),
            ("follow_exit_code", "The status part's exit code.", data["exit_code"]),
        ]
    )
    return "\n".join(lines) + "\n"


def status_prometheus(data: dict[str, Any], code: int) -> str:
    return follow_prometheus(data) + last_run_gauges(code)


def follow_line(stats: Any, data: dict[str, Any]) -> str:
    counts = data["counts"]
    line = (
        f"{counts['followed']} jobs followed: {counts['succeeded']} succeeded, "
        f"{counts['failed']} failed ({counts['lost']} lost), {counts['not_final']} not final "
        f"({counts['stuck']} stuck); {counts['already_final']} already final; "
        f"{stats.passes} passes, {stats.list_calls} list + {stats.show_calls} show calls in "
        f"{stats.elapsed:.1f} s"
    )
    if counts["collected"] or counts["overdue"] or counts["too_large"]:
        line += (
            f"; {counts['collected']} results collected, {counts['overdue']} overdue, "
            f"{counts['too_large']} too large to host"
        )
    if stats.stop_reason:
        line += f"; stopped: {stats.stop_reason}"
    line += f"; report in {stats.report}"
    return line


def log_follow(log: Log, stats: Any, code: int, data: dict[str, Any]) -> None:
    if stats.fatal:
        log.line("error", f"status stopped: {stats.fatal}")
    for kind, message in stats.first_errors.items():
        log.line("error", f"first {kind} error: {message}")
    if stats.unknown_states:
        names = ", ".join(f"{n} {s}" for s, n in stats.unknown_states.items())
        log.line("warning", f"states outside VAS's list (kept verbatim, not final): {names}")
    level = "info" if code == 0 else ("warning" if code == EXIT_NOT_FINAL else "error")
    log.line(level, f"done: {follow_line(stats, data)}", exit_code=code)


def report_status(outputs: Outputs, log: Log, stats: Any, code: int, started: float) -> None:
    data = status_summary(stats, code, started)
    log_follow(log, stats, code, data)  # first: an output that cannot be written hides nothing
    if outputs.summary:
        write_atomically(outputs.summary, json_bytes(data))
    if outputs.metrics:
        write_atomically(outputs.metrics, status_prometheus(data, code).encode())


def report_follow_after_submit(
    outputs: Outputs, log: Log, stats: Any, submit_code: int, follow_code: int, code: int
) -> None:
    """Add the follow part to the summary and metrics the submit part just wrote."""
    data = status_summary(stats, follow_code, time.time() - stats.elapsed)
    log_follow(log, stats, follow_code, data)  # first: an output that fails hides nothing
    if code != submit_code or code != follow_code:
        # the last line names the command's exit code, not the follow part's
        level = "info" if code == 0 else ("warning" if code == EXIT_NOT_FINAL else "error")
        log.line(
            level,
            f"exit {code}: submit part {submit_code}, follow part {follow_code}",
            exit_code=code,
        )
    _amend_summary(outputs, follow=data, exit_code=code)
    if outputs.metrics and outputs.metrics.exists():
        text = outputs.metrics.read_text()
        text = re.sub(
            r"^batchsubmit_last_run_exit_code .*$",
            f"batchsubmit_last_run_exit_code {code}",
            text,
            flags=re.MULTILINE,
        )
        write_atomically(outputs.metrics, (text + follow_prometheus(data)).encode())


# -- emulator -----------------------------------------------------------------------------------


def emulator_stopped_line(result: Any) -> str:
    counts = (
        f"; IAM tokens issued {result.tokens_issued}, temporary credentials issued "
        f"{result.credentials_issued}, calls refused as expired {result.refused_expired}"
        if result.identity
        else ""
    )
    return f"emulator stopped; {result.jobs} jobs were created{counts}"
