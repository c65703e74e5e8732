"""Following jobs to their end: the record, the final-state rules, the report, the call budget,
and status runs against the emulator that runs jobs (killed, resumed, frozen, collecting)."""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import orjson
import pytest

from batchsubmit import render
from batchsubmit.answers import Answer, Kind
from batchsubmit.auth import Credentials
from batchsubmit.cli import _combined_exit, main
from batchsubmit.emulator import (
    EMULATOR_AK,
    EMULATOR_SK,
    Emulator,
    Faults,
    Lifecycle,
    RequestRecord,
)
from batchsubmit.errors import StorageError, UsageError
from batchsubmit.follow import (
    REPORT_COLUMNS,
    FollowConfig,
    FollowStats,
    Videos,
    _windows,
    exit_code,
    follow,
    prepare_follow,
)
from batchsubmit.journal import RunLock
from batchsubmit.pool import Pool, PoolSettings
from batchsubmit.progress import LineReporter, Log
from batchsubmit.record import (
    JobRecord,
    OffsetIndex,
    RecordWriter,
    compact,
    is_final,
    iter_latest,
    read_record,
    record_path,
)
from batchsubmit.results import iter_results
from batchsubmit.runner import lock_path

from .helpers import (
    FAST_RETRY,
    LiveEmulator,
    cli,
    cli_env,
    config_for,
    job_ids,
    real_cli,
    run_cli,
    run_submit,
    video_keys,
    write_manifest,
)

HOSTING = "[job.body.output.hosting]"


def _record(job_id: str, state: str = "PENDING", **fields: Any) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        source=f"obs://b/{job_id}.mp4",
        name=f"n-{job_id}",
        state=state,
        final=is_final(state, fields.get("hosting", False), fields.get("hosting_status", "")),
        **fields,
    )


# -- rules ------------------------------------------------------------------------------------


def _submitted_ledger(results: Path, ids: list[str], service_url: str) -> None:
    """A JSONL results file with one submitted row per job id (video ``s{n}``, job ``n{n}``)."""
    rows = (
        {
            "source": f"s{n}",
            "name": f"n{n}",
            "job_id": job_id,
            "status": "submitted",
            "submitted_at": "2026-12-01T02:00:00.000Z",
            "service_url": service_url,
        }
        for n, job_id in enumerate(ids)
    )
    results.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


@pytest.mark.parametrize(
    ("state", "hosting", "hosting_status", "final"),
    [
        ("SUCCEEDED", False, "", True),
        ("SUCCEEDED", True, "", False),
        ("SUCCEEDED", True, "NOT_GENERATED", False),
        ("SUCCEEDED", True, "AVAILABLE", True),
        ("SUCCEEDED", True, "OVERDUE", True),
        ("FAILED", False, "", True),
        ("CREATE_FAILED", False, "", True),
        ("START_FAILED", False, "", True),
        ("LOST", False, "", True),
        ("PRUNED", True, "", True),
        ("STOPPED", False, "", False),
        ("ABNORMAL", False, "", False),
        ("FROZEN", False, "", False),
        ("SCHEDULING", False, "", False),
        ("CREATE_FAIL", False, "", False),
        ("", False, "", False),
    ],
)
def test_final_states(state: str, hosting: bool, hosting_status: str, final: bool) -> None:
    """The issue's final rule: hosting jobs wait for their result; unknown names never end."""
    assert is_final(state, hosting, hosting_status) is final


@pytest.mark.parametrize(
    ("counts", "code"),
    [
        ({}, 0),
        ({"followed": 3, "succeeded": 3}, 0),
        ({"followed": 3, "succeeded": 2, "failed": 1}, 1),
        ({"followed": 3, "succeeded": 1, "failed": 1, "not_final": 1}, 1),
        ({"followed": 3, "succeeded": 2, "not_final": 1}, 4),
        ({"followed": 3, "failed": 1, "fatal": "frozen"}, 3),
    ],
)
def test_exit_codes(counts: dict[str, Any], code: int) -> None:
    """0 all succeeded (or nothing to follow), 1 some ended badly, 4 some not final, 3 fatal."""
    assert exit_code(FollowStats(**counts)) == code


@pytest.mark.parametrize(
    ("submit", "follow_code", "code"),
    [(0, 0, 0), (0, 4, 4), (1, 4, 1), (4, 1, 1), (0, 3, 3), (1, 3, 3), (2, 0, 2), (130, 1, 130)],
)
def test_submit_follow_combines_worst_first(submit: int, follow_code: int, code: int) -> None:
    """submit --follow: the worse part wins, in the order 3, 1, 4, 0."""
    assert _combined_exit(submit, follow_code) == code


@pytest.mark.parametrize(("submit", "follow_code"), [(1, 0), (0, 4), (1, 4), (0, 0), (3, 1)])
def test_submit_follows_last_line_names_the_commands_exit_code(
    submit: int, follow_code: int
) -> None:
    """`submit --follow` whose submit part failed a job (1) and whose follow part went well
    (0) ended on the follow part's line: level info, exit_code 0, for a run that exits 1.
    The last line carries the command's code, at its level."""
    stream = io.StringIO()
    code = _combined_exit(submit, follow_code)
    stats = FollowStats(followed=2, succeeded=2, report="r.report.csv")
    render.report_follow_after_submit(
        render.Outputs(), Log(stream, json=True), stats, submit, follow_code, code
    )
    last = orjson.loads(stream.getvalue().splitlines()[-1])
    assert last["exit_code"] == code
    assert last["level"] == {0: "info", 4: "warning"}.get(code, "error")


def test_windows_merge_close_creations_and_split_far_ones() -> None:
    """One list window per burst of creations, widened by the slack, not one per job."""
    minute = 60_000
    at = [100 * minute, 101 * minute, 102 * minute, 1000 * minute]
    windows = _windows(at)
    assert len(windows) == 2
    assert windows[0][0] < at[0]
    assert windows[0][1] > at[2]
    assert windows[1][0] < at[3] < windows[1][1]


# -- the record ---------------------------------------------------------------------------------


def test_record_latest_line_wins_and_a_torn_tail_is_tolerated(tmp_path: Path) -> None:
    """Appends survive a reopen; a torn last line is skipped with a warning, then cut off by
    the next writer so that new lines never glue onto it."""
    path = tmp_path / "r.csv.follow.jsonl"
    with RecordWriter(path) as writer:
        writer.append(_record("a", "PENDING"))
        writer.append(_record("b", "FAILED", error_code="ALG.002"))
        writer.append(_record("a", "RUNNING"))
    with path.open("ab") as handle:
        handle.write(b'{"job_id": "a", "state": "SUCC')
    warnings: list[str] = []
    latest = read_record(path, warnings.append)
    assert {k: v.state for k, v in latest.items()} == {"a": "RUNNING", "b": "FAILED"}
    assert latest["b"].final
    assert latest["b"].error_code == "ALG.002"
    assert len(warnings) == 1
    assert ":4:" in warnings[0]
    with RecordWriter(path, warnings.append) as writer:
        writer.append(_record("a", "SUCCEEDED"))
    assert read_record(path, pytest.fail)["a"].state == "SUCCEEDED"
    assert path.read_bytes().count(b"\n") == 4


def test_a_record_whose_last_line_lost_only_its_newline_keeps_that_line(tmp_path: Path) -> None:
    """An editor that re-saved the record without its final newline left a whole line: the
    next writer gives it its newline back instead of cutting it (it said job a was pruned)."""
    path = tmp_path / "r.csv.follow.jsonl"
    with RecordWriter(path) as writer:
        writer.append(_record("b", "FAILED"))
        writer.append(_record("a", "SUCCEEDED", hosting_status="PRUNED"))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    warnings: list[str] = []
    with RecordWriter(path, warnings.append) as writer:
        writer.append(_record("c", "RUNNING"))
    latest = read_record(path, pytest.fail)
    states = {k: v.state for k, v in latest.items()}
    assert states == {"a": "SUCCEEDED", "b": "FAILED", "c": "RUNNING"}
    assert latest["a"].hosting_status == "PRUNED"
    assert len(warnings) == 1
    assert "no newline" in warnings[0]


def test_a_record_whose_line_ends_became_crs_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    """A crash cuts one line short; it never joins lines. Lines whose LFs an editor turned
    into CRs read as one long "torn" last line, and every record was skipped: the follow
    started from nothing. It stops, naming the file, and changes nothing."""
    path = tmp_path / "r.csv.follow.jsonl"
    with RecordWriter(path) as writer:
        writer.append(_record("a", "SUCCEEDED"))
        writer.append(_record("b", "FAILED"))
    joined = path.read_bytes().replace(b"\n", b"\r")
    path.write_bytes(joined)
    with pytest.raises(UsageError, match=r"r\.csv\.follow\.jsonl"):
        read_record(path, pytest.fail)
    assert path.read_bytes() == joined


def test_damage_before_the_last_line_names_file_and_line(tmp_path: Path) -> None:
    """A line that is not a record, other than a torn last one, stops with file:line."""
    path = tmp_path / "r.follow.jsonl"
    with RecordWriter(path) as writer:
        writer.append(_record("a"))
    with path.open("ab") as handle:
        handle.write(b'{"job_id": 3}\n')
        handle.write(orjson.dumps(_record("b")) + b"\n")
    with pytest.raises(UsageError, match=r"r\.follow\.jsonl:2:"):
        read_record(path, pytest.fail)


def test_compact_keeps_one_line_per_job_and_the_streaming_reader_agrees(tmp_path: Path) -> None:
    """Compaction drops superseded lines only; iter_latest yields what read_record holds."""
    path = tmp_path / "r.follow.jsonl"
    states = ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]
    with RecordWriter(path) as writer:
        for state in states:
            for n in range(50):
                writer.append(_record(f"job{n}", "FAILED" if n % 7 == 0 else state))
    before = read_record(path, pytest.fail)
    assert sorted(iter_latest(path, pytest.fail), key=lambda r: r.job_id) == sorted(
        before.values(), key=lambda r: r.job_id
    )
    assert compact(path, pytest.fail, durable=False) == 150
    assert path.read_bytes().count(b"\n") == 50
    assert read_record(path, pytest.fail) == before
    assert compact(path, pytest.fail, durable=False) == 0


def test_offset_index_keeps_the_last_offset_per_key() -> None:
    """The latest line of a job wins (values may be negative: the follow marks final ones)."""
    index = OffsetIndex()
    for offset, key in zip([4, 1, -3, 3, 2], ["a", "b", "a", "c", "a"], strict=True):
        index.add(key, offset)
    index.freeze()
    assert (index.offset("a"), index.offset("b"), index.offset("c")) == (2, 1, 3)
    assert index.offset("d") is None
    assert len(index) == 3
    largest = OffsetIndex()
    for key, value in [("a", 5), ("a", -9), ("b", 2), ("a", 3)]:
        largest.add(key, value)
    largest.freeze(largest=True)
    assert (largest.offset("a"), largest.offset("b")) == (5, 2)


def test_record_sits_beside_the_resolved_results_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    results = tmp_path / "real" / "r.csv"
    results.write_text("")
    (tmp_path / "link.csv").symlink_to(results)
    assert record_path(tmp_path / "link.csv") == results.with_name("r.csv.follow.jsonl")


def test_one_report_row_per_video_its_latest_submitted_row(tmp_path: Path) -> None:
    """A video submitted again (--resubmit) is reported by its newest job; a video whose
    create failed still gets its row."""
    results = tmp_path / "r.jsonl"
    rows = [
        {"source": "s1", "name": "n1", "job_id": "j1", "status": "submitted"},
        {"source": "s2", "name": "n2", "job_id": "", "status": "failed", "error_code": "X"},
        {"source": "s1", "name": "n1", "job_id": "j3", "status": "submitted"},
        {"source": "s3", "name": "n3", "job_id": "", "status": "unknown"},
        {"source": "s3", "name": "n3", "job_id": "j4", "status": "submitted"},
        {"source": "s1", "name": "n1", "job_id": "", "status": "failed"},
    ]
    results.write_bytes(b"".join(orjson.dumps({**r, "service_url": "u"}) + b"\n" for r in rows))
    videos = Videos(results, "jsonl")
    for number, row in enumerate(iter_results(results, "jsonl")):
        videos.add(number, row)
    videos.done()
    chosen = [(row.source, row.job_id) for row in videos]
    assert sorted(chosen) == [("s1", "j3"), ("s2", ""), ("s3", "j4")]


def test_a_damaged_final_line_of_the_record_stops_before_any_request(tmp_path: Path) -> None:
    """A final record line whose fields are of the wrong type (a hand edit): found when the
    record is read, before any request, naming its line; it was found by the report writer,
    after every pass."""
    results = tmp_path / "r.jsonl"
    _submitted_ledger(results, ["j0", "j1"], "http://127.0.0.1:9/v2/p/services/s/tasks")
    good = orjson.dumps({"job_id": "j0", "source": "s0", "name": "n0", "state": "FAILED",
                         "final": True})  # fmt: skip
    bad = orjson.dumps({"job_id": "j1", "source": "s1", "name": 7, "state": "FAILED",
                        "final": True})  # fmt: skip
    record_path(results).write_bytes(good + b"\n" + bad + b"\n")
    config = replace(_follow_config(results), format="jsonl")
    with pytest.raises(UsageError, match=r"follow\.jsonl:2: not a follow record line"):
        prepare_follow(config, pytest.fail)


@pytest.mark.parametrize(
    "lie",
    [
        {"state": "RUNNING", "final": True},
        {"state": "SUCCEEDED", "hosting": True, "hosting_status": "NOT_GENERATED", "final": True},
        {"state": "SUCCEEDED", "hosting": True, "hosting_status": "", "final": True},
        {"state": "FAILED", "final": False},
    ],
)
@pytest.mark.anyio
async def test_a_record_line_whose_final_contradicts_its_state_is_damage(
    tmp_path: Path, lie: dict[str, Any]
) -> None:
    """A record line that is valid JSON but whose ``final`` is not what the rules make of its
    state and hosting result (a hand edit: status never writes one) is damage, named by its
    line, before any request. Believed, a RUNNING job marked final was followed no more (its
    run exited 0) and a SUCCEEDED one whose result is NOT_GENERATED could be pruned."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1e-3)))
    manifest = write_manifest(tmp_path, video_keys(2))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        await _status(results, follow=False)
        path = record_path(results)
        lines = path.read_bytes().splitlines(keepends=True)
        edited = {**orjson.loads(lines[0]), **lie}
        path.write_bytes(orjson.dumps(edited) + b"\n" + b"".join(lines[1:]))
        calls = sum(emulator.calls.values())
        with pytest.raises(UsageError, match=r"follow\.jsonl:1: .*'final'"):
            prepare_follow(_follow_config(results), pytest.fail)
        assert sum(emulator.calls.values()) == calls
    done = run_cli("prune", str(results), "--dry-run")
    assert done.returncode == 2, done.stderr
    assert "follow.jsonl:1:" in done.stderr


def test_a_submitted_row_whose_service_cannot_be_read_stops_the_status(tmp_path: Path) -> None:
    """A job that cannot be followed is never recorded final, so never pruned: a row whose
    service_url is not a VAS tasks URL (a hand edit) stops `status` before any request,
    naming the row; it used to be a warning, "0 jobs followed" and exit 0."""
    results = tmp_path / "r.jsonl"
    _submitted_ledger(results, ["j0"], "notaurl")
    config = replace(_follow_config(results), format="jsonl")
    with pytest.raises(UsageError, match=r"r\.jsonl: the submitted row of s0 \(job j0\)"):
        prepare_follow(config, pytest.fail)


# -- against the emulator, in process -------------------------------------------------------------


def _follow_config(results: Path, **settings: Any) -> FollowConfig:
    # A deadline, so that a broken rule fails the test instead of following forever.
    defaults: dict[str, Any] = {"follow": True, "interval": 0.05, "durable": False}
    defaults["deadline"] = 10.0
    defaults.update(settings)
    defaults.setdefault("credentials", Credentials(EMULATOR_AK, EMULATOR_SK))
    defaults.setdefault("format", "csv")
    return FollowConfig(
        results=results,
        pool=PoolSettings(concurrency=16, rate=0.0, retry=FAST_RETRY, grace=5.0),
        **defaults,
    )


async def _status(results: Path, **settings: Any) -> tuple[FollowStats, str]:
    stream = io.StringIO()
    log = Log(stream)
    follower = prepare_follow(_follow_config(results, **settings), lambda m: log.line("warning", m))
    stats = await follow(follower, LineReporter(log, None), watch_signals=False)
    return stats, stream.getvalue()


def _report(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == REPORT_COLUMNS
        return list(reader)


def _expected_state(emulator: Emulator, job_id: str) -> str:
    state = emulator.state(job_id)
    return "LOST" if state is None else state


@pytest.mark.anyio
async def test_follow_ends_with_the_emulators_final_states_within_the_budget(
    tmp_path: Path,
) -> None:
    """The issue's "Done when", scaled to 200 videos: 20% failing, 5% through an unknown
    state, 1% vanishing, late hosting results: every report row equals the emulator's final
    state, exit 1, a list call per 100 jobs a pass, and shows only for pending hosting
    results and for confirming jobs that vanished."""
    life = Lifecycle(
        time_scale=200,
        p_failed=0.2,
        p_unknown_state=0.05,
        p_vanish=0.02,
        p_hosting_late=0.3,
        hosting_late=(5.0, 30.0),
    )
    shows: Counter[str] = Counter()
    lists = []

    def log_request(record: RequestRecord) -> None:
        path = record.path.split("?")[0]
        if record.method == "GET" and not path.endswith("/tasks"):
            shows[path.rsplit("/", 1)[1]] += 1
        elif record.method == "GET":
            lists.append(record.path)

    emulator = Emulator(Faults(jobs=life, seed=7), request_log=log_request)
    hosting_keys = set(video_keys(200)[::2])
    manifest = write_manifest(tmp_path, video_keys(200)[1::2])
    (tmp_path / "h").mkdir()
    manifest_hosting = write_manifest(tmp_path / "h", sorted(hosting_keys), extra=HOSTING)
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        for m in (manifest, manifest_hosting):
            stats, _log = await run_submit(config_for(m, url, results))
            assert stats.submitted == 100
        followed, text = await _status(results)
        vanished = set(emulator.vanished)
        hosting_ids = {
            task_id for task_id, task in emulator.tasks.items() if "hosting" in task["output"]
        }
        rows = _report(tmp_path / "r.report.csv")
        assert len(rows) == 200
        assert len({row["source"] for row in rows}) == 200
        mismatched = [
            (row["job_id"], row["state"], _expected_state(emulator, row["job_id"]))
            for row in rows
            if row["state"] != _expected_state(emulator, row["job_id"])
        ]
        assert not mismatched, mismatched[:5]
    states = Counter(row["state"] for row in rows)
    assert states["FAILED"] > 20, states
    assert states["LOST"] == len(vanished) > 0, states
    assert all(row["final"] == "True" for row in rows)
    assert exit_code(followed) == 1, text
    assert followed.followed == 200
    assert followed.not_final == 0
    # The budget: at most ceil(N/100) + 1 list calls per pass (N = 200 followed at most) ...
    assert followed.list_calls == len(lists)
    assert followed.list_calls <= followed.passes * (math.ceil(200 / 100) + 1)
    # ... and a show only for a hosting job or to confirm one that vanished.
    needless = {job for job in shows if job not in hosting_ids and job not in vanished}
    assert not needless
    assert sum(shows.values()) == followed.show_calls


@pytest.mark.anyio
async def test_passes_between_sweeps_list_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between sweeps a pass lists the jobs updated since the last one (newest first) and
    stops at the first older one: fewer calls than a sweep, the same final report; vanished
    jobs are found LOST by the next sweep."""
    monkeypatch.setattr("batchsubmit.follow.CHEAP_SWEEP", 0)  # 300 jobs: sweeps are cheap
    now = [time.monotonic()]
    life = Lifecycle(
        time_scale=1,
        pending=(10.0, 100.0),
        starting=(10.0, 50.0),
        running=(20.0, 150.0),
        p_failed=0.2,
        p_unknown_state=0.05,
        p_vanish=0.02,
    )
    emulator = Emulator(Faults(jobs=life, seed=3), clock=lambda: now[0])
    manifest = write_manifest(tmp_path, video_keys(300))
    results = tmp_path / "r.csv"

    async def time_flies() -> None:
        while True:
            await anyio.sleep(0.01)
            now[0] += 4.0  # emulated seconds: updated_at moves on between passes

    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        async with anyio.create_task_group() as group:
            group.start_soon(time_flies)
            stats, text = await _status(results, interval=0.02)
            group.cancel_scope.cancel()
        rows = _report(tmp_path / "r.report.csv")
        for row in rows:
            assert row["state"] == _expected_state(emulator, row["job_id"]), row
    assert exit_code(stats) == 1, text
    assert stats.lost == len(emulator.vanished) > 0
    assert stats.sweeps < stats.passes
    assert stats.list_calls < stats.passes * 3  # a sweep of 300 jobs is 3 calls


@pytest.mark.anyio
async def test_a_job_that_changes_after_its_sweep_page_was_read_is_seen_by_the_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep reads its pages one after another. A job on the first page that succeeds once
    that page was read, while 100 more jobs change and one changes 20 s later: the next
    changes pass must list back to it. With the cursor at the newest change the sweep saw,
    the pass stopped above it and the job stayed PENDING until the next sweep (ten passes
    later; here never)."""
    monkeypatch.setattr("batchsubmit.follow.SWEEP_EVERY", 1000)
    monkeypatch.setattr("batchsubmit.follow.CHEAP_SWEEP", 0)  # 3 pages: sweeps are cheap
    now = [1000.0]
    ids: list[str] = []
    done: list[bool] = []

    def after_the_first_sweep_page(record: RequestRecord) -> None:
        if done or "order=created_at" not in record.path or "offset=0" not in record.path:
            return
        done.append(True)
        now[0] += 1.0
        emulator.set_state(ids[0], "SUCCEEDED")  # on page 1, already read
        for job_id in ids[100:200]:  # page 2, read next
            now[0] += 0.1
            emulator.set_state(job_id, "RUNNING")
        now[0] += 10.0
        emulator.set_state(ids[-1], "RUNNING")  # page 3: the sweep's newest change

    emulator = Emulator(
        Faults(jobs=Lifecycle(time_scale=1e-6)),
        clock=lambda: now[0],
        request_log=after_the_first_sweep_page,
    )
    manifest = write_manifest(tmp_path, video_keys(250))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        ids.extend(emulator.tasks)
        stats, text = await _status(results, deadline=1.0)
    rows = {row["job_id"]: row for row in _report(tmp_path / "r.report.csv")}
    assert done, text
    assert stats.passes >= 2, text
    assert rows[ids[0]]["state"] == "SUCCEEDED", text


@pytest.mark.anyio
async def test_a_changes_pass_pages_until_a_job_older_than_the_cursor(tmp_path: Path) -> None:
    """The "changes" list (updated_at:DESC) reads page after page while jobs are newer than
    the cursor, and stops at the first page that reaches older ones: no change is missed,
    no page beyond is read."""
    service_url = "http://127.0.0.1:9/v2/p/services/s/tasks"
    results = tmp_path / "r.jsonl"
    ids = [f"{n:032x}" for n in range(250)]
    _submitted_ledger(results, ids, service_url)
    cursor = float(int(time.time()) - 1000)  # whole seconds, as stamps are; not ahead of us

    def stamp(moment: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))

    # newest first, as updated_at:DESC answers: 150 changed, 100 not
    tasks: list[dict[str, Any]] = [
        {"id": job_id, "state": "SUCCEEDED" if n < 150 else "RUNNING",
         "updated_at": stamp(cursor + 100 if n < 150 else cursor - 100),
         "created_at": "2026-12-01T02:00:00Z", "output": {"obs": {}}}
        for n, job_id in enumerate(ids)
    ]  # fmt: skip
    offsets: list[int] = []

    async def list_tasks(query: dict[str, Any]) -> Answer:
        assert query["order"] == "updated_at:DESC"
        offset = int(query["offset"])
        offsets.append(offset)
        page = tasks[offset : offset + int(query["limit"])]
        return Answer(kind=Kind.OK, status=200, data={"count": len(tasks), "tasks": page})

    follower, pool = _scripted_follower(results, service_url, list_tasks, None, pytest.fail)
    follower.cursor = [cursor]
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        await follower._changed(pool, 0, list(follower.jobs.values()))
    assert offsets == [0, 100]
    states = Counter(job.now.state for job in follower.jobs.values())
    assert states == {"SUCCEEDED": 150, "RUNNING": 50, "": 50}  # page 2 reached older ones
    assert follower.cursor == [cursor + 100]


def _scripted_follower(
    results: Path, service_url: str, list_tasks: Any, show: Any, warn: Any
) -> tuple[Any, Pool]:
    """A follower of a JSONL ledger whose one service is ``list_tasks`` and ``show`` (a script,
    no server), and a pool to run its passes through."""
    follower = prepare_follow(replace(_follow_config(results, follow=False), format="jsonl"), warn)
    pool = Pool(
        object(),  # type: ignore[arg-type]
        object(),  # type: ignore[arg-type]
        LineReporter(Log(io.StringIO()), None),
        PoolSettings(rate=0.0),
        service_url=service_url,
        credentials=None,
    )
    client = SimpleNamespace(list_tasks=list_tasks, show=show, secrets=())
    follower.clients = [client]  # type: ignore[list-item]
    return follower, pool


@pytest.mark.anyio
@pytest.mark.parametrize("reads_id_like", [True, False])
async def test_a_service_that_reads_creation_times_otherwise_is_listed_unfiltered(
    tmp_path: Path, reads_id_like: bool
) -> None:
    """If created_since/created_until are not epoch milliseconds on the real service (not
    confirmed), or its clock is far from ours, filtered lists come back empty; a few shows
    find the jobs (not one per job: 5,000 calls for 5,000), and from the next pass on the
    lists go without time filters: correct, then cheap again. Also when the service ignores
    id_like too (the unfiltered list asked for one id answers with many): that list cannot
    tell lag from misread filters, and keeping the filters would leave all but a few jobs
    unlisted every pass."""
    service_url = "http://127.0.0.1:9/v2/p/services/s/tasks"
    results = tmp_path / "r.jsonl"
    ids = [f"{n:032x}" for n in range(30)]
    _submitted_ledger(results, ids, service_url)
    tasks = {
        job_id: {"id": job_id, "state": "RUNNING", "updated_at": "2026-12-01T02:00:05Z",
                 "created_at": "2026-12-01T02:00:00Z", "output": {"obs": {}}}
        for job_id in ids
    }  # fmt: skip
    queries: list[dict[str, Any]] = []

    async def list_tasks(query: dict[str, Any]) -> Answer:
        queries.append(query)
        found = [] if "created_since" in query else list(tasks.values())
        if reads_id_like:
            found = [task for task in found if query.get("id_like", "") in task["id"]]
        elif "id_like" in query:
            found.reverse()  # newest first, as VAS's default order: the one asked for is not on top
        offset = int(query["offset"])
        page = found[offset : offset + int(query["limit"])]
        return Answer(kind=Kind.OK, status=200, data={"count": len(found), "tasks": page})

    async def show(job_id: str) -> Answer:
        return Answer(kind=Kind.OK, status=200, data=tasks[job_id])

    warnings: list[str] = []
    follower, pool = _scripted_follower(results, service_url, list_tasks, show, warnings.append)
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        await follower._pass(pool)
        assert follower.stats.show_calls == 6  # a few confirmed there: none is LOST
        assert follower.stats.lost == 0
        assert not follower.time_filters
        assert any("without created_since" in w for w in warnings)
        follower.stats.passes += 1
        await follower._pass(pool)
    assert {job.now.state for job in follower.jobs.values()} == {"RUNNING"}
    assert follower.stats.show_calls == 6  # the second pass, unfiltered, needed no show
    assert "created_since" not in queries[-1]


@pytest.mark.anyio
async def test_jobs_missing_from_a_sweep_that_are_gone_are_each_confirmed_lost(
    tmp_path: Path,
) -> None:
    """The other side: the few shown first are gone indeed (404 IVA.0005), so the filters
    stand and every other missing job is shown too, each confirmed LOST."""
    service_url = "http://127.0.0.1:9/v2/p/services/s/tasks"
    results = tmp_path / "r.jsonl"
    ids = [f"{n:032x}" for n in range(30)]
    _submitted_ledger(results, ids, service_url)

    async def list_tasks(query: dict[str, Any]) -> Answer:
        return Answer(kind=Kind.OK, status=200, data={"count": 0, "tasks": []})

    async def show(job_id: str) -> Answer:
        return Answer(kind=Kind.FAILED, status=404, error_code="IVA.0005", error_msg="gone")

    follower, pool = _scripted_follower(results, service_url, list_tasks, show, lambda _m: None)
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        await follower._pass(pool)
    assert follower.stats.show_calls == 30
    assert {job.now.state for job in follower.jobs.values()} == {"LOST"}
    assert follower.time_filters


@pytest.mark.anyio
async def test_shows_run_concurrency_at_a_time_and_a_stop_at_once_cuts_them(
    tmp_path: Path,
) -> None:
    """The shows of a pass are a kind of work on the pool's workers: ``concurrency`` of them at
    a time (not one task per job), and stopping at once (a second signal) cuts the ones that
    hang and starts no other; a job cut off keeps what was known of it."""
    service_url = "http://127.0.0.1:9/v2/p/services/s/tasks"
    results = tmp_path / "r.jsonl"
    ids = [f"{n:032x}" for n in range(30)]
    _submitted_ledger(results, ids, service_url)
    shown: list[str] = []
    hanging = anyio.Event()

    async def list_tasks(query: dict[str, Any]) -> Answer:
        return Answer(kind=Kind.OK, status=200, data={"count": 0, "tasks": []})  # all absent

    async def show(job_id: str) -> Answer:
        shown.append(job_id)
        if len(shown) == 4:
            hanging.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    config = replace(_follow_config(results, follow=False), format="jsonl")
    follower = prepare_follow(config, lambda _m: None)
    pool = Pool(
        object(),  # type: ignore[arg-type]
        object(),  # type: ignore[arg-type]
        LineReporter(Log(io.StringIO()), None),
        PoolSettings(concurrency=4, rate=0.0, grace=60.0),
        service_url=service_url,
        credentials=None,
    )
    follower.clients = [SimpleNamespace(list_tasks=list_tasks, show=show)]  # type: ignore[list-item]

    async def stop_at_once() -> None:
        await hanging.wait()
        await anyio.sleep(0.05)  # were the cap not kept, a fifth show would start meanwhile
        pool.stop_now()

    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        with anyio.fail_after(5):  # not the grace's 60 s: cut at once
            async with anyio.create_task_group() as group:
                group.start_soon(stop_at_once)
                await follower._pass(pool)
    assert len(shown) == 4
    assert follower.stats.show_calls == 0
    assert {job.now.state for job in follower.jobs.values()} == {""}  # none taken for LOST


@pytest.mark.anyio
async def test_unknown_states_are_kept_verbatim_and_frozen_stops_with_exit_3(
    tmp_path: Path,
) -> None:
    """A state outside VAS's list is recorded as is and is not final (exit 4); FREEZING or
    FROZEN finishes the pass, records it, and exits 3."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1)))
    manifest = write_manifest(tmp_path, video_keys(6))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        ids = list(emulator.tasks)
        emulator.set_state(ids[0], "SCHEDULING")
        emulator.set_state(ids[1], "CREATE_FAIL")
        stats, _text = await _status(results, follow=False)
        assert exit_code(stats) == 4
        assert stats.unknown_states == {"CREATE_FAIL": 1, "SCHEDULING": 1}
        rows = {row["job_id"]: row for row in _report(tmp_path / "r.report.csv")}
        assert rows[ids[0]]["state"] == "SCHEDULING"
        assert rows[ids[0]]["final"] == "False"
        emulator.set_state(ids[2], "FROZEN")
        emulator.set_state(ids[3], "SUCCEEDED")
        stats, text = await _status(results)
        assert exit_code(stats) == 3, text
        assert "arrears" in (stats.fatal or "")
        assert stats.passes == 1  # the pass was finished, then the run stopped
        record = read_record(record_path(results), pytest.fail)
        assert record[ids[2]].state == "FROZEN"
        assert record[ids[3]].state == "SUCCEEDED"


@pytest.mark.anyio
async def test_no_terminal_escape_from_the_service_reaches_the_report_or_the_log(
    tmp_path: Path,
) -> None:
    """A job's state and error as the service lists them, escape sequences and all, reach the
    record, the report and the log as one printable line (controls as spaces)."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1)))
    manifest = write_manifest(tmp_path, video_keys(2))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        ids = list(emulator.tasks)
        emulator.set_state(
            ids[0], "FAILED", error=("ALG\x1b[2J", "\x1b]0;pwned\x07 \x1b[31mRED\x85")
        )
        emulator.set_state(ids[1], "ODD\x1b[5m\x9b")
        stats, text = await _status(results, follow=False)
    report = (tmp_path / "r.report.csv").read_text(encoding="utf-8")
    record = record_path(results).read_bytes().decode()
    for shown in (text, report, record, repr(stats.unknown_states)):
        assert not any(c in shown for c in "\x1b\x07\x85\x9b"), shown
    rows = {row["job_id"]: row for row in _report(tmp_path / "r.report.csv")}
    assert (rows[ids[0]]["error_code"], rows[ids[0]]["error_msg"]) == (
        "ALG [2J",
        "]0;pwned [31mRED",
    )
    assert rows[ids[1]]["state"] == "ODD [5m"


@pytest.mark.anyio
async def test_a_jobs_error_quoting_a_secret_is_masked_in_the_record_and_the_report(
    tmp_path: Path,
) -> None:
    """A job's error in a 200 list or show answer was only made one line: a service quoting
    the caller's secret there put it in the follow record and the report."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1)))
    manifest = write_manifest(tmp_path, video_keys(1))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        (job_id,) = emulator.tasks
        emulator.set_state(job_id, "FAILED", error=(EMULATOR_SK, f"caller key {EMULATOR_SK}"))
        await _status(results, follow=False)
    (row,) = _report(tmp_path / "r.report.csv")
    assert (row["error_code"], row["error_msg"]) == ("<hidden>", "caller key <hidden>")
    assert EMULATOR_SK not in record_path(results).read_text(encoding="utf-8")


def test_every_job_the_ledger_created_is_followed_and_then_pruned(tmp_path: Path) -> None:
    """One results file, three videos: submitted to one service, then to another, then to the
    first again with --resubmit. All nine jobs fill the quota, so all nine are followed and
    recorded final, and prune deletes all nine (it deletes only what is recorded); the report
    has a row per video per service, the newest job's."""
    from batchsubmit.prune import PruneConfig, PruneRules, prune

    live = LiveEmulator(Faults(jobs=Lifecycle(time_scale=1000)))
    try:
        emulator = live.emulator
        manifest = write_manifest(tmp_path, video_keys(3))
        results = tmp_path / "r.csv"
        first = config_for(manifest, live.url, results)
        other = replace(first, endpoint=replace(first.endpoint, service_name="face-detect"))
        for config in (first, other, replace(first, resubmit=True)):
            stats, log = anyio.run(run_submit, config)
            assert stats.submitted == 3, log
        created = set(emulator.tasks)
        assert len(created) == 9
        followed, _text = anyio.run(_status, results)
        assert followed.followed == 9
        recorded = read_record(record_path(results), pytest.fail)
        assert set(recorded) == created
        assert all(record.final for record in recorded.values())
        rows = _report(tmp_path / "r.report.csv")
        assert len(rows) == 6
        assert len({row["job_id"] for row in rows}) == 6
        assert {row["job_id"] for row in rows} < created
        pruning = PruneConfig(
            results=results,
            format="csv",
            credentials=Credentials(EMULATOR_AK, EMULATOR_SK),
            pool=PoolSettings(concurrency=8, rate=0.0, retry=FAST_RETRY),
            rules=PruneRules(older_than=0.0),
            durable=False,
        )
        pruned = prune(pruning, lambda _m: None, lambda _l, _m: None)
        assert pruned.deleted == 9
        assert emulator.deleted.keys() == created
    finally:
        live.close()


@pytest.mark.anyio
async def test_submit_follow_takes_its_service_however_the_rows_spell_the_endpoint(
    tmp_path: Path,
) -> None:
    """`submit --follow` follows its own service's jobs: rows written under another spelling
    of the same endpoint are that service's (as the ledger counts them), not "another"."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1000)))
    manifest = write_manifest(tmp_path, video_keys(3))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        config = config_for(manifest, url, results)
        await run_submit(config)
        spelled = config.endpoint.tasks_url.replace("http://127.0.0.1", "http://LOCALHOST")
        assert spelled != config.endpoint.tasks_url
        stats, text = await _status(results, only_service=spelled)
    assert stats.followed == 3, text
    assert "another service" not in text


@pytest.mark.anyio
async def test_a_404_that_is_not_vas_s_not_found_never_makes_a_job_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job missing from a sweep is confirmed LOST only by VAS's own 404 (IVA.0005); a 404
    from the gateway (another code: a path it does not route) says nothing of the job, which
    stays followed (a LOST job is final, never asked about again, and counts as failed)."""
    from batchsubmit.client import VasClient

    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1000)))
    manifest = write_manifest(tmp_path, video_keys(2))
    results = tmp_path / "r.csv"

    async def gateway_404(_self: VasClient, _task_id: str) -> Answer:
        return Answer(kind=Kind.FAILED, status=404, error_code="APIG.0101",
                      error_msg="The API does not exist or has not been published")  # fmt: skip

    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        vanished = next(iter(emulator.tasks))
        emulator.vanish(vanished)
        with monkeypatch.context() as patched:
            patched.setattr(VasClient, "show", gateway_404)
            stats, text = await _status(results, follow=False)
        assert stats.lost == 0, text
        assert "APIG.0101" in text
        stats, text = await _status(results, follow=False)  # VAS's own 404 now
    assert stats.lost == 1, text


@pytest.mark.anyio
async def test_a_final_job_is_not_asked_about_again_and_keeps_its_state(tmp_path: Path) -> None:
    """Once recorded final, a job costs no call; if it later vanishes it stays as recorded.
    LOST is only for a job that disappears before it was seen final. Nothing to follow: 0."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1000)))
    manifest = write_manifest(tmp_path, video_keys(5))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        ids = job_ids(results)
        first_id, second_id = next(iter(ids.values())), list(ids.values())[1]
        emulator.set_state(first_id, "SUCCEEDED")
        emulator.set_state(second_id, "RUNNING")
        for job_id in ids.values():
            if job_id not in (first_id, second_id):
                emulator.set_state(job_id, "FAILED")
        stats, _ = await _status(results, follow=False)
        assert (stats.succeeded, stats.failed, stats.not_final) == (1, 3, 1)
        emulator.vanish(first_id)
        emulator.vanish(second_id)
        calls = sum(emulator.calls.values())
        stats, _ = await _status(results)
        assert stats.followed == 1
        assert stats.already_final == 4
        assert stats.lost == 1
        assert exit_code(stats) == 1
        rows = {row["job_id"]: row for row in _report(tmp_path / "r.report.csv")}
        assert rows[first_id]["state"] == "SUCCEEDED"
        assert rows[second_id]["state"] == "LOST"
        # the sweep's look at the newest change (its cursor), one list, one show (404)
        assert sum(emulator.calls.values()) - calls == 3
        stats, _ = await _status(results)
        assert (stats.followed, stats.calls, exit_code(stats)) == (0, 0, 0)


@pytest.mark.anyio
async def test_collect_saves_each_result_once_and_an_expired_one_is_overdue_loudly(
    tmp_path: Path,
) -> None:
    """--collect saves what hosting_result.data holds to DIR/<name>.json and records
    COLLECTED; a second run fetches nothing again; a result that expired first is OVERDUE,
    with an error line."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1)))
    manifest = write_manifest(tmp_path, video_keys(3), extra=HOSTING)
    results = tmp_path / "r.csv"
    collect = tmp_path / "collected"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        ids = list(emulator.tasks)
        emulator.set_state(ids[0], "SUCCEEDED", hosting="AVAILABLE")
        emulator.set_state(ids[1], "SUCCEEDED", hosting="AVAILABLE")
        emulator.set_state(ids[2], "SUCCEEDED", hosting="NOT_GENERATED")
        stats, _ = await _status(results, follow=False)  # no --collect: AVAILABLE is final
        assert (stats.succeeded, stats.not_final) == (2, 1)
        emulator.set_state(ids[1], "SUCCEEDED", hosting="OVERDUE")  # expired meanwhile
        emulator.set_state(ids[2], "SUCCEEDED", hosting="AVAILABLE")
        stats, text = await _status(results, collect=collect)
        assert stats.collected == 2
        assert stats.overdue == 1
        assert "EXPIRED before it was collected" in text
        rows = {row["job_id"]: row for row in _report(tmp_path / "r.report.csv")}
        assert [rows[i]["hosting_status"] for i in ids] == ["COLLECTED", "OVERDUE", "COLLECTED"]
        name = emulator.tasks[ids[0]]["name"]
        saved = orjson.loads((collect / f"{name}.{ids[0]}.json").read_bytes())
        assert saved["task_id"] == ids[0]
        calls = sum(emulator.calls.values())
        stats, _ = await _status(results, collect=collect)
        assert stats.calls == 0
        assert sum(emulator.calls.values()) == calls


@pytest.mark.anyio
async def test_collect_syncs_the_folders_before_it_records_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved result's rename, and each folder --collect made, are synced into their
    parents before COLLECTED is recorded: a power cut must not lose a result that the record
    says is saved (it is never fetched again)."""
    import batchsubmit.durable as durable
    import batchsubmit.follow as follow_module
    from batchsubmit.record import RecordWriter

    events: list[tuple[str, object]] = []
    real_sync, real_append = durable.sync_dir, RecordWriter.append

    def sync(directory: Path, durable: bool = True) -> None:
        events.append(("sync", directory))
        real_sync(directory, durable)

    def append(self: RecordWriter, record: JobRecord) -> None:
        events.append(("record", record.hosting_status))
        real_append(self, record)

    monkeypatch.setattr(follow_module, "sync_dir", sync)  # the folders --collect makes
    monkeypatch.setattr(durable, "sync_dir", sync)  # a saved result's rename (replaced())
    monkeypatch.setattr(RecordWriter, "append", append)
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1)))
    manifest = write_manifest(tmp_path, video_keys(1), extra=HOSTING)
    results = tmp_path / "r.csv"
    collect = tmp_path / "new" / "collected"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        (job_id,) = emulator.tasks
        emulator.set_state(job_id, "SUCCEEDED", hosting="AVAILABLE")
        stats, _ = await _status(results, collect=collect, durable=True)
    assert stats.collected == 1
    synced = [where for kind, where in events if kind == "sync"]
    assert synced[:2] == [tmp_path, tmp_path / "new"]
    assert events.index(("sync", collect)) < events.index(("record", "COLLECTED"))


@pytest.mark.anyio
async def test_the_report_is_synced_renamed_and_its_folder_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is replaced as a collected result is (durable.replaced): its file synced,
    renamed, then its folder synced. The report's rename was never synced into its folder,
    so a power cut could bring back the report from before a prune that already deleted
    the jobs it lists."""
    import batchsubmit.durable as durable

    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_sync = os.fsync, os.replace, durable.sync_dir

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(source: Any, target: Any) -> None:
        events.append(("replace", str(target)))
        real_replace(source, target)

    def sync(directory: Path, durable: bool = True) -> None:
        events.append(("sync", str(directory)))
        real_sync(directory, durable)

    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1000)))
    manifest = write_manifest(tmp_path, video_keys(2))
    results = tmp_path / "r.csv"
    report = tmp_path / "r.report.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", rename)
        monkeypatch.setattr(durable, "sync_dir", sync)
        await _status(results, durable=True)
    renamed = events.index(("replace", str(report)))
    temporary = str(report.with_name(f".{report.name}.{os.getpid()}.tmp"))
    assert events[renamed - 1 : renamed + 2] == [
        ("fsync", temporary),
        ("replace", str(report)),
        ("sync", str(tmp_path)),
    ], events
    assert len(_report(report)) == 2


@pytest.mark.anyio
async def test_a_result_that_cannot_be_saved_stops_naming_its_file_and_is_not_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk under --collect: the run stops with the file it could not save (not "a
    task group failed"), leaves no temporary file, and records nothing COLLECTED."""
    import errno

    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1)))
    manifest = write_manifest(tmp_path, video_keys(1), extra=HOSTING)
    results = tmp_path / "r.csv"
    collect = tmp_path / "collected"

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        (job_id,) = emulator.tasks
        emulator.set_state(job_id, "SUCCEEDED", hosting="AVAILABLE")
        monkeypatch.setattr(os, "replace", full)  # the os module durable.replaced uses
        with pytest.raises(StorageError, match=r"cannot save .*collected/.*No space left"):
            await _status(results, collect=collect)
    assert list(collect.iterdir()) == []
    latest = read_record(record_path(results), pytest.fail)
    assert latest[job_id].hosting_status != "COLLECTED"


@pytest.mark.anyio
async def test_collect_keeps_each_jobs_result_when_a_video_has_several_jobs(
    tmp_path: Path,
) -> None:
    """The same video submitted to two services (the same job name in each): each job's
    result is saved to a file of its own, and neither is taken for the other's."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1000)))
    manifest = write_manifest(tmp_path, video_keys(1), extra=HOSTING)
    results = tmp_path / "r.csv"
    collect = tmp_path / "collected"
    async with emulator.serve() as url:
        first = config_for(manifest, url, results)
        await run_submit(first)
        await run_submit(replace(first, endpoint=replace(first.endpoint, service_name="other")))
        ids = list(emulator.tasks)
        for job_id in ids:
            emulator.set_state(job_id, "SUCCEEDED", hosting="AVAILABLE")
        stats, _ = await _status(results, collect=collect)
    assert stats.collected == 2
    files = sorted(collect.iterdir())
    assert len(files) == 2
    assert sorted(orjson.loads(f.read_bytes())["task_id"] for f in files) == sorted(ids)


@pytest.mark.anyio
async def test_a_service_whose_jobs_only_wait_for_results_does_not_make_every_pass_a_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service whose followed jobs all wait for their hosting result (only show can say
    more) when a run starts lists nothing, so its cursor was never set, and every pass of
    every other service became a full sweep: here 300 jobs, 4 list calls a pass instead of 1."""
    monkeypatch.setattr("batchsubmit.follow.CHEAP_SWEEP", 0)  # 300 jobs: sweeps are not cheap
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1e-6)))  # jobs stay as they are
    results = tmp_path / "r.csv"
    (tmp_path / "h").mkdir()
    hosting = write_manifest(tmp_path / "h", video_keys(1), extra=HOSTING)
    plain = write_manifest(tmp_path, video_keys(300))
    async with emulator.serve() as url:
        await run_submit(config_for(hosting, url, results))
        [waiting] = list(emulator.tasks)
        emulator.set_state(waiting, "SUCCEEDED", hosting="NOT_GENERATED")
        first = config_for(plain, url, results)
        await run_submit(replace(first, endpoint=replace(first.endpoint, service_name="other")))
        await _status(results, follow=False)  # the record: one job waits for its result
        stats, text = await _status(results, interval=0.01, deadline=1.0)
    assert stats.not_final == 301, text
    assert stats.passes >= 3, text  # with the cursor unset, every one was a sweep
    assert stats.sweeps <= stats.passes // 10 + 1, (stats.sweeps, stats.passes)
    assert stats.show_calls >= stats.passes - 1  # the waiting job, once a pass


@pytest.mark.anyio
async def test_a_result_gone_with_its_job_or_expired_is_neither_collected_nor_expiring(
    tmp_path: Path,
) -> None:
    """A job pruned (or lost) while its record still says AVAILABLE took its result with it,
    and one past its overdue time has expired: --follow --collect has nothing to wait for
    (it used to pass until its deadline) and no run warns that they "expire" soon."""
    results = tmp_path / "r.jsonl"
    _submitted_ledger(results, ["j0", "j1", "j2"], "http://127.0.0.1:9/v2/p/services/s/tasks")
    past = "2026-01-01T00:00:00Z"
    soon = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat().replace("+00:00", "Z")
    with RecordWriter(record_path(results)) as writer:
        for job_id, state, overdue in (("j0", "PRUNED", soon), ("j1", "LOST", soon),
                                       ("j2", "SUCCEEDED", past)):  # fmt: skip
            record = replace(_record(job_id, "SUCCEEDED", hosting=True,
                                     hosting_status="AVAILABLE"),
                             state=state, hosting_overdue_at=overdue)  # fmt: skip
            writer.append(replace(record, source=f"s{job_id[1]}"))
    for collect in (tmp_path / "collected", None):
        started = time.monotonic()
        stats, text = await _status(results, format="jsonl", collect=collect, deadline=3.0)
        assert time.monotonic() - started < 2.0, text
        assert (stats.followed, stats.calls, stats.expiring) == (0, 0, 0), text
        assert "expires at" not in text


@pytest.mark.anyio
async def test_a_result_too_large_to_host_is_final_named_and_never_collected(
    tmp_path: Path,
) -> None:
    """EXCEED_IN_SIZE (the emulator's p_hosting_too_large share): the job is final, nothing
    is collected, each is counted and warned about with what to do, and the summary says so."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1000, p_hosting_too_large=1.0)))
    manifest = write_manifest(tmp_path, video_keys(2), extra=HOSTING)
    results = tmp_path / "r.csv"
    collect = tmp_path / "collected"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        stats, text = await _status(results, collect=collect)
    assert (stats.succeeded, stats.not_final, stats.collected) == (2, 0, 0)
    assert stats.too_large == 2
    assert text.count("too large for VAS to host (EXCEED_IN_SIZE)") == 2
    assert "job.output" in text
    rows = _report(tmp_path / "r.report.csv")
    assert [row["hosting_status"] for row in rows] == ["EXCEED_IN_SIZE"] * 2
    assert not collect.exists() or not any(collect.iterdir())


@pytest.mark.anyio
async def test_a_hosting_result_about_to_expire_is_warned_about_every_run(tmp_path: Path) -> None:
    """A result AVAILABLE within 6 h of its overdue time is counted and warned about, also on
    later runs that ask the service nothing (the job is final)."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1, hosting_ttl=3600.0)))
    manifest = write_manifest(tmp_path, video_keys(2), extra=HOSTING)
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        for job_id in list(emulator.tasks):
            emulator.set_state(job_id, "SUCCEEDED", hosting="AVAILABLE")
        stats, text = await _status(results, follow=False)
        assert (stats.succeeded, stats.expiring) == (2, 2)
        stats, text = await _status(results, follow=False)
    assert (stats.calls, stats.followed, stats.expiring) == (0, 0, 2)
    assert "expires at" in text
    assert "--collect" in text


@pytest.mark.anyio
async def test_credentials_the_service_refuses_stop_the_follow_with_exit_3(
    tmp_path: Path,
) -> None:
    """A 401 on the first list is fatal: no further call, exit 3, the report still written."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1)))
    manifest = write_manifest(tmp_path, video_keys(3))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        before = sum(emulator.calls.values())
        stats, _text = await _status(
            results, credentials=Credentials(EMULATOR_AK, "not-the-emulators-sk")
        )
        assert sum(emulator.calls.values()) - before == 1
    assert exit_code(stats) == 3
    assert "HUAWEICLOUD_SDK_SK" in (stats.fatal or "")
    assert len(_report(tmp_path / "r.report.csv")) == 3


@pytest.mark.anyio
async def test_deadline_ends_the_follow_with_exit_4_and_stuck_jobs_are_counted(
    tmp_path: Path,
) -> None:
    """Jobs still running at --deadline: exit 4; PENDING longer than --stuck-after: stuck."""
    behind = [10.0]  # the emulator's clock: its jobs are created 10 s in the past
    emulator = Emulator(
        Faults(jobs=Lifecycle(time_scale=1, pending=(3600.0, 3600.0))),
        clock=lambda: time.monotonic() - behind[0],
    )
    behind[0] = 20.0
    manifest = write_manifest(tmp_path, video_keys(4))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        behind[0] = 10.0
        started = time.monotonic()
        stats, text = await _status(results, deadline=0.4, stuck_after=1.0, started=started)
        assert time.monotonic() - started < 3
    assert exit_code(stats) == 4
    assert stats.not_final == 4
    assert stats.stop_reason == "deadline reached"
    assert stats.passes >= 2
    assert stats.stuck == 4
    assert "stuck?" in text
    assert stats.by_state == {"PENDING": 4}


# -- the CLI, as a process ------------------------------------------------------------------------


def _status_cli(results: Path, *extra: str) -> list[str]:
    return ["status", str(results), "--rate", "0", "--interval", "0.05", *extra]


def test_quiet_status_with_jobs_still_running_prints_nothing(tmp_path: Path) -> None:
    """`status -q` ending 4 (jobs not final yet: followed again next time) is not a failed
    night: nothing printed, so cron mails nothing; the nightly script used to mail every such
    night."""
    live = LiveEmulator(Faults(jobs=Lifecycle(time_scale=0.01)))  # jobs stay PENDING
    try:
        manifest = write_manifest(tmp_path, video_keys(2))
        results = tmp_path / "r.csv"
        anyio.run(run_submit, config_for(manifest, live.url, results))
        done = run_cli(*_status_cli(results, "--follow", "--deadline", "1s", "-q"))
    finally:
        live.close()
    assert (done.returncode, done.stderr) == (4, "")


def test_status_progress_lines_count_succeeded_jobs_not_submitted_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A status run's progress said "5 submitted" for five jobs that had SUCCEEDED."""
    monkeypatch.setattr("batchsubmit.progress.PROGRESS_EVERY", 0.0)
    live = LiveEmulator(Faults(jobs=Lifecycle(time_scale=1000)))
    try:
        manifest = write_manifest(tmp_path, video_keys(2))
        results = tmp_path / "r.csv"
        anyio.run(run_submit, config_for(manifest, live.url, results))
        for name, value in cli_env().items():
            monkeypatch.setenv(name, value)
        code = main(_status_cli(results, "--follow", "--deadline", "10s"))
    finally:
        live.close()
    err = capsys.readouterr().err
    assert code == 0, err
    assert "progress: 2/2 done (2 succeeded, 0 failed" in err, err


def test_status_is_refused_while_a_submit_holds_the_lock(tmp_path: Path) -> None:
    """A status during a submit on the same results file exits 75 and sends nothing."""
    results = tmp_path / "r.csv"
    results.write_text("source,name,job_id\n")
    lock = RunLock(lock_path(results.resolve()))
    lock.acquire("now")
    try:
        done = run_cli(*_status_cli(results))
    finally:
        lock.release()
    assert done.returncode == 75, done.stderr
    assert "another batchsubmit run" in done.stderr


def test_status_killed_twice_then_resumed_reports_every_video_once(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """SIGKILL twice during `status --follow`, then run to the end: a complete, correct
    report, one row per video, and the record never lost a final state."""
    emulator = live_emulator.emulator
    emulator.faults = Faults(
        jobs=Lifecycle(time_scale=10, p_failed=0.2, p_vanish=0.02, running=(20.0, 60.0))
    )
    manifest = write_manifest(tmp_path, video_keys(120))
    results = tmp_path / "r.csv"
    stats, _ = anyio.run(run_submit, config_for(manifest, live_emulator.url, results))
    assert stats.submitted == 120
    record = record_path(results)
    for kill in range(2):
        before = record.stat().st_size if record.exists() else 0
        process = subprocess.Popen(
            real_cli(*_status_cli(results, "--follow")), env=cli_env(), stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if record.exists() and record.stat().st_size > before + 2000 * (kill + 1):
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=20)
        assert process.returncode == -signal.SIGKILL, "ended before the kill: jobs too fast"
    finals_before = {k for k, v in read_record(record, lambda _m: None).items() if v.final}
    done = run_cli(*_status_cli(results, "--follow"), timeout=60)
    rows = _report(tmp_path / "r.report.csv")
    assert len(rows) == 120
    assert len({row["source"] for row in rows}) == 120
    for row in rows:
        assert row["state"] == _expected_state(emulator, row["job_id"]), row
    # The exit code judges the jobs this run saw end (on a slow machine the killed runs may
    # have seen them all): 1 if one of those failed or was lost.
    judged = [row for row in rows if row["job_id"] not in finals_before]
    failed = any(row["state"] != "SUCCEEDED" for row in judged)
    assert done.returncode == (1 if failed else 0), done.stderr[-2000:]
    finals_after = {k for k, v in read_record(record, pytest.fail).items() if v.final}
    assert finals_before <= finals_after


def test_sigterm_ends_the_follow_cleanly_with_its_report(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """SIGTERM during `status --follow`: the pass under way ends, what was seen is recorded,
    the report is written (every video once), exit 143."""
    live_emulator.emulator.faults = Faults(jobs=Lifecycle(time_scale=1, running=(600.0, 600.0)))
    manifest = write_manifest(tmp_path, video_keys(30))
    results = tmp_path / "r.csv"
    anyio.run(run_submit, config_for(manifest, live_emulator.url, results))
    process = subprocess.Popen(
        cli(*_status_cli(results, "--follow")), env=cli_env(), stderr=subprocess.PIPE, text=True
    )
    record = record_path(results)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (record.exists() and record.stat().st_size):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 143, err[-2000:]
    rows = _report(tmp_path / "r.report.csv")
    assert len({row["source"] for row in rows}) == len(rows) == 30
    recorded = read_record(record, pytest.fail)
    assert len(recorded) == 30
    assert all(row["state"] == recorded[row["job_id"]].state for row in rows)


def test_submit_follow_and_a_jsonl_report_with_json_booleans(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """`submit --follow` follows what it created: one command, report in JSONL with real
    booleans, exit 0 when every job succeeded."""
    live_emulator.emulator.faults = Faults(jobs=Lifecycle(time_scale=500))
    manifest = write_manifest(tmp_path, video_keys(20))
    results = tmp_path / "r.csv"
    report = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    done = run_cli(
        "submit", str(manifest), "--endpoint", live_emulator.url, "--results", str(results),
        "--rate", "0", "--follow", "--interval", "0.05", "--report", str(report),
        "--summary", str(summary),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [orjson.loads(line) for line in report.read_bytes().splitlines()]
    assert len(lines) == 20
    assert all(line["final"] is True and line["state"] == "SUCCEEDED" for line in lines)
    assert list(lines[0]) == list(REPORT_COLUMNS)
    data = orjson.loads(summary.read_bytes())
    assert data["follow"]["counts"]["succeeded"] == 20
    assert data["exit_code"] == 0


def test_submit_follow_deadline_bounds_the_whole_command(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """`submit --follow --deadline`: after it the follow ends too; jobs still running: exit 4."""
    live_emulator.emulator.faults = Faults(jobs=Lifecycle(time_scale=1, pending=(600.0, 600.0)))
    manifest = write_manifest(tmp_path, video_keys(10))
    results = tmp_path / "r.csv"
    started = time.monotonic()
    done = run_cli(
        "submit", str(manifest), "--endpoint", live_emulator.url, "--results", str(results),
        "--rate", "0", "--follow", "--interval", "0.05", "--deadline", "1s",
    )  # fmt: skip
    assert done.returncode == 4, done.stderr[-2000:]
    assert time.monotonic() - started < 6
    assert "deadline reached" in done.stderr
    rows = _report(tmp_path / "r.report.csv")
    assert {row["state"] for row in rows} == {"PENDING"}


def test_status_with_nothing_to_follow_needs_no_credentials(tmp_path: Path) -> None:
    """A ledger with no job (every create failed) is exit 0, and asks for no credentials."""
    results = tmp_path / "r.jsonl"
    row = {
        "source": "obs://b/a.mp4", "name": "a", "job_id": "", "status": "failed",
        "error_code": "IVA.0004", "error_msg": "bad", "submitted_at": "", "service_url": "u",
    }  # fmt: skip
    results.write_bytes(orjson.dumps(row) + b"\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    done = run_cli("status", str(results), "--report", str(tmp_path / "rep.csv"), env=env)
    assert done.returncode == 0, done.stderr
    rows = _report(tmp_path / "rep.csv")
    assert rows[0]["error_code"] == "IVA.0004"
    assert rows[0]["state"] == ""


@pytest.mark.anyio
async def test_a_service_that_lists_new_jobs_late_keeps_its_time_filters(tmp_path: Path) -> None:
    """A lagging list index (the emulator's list_lag) leaves new jobs out of every list,
    filtered or not, while show finds them. That is no proof the created_since/created_until
    filters are misread: the run keeps them (unfiltered, a sweep pages through every job of
    the service, for the rest of the run), and takes none of the missing jobs for LOST."""
    now = [time.time()]
    lists: list[str] = []
    shown: list[str] = []

    def log_request(record: RequestRecord) -> None:
        path = record.path
        if record.method != "GET":
            return
        if not path.split("?")[0].endswith("/tasks"):
            shown.append(path)
            return
        if shown and "id_like" not in path:
            now[0] = max(now[0], lag_over)  # the second pass: the lag is over
        lists.append(path)

    emulator = Emulator(
        Faults(list_lag=5.0, jobs=Lifecycle(time_scale=1e-3)),
        clock=lambda: now[0],
        request_log=log_request,
    )
    lag_over = now[0] + 10.0
    manifest = write_manifest(tmp_path, video_keys(20))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        lists.clear()
        stats, text = await _status(results, deadline=0.5)
    assert "listing without created_since" not in text, text
    assert "lists new jobs late" in text
    assert stats.passes >= 2, text
    assert stats.lost == 0, text
    assert {row["state"] for row in _report(tmp_path / "r.report.csv")} == {"PENDING"}
    swept = [path for path in lists if "id_like" not in path]
    assert all("created_since" in path for path in swept), swept


@pytest.mark.anyio
async def test_a_far_future_updated_at_does_not_pin_the_changes_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The changes cursor is the newest updated_at the service listed. One job listed as
    updated in 2100 (a hostile or skewed service) made it 2100 for the rest of the run: every
    changes pass then stopped after its first page, as if no job on the second had changed
    since, and 150 jobs that succeeded were missed until the next sweep. A time that far
    ahead of our clock is warned about and not taken for the cursor."""
    monkeypatch.setattr("batchsubmit.follow.CHEAP_SWEEP", 0)  # pass 2 lists the changes
    service_url = "http://127.0.0.1:9/v2/p/services/s/tasks"
    results = tmp_path / "r.jsonl"
    ids = [f"{n:032x}" for n in range(250)]
    _submitted_ledger(results, ids, service_url)
    now = time.time()

    def stamp(moment: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))

    def task(job_id: str, state: str, updated: str) -> dict[str, Any]:
        return {"id": job_id, "state": state, "updated_at": updated,
                "created_at": "2026-12-01T02:00:00Z", "output": {"obs": {}}}  # fmt: skip

    tasks = {job_id: task(job_id, "RUNNING", stamp(now - 600)) for job_id in ids}
    hostile = "f" * 32  # not one of ours: only its time matters
    tasks[hostile] = task(hostile, "RUNNING", "2100-01-01T00:00:00Z")

    async def list_tasks(query: dict[str, Any]) -> Answer:
        found = list(tasks.values())
        if query["order"] == "updated_at:DESC":
            found.sort(key=lambda t: t["updated_at"], reverse=True)
        offset = int(query["offset"])
        page = found[offset : offset + int(query["limit"])]
        return Answer(kind=Kind.OK, status=200, data={"count": len(found), "tasks": page})

    warnings: list[str] = []
    follower, pool = _scripted_follower(results, service_url, list_tasks, None, warnings.append)
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        began = time.time()
        await follower._pass(pool)  # a sweep: every job RUNNING
        # No believable newest change: the cursor is our clock when the sweep began, less the
        # clocks' slack (not its end: a job that changed while it paged is read again)
        assert follower.cursor[0] is not None
        assert follower.cursor[0] < began
        follower.stats.passes += 1
        for job_id in ids[:150]:
            tasks[job_id] = task(job_id, "SUCCEEDED", stamp(now))
        await follower._pass(pool)
        assert not follower._swept  # a changes pass
    states = Counter(job.now.state for job in follower.jobs.values())
    assert states == {"SUCCEEDED": 150, "RUNNING": 100}, states
    assert any("2100-01-01T00:00:00Z" in w for w in warnings), warnings


@pytest.mark.anyio
async def test_a_frozen_job_whose_list_call_fails_still_exits_3(tmp_path: Path) -> None:
    """README: any followed job FREEZING or FROZEN is exit 3 (the account is in arrears). A
    job recorded FROZEN by the last run, whose list call fails this run (503 after the
    retries), is still FROZEN as far as anyone knows: exit 3, not 4 ("not final yet", as if
    it would end by itself), and the summary says why."""
    emulator = Emulator(Faults(jobs=Lifecycle(time_scale=1e-3)))
    manifest = write_manifest(tmp_path, video_keys(2))
    results = tmp_path / "r.csv"
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, results))
        frozen = next(iter(emulator.tasks))
        emulator.set_state(frozen, "FROZEN")
        stats, text = await _status(results, follow=False)
        assert exit_code(stats) == 3, text
        emulator.faults = replace(emulator.faults, p503=1.0)  # the service cannot be asked
        stats, text = await _status(results, follow=False)
    assert stats.list_calls >= 1, text
    assert stats.first_errors, text  # the list failed
    assert read_record(record_path(results), pytest.fail)[frozen].state == "FROZEN"
    assert exit_code(stats) == 3, text
    assert "arrears" in (stats.fatal or ""), text
