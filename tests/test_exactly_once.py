"""The exactly-once issue: lost answers, 5xx after create, timeouts and kills never duplicate
or lose a job."""

from __future__ import annotations

import csv
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchsubmit.emulator import EMULATOR_PROJECT_ID, Emulator, Faults
from batchsubmit.jobs import JobSpec, SpecBuilder
from batchsubmit.journal import RunLock
from batchsubmit.manifest import load_manifest
from batchsubmit.results import COLUMNS
from batchsubmit.runner import RunConfig, lock_path
from batchsubmit.sources import ObjectRef

from .helpers import (
    BUCKET,
    QUICK,
    LiveEmulator,
    assert_exactly_once,
    cli,
    cli_env,
    config_for,
    emulator_client,
    job_ids,
    run_cli,
    run_submit,
    signal_after_rows,
    sources,
    submit_args,
    video_keys,
    write_manifest,
)


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_lost_answers_and_5xx_after_create(tmp_path: Path, fmt: str) -> None:
    """5% of answers lost and 5% 500/502/504 after the job exists: still exactly once."""
    keys = video_keys(300)
    manifest = write_manifest(tmp_path, keys)
    results = tmp_path / f"r.{fmt}"
    emulator = Emulator(Faults(p_lost=0.05, p_5xx_after_create=0.05, seed=7))
    async with emulator.serve() as url:
        stats, _log = await run_submit(config_for(manifest, url, results, fmt))  # type: ignore[arg-type]
    assert (stats.submitted, stats.failed, stats.unknown) == (300, 0, 0)
    assert stats.ambiguous >= 10
    assert stats.reconciled == stats.ambiguous
    assert_exactly_once(emulator, results, sources(keys), fmt)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_timeouts_are_looked_up_not_resent(tmp_path: Path) -> None:
    """Answers slower than the client's timeout: the job is found by name, not created again."""
    keys = video_keys(40)
    manifest = write_manifest(tmp_path, keys)
    results = tmp_path / "r.csv"
    emulator = Emulator(Faults(p_slow=0.2, slow_seconds=2.0, seed=3))
    async with emulator.serve() as url:
        config = config_for(manifest, url, results)
        from dataclasses import replace

        stats, _log = await run_submit(replace(config, timeout=0.3))
    assert (stats.submitted, stats.unknown) == (40, 0)
    assert stats.reconciled >= 3
    assert_exactly_once(emulator, results, sources(keys))


def _journal(results: Path, entries: list[tuple[str, str]]) -> None:
    journal = results.with_name(results.name + ".journal")
    journal.write_bytes(
        b"".join(orjson.dumps({"source": s, "name": n}) + b"\n" for s, n in entries)
    )


def _videos_and_first_spec(tmp_path: Path, count: int) -> tuple[list[str], Path, JobSpec]:
    """A manifest of ``count`` videos, and the spec a run makes for the first of them."""
    keys = video_keys(count)
    manifest = write_manifest(tmp_path, keys)
    loaded = load_manifest(manifest)
    return keys, manifest, SpecBuilder(loaded.service, loaded.job).build(ObjectRef(BUCKET, keys[0]))


async def _create(config: RunConfig, body: bytes) -> str:
    """Create a job on the emulator as an earlier run would have; its id."""
    import aiohttp

    from batchsubmit.auth import Credentials
    from batchsubmit.client import VasClient

    async with aiohttp.ClientSession() as session:
        client = VasClient(session, config.endpoint, Credentials(*_emulator_keys()))
        answer = await client.create(body)
    assert answer.job_id, answer
    return answer.job_id


@pytest.mark.anyio
async def test_intent_without_a_job_is_created_and_with_a_job_is_recorded(tmp_path: Path) -> None:
    """Left-over intents: a job truly not created is created; one that exists gets its row."""
    keys = video_keys(6)
    manifest = write_manifest(tmp_path, keys)
    results = tmp_path / "r.csv"
    builder = SpecBuilder(load_manifest(manifest).service, load_manifest(manifest).job)
    specs = [builder.build(ObjectRef(BUCKET, key)) for key in keys]
    emulator = Emulator()
    async with emulator.serve() as url:
        # A killed run: it created the first job (no row) and had sent nothing for the second.
        config = config_for(manifest, url, results)
        created = await _create(config, specs[0].body)
        _journal(results, [(specs[0].source, specs[0].name), (specs[1].source, specs[1].name)])
        stats, _log = await run_submit(config)
    assert created
    assert stats.reconciled == 1
    assert stats.not_created == 1
    assert stats.submitted == 6
    assert_exactly_once(emulator, results, sources(keys))
    assert not results.with_name("r.csv.journal").exists()


def _emulator_keys() -> tuple[str, str]:
    from batchsubmit.emulator import EMULATOR_AK, EMULATOR_SK

    return EMULATOR_AK, EMULATOR_SK


def _csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _unknown_row(source: str, name: str, service_url: str) -> list[str]:
    values = {
        "source": source,
        "name": name,
        "status": "unknown",
        "http_status": "504",
        "error_code": "TIMEOUT",
        "attempts": "1",
        "service_url": service_url,
        "reconciled": "False",
    }
    return [values.get(column, "") for column in COLUMNS]


def test_reconcile_command_resolves_unknown_rows_only(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """`batchsubmit reconcile`: unknown rows become submitted (found) or failed (absent);
    nothing is created."""
    keys = video_keys(4)
    manifest = write_manifest(tmp_path, keys)
    first = tmp_path / "first.csv"
    run = subprocess.run(
        cli("submit", str(manifest), "--endpoint", live_emulator.url, "--results", str(first)),
        env=cli_env(),
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0
    rows = _csv(first)
    service_url = rows[1][COLUMNS.index("service_url")]
    # Another results file whose answers were lost: one job exists, one does not.
    results = tmp_path / "r.csv"
    ghost = f"obs://{BUCKET}/cams/never-created.mp4"
    with results.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerow(_unknown_row(rows[1][0], rows[1][1], service_url))
        writer.writerow(_unknown_row(ghost, "never-created-aaaaaaaaaaaa", service_url))
    before = live_emulator.settled_tasks()
    fix = run_cli("reconcile", str(results), *QUICK)
    assert fix.returncode == 0, fix.stderr
    assert len(live_emulator.emulator.tasks) == before
    with results.open(newline="", encoding="utf-8") as handle:
        tail = list(csv.DictReader(handle))[-2:]
    by_source = {row["source"]: row for row in tail}
    assert by_source[rows[1][0]]["status"] == "submitted"
    assert by_source[rows[1][0]]["job_id"] == rows[1][COLUMNS.index("job_id")]
    assert by_source[rows[1][0]]["reconciled"] == "True"
    assert by_source[ghost]["status"] == "failed"
    assert by_source[ghost]["error_code"] == "BATCHSUBMIT.NOT_CREATED"


def _while_held(results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI while another run holds ``results``' lock (a results file of a header
    only); the file must come out as it went in."""
    header = (",".join(COLUMNS) + "\r\n").encode()
    results.write_bytes(header)
    lock = RunLock(lock_path(results))
    lock.acquire("2026-12-02T02:00:00.000Z")
    try:
        done = run_cli(*args)
    finally:
        lock.release()
    assert done.returncode == 75, done.stderr
    assert "another batchsubmit run is using these results" in done.stderr
    assert results.read_bytes() == header
    return done


def test_reconcile_while_another_run_holds_the_results_exits_75_touching_nothing(
    tmp_path: Path,
) -> None:
    """A reconcile started while a status (or a submit between its batches) holds the lock
    found nothing to resolve in the files being written and said so, exit 0, as though the
    results were at rest: every other command on a held results file exits 75."""
    results = tmp_path / "r.csv"
    done = _while_held(results, "reconcile", str(results), *QUICK)
    assert "nothing to reconcile" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.csv.lock"]


def test_a_dry_run_while_another_run_holds_the_results_exits_75(tmp_path: Path) -> None:
    """submit --dry-run read the ledger of a results file tonight's run was appending to and
    listed, exit 0, what that run was submitting at that moment; prune --dry-run exited 75."""
    manifest, results = write_manifest(tmp_path, video_keys(2)), tmp_path / "r.csv"
    args = ("submit", str(manifest), "--emulator", "--results", str(results), "--dry-run")
    assert not _while_held(results, *args).stdout
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.splitlines()) == 2


def killed_run(
    tmp_path: Path, live_emulator: LiveEmulator, videos: int, lines: int
) -> tuple[list[str], Path, list[str], int]:
    """A run (20 ms a create, so ``videos`` take seconds) killed with SIGKILL once the results
    file has ``lines`` lines; returns the keys, results, arguments and the jobs then on the
    emulator, counted once the creates it was still answering have landed."""
    live_emulator.emulator.faults = Faults(latency=0.02)
    keys = video_keys(videos)
    manifest = write_manifest(tmp_path, keys)
    results = tmp_path / "r.csv"
    args = submit_args(manifest, live_emulator.url, results, *QUICK, "--concurrency", "16")
    signal_after_rows(args, results, lines, signal.SIGKILL)
    return keys, results, args, live_emulator.settled_tasks()


def test_sigkill_leaves_nothing_in_tmpdir_after_the_next_run(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """A run killed with SIGKILL cannot clean up after itself (a nightly run left two
    directories in /tmp each time): no spool directory unless a live prefix needs one, and
    the listing snapshots it left are removed by the next run."""
    live_emulator.emulator.faults = Faults(latency=0.02)
    manifest = write_manifest(tmp_path, video_keys(300))
    results = tmp_path / "r.csv"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    args = submit_args(manifest, live_emulator.url, results, *QUICK, "--concurrency", "8")
    code, _err = signal_after_rows(
        args, results, 20, signal.SIGKILL, env={**cli_env(), "TMPDIR": str(scratch)}
    )
    assert code == -signal.SIGKILL
    left = [path.name for path in scratch.iterdir()]
    assert len(left) == 1, left
    assert left[0].startswith("batchsubmit-listings-"), left
    again = run_cli(*args, env={**cli_env(), "TMPDIR": str(scratch)})
    assert again.returncode == 0, again.stderr
    assert list(scratch.iterdir()) == []


def test_sigkill_mid_run_then_rerun(tmp_path: Path, live_emulator: LiveEmulator) -> None:
    """SIGKILL in a 1,500-video run, then a rerun: every video exactly once, every row present."""
    keys, results, args, created_before_rerun = killed_run(tmp_path, live_emulator, 1500, 400)
    assert 399 <= created_before_rerun < 1500  # 400 lines at the kill: the header and 399 rows
    journal = results.with_name("r.csv.journal")
    assert journal.exists()
    summary = tmp_path / "summary.json"
    again = run_cli(*args, "--summary", str(summary), timeout=120)
    assert again.returncode == 0, again.stderr
    counts = orjson.loads(summary.read_bytes())["counts"]
    assert counts["reconciled"] + counts["not_created"] >= 1, "no in-flight intent was resolved"
    assert_exactly_once(live_emulator.emulator, results, sources(keys))
    assert not journal.exists()


def test_reconcile_resolves_a_killed_runs_intents(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """After SIGKILL, `reconcile` alone (no manifest) resolves the journal's intents."""
    _keys, results, _args, before = killed_run(tmp_path, live_emulator, 400, 100)
    fix = run_cli("reconcile", str(results), *QUICK)
    assert fix.returncode == 0, fix.stderr
    assert len(live_emulator.emulator.tasks) == before
    assert set(job_ids(results)) == set(live_emulator.emulator.jobs_by_source())


@pytest.mark.anyio
async def test_a_video_whose_lookup_failed_is_not_created_again_in_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier run's create (its job exists) whose lookup fails in this run: the video is
    held (an unknown row) and the create pass does not make it again; the others are made."""

    from batchsubmit.answers import Answer, Kind
    from batchsubmit.client import VasClient

    keys, manifest, first = _videos_and_first_spec(tmp_path, 5)
    results = tmp_path / "r.csv"
    emulator = Emulator()
    async with emulator.serve() as url:
        config = config_for(manifest, url, results)
        assert await _create(config, first.body)
        _journal(results, [(first.source, first.name)])

        async def list_fails(
            self: VasClient, name_like: str, offset: int, limit: int = 0
        ) -> Answer:
            return Answer(kind=Kind.UNAVAILABLE, status=503, error_code="IVA.0010")

        monkeypatch.setattr(VasClient, "list_page", list_fails)
        stats, _log = await run_submit(config)
    assert len(emulator.jobs_by_source()[first.source]) == 1
    assert (stats.unknown, stats.submitted) == (1, 4)
    statuses = {row[0]: row[COLUMNS.index("status")] for row in _csv(results)[1:]}
    assert statuses[first.source] == "unknown"
    assert set(emulator.jobs_by_source()) == set(sources(keys))


@pytest.mark.anyio
@pytest.mark.parametrize("make_room", [False, True])
async def test_a_full_quota_mid_run_defers_the_rest_to_a_run_with_room(
    tmp_path: Path, make_room: bool
) -> None:
    """The emulator's quota full after 5 jobs: the run creates nothing more, defers the rest
    with the reason (fatal unless quota_defers); once room is made the next run creates the
    rest: every video exactly once."""
    keys = video_keys(12)
    manifest = write_manifest(tmp_path, keys)
    results = tmp_path / "r.csv"
    emulator = Emulator(Faults(quota=5))
    async with emulator.serve() as url:
        config = config_for(manifest, url, results, concurrency=4, quota_defers=make_room)
        stats, _log = await run_submit(config)
        assert (stats.submitted, stats.failed, stats.deferred) == (5, 0, 7)
        assert stats.deferred_reason is not None
        assert "IVA.0012" in stats.deferred_reason
        assert (stats.fatal is None) is make_room
        emulator.faults = Faults(quota=0)
        again, _log = await run_submit(config)
    assert (again.submitted, again.skipped) == (7, 5)
    assert_exactly_once(emulator, results, sources(keys))


@pytest.mark.anyio
async def test_two_jobs_for_one_video_the_oldest_is_recorded_and_the_next_run_reads_on(
    tmp_path: Path,
) -> None:
    """A killed run's create made twice (a lost create that surfaced late): the lookup records
    the oldest, writes a `duplicate` row for the other (its id in the stats), and the next run
    reads that file back (the row is neither damage nor done) and creates nothing more."""

    _keys, manifest, first = _videos_and_first_spec(tmp_path, 3)
    results = tmp_path / "r.csv"
    emulator = Emulator()
    async with emulator.serve() as url:
        config = config_for(manifest, url, results)
        older = await _create(config, first.body)
        emulator.tasks[older]["created_at"] = "2026-01-01T00:00:00Z"
        newer = await _create(config, first.body)
        _journal(results, [(first.source, first.name)])
        stats, _log = await run_submit(config)
        again, _log = await run_submit(config)
    assert stats.duplicates == [newer]
    assert (stats.submitted, stats.reconciled) == (3, 1)
    rows = {(row[0], row[COLUMNS.index("status")]): row[2] for row in _csv(results)[1:]}
    assert rows[(first.source, "submitted")] == older
    assert rows[(first.source, "duplicate")] == newer
    assert (again.submitted, again.skipped, again.fatal) == (0, 3, None)


@pytest.mark.parametrize("command", ["submit", "reconcile"])
def test_a_damaged_journal_line_stops_the_run_before_any_request(
    tmp_path: Path, live_emulator: LiveEmulator, command: str
) -> None:
    """The review's case: a killed run created a video's job, and its intent's line was damaged
    in the middle of the journal. Skipping the line forgot the intent and created the video a
    second time; now the run stops (exit 2, file:line) and sends nothing."""
    _keys, manifest, spec = _videos_and_first_spec(tmp_path, 3)
    emulator = live_emulator.emulator
    with emulator_client(live_emulator.url) as create:
        create(spec.body)
    results = tmp_path / "r.csv"
    journal = results.with_name(results.name + ".journal")
    header = (",".join(COLUMNS) + "\r\n").encode()
    results.write_bytes(header)
    tasks = f"{live_emulator.url}/v2/{EMULATOR_PROJECT_ID}/services/video-analyze/tasks"
    intact = orjson.dumps({"source": "obs://in-bucket/x.mp4", "name": "x", "service_url": tasks})
    damaged = orjson.dumps({"source": spec.source, "name": spec.name})[:-9]
    journal.write_bytes(b"\n".join([intact, damaged, intact, b""]))
    calls = sum(emulator.calls.values())
    if command == "submit":
        done = run_cli(*submit_args(manifest, live_emulator.url, results))
    else:
        done = run_cli("reconcile", str(results))
    assert done.returncode == 2, done.stderr
    assert f"{journal}:2: not a JSON object" in done.stderr
    assert "nothing was sent" in done.stderr
    assert "Traceback" not in done.stderr
    assert sum(emulator.calls.values()) == calls
    assert len(emulator.tasks) == 1


# -- one run hands over to the next -------------------------------------------------------------


def _run_of(tmp_path: Path, url: str, count: int, **settings: Any) -> tuple[RunConfig, list[str]]:
    """A run over ``count`` videos (a manifest and ``r.csv`` in ``tmp_path``), and their keys."""
    keys = video_keys(count)
    return config_for(write_manifest(tmp_path, keys), url, tmp_path / "r.csv", **settings), keys


async def _killed_after_create(config: RunConfig, key: str, at: str = "") -> str:
    """What a run SIGKILLed right after one create leaves: the job on the service, its intent
    in the journal (as the journal writes it; ``at``: journalled then, else now), no row.
    Returns the job's id."""
    from batchsubmit.client import VasClient, open_session
    from batchsubmit.results import utc_now

    assert config.manifest is not None
    spec = SpecBuilder(config.manifest.service, config.manifest.job).build(ObjectRef(BUCKET, key))
    intent = {
        "source": spec.source,
        "name": spec.name,
        "service_url": config.endpoint.tasks_url,
        "at": at or utc_now(),
    }
    journal = config.results.with_name(config.results.name + ".journal")
    journal.write_bytes(orjson.dumps(intent) + b"\n")
    async with open_session(2) as session:
        answer = await VasClient(session, config.endpoint, config.credentials).create(spec.body)
    assert answer.job_id, answer
    return answer.job_id


async def _after_a_night(
    tmp_path: Path, url: str, emulator: Emulator, keys: list[str]
) -> tuple[RunConfig, set[str]]:
    """Night 1: every video of ``keys`` submitted. Its config, and the ids of its jobs."""
    night = config_for(write_manifest(tmp_path, keys), url, tmp_path / "r.csv")
    await run_submit(night)
    return night, set(emulator.tasks)


def _by_service(emulator: Emulator) -> dict[tuple[str, str], list[str]]:
    """(service, video) -> the ids of its jobs on the emulator, oldest first."""
    found: dict[tuple[str, str], list[str]] = {}
    for task_id, task in emulator.tasks.items():
        key = (task["service_name"], task["input"]["data"][0]["path"])
        found.setdefault(key, []).append(task_id)
    return found


def _recorded(results: Path) -> set[str]:
    with results.open(newline="", encoding="utf-8") as handle:
        return {row["job_id"] for row in csv.DictReader(handle) if row["job_id"]}


@pytest.mark.anyio
async def test_another_services_run_leaves_a_killed_runs_intents_alone(tmp_path: Path) -> None:
    """Two services in one results file: service A's run is killed after a create, then B's
    run comes. B looked A's intent up in B, found nothing, recorded it "not created" and
    dropped it from the journal; A's next run created the video a second time and its first
    job never got a row. B now leaves A's intents as they are, and says so."""
    from dataclasses import replace

    emulator = Emulator()
    async with emulator.serve() as url:
        first, keys = _run_of(tmp_path, url, 3)
        results = first.results
        other = replace(first, endpoint=replace(first.endpoint, service_name="face-detect"))
        orphan = await _killed_after_create(first, keys[0])
        journal = results.with_name("r.csv.journal")
        left = journal.read_bytes()
        stats, log = await run_submit(other)
        assert (stats.submitted, stats.not_created, stats.lookups) == (3, 0, 0), log
        assert "1 open intents of another service" in log
        assert journal.read_bytes() == left  # as it was, time and service included
        stats, log = await run_submit(first)
    assert (stats.submitted, stats.reconciled) == (3, 1), log
    jobs = _by_service(emulator)
    assert all(len(ids) == 1 for ids in jobs.values()), jobs
    assert orphan in _recorded(results)
    assert not journal.exists()


@pytest.mark.anyio
async def test_a_killed_resubmits_jobs_get_their_rows(tmp_path: Path) -> None:
    """Night 1 submits every video; night 2 (--resubmit) is killed after a create. Its intent
    was dropped because the video had a submitted row (night 1's), so the job it made never
    got a row: never followed, never pruned, a quota slot for good. A row from before the
    intent does not answer it now; the lookup records the new job, not night 1's."""
    from dataclasses import replace

    keys = video_keys(3)
    emulator = Emulator()
    async with emulator.serve() as url:
        night, old = await _after_a_night(tmp_path, url, emulator, keys)
        new = await _killed_after_create(replace(night, resubmit=True), keys[0])
        stats, log = await run_submit(night)
    results = night.results
    assert (stats.reconciled, stats.submitted, stats.skipped) == (1, 1, 2), log
    assert not stats.duplicates, log  # night 1's job is recorded already: not a duplicate
    assert _recorded(results) == old | {new}


@pytest.mark.anyio
async def test_a_resubmit_whose_answers_are_lost_records_its_own_jobs(tmp_path: Path) -> None:
    """--resubmit with lost answers: the lookup by name found last night's job too, recorded
    it (the oldest) and reported the job just made as a duplicate to delete. A job a row
    names already is never taken for a create made since."""
    from dataclasses import replace

    emulator = Emulator()
    async with emulator.serve() as url:
        night, old = await _after_a_night(tmp_path, url, emulator, video_keys(20))
        emulator.faults = Faults(p_lost=0.5, seed=3)
        stats, log = await run_submit(replace(night, resubmit=True))
    results = night.results
    assert stats.submitted == 20, log
    assert stats.reconciled >= 3, log  # lost answers, each found by lookup (about 10)
    assert not stats.duplicates, log
    latest: dict[str, str] = {}
    with results.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["status"] == "submitted":
                latest[row["source"]] = row["job_id"]
    assert not set(latest.values()) & old  # tonight's rows name tonight's jobs
    assert len(emulator.tasks) == 40


@pytest.mark.anyio
async def test_a_killed_runs_last_creates_get_the_settle_wait_before_their_lookup(
    tmp_path: Path,
) -> None:
    """A service that lists new jobs late (the emulator's list_lag). A lost answer waits
    --settle before its lookup; the intents of a run killed a moment ago were looked up at
    once, found absent, and their videos created a second time. They wait out the settle
    time from when they were journalled now."""
    emulator = Emulator(Faults(list_lag=1.0))
    async with emulator.serve() as url:
        config, keys = _run_of(tmp_path, url, 3, settle=1.5, lookup_spacing=0.1)
        results = config.results
        orphan = await _killed_after_create(config, keys[0])
        stats, log = await run_submit(config)  # restarted at once (cron, a supervisor)
    assert (stats.reconciled, stats.not_created, stats.submitted) == (1, 0, 3), log
    assert "before looking up the last creates of a run that was killed" in log  # not silent
    jobs = _by_service(emulator)
    assert all(len(ids) == 1 for ids in jobs.values()), jobs
    assert orphan in _recorded(results)


@pytest.mark.anyio
async def test_an_intent_from_a_clock_ahead_waits_no_more_than_a_settle(tmp_path: Path) -> None:
    """An intent journalled an hour "in the future" (the results file moved from a machine
    whose clock was ahead, a clock stepped back after a kill): its lookup waited for that
    time, and a nightly run sat silent until its deadline. It waits a settle at most."""
    import anyio

    emulator = Emulator()
    async with emulator.serve() as url:
        config, keys = _run_of(tmp_path, url, 2, settle=0.2)
        results = config.results
        ahead = "2999-01-01T00:00:00.000Z"
        orphan = await _killed_after_create(config, keys[0], at=ahead)
        with anyio.fail_after(10):
            stats, log = await run_submit(config)
    assert (stats.reconciled, stats.submitted) == (1, 2), log
    assert orphan in _recorded(results)


def _killed_before_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs from now on end as a SIGKILL after their rows: rows written, the journal never
    compacted (its intents stay, as the last checkpoint left them)."""
    from batchsubmit.journal import Journal

    monkeypatch.setattr(Journal, "close", lambda self: self._file.close())


@pytest.mark.anyio
@pytest.mark.parametrize("step", ["between intent and row", "between a killed run and the next"])
async def test_a_clock_stepped_back_never_records_an_existing_job_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """The wall clock stepped back an hour (NTP, a VM restored) after an intent was journalled,
    and the run was killed after the job's row. The row's time came before its intent's, so
    the next run took the intent for unanswered, found the job by name but as one a row names
    already (last night's, it supposed), and wrote ``failed`` NOT_CREATED for a job that
    exists. A row written for an open intent is never timed before it now."""
    import time as real_time
    from types import SimpleNamespace

    import batchsubmit.journal

    emulator = Emulator()
    async with emulator.serve() as url:
        config, keys = _run_of(tmp_path, url, 2, settle=0.2)
        results = config.results

        def ahead() -> float:
            return real_time.time() + 3600

        if step == "between intent and row":
            # the journal's clock is the one before the step, the rows' the one after
            monkeypatch.setattr(batchsubmit.journal, "time", SimpleNamespace(time=ahead))
            _killed_before_checkpoint(monkeypatch)
            stats, log = await run_submit(config)
            assert stats.submitted == 2, log
        else:
            # a run killed after a create, journalled an hour ahead; the next run (the clock
            # now back) finds the job, writes its row, and is killed before its checkpoint
            from batchsubmit.results import utc_at

            await _killed_after_create(config, keys[0], at=utc_at(ahead()))
            _killed_before_checkpoint(monkeypatch)
            stats, log = await run_submit(config)
            assert (stats.reconciled, stats.submitted) == (1, 2), log
        monkeypatch.undo()
        assert results.with_name("r.csv.journal").exists()  # the kill left its intents
        stats, log = await run_submit(config)
    assert stats.not_created == 0, log
    with results.open(newline="", encoding="utf-8") as handle:
        codes = [row["error_code"] for row in csv.DictReader(handle)]
    assert "BATCHSUBMIT.NOT_CREATED" not in codes, codes
    assert len(emulator.tasks) == 2
    assert _recorded(results) == set(emulator.tasks)


@pytest.mark.anyio
async def test_a_resubmits_unknown_rows_are_looked_up_the_next_night(tmp_path: Path) -> None:
    """--resubmit whose lost answers cannot be looked up (the service 503s meanwhile) writes
    unknown rows. The next night's ledger dropped every unknown row whose video had an
    earlier submitted row (last night's), so those jobs never got a row. A row from before
    does not settle an unknown row now: the next night looks them up and records them."""
    from dataclasses import replace

    import anyio

    emulator = Emulator()
    async with emulator.serve() as url:
        night, _old = await _after_a_night(tmp_path, url, emulator, video_keys(3))
        night = replace(night, pool=replace(night.pool, settle=1.0, lookup_spacing=0.1))
        emulator.faults = Faults(p_lost=1.0)

        async def outage() -> None:
            await anyio.sleep(0.5)  # the creates are made and lost; then the service 503s
            emulator.faults = Faults(p503=1.0)

        async with anyio.create_task_group() as group:
            group.start_soon(outage)
            stats, log = await run_submit(replace(night, resubmit=True))
        assert stats.unknown == 3, log
        emulator.faults = Faults()
        stats, log = await run_submit(night)
    assert (stats.reconciled, stats.duplicates) == (3, []), log
    assert _recorded(night.results) == set(emulator.tasks)  # tonight's three included


@pytest.mark.anyio
async def test_a_killed_runs_intents_get_as_many_lookups_as_a_lost_answer(tmp_path: Path) -> None:
    """A service that lists new jobs later than --settle, within --settle x --lookups: a lost
    answer's lookups find its job; a killed run's intent got one lookup (in `reconcile`, the
    only one), was recorded "not created", and the next submit created the video again. It
    gets the same lookups now."""
    import io

    from batchsubmit.progress import LineReporter, Log
    from batchsubmit.runner import prepare, reconcile

    emulator = Emulator(Faults(list_lag=0.8))
    async with emulator.serve() as url:
        config, keys = _run_of(tmp_path, url, 2, settle=0.3, lookup_spacing=0.3)
        results = config.results
        orphan = await _killed_after_create(config, keys[0])
        stream = io.StringIO()
        prepared = prepare(config, lambda _m: None)
        try:
            stats = await reconcile(config, prepared, LineReporter(Log(stream), None), print)
        finally:
            prepared.lock.release()
        assert (stats.reconciled, stats.not_created) == (1, 0), stream.getvalue()
        stats, log = await run_submit(config)
    assert stats.submitted == 1, log  # the other video; the orphan was recorded
    assert all(len(ids) == 1 for ids in _by_service(emulator).values())
    assert orphan in _recorded(results)


@pytest.mark.anyio
async def test_a_stop_while_a_killed_runs_creates_wait_counts_every_video_once(
    tmp_path: Path,
) -> None:
    """The deadline (or a signal) while the lookups of a killed run's creates wait out the
    settle time: the create pass never ran, so the planned videos were in no count (1
    deferred of 5). Every video is counted once now, as deferred, and the one whose lookup
    never ran is not created blind: its intent stays for the next run."""
    from dataclasses import replace

    emulator = Emulator()
    async with emulator.serve() as url:
        config, keys = _run_of(tmp_path, url, 5, settle=5.0)
        results = config.results
        await _killed_after_create(config, keys[0])
        config = replace(config, pool=replace(config.pool, deadline=0.5))
        stats, log = await run_submit(config)
    assert (stats.submitted, stats.deferred) == (0, 5), log
    assert len(emulator.tasks) == 1
    journal = results.with_name("r.csv.journal").read_text(encoding="utf-8")
    assert len(journal.splitlines()) == 1  # the killed run's intent, for the next run
