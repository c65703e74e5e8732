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
from batchsubmit.answers import Answer, Kind
from batchsubmit.errors import ManifestError
from batchsubmit.jobs import JobSpec
from batchsubmit.pool import NOT_CREATED, Lookup, Pool, PoolSettings
from batchsubmit.results import Outcome
from batchsubmit.retry import RetryPolicy
from batchsubmit.throttle import ControllerSettings

from .helpers import FAST_RETRY

pytestmark = pytest.mark.anyio

SERVICE = "http://fake/v2/p/services/s/tasks"


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
    ids: itertools.count[int] = field(default_factory=itertools.count)

    async def create(self, body: bytes) -> Answer:
        self.creates += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.creates >= self.slow_from:
                await anyio.sleep(self.latency)
            data = orjson.loads(body)
            fate = self.script(self.creates, data)
            if fate in ("ok", "lost"):
                job_id = f"id{next(self.ids)}"
                self.jobs.append(
                    {
                        "id": job_id,
                        "name": data["name"],
                        "input": data["input"],
                        "created_at": "2026-11-28T00:00:00Z",
                    }
                )
                if fate == "ok":
                    return Answer(kind=Kind.CREATED, status=201, job_id=job_id)
                return Answer(kind=Kind.AMBIGUOUS, error_code="CONNECTION", error_msg="reset")
            return {
                "503": Answer(kind=Kind.UNAVAILABLE, status=503, error_code="IVA.0010"),
                "429": Answer(kind=Kind.THROTTLED, status=429, error_code="APIG.0308"),
                "400": Answer(kind=Kind.FAILED, status=400, error_code="IVA.0004"),
                "401": Answer(
                    kind=Kind.FATAL, status=401, error_code="APIGW.0301", advice="check the SK"
                ),
                "dropped": Answer(kind=Kind.AMBIGUOUS, error_code="CONNECTION"),
            }[fate]
        finally:
            self.in_flight -= 1

    async def list_page(self, name_like: str, offset: int, limit: int = 100) -> Answer:
        self.lists += 1
        if self.list_fails:
            return Answer(kind=Kind.UNAVAILABLE, status=503, error_code="IVA.0010")
        found = [job for job in self.jobs if name_like in job["name"]]
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
        "backlog": 16,
    }
    defaults.update(settings)
    return Pool(service, rows, rows, PoolSettings(**defaults), service_url=SERVICE, journal=journal)


async def test_lost_answer_without_a_job_is_created_again() -> None:
    """An answer lost before the job was made: the lookup finds nothing, so it is created."""
    service = FakeService(script=lambda n, body: "dropped" if n == 1 else "ok")
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(1)]))
    assert (service.creates, len(service.jobs)) == (2, 1)
    assert rows.rows[0].status == "submitted"
    assert rows.rows[0].job_id == service.jobs[0]["id"]
    assert rows.rows[0].attempts == 2
    assert stats.lookups == 1


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
    from batchsubmit.pool import _Slots

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
    from batchsubmit.pool import _Slots

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
        self._written: list[str] = []
        self._sync_time = sync_time

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
    """A killed run leaves fewer than 3 x --concurrency intents without their row in the
    file (in flight, and fewer than twice as many journalled ahead, rows flushed before each
    batch), not one per queued job."""
    service = FakeService(latency=0.01)
    rows = Rows()
    journal = SpyJournal(rows=rows)
    pool = make_pool(service, rows, journal, concurrency=3, backlog=64)
    await pool.run(iter([spec(i) for i in range(60)]))
    assert len(rows.rows) == 60
    assert 6 <= journal.most_open < 9
    assert 6 <= journal.most_without_row < 9
    assert not journal.open


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
            stats = await pool.run(iter([spec(i) for i in range(10)]))
    assert service.creates == 0
    assert rows.rows == []
    assert stats.deferred == 10
    assert journal.most_open == 2
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
    assert pool._workers == 0


async def test_sources_failing_mid_run_stop_the_run_with_every_row() -> None:
    """A listing that cannot be read to the end once jobs are under way (it changed since the
    first pass) stops the run as fatal: what was sent gets its row, the rest is deferred to
    the next run, nothing is lost or sent twice."""

    def work() -> Iterator[JobSpec]:
        yield from (spec(i) for i in range(5))
        raise ManifestError("listing.txt", "the listing changed while batchsubmit was reading it")

    service = FakeService(latency=0.01)
    rows = Rows()
    pool = make_pool(service, rows)
    stats = await pool.run(work())
    assert rows.rows
    assert all(r.status == "submitted" for r in rows.rows)
    assert service.creates == len(rows.rows)
    assert len(rows.rows) + stats.deferred == 5
    assert stats.fatal is not None
    assert "could not be read to the end" in stats.fatal
    assert "listing.txt" in stats.fatal
