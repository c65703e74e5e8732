"""The engine and its gate on their own (a kind of work that is not a create), the hold on
sources this run already looked up, and fatal stops as typed values."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from batchsubmit.answers import Answer, Kind
from batchsubmit.engine.gate import Gate, Stopped
from batchsubmit.engine.run import Engine
from batchsubmit.engine.stats import RunStats
from batchsubmit.errors import FatalApiError, ManifestError
from batchsubmit.pool import Lookup
from batchsubmit.retry import RetryPolicy
from batchsubmit.throttle import ControllerSettings

from .test_pool import FakeService, Rows, make_pool, spec

pytestmark = pytest.mark.anyio


def _gate(stats: RunStats, concurrency: int = 3, rate: float = 0.0) -> Gate:
    refusals: list[Answer] = []
    return Gate(
        stats,
        lambda level, message: None,
        concurrency=concurrency,
        rate=rate,
        retry=RetryPolicy(attempts=3, base=0.001, cap=0.001),
        controller=ControllerSettings(),
        refused=refusals.append,
        clock=time.monotonic,
    )


class Deletes:
    """A kind of work in a dozen lines: delete each id through the gate, count what ends."""

    def __init__(self, gate: Gate, engine: Engine[str], answer: Kind = Kind.OK) -> None:
        self.gate, self.engine, self.answer = gate, engine, answer
        self.in_flight = self.most_in_flight = 0
        self.deleted: list[str] = []
        self.deferred: list[str] = []

    def admit(self, item: str) -> bool:
        return True

    async def prepare(self, batch: list[str]) -> None:
        pass

    async def run(self, item: str) -> None:
        answer = await self.gate.call(self._delete, item, rest=self.engine.rest)
        if answer.kind is Kind.OK:
            self.deleted.append(item)

    def defer(self, item: str) -> None:
        self.deferred.append(item)

    async def _delete(self, item: str) -> Answer:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await anyio.sleep(0.002)
        finally:
            self.in_flight -= 1
        return Answer(kind=self.answer, status=204 if self.answer is Kind.OK else 503)


def _engine(gate: Gate, concurrency: int = 3) -> Engine[str]:
    return Engine(gate, concurrency=concurrency, backlog=4, grace=1.0, deadline=math.inf)


async def test_any_kind_of_work_runs_on_the_engine_under_the_gates_cap() -> None:
    """Deletes (not creates) through the same engine: every item run, the cap held."""
    stats = RunStats()
    gate = _gate(stats)
    engine = _engine(gate)
    work = Deletes(gate, engine)
    await engine.run(iter([f"id{i}" for i in range(40)]), work)
    assert sorted(work.deleted) == sorted(f"id{i}" for i in range(40))
    assert work.most_in_flight == 3
    assert stats.calls == 40
    assert engine.busy == 0


async def test_retries_of_a_read_are_bounded() -> None:
    """503 for every delete: each is tried ``attempts`` times, then given up."""
    stats = RunStats()
    gate = _gate(stats, concurrency=1)
    engine = _engine(gate, concurrency=1)
    work = Deletes(gate, engine, Kind.UNAVAILABLE)
    await engine.run(iter(["a", "b"]), work)
    assert (work.deleted, stats.calls, stats.retries) == ([], 6, 4)


async def test_a_stop_defers_every_item_not_done_each_once() -> None:
    """The run stops during the first call (its answer a 503): its retry is not made, and it
    and every item not started are handed back to the work's defer, each once."""
    stats = RunStats()
    gate = _gate(stats, concurrency=2)
    engine = _engine(gate, concurrency=2)
    work = Deletes(gate, engine, Kind.UNAVAILABLE)
    delete = work._delete

    async def stopping(item: str) -> Answer:
        gate.stop("test")
        return await delete(item)

    work._delete = stopping  # type: ignore[method-assign]
    await engine.run(iter([f"id{i}" for i in range(10)]), work)
    assert stats.calls == 1
    assert sorted(work.deferred) == sorted(f"id{i}" for i in range(10))


async def test_the_first_call_is_made_alone() -> None:
    """The probe: until the first answer, no other call starts."""
    stats = RunStats()
    gate = _gate(stats, concurrency=8)
    engine = _engine(gate, concurrency=8)
    work = Deletes(gate, engine)
    seen: list[int] = []
    delete = work._delete

    async def watched(item: str) -> Answer:
        seen.append(work.in_flight)
        return await delete(item)

    work._delete = watched  # type: ignore[method-assign]
    await engine.run(iter([f"id{i}" for i in range(20)]), work)
    assert seen[0] == 0
    assert seen[1] == 0  # the second call started only once the first was answered
    assert max(seen) > 1


async def test_stopped_is_raised_before_sending_once_the_run_stops() -> None:
    stats = RunStats()
    gate = _gate(stats)
    gate.stop("test")
    with pytest.raises(Stopped):
        await gate.send(_never)
    assert stats.calls == 0


async def _never() -> Answer:
    raise AssertionError("sent after the stop")


# -- the hold: a source this run looked up is never created in it -----------------------------


@pytest.mark.parametrize("lookup", ["failed", "found"])
async def test_a_source_looked_up_in_this_run_is_never_created_in_it(lookup: str) -> None:
    """Even if the plan offers it again: a source whose lookup failed (the job may exist) or
    found the job is not created by the pool in the same run."""
    service = FakeService()
    if lookup == "found":
        await service.create(spec(1).body)
    else:
        service.list_fails = True
    rows = Rows()
    pool = make_pool(service, rows, retry=RetryPolicy(attempts=2, base=0.001, cap=0.001))
    await pool.run(iter([Lookup(spec(1).source, "job-1")]))
    assert pool.held == {spec(1).source}
    before = service.creates
    service.list_fails = False
    stats = await pool.run(iter([spec(1), spec(2)]))
    assert service.creates == before + 1  # job-2 only
    assert [r.source for r in rows.rows[1:]] == [spec(2).source]
    assert (stats.submitted, stats.deferred) == (1 + (lookup == "found"), 0)


# -- fatal stops are typed -------------------------------------------------------------------------


async def test_a_refusal_is_a_fatal_api_error_with_its_advice() -> None:
    service = FakeService(script=lambda n, body: "401")
    rows = Rows()
    stats = await make_pool(service, rows).run(iter([spec(i) for i in range(5)]))
    error = stats.fatal_error
    assert isinstance(error, FatalApiError)
    assert error.exit_code == 3
    assert (error.error.status, error.error.error_code) == (401, "APIGW.0301")
    assert error.advice == "check the SK"
    assert stats.fatal is not None
    assert "check the SK" in stats.fatal


async def test_sources_unreadable_mid_run_carry_the_manifest_error() -> None:
    failure = ManifestError("listing.txt:3", "not an obs:// path")

    def work() -> Iterator[Any]:
        yield spec(1)
        raise failure

    stats = await make_pool(FakeService(), Rows()).run(work())
    assert stats.fatal_error is failure
    assert stats.fatal is not None
    assert "listing.txt:3" in stats.fatal


async def test_the_first_reason_wins() -> None:
    """A later fatal answer does not overwrite why the run stopped first."""
    service = FakeService(script=lambda n, body: "timing" if n <= 10 else "401")
    rows = Rows()
    stats = await make_pool(service, rows, concurrency=1).run(iter([spec(i) for i in range(30)]))
    assert isinstance(stats.fatal_error, FatalApiError)
    assert stats.fatal_error.error.error_code == "IVA.0004"
    assert stats.fatal is not None
    assert "job.body" in stats.fatal


async def test_calls_from_outside_a_pass_share_the_in_flight_cap() -> None:
    """Pool.call from many tasks at once (follow, prune): never more than the cap in flight."""
    stats = RunStats()
    gate = _gate(stats, concurrency=3)
    engine = _engine(gate)
    work = Deletes(gate, engine)
    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(work.run, f"id{i}")
    assert len(work.deleted) == 20
    assert work.most_in_flight == 3


async def test_pool_each_runs_a_handler_per_item_under_the_gate() -> None:
    """Pool.each: shows (any calls) for many items, ``concurrency`` tasks at a time, through
    the pool's gate; once the run stops, the items not started come back."""
    service = FakeService(latency=0.002)
    rows = Rows()
    pool = make_pool(service, rows, concurrency=3)
    shown: list[int] = []
    running = [0, 0]  # now, at most

    async def show(i: int) -> None:
        running[0] += 1
        running[1] = max(running)
        try:
            answer = await pool.call(service.list_page, f"job-{i}", 0)
            await anyio.sleep(0.002)
        finally:
            running[0] -= 1
        assert answer.kind is Kind.OK
        shown.append(i)
        if len(shown) == 10:
            pool.stop("enough")

    skipped = await pool.each(range(40), show)
    assert sorted(shown + skipped) == list(range(40))
    assert 10 <= len(shown) <= 13  # those under way when it stopped finish
    assert skipped[-1] == 39
    assert pool.stats.calls == len(shown)
    assert running[1] == 3


# -- calls that are not the service's: credential refreshes ------------------------------------


async def test_a_refresh_is_a_gated_call_that_a_stopped_run_never_starts() -> None:
    """Gate.other: a start from the rate controller and a count like any call; once the run
    stops, nothing new starts, a refresh included."""
    stats = RunStats()
    gate = _gate(stats, concurrency=2, rate=50.0)
    made: list[int] = []

    async def refresh() -> str:
        made.append(1)
        return "token"

    assert await gate.other(refresh) == "token"
    assert (stats.calls, made) == (1, [1])
    assert len(gate.controller._starts) == 1  # paced like a create
    gate.stop("the operator asked")
    with pytest.raises(Stopped):
        await gate.other(refresh)
    assert made == [1]


async def test_a_refresh_never_waits_for_an_in_flight_slot() -> None:
    """Every slot held (by calls that may be waiting for the renewal itself): the renewal still
    runs, so it can never deadlock with them."""
    stats = RunStats()
    gate = _gate(stats, concurrency=1)
    assert gate.slots.take()  # the only slot, held by "the call"

    async def refresh() -> str:
        return "token"

    with anyio.fail_after(1):
        assert await gate.other(refresh) == "token"
    assert gate.slots.free == 0
