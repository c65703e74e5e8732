"""The pool against a fake service (a plain object, no HTTP): the rules, one at a time."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest

from batchsubmit import pool as pool_module
from batchsubmit.answers import Answer, Kind, classify
from batchsubmit.errors import ManifestError
from batchsubmit.jobs import JobSpec
from batchsubmit.pool import NOT_CREATED, Lookup, Pool, PoolSettings
from batchsubmit.results import Outcome
from batchsubmit.retry import RetryPolicy
from batchsubmit.throttle import ControllerSettings

from .helpers import FAST_RETRY

pytestmark = pytest.mark.anyio

SERVICE = "http://fake/v2/p/services/s/tasks"
BAD_ID = "../../../v3/evil"


def spec(i: int) -> JobSpec:
    body = {
        "name": f"job-{i}",
        "input": {"type": "obs", "data": [{"bucket": "bkt", "path": f"v{i}.mp4"}]},
    }
    return JobSpec(source=f"obs://bkt/v{i}.mp4", name=f"job-{i}", body=orjson.dumps(body))


@dataclass
class FakeService:
    """Creates jobs in memory; ``script`` decides each create's fate by call number."""

    script: Callable[[int, dict[str, Any]], str] = lambda n, body: "ok"
    jobs: list[dict[str, Any]] = field(default_factory=list)
    creates: int = 0
    lists: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    list_fails: bool = False
    latency: float = 0.0
    slow_from: int = 1  # calls from this number on take ``latency`` seconds
    list_lag: int = 0  # a new job shows in lists only after this many list calls
    page: Any = None  # when set, every list answers 200 with this body instead
    ids: itertools.count[int] = field(default_factory=itertools.count)
    secrets: tuple[str, ...] = ()  # masked in what a lookup page makes the pool say

    async def create(self, body: bytes) -> Answer:
        self.creates += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.creates >= self.slow_from:
                await anyio.sleep(self.latency)
            data = orjson.loads(body)
            fate = self.script(self.creates, data)
            if fate in ("ok", "lost", "bad id"):
                job_id = f"id{next(self.ids)}" if fate != "bad id" else BAD_ID
                self.jobs.append(
                    {
                        "id": job_id,
                        "name": data["name"],
                        "input": data["input"],
                        "created_at": "2026-11-28T00:00:00Z",
                        "listed_from": self.lists + self.list_lag,
                    }
                )
                if fate == "ok":
                    return Answer(kind=Kind.CREATED, status=201, job_id=job_id)
                if fate == "bad id":
                    return classify(201, {}, orjson.dumps([{"id": job_id}]), create=True)
                return Answer(kind=Kind.AMBIGUOUS, error_code="CONNECTION", error_msg="reset")
            return {
                "503": Answer(kind=Kind.UNAVAILABLE, status=503, error_code="IVA.0010"),
                "429": Answer(kind=Kind.THROTTLED, status=429, error_code="APIG.0308"),
                "400": Answer(kind=Kind.FAILED, status=400, error_code="IVA.0004"),
                "401": Answer(
                    kind=Kind.FATAL, status=401, error_code="APIGW.0301", advice="check the SK"
                ),
                "dropped": Answer(kind=Kind.AMBIGUOUS, error_code="CONNECTION"),
                "refused": Answer(kind=Kind.NOT_SENT, error_code="CONNECT", error_msg="refused"),
                "timing": Answer(
                    kind=Kind.FAILED,
                    status=400,
                    error_code="IVA.0004",
                    error_msg="Invalid parameter: timing is not allowed with an obs input",
                ),
                "over": Answer(kind=Kind.FAILED, status=400, error_code="IVA.0011"),
                "quota": Answer(
                    kind=Kind.FATAL,
                    status=400,
                    error_code="IVA.0012",
                    error_msg="The number of saved tasks exceeds max quota",
                ),
                "503ra": Answer(
                    kind=Kind.UNAVAILABLE, status=503, error_code="IVA.0010", retry_after=0.4
                ),
                "429ra": Answer(
                    kind=Kind.THROTTLED, status=429, error_code="APIG.0308", retry_after=0.4
                ),
            }[fate]
        finally:
            self.in_flight -= 1

    async def list_page(self, name_like: str, offset: int, limit: int = 100) -> Answer:
        self.lists += 1
        if self.list_fails:
            return Answer(kind=Kind.UNAVAILABLE, status=503, error_code="IVA.0010")
        if self.page is not None:
            return Answer(kind=Kind.OK, status=200, data=self.page)
        found = [
            job
            for job in self.jobs
            if name_like in job["name"] and self.lists > job.get("listed_from", 0)
        ]
        return Answer(
            kind=Kind.OK,
            status=200,
            data={"count": len(found), "tasks": found[offset : offset + limit]},
        )


class Rows:
    def __init__(self) -> None:
        self.rows: list[Outcome] = []
        self.flushed = 0  # rows that reached the "file"

    def write(self, outcome: Outcome) -> None:
        self.rows.append(outcome)

    def flush(self) -> None:
        self.flushed = len(self.rows)

    def outcome(self, outcome: Outcome) -> None:
        pass

    def log(self, level: str, message: str) -> None:
        pass

    def by_source(self) -> dict[str, Outcome]:
        return {row.source: row for row in self.rows}


def make_pool(
    service: FakeService, rows: Rows, journal: pool_module.Journal | None = None, **settings: Any
) -> Pool:
    defaults: dict[str, Any] = {
        "concurrency": 4,
        "rate": 0.0,
        "retry": FAST_RETRY,
        "settle": 0.0,
        "lookup_spacing": 0.0,
        "backlog": 16,
    }
    defaults.update(settings)
    return Pool(
        service,
        rows,
        rows,
        PoolSettings(**defaults),
        service_url=SERVICE,
        credentials=None,
        journal=journal,
    )


async def test_lost_answer_without_a_job_is_created_again() -> None:
    """An answer lost before the job was made: the lookup finds nothing, so it is created."""
    service = FakeService(script=lambda n, body: "dropped" if n == 1 else "ok")
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert (service.creates, len(service.jobs)) == (2, 1)
    assert rows.rows[0].status == "submitted"
    assert rows.rows[0].job_id == service.jobs[0]["id"]
    assert rows.rows[0].attempts == 2
    assert stats.lookups == 3  # looked lookup_tries times before creating it again


async def test_lost_answer_with_a_job_is_found_not_resent() -> None:
    """An answer lost after the job was made: it is found by name and never sent again."""
    service = FakeService(script=lambda n, body: "lost" if n == 1 else "ok")
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert (service.creates, len(service.jobs)) == (1, 1)
    assert rows.rows[0].reconciled
    assert rows.rows[0].job_id == service.jobs[0]["id"]
    assert stats.reconciled == 1


async def test_same_name_for_another_video_is_not_a_match() -> None:
    """A job with the same name but another input is not taken for ours."""
    service = FakeService(script=lambda n, body: "dropped" if n == 1 else "ok")
    service.jobs.append(
        {
            "id": "other",
            "name": "job-1",
            "created_at": "x",
            "input": {"type": "obs", "data": [{"bucket": "bkt", "path": "else.mp4"}]},
        }
    )
    rows = Rows()
    await make_pool(service, rows).run(iter([spec(1)]))
    assert rows.rows[0].job_id not in ("", "other")


async def test_failed_lookup_records_unknown_and_never_resends() -> None:
    """When the lookup itself keeps failing, the row says unknown and no second create is sent."""
    service = FakeService(script=lambda n, body: "dropped", list_fails=True)
    rows = Rows()
    stats = await make_pool(
        service, rows, retry=RetryPolicy(attempts=2, base=0.001, cap=0.001)
    ).run(iter([spec(1)]))
    assert service.creates == 1
    assert rows.rows[0].status == "unknown"
    assert stats.unknown == 1


def _task(name: str = "job-1", **fields: Any) -> dict[str, Any]:
    """A listed task reading spec(1)'s video, with ``fields`` put in its place."""
    task: dict[str, Any] = {
        "id": "a" * 32,
        "name": name,
        "created_at": "2026-11-28T00:00:00Z",
        "input": {"type": "obs", "data": [{"bucket": "bkt", "path": "v1.mp4"}]},
    }
    task.update(fields)
    return {k: v for k, v in task.items() if v is not None}


MALFORMED_PAGES = [
    [1, 2, 3],
    "tasks",
    {},
    {"tasks": 5},
    {"count": 1},
    {"count": 1, "tasks": None},
    {"count": "1", "tasks": []},
    {"count": True, "tasks": []},
    {"count": -1, "tasks": []},
    {"count": 1, "tasks": [5]},
    {"count": 1, "tasks": [{"id": "a" * 32}]},
    {"count": 1, "tasks": [{"name": 7}]},
    {"count": 1, "tasks": [_task(input="q")]},
    {"count": 1, "tasks": [_task(input={"data": 7})]},
    {"count": 1, "tasks": [_task(input={"data": [7]})]},
    {"count": 1, "tasks": [_task(input={"type": "obs"})]},
    {"count": 1, "tasks": [_task(input=[])]},
    {"count": 1, "tasks": [_task(id=None)]},
    {"count": 1, "tasks": [_task(id=5)]},
    {"count": 1, "tasks": [_task(id=BAD_ID)]},
    {"count": 1, "tasks": [_task(id="")]},
    {"count": 1, "tasks": [_task(created_at=None)]},
    {"count": 2, "tasks": [_task("job-10", input=1), _task(input="q")]},
]


@pytest.mark.parametrize("page", MALFORMED_PAGES)
async def test_a_lookup_answer_not_shaped_as_documented_is_a_failed_lookup(page: Any) -> None:
    """A 200 to the lookup that is not {count, tasks: [jobs]}, or a job in it that could be
    this video's but cannot be read: the lookup failed (tried again, then unknown), never "no
    such job" (the create would be sent again: a possible duplicate), never a traceback."""
    service = FakeService(script=lambda n, body: "dropped", page=page)
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert service.creates == 1
    assert service.lists == FAST_RETRY.attempts  # retried like a call that failed
    assert [row.status for row in rows.rows] == ["unknown"]
    assert "unusable answer to the lookup by name" in rows.rows[0].error_msg
    assert (stats.unknown, stats.lookups) == (1, 0)


async def test_an_unusable_id_quoting_a_secret_is_masked_before_it_is_cut() -> None:
    """The id of this video's job that cannot be one is quoted in the row (37 characters at
    most): a service echoing the caller's token there put its start in the row unmasked."""
    token = "tok-DISTINCTIVE-" + "t" * 40
    page = {"count": 1, "tasks": [_task(id=f"../{token}")]}
    service = FakeService(script=lambda n, body: "dropped", page=page, secrets=(token,))
    rows = Rows()
    await make_pool(service, rows).run(iter([spec(1)]))
    assert "its id '../<hidden>' cannot be one" in rows.rows[0].error_msg
    assert "DISTINCTIVE" not in rows.rows[0].error_msg


@pytest.mark.parametrize("page", MALFORMED_PAGES[:3] + MALFORMED_PAGES[-4:])
async def test_an_earlier_runs_create_is_unknown_when_its_lookup_answer_is_unusable(
    page: Any,
) -> None:
    """The same for an earlier run's uncertain create: unknown, held, never created."""
    service = FakeService(page=page)
    rows = Rows()
    pool = make_pool(service, rows)
    await pool.run(iter([Lookup(spec(1).source, "job-1")]))
    await pool.run(iter([spec(1)]))
    assert service.creates == 0
    assert [row.status for row in rows.rows] == ["unknown"]


async def test_a_lookup_page_of_count_0_without_its_empty_task_list_is_read_as_empty() -> None:
    """{"count": 0} alone says nothing matched as plainly as with "tasks": [] (a service may
    leave an empty list out): the job is absent, and created once its settle is over."""
    service = FakeService(script=lambda n, body: "dropped" if n == 1 else "ok", page={"count": 0})
    rows = Rows()
    await make_pool(service, rows).run(iter([spec(1)]))
    assert service.creates == 2
    assert [row.status for row in rows.rows] == ["submitted"]


async def test_jobs_that_are_not_this_videos_are_passed_over_however_they_look() -> None:
    """A job named otherwise (name_like matches part of a name), or named alike but reading
    another input, cannot be this video's: the page is read, the job found absent."""
    url_input = {"type": "url", "data": [{"url": "http://x/v1.mp4"}]}
    others = [_task("job-10", input=7, id=BAD_ID), _task(input=url_input)]
    service = FakeService(
        script=lambda n, body: "dropped" if n == 1 else "ok",
        page={"count": 2, "tasks": others},
    )
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert service.creates == 2
    assert [row.status for row in rows.rows] == ["submitted"]
    assert stats.lookups == 3


async def test_a_create_answered_with_an_id_that_cannot_be_one_is_never_recorded() -> None:
    """The review's case: a 201 with the id ../../../v3/evil. The job probably exists, so it
    is looked up, not created again; the lookup finds it under that id, which is no more
    usable: the row is unknown, and no id is recorded for status or prune to call."""
    service = FakeService(script=lambda n, body: "bad id")
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert service.creates == 1
    assert [(row.status, row.job_id) for row in rows.rows] == [("unknown", "")]
    assert BAD_ID not in rows.rows[0].job_id
    assert stats.unknown == 1


async def test_throttles_delay_but_do_not_fail_a_job() -> None:
    """Ten 429s in a row use no failure attempts: the job still ends submitted."""
    service = FakeService(script=lambda n, body: "429" if n <= 10 else "ok")
    rows = Rows()
    retry = RetryPolicy(attempts=2, base=0.001, cap=0.001, throttle_base=0.001, throttle_cap=0.001)
    await make_pool(service, rows, retry=retry, controller=ControllerSettings(floor=1000.0)).run(
        iter([spec(1)])
    )
    assert rows.rows[0].status == "submitted"
    assert rows.rows[0].attempts == 11


async def test_503_attempts_are_bounded() -> None:
    """A job that only ever gets 503 fails after the configured attempts, with the last error."""
    service = FakeService(script=lambda n, body: "503")
    rows = Rows()
    await make_pool(service, rows, retry=RetryPolicy(attempts=4, base=0.001, cap=0.001)).run(
        iter([spec(1)])
    )
    assert service.creates == 4
    assert (rows.rows[0].status, rows.rows[0].error_code) == ("failed", "IVA.0010")


async def test_a_fatal_answer_stops_after_the_first_call() -> None:
    """401 on the first call (made alone): the run stops; nothing else is sent."""
    service = FakeService(script=lambda n, body: "401")
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(i) for i in range(50)]))
    assert service.creates == 1
    assert stats.fatal is not None
    assert stats.deferred == 49


async def test_backoff_does_not_hold_an_in_flight_slot() -> None:
    """Jobs waiting out a backoff leave their slot to others: in flight stays at the cap."""
    service = FakeService(script=lambda n, body: "503" if n <= 8 else "ok", latency=0.01)
    rows = Rows()
    slow_retry = RetryPolicy(base=0.5, cap=0.5)
    with anyio.fail_after(10):
        await make_pool(service, rows, concurrency=2, retry=slow_retry).run(
            iter([spec(i) for i in range(30)])
        )
    assert len(rows.rows) == 30
    assert service.most_in_flight == 2
    # The first 8 calls failed and backed off ~0.25 s on average; the others went on meanwhile.
    assert [r.attempts for r in rows.rows[:20]].count(1) >= 15


async def test_concurrency_is_never_exceeded() -> None:
    """No more calls in flight than --concurrency."""
    service = FakeService(latency=0.005)
    rows = Rows()
    await make_pool(service, rows, concurrency=3).run(iter([spec(i) for i in range(40)]))
    assert service.most_in_flight == 3


async def test_stop_now_records_in_flight_creates_as_unknown() -> None:
    """Cancelled mid-call: each create in flight gets an unknown row; none is lost."""
    service = FakeService(latency=5.0, slow_from=2)
    rows = Rows()
    pool = make_pool(service, rows, concurrency=3)

    async def stop_soon() -> None:
        await anyio.sleep(0.2)
        pool.stop_now()

    async with anyio.create_task_group() as group:
        group.start_soon(stop_soon)
        stats = await pool.run(iter([spec(i) for i in range(10)]))
    assert service.creates == 4
    assert [r.status for r in rows.rows] == ["submitted"] + ["unknown"] * 3
    assert stats.deferred == 6


async def test_graceful_stop_lets_calls_in_flight_finish() -> None:
    """stop(): calls in flight end normally with their rows; nothing new starts."""
    service = FakeService(latency=0.3, slow_from=2)
    rows = Rows()
    pool = make_pool(service, rows, concurrency=3)

    async def stop_soon() -> None:
        await anyio.sleep(0.1)
        pool.stop("test")

    async with anyio.create_task_group() as group:
        group.start_soon(stop_soon)
        stats = await pool.run(iter([spec(i) for i in range(10)]))
    assert [r.status for r in rows.rows] == ["submitted"] * 4
    assert (stats.submitted, stats.deferred) == (4, 6)


async def test_lookup_items_record_found_and_absent() -> None:
    """Resolving earlier unknowns: found → submitted (reconciled); absent → failed NOT_CREATED."""
    service = FakeService()
    await service.create(spec(1).body)
    rows = Rows()
    stats = await make_pool(service, rows).run(
        iter([Lookup(spec(1).source, "job-1"), Lookup(spec(2).source, "job-2")])
    )
    found = rows.by_source()
    assert found[spec(1).source].status == "submitted"
    assert found[spec(1).source].reconciled
    assert found[spec(2).source].error_code == NOT_CREATED
    assert service.creates == 1
    assert (stats.reconciled, stats.not_created, stats.failed) == (1, 1, 0)


async def test_max_failures_stops_the_run() -> None:
    """After N failed jobs the run stops rather than failing every job the same way."""
    service = FakeService(script=lambda n, body: "400")
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=1, max_failures=3).run(
        iter([spec(i) for i in range(20)])
    )
    assert stats.failed == 3
    assert stats.fatal is not None
    assert stats.deferred == 17


async def test_retries_go_before_new_jobs_for_a_free_slot() -> None:
    """An in-flight slot freed while both wait goes to the job already under way."""
    from batchsubmit.engine.gate import Slots as _Slots

    slots = _Slots(1)
    await slots.acquire(first=True)
    order: list[str] = []

    async def wait(name: str, first: bool) -> None:
        await slots.acquire(first)
        order.append(name)
        slots.release()

    async with anyio.create_task_group() as group:
        group.start_soon(wait, "new-1", True)
        group.start_soon(wait, "new-2", True)
        await anyio.sleep(0.01)
        group.start_soon(wait, "retry", False)
        await anyio.sleep(0.01)
        slots.release()
    assert order == ["retry", "new-1", "new-2"]


async def test_a_cancelled_waiter_does_not_lose_a_slot() -> None:
    """Cancelling a waiter never leaks or doubles a slot."""
    from batchsubmit.engine.gate import Slots as _Slots

    slots = _Slots(1)
    await slots.acquire(first=True)
    with anyio.move_on_after(0.01):
        await slots.acquire(first=True)
    slots.release()
    with anyio.fail_after(1):
        await slots.acquire(first=False)
    with anyio.move_on_after(0.01) as scope:
        await slots.acquire(first=True)
    assert scope.cancelled_caught


async def test_a_source_failing_mid_run_stops_cleanly() -> None:
    """A listing that breaks after the pre-check: the run stops with a message, rows kept."""
    from batchsubmit.errors import ManifestError

    def work() -> Iterator[JobSpec]:
        yield spec(1)
        yield spec(2)
        raise ManifestError("listing.txt:3", "not an obs:// path")

    service = FakeService()
    rows = Rows()
    stats = await make_pool(service, rows).run(work())
    assert stats.fatal is not None
    assert "listing.txt:3" in stats.fatal
    assert stats.submitted + stats.deferred == 2
    assert all(r.status == "submitted" for r in rows.rows)


class SpyJournal:
    """Counts intents that are open (written, no row yet), at most how many had no row in
    the file yet (what a kill would leave to look up), and which are durable."""

    def __init__(self, sync_time: float = 0.0, rows: Rows | None = None) -> None:
        self.rows = rows
        self.intended: set[str] = set()
        self.most_without_row = 0
        self.open: set[str] = set()
        self.durable: set[str] = set()
        self.most_open = 0
        self.commits = 0
        self.sends: list[str] = []  # each create about to go out, retries included
        self._written: list[str] = []
        self._sync_time = sync_time

    def sending(self, source: str, name: str) -> None:
        self.sends.append(source)

    def intend(self, intents: list[tuple[str, str]]) -> None:
        sources = [source for source, _ in intents]
        self.open.update(sources)
        self._written += sources
        self.most_open = max(self.most_open, len(self.open))
        self.intended.update(sources)
        if self.rows is not None:
            in_file = {row.source for row in self.rows.rows[: self.rows.flushed]}
            self.most_without_row = max(self.most_without_row, len(self.intended - in_file))

    async def commit(self) -> None:
        written, self._written = self._written, []
        await anyio.sleep(self._sync_time)  # as a sync in a thread would
        self.durable.update(written)
        self.commits += 1

    def settle(self, source: str) -> None:
        self.open.discard(source)

    def checkpoint_due(self) -> bool:
        return False

    def checkpoint(self) -> None:
        pass


async def test_intents_are_written_only_a_little_ahead() -> None:
    """A killed run leaves fewer than concurrency + 2 batches of intents without their row in
    the file (in flight, and fewer than two batches journalled ahead, rows flushed before each
    batch), not one per queued job. At 30 calls/s a batch is one per worker (3)."""
    assert pool_module.intent_batch(3, 30.0) == 3
    service = FakeService(latency=0.01)
    rows = Rows()
    journal = SpyJournal(rows=rows)
    pool = make_pool(service, rows, journal, concurrency=3, backlog=64, rate=30.0)
    await pool.run(iter([spec(i) for i in range(24)]))
    assert len(rows.rows) == 24
    assert 6 <= journal.most_open < 9
    assert 6 <= journal.most_without_row < 9
    assert not journal.open


def test_one_sync_covers_a_tenth_of_a_second_of_calls() -> None:
    """The batch one journal sync covers: a worker each at low rates, ~0.1 s of calls at high
    ones, 256 at most (and with no rate limit)."""
    batch = pool_module.intent_batch
    assert batch(8, 10.0) == 8  # the defaults: unchanged
    assert batch(64, 200.0) == 64
    assert batch(8, 1000.0) == 100
    assert batch(64, 5000.0) == 256
    assert batch(64, 0.0) == 256  # no limit
    assert batch(1024, 0.0) == 1024  # never fewer than one per worker


async def test_without_a_rate_limit_one_sync_serves_256_jobs() -> None:
    """Fast calls, no limit: 600 creates cost 3 syncs, and each intent was durable first."""
    journal = SpyJournal()
    early: list[str] = []

    def check(n: int, body: dict[str, Any]) -> str:
        if f"obs://bkt/{body['input']['data'][0]['path']}" not in journal.durable:
            early.append(body["name"])
        return "ok"

    service = FakeService(script=check)
    rows = Rows()
    await make_pool(service, rows, journal, concurrency=4).run(iter([spec(i) for i in range(600)]))
    assert (service.creates, early) == (600, [])
    assert journal.commits == 3
    assert journal.most_open <= 4 + 2 * 256


@pytest.mark.parametrize("sync_time", [0.0, 0.005])
async def test_no_create_is_sent_before_its_intent_is_durable(sync_time: float) -> None:
    """Every create's intent was synced before the call, whether syncs are instant or slow
    (in a thread); one sync serves a batch of --concurrency jobs, not one job."""
    journal = SpyJournal(sync_time)
    early: list[str] = []

    def check(n: int, body: dict[str, Any]) -> str:
        source = f"obs://bkt/{body['input']['data'][0]['path']}"
        if source not in journal.durable:
            early.append(source)
        return "ok"

    service = FakeService(script=check, latency=0.001)
    rows = Rows()
    await make_pool(service, rows, journal, concurrency=4).run(iter([spec(i) for i in range(200)]))
    assert service.creates == 200
    assert early == []
    assert journal.commits <= 200 // 4 + 1


async def test_stop_now_while_a_batch_is_being_synced_loses_nothing() -> None:
    """Stopped at once while the journal syncs the first batch (slow storage): nothing was
    sent, every job is deferred to the next run, and no intent is left open."""
    journal = SpyJournal(sync_time=5.0)
    service = FakeService()
    rows = Rows()
    pool = make_pool(service, rows, journal, concurrency=2)

    async def stop_soon() -> None:
        await anyio.sleep(0.1)
        pool.stop_now()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(stop_soon)
            stats = await pool.run(iter([spec(i) for i in range(300)]))
    assert service.creates == 0
    assert rows.rows == []
    assert stats.deferred == 300
    assert journal.most_open == 256  # the first batch only (no rate limit: 256 jobs)
    assert not journal.open


async def test_helpers_take_the_place_of_waiting_jobs_up_to_the_backlog() -> None:
    """While jobs wait (here the settle wait before looking up a lost answer), helpers start
    new ones, at most ``backlog`` of them; afterwards the pool shrinks back."""
    tried: set[str] = set()

    def first_answer_lost(n: int, body: dict[str, Any]) -> str:
        name = str(body["name"])
        if name in tried:
            return "ok"
        tried.add(name)
        return "lost"

    service = FakeService(script=first_answer_lost, latency=0.001)
    rows = Rows()
    pool = make_pool(service, rows, concurrency=2, backlog=3, settle=0.8)
    started: list[int] = []

    async def watch() -> None:
        await anyio.sleep(0.4)  # every job started so far is still in its settle wait
        started.append(len(tried))

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await pool.run(iter([spec(i) for i in range(8)]))
    assert started == [5]  # concurrency + backlog
    assert len(rows.rows) == 8
    assert all(r.status == "submitted" and r.reconciled for r in rows.rows)
    assert service.creates == 8
    assert service.most_in_flight == 2
    assert pool.busy == 0


async def test_sources_failing_mid_run_stop_the_run_with_every_row() -> None:
    """A listing that cannot be read to the end once jobs are under way (it changed since the
    first pass) stops the run as fatal: what was sent gets its row, the rest is deferred to
    the next run, nothing is lost or sent twice."""

    def work() -> Iterator[JobSpec]:
        yield from (spec(i) for i in range(300))  # past the first batch (256, no rate limit)
        raise ManifestError("listing.txt", "the listing changed while batchsubmit was reading it")

    service = FakeService(latency=0.001)
    rows = Rows()
    pool = make_pool(service, rows)
    stats = await pool.run(work())
    assert rows.rows
    assert all(r.status == "submitted" for r in rows.rows)
    assert service.creates == len(rows.rows)
    assert len(rows.rows) + stats.deferred == 300
    assert stats.fatal is not None
    assert "could not be read to the end" in stats.fatal
    assert "listing.txt" in stats.fatal


class Counting(Rows):
    """Rows that also count what the progress display is told, as ProgressReporter does."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[Outcome] = []

    def outcome(self, outcome: Outcome) -> None:
        self.told.append(outcome)


def _job(job_id: str, created_at: str, i: int = 1) -> dict[str, Any]:
    return {
        "id": job_id,
        "name": f"job-{i}",
        "created_at": created_at,
        "input": {"type": "obs", "data": [{"bucket": "bkt", "path": f"v{i}.mp4"}]},
    }


# -- an endpoint that cannot be reached (issue 12) -------------------------------------------------


@pytest.mark.parametrize("failure", ["refused", "dns"])
async def test_an_unreachable_endpoint_stops_the_run_at_the_first_call(failure: str) -> None:
    """Connection refused or a name that does not resolve on the first call: the run stops at
    once as fatal, naming the host and the error; nothing is retried, every job deferred."""
    import aiohttp

    from batchsubmit.auth import Credentials
    from batchsubmit.client import Endpoint, VasClient

    from .test_client import NoSuchName, _closed_port

    if failure == "refused":
        base, connector = f"http://127.0.0.1:{_closed_port()}", None
    else:
        base, connector = (
            "https://iva.cn-nowhere-9.myhuaweicloud.com",
            aiohttp.TCPConnector(resolver=NoSuchName()),
        )
    endpoint = Endpoint(base_url=base, project_id="p" * 32, service_name="s")
    rows = Rows()
    async with aiohttp.ClientSession(connector=connector) as session:
        client = VasClient(session, endpoint, Credentials("AK", "SK"))
        settings = PoolSettings(concurrency=4, rate=0, retry=RetryPolicy(base=0.5, cap=0.5))
        pool = Pool(client, rows, rows, settings, service_url=SERVICE, credentials=None)
        with anyio.fail_after(2):
            stats = await pool.run(iter([spec(i) for i in range(50)]))
    assert stats.fatal is not None
    assert endpoint.host in stats.fatal
    assert ("Connect call failed" if failure == "refused" else "not known") in stats.fatal
    assert (stats.calls, stats.deferred, rows.rows) == (1, 50, [])


async def test_connection_failures_after_the_first_call_are_retried() -> None:
    """Later connection failures (the endpoint answered before) keep the retry rules."""
    service = FakeService(script=lambda n, body: "refused" if n in (2, 3) else "ok")
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=1).run(iter([spec(i) for i in range(5)]))
    assert stats.fatal is None
    assert (stats.submitted, stats.retries) == (5, 2)


# -- every job failing the same way (issue 12) -----------------------------------------------------


async def test_the_first_jobs_all_failing_alike_stop_the_run_naming_the_key() -> None:
    """The first 10 jobs all rejected with one 4xx code, none succeeded: the run stops as
    fatal with the error and the manifest key it most likely comes from."""
    service = FakeService(script=lambda n, body: "timing")
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=2).run(iter([spec(i) for i in range(200)]))
    assert stats.fatal is not None
    assert "IVA.0004" in stats.fatal
    assert "timing" in stats.fatal
    assert "job.body" in stats.fatal
    assert 10 <= service.creates <= 12
    assert stats.failed + stats.deferred == 200


@pytest.mark.parametrize(
    ("script", "settings"),
    [
        (lambda n, body: "ok" if n == 1 else "timing", {}),  # one succeeded first
        (lambda n, body: "timing" if n % 2 else "over", {}),  # two codes
        (lambda n, body: "timing", {"same_failures": 0}),  # the rule switched off
    ],
)
async def test_failures_that_are_not_all_alike_go_on(
    script: Callable[[int, dict[str, Any]], str], settings: dict[str, Any]
) -> None:
    """The rule needs every one of the first N to fail alike and none to succeed."""
    service = FakeService(script=script)
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=1, **settings).run(
        iter([spec(i) for i in range(30)])
    )
    assert stats.fatal is None
    assert service.creates == 30


# -- Retry-After (issue 12) ------------------------------------------------------------------------


async def test_retry_after_on_a_503_delays_that_job_only() -> None:
    """A 503 with Retry-After: that job waits that long, the others go on; no pool pause."""
    service = FakeService(script=lambda n, body: "503ra" if n == 1 else "ok")
    rows = Rows()
    pool = make_pool(service, rows, concurrency=2)
    started = anyio.current_time()
    stats = await pool.run(iter([spec(i) for i in range(10)]))
    assert stats.pauses == 0
    assert rows.rows[-1].source == spec(0).source  # the 503'd job ends last, after its wait
    assert anyio.current_time() - started >= 0.4
    assert all(r.status == "submitted" for r in rows.rows)


async def test_retry_after_on_a_429_pauses_every_call() -> None:
    """A 429 with Retry-After is about the caller: no call starts before it has passed."""
    service = FakeService(script=lambda n, body: "429ra" if n == 1 else "ok")
    rows = Rows()
    pool = make_pool(service, rows, concurrency=1, controller=ControllerSettings(floor=1000.0))
    started = anyio.current_time()
    stats = await pool.run(iter([spec(i) for i in range(3)]))
    assert stats.pauses == 1
    assert anyio.current_time() - started >= 0.4
    assert service.creates == 4


# -- --max-jobs counts jobs created (issue 12) -----------------------------------------------------


async def test_max_jobs_counts_jobs_created_not_failed_calls() -> None:
    """--max-jobs 3 where the first 3 creates are refused: 3 jobs are still created."""
    refused = {"job-0", "job-1", "job-2"}
    service = FakeService(script=lambda n, body: "over" if body["name"] in refused else "ok")
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=2, max_jobs=3).run(
        iter([spec(i) for i in range(20)])
    )
    assert (stats.submitted, stats.failed, len(service.jobs)) == (3, 3, 3)
    assert stats.deferred == 14
    assert stats.stop_reason == "--max-jobs 3 reached"


async def test_an_unknown_create_keeps_its_place_under_max_jobs() -> None:
    """A create whose outcome is unknown may have made a job: it counts toward --max-jobs."""
    service = FakeService(script=lambda n, body: "dropped" if n == 1 else "ok", list_fails=True)
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=1, max_jobs=2).run(
        iter([spec(i) for i in range(5)])
    )
    assert (stats.unknown, stats.submitted, stats.deferred) == (1, 1, 3)
    assert service.creates == 2


# -- lost creates that surface late, duplicates (issues 11, 13) ------------------------------------


async def test_a_lost_create_that_surfaces_late_is_found_not_made_again() -> None:
    """The list shows the lost create only at the third lookup: found, never created twice."""
    service = FakeService(script=lambda n, body: "lost", list_lag=2)
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert (service.creates, len(service.jobs)) == (1, 1)
    assert (rows.rows[0].status, rows.rows[0].reconciled) == ("submitted", True)
    assert stats.lookups == 3


async def test_an_earlier_create_found_absent_is_looked_up_again_right_before_it_is_made() -> None:
    """An earlier run's create the list did not show at the start of this run (its three
    lookups, as many as a lost answer gets): the lookup just before creating it again finds
    it, and nothing is created."""
    service = FakeService(list_lag=3)
    await service.create(spec(1).body)  # the earlier run's create, not yet in lists
    rows = Rows()
    pool = make_pool(service, rows)
    await pool.run(iter([Lookup(spec(1).source, "job-1")]))
    assert rows.rows[0].error_code == NOT_CREATED
    stats = await pool.run(iter([spec(1)]))
    assert service.creates == 1
    assert (rows.rows[-1].status, rows.rows[-1].job_id) == ("submitted", service.jobs[0]["id"])
    assert stats.submitted == 1


@pytest.mark.parametrize("newest_first", [True, False])
async def test_of_several_jobs_for_one_video_the_oldest_is_recorded(newest_first: bool) -> None:
    """Three jobs for one video (whatever order the list gives): the oldest is the video's
    row; the others get a `duplicate` row each and their ids are in the stats; only the
    video's own row reaches the progress display."""
    service = FakeService()
    jobs = [
        _job("old", "2026-11-28T00:00:01Z"),
        _job("mid", "2026-11-28T00:00:05Z"),
        _job("new", "2026-11-28T00:00:09Z"),
    ]
    service.jobs = list(reversed(jobs)) if newest_first else jobs
    rows = Counting()
    stats = await make_pool(service, rows).run(iter([Lookup(spec(1).source, "job-1")]))
    assert [(r.status, r.job_id) for r in rows.rows] == [
        ("submitted", "old"),
        ("duplicate", "mid"),
        ("duplicate", "new"),
    ]
    assert rows.rows[1].error_code == "BATCHSUBMIT.DUPLICATE"
    assert "old" in rows.rows[1].error_msg
    assert stats.duplicates == ["mid", "new"]
    assert (stats.submitted, stats.failed) == (1, 0)
    assert [r.status for r in rows.told] == ["submitted"]


async def test_a_duplicate_found_after_a_lost_create_is_reported() -> None:
    """A lost create that finds an older job for the video too: the older one is recorded."""
    service = FakeService(script=lambda n, body: "lost")
    service.jobs.append(_job("earlier", "2026-11-27T00:00:00Z"))
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert [(r.status, r.job_id) for r in rows.rows] == [
        ("submitted", "earlier"),
        ("duplicate", service.jobs[1]["id"]),
    ]
    assert stats.duplicates == [service.jobs[1]["id"]]


# -- the quota full mid-run (issue 15) -------------------------------------------------------------


@pytest.mark.parametrize("defers", [False, True])
async def test_a_full_quota_mid_run_defers_the_rest_and_says_what_to_do(defers: bool) -> None:
    """IVA.0012 after 5 jobs: no new creates, calls in flight finish, the rest is deferred
    (no row) with the reason; fatal unless quota_defers (submit --make-room)."""
    service = FakeService(latency=0.01)
    service.script = lambda n, body: "quota" if len(service.jobs) >= 5 else "ok"
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=3, quota_defers=defers).run(
        iter([spec(i) for i in range(40)])
    )
    assert (stats.submitted, stats.failed) == (5, 0)
    assert service.creates <= 5 + 3  # only calls already in flight got the refusal
    assert stats.deferred == 35
    assert all(r.status == "submitted" for r in rows.rows)
    assert stats.deferred_reason is not None
    assert "batchsubmit prune" in stats.deferred_reason
    assert (stats.fatal is None) is defers


# -- counts (issue 12) -----------------------------------------------------------------------------


async def test_the_progress_display_is_told_each_video_once() -> None:
    """Lookups of an earlier run (found, absent, failed) then creates: what the progress display
    is told adds up to the run's stats."""
    service = FakeService(script=lambda n, body: "over" if n == 2 else "ok")
    service.jobs.append(_job("earlier", "2026-11-27T00:00:00Z", 1))
    rows = Counting()
    pool = make_pool(service, rows, concurrency=1)
    await pool.run(iter([Lookup(spec(1).source, "job-1"), Lookup(spec(2).source, "job-2")]))
    stats = await pool.run(iter([spec(i) for i in range(2, 6)]))
    told = [r.status for r in rows.told if r.error_code != NOT_CREATED]
    assert told.count("submitted") == stats.submitted == 4
    assert told.count("failed") == stats.failed == 1
    assert len(told) == stats.submitted + stats.failed + stats.unknown
    assert stats.not_created == 1


async def test_the_journal_hears_of_every_send_once_it_is_about_to_go() -> None:
    """A create can go out long after its batch was journalled (its start under --rate, a
    Retry-After pause, a retry's backoff), and the next run's settle wait counted from the
    batch: a run killed then had it looked up too soon. The journal hears of each send, the
    first and the retries, after the gate's waits (Journal.sending moves a stale time on)."""
    service = FakeService(script=lambda n, body: "503" if n <= 2 else "ok")
    rows = Rows()
    journal = SpyJournal(rows=rows)
    stats = await make_pool(service, rows, journal).run(iter([spec(1), spec(2)]))
    assert stats.submitted == 2
    assert sorted(journal.sends) == sorted([spec(1).source, spec(2).source] * 2)
