"""Answers from the service that cannot be believed (status's lists and shows, prune's
deletes, make-room's count): none may make a job deletable that is not, delete more than
asked, nor put a secret in the record."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from batchsubmit.answers import Answer, Kind
from batchsubmit.client import VasClient
from batchsubmit.pool import Pool
from batchsubmit.record import RecordWriter

from .test_follow import _scripted_follower, _submitted_ledger

SERVICE_URL = "http://127.0.0.1:9/v2/p/services/s/tasks"
JOB = "0123456789abcdef0123456789abcdef"
TASK = {"id": JOB, "state": "SUCCEEDED", "created_at": "2026-12-01T02:00:00Z",
        "updated_at": "2026-12-01T02:00:05Z"}  # fmt: skip


async def _one_pass(tmp_path: Path, list_task: dict[str, Any], shown: dict[str, Any] | None,
                    secrets: tuple[str, ...] = (), collect: Path | None = None,
                    ) -> tuple[Any, list[str]]:  # fmt: skip
    """One sweep of a one-job ledger whose list answers ``list_task`` and whose show answers
    ``shown`` (None: show is not expected), saving results to ``collect`` if given."""
    results = tmp_path / "r.jsonl"
    _submitted_ledger(results, [JOB], SERVICE_URL)

    async def list_tasks(query: dict[str, Any]) -> Answer:
        page = [list_task] if int(query["offset"]) == 0 else []
        return Answer(kind=Kind.OK, status=200, data={"count": 1, "tasks": page})

    async def show(job_id: str) -> Answer:
        assert shown is not None, "no show expected"
        return Answer(kind=Kind.OK, status=200, data=shown)

    warnings: list[str] = []
    follower, pool = _scripted_follower(results, SERVICE_URL, list_tasks, show, warnings.append)
    follower.clients[0].secrets = secrets
    if collect is not None:
        follower.config = replace(follower.config, collect=collect)
        follower.collecting = True
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        await follower._pass(pool)
    return follower.jobs[JOB].now, warnings


@pytest.mark.anyio
async def test_a_list_answer_without_output_never_makes_a_hosting_job_final(
    tmp_path: Path,
) -> None:
    """repro/r1: first seen in a list that leaves `output` out, a SUCCEEDED job was taken for
    one without a hosting output: final at once, and pruned with its result uncollected."""
    shown = {**TASK, "output": {"hosting": {}}, "hosting_result": {"status": "NOT_GENERATED"}}
    record, _ = await _one_pass(tmp_path, dict(TASK), shown)
    assert record.hosting
    assert not record.final  # the show said the result is not there yet


@pytest.mark.anyio
@pytest.mark.parametrize("state", [" SUCCEEDED\n", "SUCCEEDED\u200b", "\u2066FAILED"])
async def test_a_state_that_only_looks_like_a_final_one_is_not_final(
    tmp_path: Path, state: str
) -> None:
    """repro/r8: a state outside VAS's list that differs from SUCCEEDED only by characters
    made blanks for display was recorded SUCCEEDED, final, and pruned while RUNNING."""
    record, _ = await _one_pass(tmp_path, {**TASK, "state": state, "output": {"obs": {}}}, None)
    assert not record.final
    assert record.state not in ("SUCCEEDED", "FAILED")
    assert record.state.isprintable()


@pytest.mark.anyio
async def test_a_secret_quoted_in_any_text_of_a_task_is_masked(tmp_path: Path) -> None:
    """repro/r4: only a job's error was masked; a state, a time or a hosting status quoting the
    caller's security token reached the record, the report, the log and the summary."""
    token = "STS-TOKEN-0123456789-very-secret"
    listed = {
        **TASK,
        "state": f"RUNNING {token}",
        "created_at": f"2026 {token}",
        "updated_at": f"x{token}",
        "output": {"hosting": {"result_json_overdue_at": token}},
    }
    record, _ = await _one_pass(tmp_path, listed, None, secrets=(token,))
    assert token not in repr(record)
    assert token not in (tmp_path / "record.jsonl").read_text()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "saved"), [(None, False), ("", False), ("  \n", False), ("absent", False),
                        ('{"results": []}', True)],
)  # fmt: skip
async def test_an_available_result_without_data_is_not_recorded_collected(
    tmp_path: Path, data: str | None, saved: bool
) -> None:
    """A show saying AVAILABLE with data null, empty or left out saved "null" (or nothing)
    and recorded COLLECTED: prune then deleted the job with its result never fetched."""
    result: dict[str, Any] = {"status": "AVAILABLE"}
    if data != "absent":
        result["data"] = data
    shown = {**TASK, "output": {"hosting": {}}, "hosting_result": result}
    (tmp_path / "c").mkdir()
    record, _ = await _one_pass(tmp_path, dict(shown), shown, collect=tmp_path / "c")
    assert record.hosting_status == ("COLLECTED" if saved else "AVAILABLE")
    assert len(list((tmp_path / "c").iterdir())) == saved


@pytest.mark.anyio
async def test_a_show_answer_about_another_job_is_not_applied(tmp_path: Path) -> None:
    """repro/r3 (b): a show's answer naming another job id was applied to the job asked
    about; here it made a job whose result waits final (EXCEED_IN_SIZE), and prune deleted it."""
    listed = {**TASK, "output": {"hosting": {}}}
    other = {**listed, "id": "f" * 32, "hosting_result": {"status": "EXCEED_IN_SIZE"}}
    record, warnings = await _one_pass(tmp_path, listed, other)
    assert not record.final
    assert record.hosting_status == ""
    assert any("answered about job" in w for w in warnings)


@pytest.mark.anyio
async def test_a_page_listing_one_job_twice_in_two_states_is_not_applied(
    tmp_path: Path,
) -> None:
    """repro/r3 (a): a page with a RUNNING job and its SUCCEEDED twin recorded the job final,
    and prune deleted it while it ran."""
    results = tmp_path / "r.jsonl"
    _submitted_ledger(results, [JOB], SERVICE_URL)
    running = {**TASK, "state": "RUNNING", "output": {"obs": {}}}

    async def list_tasks(query: dict[str, Any]) -> Answer:
        page = [running, {**running, "state": "SUCCEEDED"}] if int(query["offset"]) == 0 else []
        return Answer(kind=Kind.OK, status=200, data={"count": 2, "tasks": page})

    async def show(job_id: str) -> Answer:
        return Answer(kind=Kind.OK, status=200, data=running)

    warnings: list[str] = []
    follower, pool = _scripted_follower(results, SERVICE_URL, list_tasks, show, warnings.append)
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        await follower._pass(pool)
    assert not follower.jobs[JOB].now.final
    assert any("different states" in w for w in warnings)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("created_at", "final_at"),
    [
        ("2026-12-01T02:00:03Z", "2026-12-01T02:00:03.000Z"),  # the service's creation
        (None, "2026-12-01T02:00:00.000Z"),  # none: the ledger's submitted_at
    ],
)
async def test_a_job_never_ends_before_it_existed(
    tmp_path: Path, created_at: str | None, final_at: str
) -> None:
    """repro/r11: an updated_at of 2000-01-01 became the recorded final time, and plain
    `prune` (24 h) deleted the job seconds after it ended."""
    from batchsubmit.prune import PruneRules, select
    from batchsubmit.results import epoch

    listed = {**TASK, "state": "FAILED", "updated_at": "2000-01-01T00:00:00Z", "output": {}}
    listed.pop("created_at")
    if created_at is not None:
        listed["created_at"] = created_at
    record, _ = await _one_pass(tmp_path, listed, None)
    assert record.final
    assert record.final_at == final_at
    an_hour_later = (epoch(final_at) or 0) + 3600
    chosen = select({JOB: record}, {JOB: SERVICE_URL}, PruneRules(), an_hour_later)
    assert chosen.chosen == []
    assert chosen.held["final too recently"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("listed", "count"),
    [(2, 10**9), (102, 100_000)],  # the first page short, or the second (no split)
)
async def test_a_count_the_pages_contradict_ends_the_window_and_is_named_once(
    tmp_path: Path, listed: int, count: int
) -> None:
    """repro/r5: every page answering count=10**9 for 2 jobs split the window again and again
    and paged to offset 100,000 in each piece: ~10,000 list calls for 2 jobs. The job no page
    lists is neither taken for absent (shown, then LOST) nor final: asked about next pass."""
    results = tmp_path / "r.jsonl"
    ids = [f"{n:032x}" for n in range(listed + 1)]
    _submitted_ledger(results, ids, SERVICE_URL)
    tasks = [{**TASK, "id": i, "state": "RUNNING", "output": {"obs": {}}} for i in ids[:-1]]

    async def list_tasks(query: dict[str, Any]) -> Answer:
        offset = int(query["offset"])
        page = tasks[offset : offset + int(query["limit"])]
        return Answer(kind=Kind.OK, status=200, data={"count": count, "tasks": page})

    async def show(job_id: str) -> Answer:
        raise AssertionError("a job missing from a window the count contradicts is not shown")

    warnings: list[str] = []
    follower, pool = _scripted_follower(results, SERVICE_URL, list_tasks, show, warnings.append)
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        for _ in range(2):
            await follower._pass(pool)
            follower.stats.passes += 1
    # per pass: the cursor's page, the first page, at most the pool's 8 in flight after it
    assert follower.stats.list_calls <= 2 * (2 + 8)
    assert sum("the count contradicts the pages" in w for w in warnings) == 1
    assert "list count" in follower.stats.first_errors
    states = {job.now.state for job in follower.jobs.values()}
    assert states == {"RUNNING", ""}  # the unlisted job: not seen, not final
    assert not any(job.now.final for job in follower.jobs.values())


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"count": 2, "tasks": None}, "tasks is null"),
        ([TASK, TASK], "it is an array of 2"),
        ({"count": 2}, "it has no tasks"),
        ({"count": 2, "tasks": 7}, "tasks is 7"),
        ({"count": 2, "tasks": "busy STS-SECRET"}, "tasks is a string ('busy <hidden>')"),
    ],
)
async def test_a_200_list_answer_that_is_not_a_page_says_what_is_wrong(
    tmp_path: Path, data: Any, named: str
) -> None:
    """repro/r15: `{"count": 2, "tasks": null}` or a bare array was logged as "a list call
    failed: HTTP 200 (request id ...)", without a word of what was wrong with it."""
    results = tmp_path / "r.jsonl"
    _submitted_ledger(results, [JOB], SERVICE_URL)

    async def list_tasks(query: dict[str, Any]) -> Answer:
        return Answer(kind=Kind.OK, status=200, request_id="rid", data=data)

    async def show(job_id: str) -> Answer:
        raise AssertionError("no show: the job was not listed, nor known absent")

    warnings: list[str] = []
    follower, pool = _scripted_follower(results, SERVICE_URL, list_tasks, show, warnings.append)
    follower.clients[0].secrets = ("STS-SECRET",)
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as follower.writer:
        await follower._pass(pool)
    said = f"the answer is not {{count, tasks}}: {named} (request id rid)"
    assert any(said in w for w in warnings), warnings
    assert not any("STS-SECRET" in w for w in warnings)
    assert not follower.jobs[JOB].now.final


@pytest.mark.parametrize("overdue", ["1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0"])
def test_an_available_result_overdue_before_its_job_was_created_keeps_the_job(
    overdue: str,
) -> None:
    """repro/r2: a show saying AVAILABLE with result_json_overdue_at 0 (or -1) was recorded
    as expired in 1970, and prune deleted the job with its result uncollected."""
    from batchsubmit.prune import PruneRules, select
    from batchsubmit.record import JobRecord

    record = JobRecord(
        job_id=JOB, source="s", name="n", state="SUCCEEDED", final=True, hosting=True,
        hosting_status="AVAILABLE", hosting_overdue_at=overdue,
        created_at="2026-12-01T02:00:00Z", final_at="2026-12-01T02:10:00.000Z",
    )  # fmt: skip
    chosen = select({JOB: record}, {JOB: SERVICE_URL}, PruneRules(older_than=0), 1.9e9)
    assert chosen.chosen == []
    assert chosen.held["hosting result not collected"] == 1
    expired = select(
        {JOB: replace(record, hosting_overdue_at="2026-12-03T02:10:00Z")},
        {JOB: SERVICE_URL}, PruneRules(older_than=0), 1.9e9,
    )  # fmt: skip
    assert len(expired.chosen) == 1  # a real expiry still lets the job go


def test_a_delete_sent_then_stopped_in_its_backoff_keeps_its_intent(tmp_path: Path) -> None:
    """repro/r12: a delete answered 500 (the service may have deleted the job) then stopped in
    the backoff before its retry was taken for "never sent": its intent was dropped and no
    PRUNED line written, so a job gone from the service was forgotten."""
    import anyio

    from batchsubmit.pool import Stopped
    from batchsubmit.prune import (
        Candidate,
        PruneStats,
        _delete_one,
        _IntentJournal,
        prune_journal_path,
    )  # fmt: skip
    from batchsubmit.record import JobRecord

    record = JobRecord(job_id=JOB, source="s", name="n", state="SUCCEEDED", final=True)
    candidate = Candidate(record=record, final_at=0.0, service_url=SERVICE_URL)

    class Gate:
        async def call(self, call: Any, *args: Any) -> Answer:
            await call(*args)  # sent, answered 500, then the run stopped in the backoff
            raise Stopped

    class Client:
        async def delete(self, job_id: str) -> Answer:
            return Answer(kind=Kind.UNAVAILABLE, status=500, error_code="IVA.0006")

    results = tmp_path / "r.csv"
    journal = _IntentJournal(prune_journal_path(results), {}, durable=False)
    stats = PruneStats()
    with RecordWriter(tmp_path / "record.jsonl", durable=False) as writer:
        anyio.run(
            _delete_one,
            cast(Pool, Gate()),
            cast(VasClient, Client()),
            candidate,
            writer,
            journal,
            stats,
        )
    journal.close()
    assert JOB in prune_journal_path(results).read_text()  # the next prune redoes it
    assert stats.deferred == 0


@pytest.mark.parametrize(
    ("data", "believed"),
    [
        ({"count": 3, "tasks": [{"id": "a"}]}, 3),
        ({"count": 0, "tasks": []}, 0),
        ({"count": 0}, 0),
        ({"count": 10**12, "tasks": [{"id": "a"}]}, None),  # beyond what the list can page
        ({"count": True, "tasks": [{"id": "a"}]}, None),  # a JSON boolean is no count
        ({"count": 3, "tasks": []}, None),  # a count of jobs on a page that shows none
        ({"count": 3}, None),
        ({"count": -1, "tasks": []}, None),
    ],
)
def test_make_room_believes_only_a_saved_job_count_that_could_be_true(
    data: dict[str, Any], believed: int | None
) -> None:
    """make-room deletes finished, recorded jobs by this count: 10**12 (or a count on a page
    listing nothing) deleted every such job of the ledger on the answer's word."""
    from batchsubmit.errors import FatalApiError
    from batchsubmit.prune import _saved_jobs

    class Gate:
        async def call(self, call: Any, *args: Any) -> Answer:
            return Answer(kind=Kind.OK, status=200, data=data)

    class Client:
        async def list_tasks(self, query: dict[str, Any]) -> Answer:
            raise AssertionError("the gate answers")

    saved = _saved_jobs(cast(Pool, Gate()), cast(VasClient, Client()))
    if believed is None:
        with pytest.raises(FatalApiError, match="cannot read the saved-job count"):
            anyio.run(lambda: saved)
    else:
        assert anyio.run(lambda: saved) == believed


TASKS = b"http://127.0.0.1:8080/v2/0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e/services/video-analyze/tasks"


@pytest.mark.parametrize(
    "intent",
    [
        b'{"job_id":"a","state":"PRUNING","service_url":"garbage"}',
        b'{"job_id":"a","state":"PRUNING","service_url":""}',
        b'{"job_id":"","state":"PRUNING","service_url":"' + TASKS + b'"}',
    ],
)
def test_a_prune_intent_without_a_service_url_stops_naming_its_line(
    tmp_path: Path, intent: bytes
) -> None:
    """An intent whose service_url is no service's tasks URL (or without a job id) is damage
    of the prune journal, said with its line when it is read. It was taken, and the redo of
    its delete stopped later with "cannot read the service from 'garbage' in the results
    file": another file, and no line."""
    from batchsubmit.errors import UsageError
    from batchsubmit.prune import read_prune_intents

    path = tmp_path / "r.csv.prune"
    path.write_bytes(intent + b"\n")
    with pytest.raises(UsageError, match=r"r\.csv\.prune:1: damaged prune journal line"):
        read_prune_intents(path)


def test_a_damaged_prune_journal_line_before_the_last_stops_naming_it(tmp_path: Path) -> None:
    """Only a last line without its newline can be a crash's (never synced, so never sent);
    a damaged line before it was skipped without a word, and the delete it may record was
    forgotten (its job read LOST instead of PRUNED)."""
    from batchsubmit.errors import UsageError
    from batchsubmit.prune import read_prune_intents

    good = b'{"job_id":"%s","state":"PRUNING","service_url":"' + TASKS + b'","at":"t"}\n'
    path = tmp_path / "r.csv.prune"
    path.write_bytes(good % b"a" + good % b"b" + b'{"job_id":"c","sta')  # torn tail
    assert read_prune_intents(path) == {"a": TASKS.decode(), "b": TASKS.decode()}
    path.write_bytes(good % b"a" + b'{"job_id":"x","st\n' + good % b"b")
    with pytest.raises(UsageError, match=r"r\.csv\.prune:2: damaged prune journal line"):
        read_prune_intents(path)
    path.write_bytes(good % b"a" + b'{"job_id":1,"service_url":"u"}\n')
    with pytest.raises(UsageError, match=r":2: damaged"):
        read_prune_intents(path)


def test_a_raised_quota_raises_the_saved_job_count_believed() -> None:
    """--quota up to 100,000,000 (a quota raised by support): an account holding 150,000
    jobs under a quota of 200,000 is believed, not refused every night."""
    from batchsubmit.errors import FatalApiError
    from batchsubmit.prune import _saved_jobs

    class Gate:
        async def call(self, call: Any, *args: Any) -> Answer:
            return Answer(kind=Kind.OK, status=200, data={"count": 150_000, "tasks": [{}]})

    class Client:
        async def list_tasks(self, query: dict[str, Any]) -> Answer:
            raise AssertionError("the gate answers")

    gate, client = cast(Pool, Gate()), cast(VasClient, Client())
    assert anyio.run(_saved_jobs, gate, client, 200_000) == 150_000
    with pytest.raises(FatalApiError):
        anyio.run(_saved_jobs, gate, client, 5000)
