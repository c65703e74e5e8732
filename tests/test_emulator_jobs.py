"""The emulator runs jobs: lives over (scaled or hand-advanced) time, list filters, show's
hosting result, stop and start, delete and the quota. Over real HTTP, signed as our client signs.

Most tests drive a hand-advanced clock (``Emulator(clock=...)``): each state is checked at a
known moment, with no sleeping and no flakiness; one test runs on the real clock, time-scaled.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsubmit.auth import Credentials, sdk_date, sign
from batchsubmit.emulator import (
    EMULATOR_AK,
    EMULATOR_PROJECT_ID,
    EMULATOR_SK,
    STATES,
    Emulator,
    Faults,
    Lifecycle,
)

pytestmark = pytest.mark.anyio

SERVICE = "c-video-analysis"
CREDENTIALS = Credentials(EMULATOR_AK, EMULATOR_SK)
# Fixed durations (low == high) so each test knows when each step happens: created at 0,
# STARTING at 10, RUNNING at 15, final at 45 (emulated seconds, unscaled).
FIXED = Lifecycle(
    pending=(10.0, 10.0), starting=(5.0, 5.0), running=(30.0, 30.0), unknown=(4.0, 4.0),
    stopping=3.0, deleting=2.0, freezing=1.0, hosting_late=(20.0, 20.0), hosting_ttl=100.0,
)  # fmt: skip


def tasks_path(service: str = SERVICE) -> str:
    return f"/v2/{EMULATOR_PROJECT_ID}/services/{service}/tasks"


def body(name: str, *, hosting: bool = False, path: str | None = None) -> dict[str, Any]:
    output: dict[str, Any] = {"obs": {"bucket": "out", "path": "r/"}}
    if hosting:
        output = {"hosting": {}}
    return {
        "name": name,
        "service_version": "1.0",
        "input": {"type": "obs", "data": [{"bucket": "in-bucket", "path": path or f"{name}.mp4"}]},
        "output": output,
    }


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """Signed calls to one emulator; answers as (status, parsed JSON or None)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self, method: str, path: str, query: dict[str, str] | None = None, doc: object = None
    ) -> tuple[int, Any]:
        raw = b"" if doc is None else orjson.dumps(doc)
        headers = {
            "Content-Type": "application/json",
            "Host": self.base.removeprefix("http://"),
            "X-Sdk-Date": sdk_date(),
            "X-Project-Id": EMULATOR_PROJECT_ID,
        }
        headers["Authorization"] = sign(CREDENTIALS, method, path, query, headers, raw)
        async with self.session.request(
            method, self.base + path, params=query, data=raw, headers=headers
        ) as response:
            data = await response.read()
            return response.status, orjson.loads(data) if data else None

    async def create(self, name: str, service: str = SERVICE, **options: Any) -> str:
        status, doc = await self.call("POST", tasks_path(service), doc=body(name, **options))
        assert status == 201, doc
        task_id: str = doc[0]["id"]
        return task_id

    async def show(self, task_id: str) -> dict[str, Any]:
        status, doc = await self.call("GET", f"{tasks_path()}/{task_id}")
        assert status == 200, doc
        shown: dict[str, Any] = doc
        return shown

    async def state(self, task_id: str) -> str:
        return str((await self.show(task_id))["state"])

    async def listing(self, **query: str) -> dict[str, Any]:
        status, doc = await self.call("GET", tasks_path(), query=query)
        assert status == 200, doc
        listed: dict[str, Any] = doc
        return listed

    async def names(self, **query: str) -> list[str]:
        return [task["name"] for task in (await self.listing(**query))["tasks"]]

    async def action(self, task_id: str, what: str) -> tuple[int, Any]:
        return await self.call("POST", f"{tasks_path()}/{task_id}/{what}")


@asynccontextmanager
async def running(emulator: Emulator) -> AsyncIterator[Api]:
    async with emulator.serve() as base, aiohttp.ClientSession() as session:
        yield Api(session, base)


def emulated(clock: Clock, lifecycle: Lifecycle = FIXED, **faults: Any) -> Emulator:
    return Emulator(Faults(jobs=lifecycle, seed=11, **faults), clock=clock)


def epoch(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


# -- the life of a job ---------------------------------------------------------------------------


async def test_a_job_goes_pending_starting_running_succeeded_over_time() -> None:
    """Each state at its moment; updated_at follows the changes, created_at stays."""
    clock = Clock()
    async with running(emulated(clock)) as api:
        task_id = await api.create("life")
        first = await api.show(task_id)
        seen = [(await api.state(task_id))]
        for step in (9.9, 0.2, 5.0, 29.8, 0.2, 1000.0):
            clock.advance(step)
            seen.append(await api.state(task_id))
        last = await api.show(task_id)
    assert seen == [
        "PENDING", "PENDING", "STARTING", "RUNNING", "RUNNING", "SUCCEEDED", "SUCCEEDED"
    ]  # fmt: skip
    assert first["status"] == "Waiting for available computing resource."
    assert (first["error"], last["error"], last["status"]) == (None, None, None)
    assert last["created_at"] == first["created_at"] == first["updated_at"]
    assert epoch(last["updated_at"]) - epoch(first["created_at"]) in (44, 45, 46)
    assert "hosting_result" not in last  # obs output: no hosting result


async def test_time_scale_runs_whole_lives_in_milliseconds() -> None:
    """time_scale=1000 on the real clock: 24 jobs of up to 27 emulated seconds end in ~30 ms."""
    lifecycle = Lifecycle(time_scale=1000.0, pending=(1, 4), starting=(1, 3), running=(5, 20))
    emulator = Emulator(Faults(jobs=lifecycle))
    async with running(emulator) as api:
        ids = [await api.create(f"fast-{i}") for i in range(24)]
        started = time.monotonic()
        done = 0
        while time.monotonic() - started < 1.5:
            done = (await api.listing(state="SUCCEEDED", limit="100"))["count"]
            if done == len(ids):
                break
            await asyncio.sleep(0.01)
    assert done == 24
    assert all(emulator.state(task_id) == "SUCCEEDED" for task_id in ids)


async def test_fates_come_in_their_shares_with_errors_and_unknown_states() -> None:
    """Shares of FAILED (ALG.002), CREATE_FAILED, START_FAILED, an unknown state on the way, and
    vanished jobs, drawn per job; the same seed gives every job the same life."""
    lifecycle = Lifecycle(
        pending=(10, 10), starting=(5, 5), running=(30, 30), unknown=(4, 4),
        p_failed=0.2, p_create_failed=0.1, p_start_failed=0.1, p_unknown_state=0.25,
        p_vanish=0.05,
    )  # fmt: skip
    histories = []
    for _ in range(2):
        clock = Clock()
        emulator = emulated(clock, lifecycle)
        async with running(emulator) as api:
            ids = [await api.create(f"job-{i:03d}") for i in range(300)]
            history: dict[str, list[str]] = {task_id: [] for task_id in ids}
            for _tick in range(60):
                for task_id in ids:
                    state = emulator.state(task_id) or "GONE"
                    if not history[task_id] or history[task_id][-1] != state:
                        history[task_id].append(state)
                clock.advance(1.0)
            finals = {task_id: emulator.state(task_id) for task_id in ids}
            failed = next(i for i in ids if finals[i] == "FAILED")
            failed_shown = await api.show(failed)
            never_ran = next(i for i in ids if finals[i] == "CREATE_FAILED")
            never_ran_shown = await api.show(never_ran)
            for gone in (i for i in ids if finals[i] is None):
                status, doc = await api.call("GET", f"{tasks_path()}/{gone}")
                assert (status, doc["error_code"]) == (404, "IVA.0005")
            listed = await api.listing(limit="100")
        histories.append([history[i] for i in ids])
        counts = Counter(finals.values())
        assert set(counts) == {"SUCCEEDED", "FAILED", "CREATE_FAILED", "START_FAILED", None}
        assert 30 <= counts["FAILED"] <= 90, counts  # 20% of 300
        assert 10 <= counts["CREATE_FAILED"] <= 50, counts
        assert 10 <= counts["START_FAILED"] <= 50, counts
        assert 3 <= counts[None] <= 30, counts  # vanished
        assert listed["count"] == 300 - counts[None] == len(emulator.tasks)
        assert sorted(emulator.vanished) == sorted(i for i in ids if finals[i] is None)
        assert failed_shown["error"] == {
            "code": "ALG.002",
            "message": "The algorithm failed to analyse the video",
        }
        assert never_ran_shown["error"]["code"]
        assert never_ran_shown["state"] == "CREATE_FAILED"
        through_unknown = [h for h in history.values() if "SCHEDULING" in h]
        assert 30 <= len(through_unknown) <= 120
        assert all(h[h.index("SCHEDULING") + 1] in ("STARTING", "GONE") for h in through_unknown)
        assert "SCHEDULING" not in STATES  # the point: a name outside VAS's list
    assert histories[0] == histories[1]


async def test_an_abnormal_job_recovers_and_runs_on() -> None:
    """p_abnormal: ABNORMAL midway through RUNNING, RECOVERING, RUNNING again, then the outcome."""
    clock = Clock()
    lifecycle = Lifecycle(
        pending=(10, 10), starting=(5, 5), running=(30, 30), p_abnormal=1.0,
        abnormal=(20, 20), recovering=5.0,
    )  # fmt: skip
    async with running(emulated(clock, lifecycle)) as api:
        task_id = await api.create("wobbly")
        seen = []
        for moment in (16, 31, 51, 56, 69, 71):
            clock.advance(moment - (clock.now - 1000))
            seen.append(await api.state(task_id))
    assert seen == ["RUNNING", "ABNORMAL", "RECOVERING", "RUNNING", "RUNNING", "SUCCEEDED"]


async def test_a_hosting_result_too_large_to_host_is_exceed_in_size() -> None:
    """SUCCEEDED with hosting_result EXCEED_IN_SIZE: no data, no size, no overdue date, and
    it stays so; the share and p_hosting_late are one draw (their sum at most 1)."""
    clock = Clock()
    lifecycle = Lifecycle(
        pending=(10, 10), starting=(5, 5), running=(30, 30), p_hosting_too_large=1.0,
        hosting_ttl=100.0,
    )  # fmt: skip
    async with running(emulated(clock, lifecycle)) as api:
        task_id = await api.create("hosted", hosting=True)
        clock.advance(46)
        succeeded = await api.show(task_id)
        clock.advance(500)
        later = await api.show(task_id)
    assert succeeded["state"] == "SUCCEEDED"
    assert succeeded["hosting_result"] == {"status": "EXCEED_IN_SIZE"}
    assert "result_json_overdue_at" not in succeeded["output"]["hosting"]
    assert later["hosting_result"] == {"status": "EXCEED_IN_SIZE"}
    with pytest.raises(ValueError, match="p_hosting_too_large"):
        Lifecycle(p_hosting_late=0.6, p_hosting_too_large=0.5)


async def test_hosting_result_arrives_late_then_expires() -> None:
    """SUCCEEDED with NOT_GENERATED, then AVAILABLE with data, size and overdue date (and
    output.hosting.result_json_overdue_at in epoch ms), then OVERDUE; list never carries it."""
    clock = Clock()
    lifecycle = Lifecycle(
        pending=(10, 10), starting=(5, 5), running=(30, 30), p_hosting_late=1.0,
        hosting_late=(20, 20), hosting_ttl=100.0,
    )  # fmt: skip
    async with running(emulated(clock, lifecycle)) as api:
        task_id = await api.create("hosted", hosting=True)
        pending = await api.show(task_id)
        clock.advance(46)
        succeeded = await api.show(task_id)
        clock.advance(20)
        available = await api.show(task_id)
        listed = (await api.listing())["tasks"][0]
        clock.advance(98)
        still = await api.show(task_id)
        clock.advance(2)
        overdue = await api.show(task_id)
    assert pending["hosting_result"] == {"status": "NOT_GENERATED"}
    assert succeeded["state"] == "SUCCEEDED"
    assert succeeded["hosting_result"] == {"status": "NOT_GENERATED"}
    result = available["hosting_result"]
    assert result["status"] == "AVAILABLE"
    assert orjson.loads(result["data"])["task_id"] == task_id
    assert result["file_size"] == str(len(result["data"].encode()))
    overdue_at = available["output"]["hosting"]["result_json_overdue_at"]
    assert isinstance(overdue_at, int)
    assert overdue_at // 1000 == epoch(result["overdue_date"])
    # Wall-clock ms, 100 s after AVAILABLE (at 65 s): the clock moved the wall time too.
    assert abs(overdue_at / 1000 - (epoch(pending["created_at"]) + 165)) <= 1
    assert "hosting_result" not in listed
    assert listed["output"]["hosting"]["result_json_overdue_at"] == overdue_at
    assert still["hosting_result"]["status"] == "AVAILABLE"
    assert overdue["hosting_result"]["status"] == "OVERDUE"
    assert "data" not in overdue["hosting_result"]
    assert overdue["state"] == "SUCCEEDED"


async def test_frozen_jobs_and_a_frozen_account() -> None:
    """p_frozen: FREEZING then FROZEN midway through RUNNING; freeze(): every unfinished job;
    a FROZEN job can be started again once the account is topped up."""
    clock = Clock()
    lifecycle = Lifecycle(pending=(10, 10), starting=(5, 5), running=(30, 30), p_frozen=1.0)
    emulator = emulated(clock, lifecycle)
    async with running(emulator) as api:
        task_id = await api.create("arrears")
        clock.advance(15 + 15)
        freezing = await api.state(task_id)
        clock.advance(2)
        frozen = await api.state(task_id)
        clock.advance(1000)
        still = await api.state(task_id)
        emulator.faults = Faults(jobs=FIXED)
        others = [await api.create(f"other-{i}") for i in range(3)]
        clock.advance(46)
        done = await api.create("done-later")  # PENDING: freeze() catches it
        emulator.set_state(others[0], "STOPPED")
        clock.advance(1)
        frozen_now = emulator.freeze()
        clock.advance(0.5)
        mid = [await api.state(i) for i in others]
        clock.advance(1)
        after = [await api.state(i) for i in (*others, done)]
        status, _ = await api.action(task_id, "start")
        restarted = await api.state(task_id)
    assert (freezing, frozen, still) == ("FREEZING", "FROZEN", "FROZEN")
    assert set(frozen_now) == {done}  # the others were SUCCEEDED or STOPPED; task_id FROZEN
    assert mid == ["STOPPED", "SUCCEEDED", "SUCCEEDED"]
    assert after == ["STOPPED", "SUCCEEDED", "SUCCEEDED", "FROZEN"]
    assert (status, restarted) == (202, "STARTING")


async def test_set_state_forces_any_state_and_holds_it() -> None:
    """A test can put a job in any state (VAS's or not) at once; it then stays there."""
    clock = Clock()
    emulator = emulated(clock)
    async with running(emulator) as api:
        plain = await api.create("plain")
        hosted = await api.create("hosted", hosting=True)
        emulator.set_state(plain, "CREATE_FAIL")
        emulator.set_state(hosted, "SUCCEEDED", hosting="AVAILABLE")
        clock.advance(10_000)
        plain_shown = await api.show(plain)
        hosted_shown = await api.show(hosted)
        emulator.set_state(plain, "FAILED")
        failed = await api.show(plain)
        expired = await api.create("expired", hosting=True)
        emulator.set_state(expired, "SUCCEEDED", hosting="OVERDUE")
        expired_shown = await api.show(expired)
        emulator.vanish(hosted)
        status, doc = await api.call("GET", f"{tasks_path()}/{hosted}")
    assert plain_shown["state"] == "CREATE_FAIL"
    assert hosted_shown["hosting_result"]["status"] == "AVAILABLE"
    assert failed["error"]["code"] == "ALG.002"
    # Forced OVERDUE without ever being AVAILABLE: expired now, with a date saying so.
    assert expired_shown["hosting_result"]["status"] == "OVERDUE"
    overdue_at = expired_shown["output"]["hosting"]["result_json_overdue_at"]
    assert overdue_at // 1000 == epoch(expired_shown["hosting_result"]["overdue_date"])
    assert abs(overdue_at / 1000 - epoch(expired_shown["updated_at"])) <= 1
    assert (status, doc["error_code"]) == (404, "IVA.0005")
    assert emulator.vanished == [hosted]
    assert emulator.gone == {hosted: "vanished"}
    with pytest.raises(KeyError):
        emulator.set_state(hosted, "RUNNING")


# -- list ----------------------------------------------------------------------------------------


async def test_list_filters_orders_pages_and_counts() -> None:
    """state, created_since/until (epoch ms), order by name/created_at/updated_at both ways,
    offset (jobs skipped, from 0) and limit; count is every match before paging."""
    clock = Clock()
    emulator = emulated(clock)
    async with running(emulator) as api:
        ids = {}
        for name in ("c", "a", "d", "b"):
            ids[name] = await api.create(name)
            clock.advance(2.0)  # 2 s apart: distinct created_at seconds
        emulator.set_state(ids["d"], "RUNNING")
        clock.advance(1.5)
        emulator.set_state(ids["c"], "FAILED")
        created = {n: epoch((await api.show(i))["created_at"]) * 1000 for n, i in ids.items()}
        results = {
            "default": await api.names(),
            "asc": await api.names(order="created_at:ASC"),
            "name": await api.names(order="name:ASC"),
            "name desc": await api.names(order="name:DESC"),
            "updated": await api.names(order="updated_at:DESC"),
            "updated asc": await api.names(order="updated_at:ASC"),
            "pending": await api.names(state="PENDING", order="name:ASC"),
            "failed": await api.names(state="FAILED"),
            "since": await api.names(created_since=str(created["d"]), order="name:ASC"),
            "until": await api.names(created_until=str(created["a"]), order="name:ASC"),
            "window": await api.names(
                created_since=str(created["a"]), created_until=str(created["d"])
            ),
            "page 1": await api.names(order="name:ASC", offset="0", limit="3"),
            "page 2": await api.names(order="name:ASC", offset="3", limit="3"),
            "past": await api.names(offset="10"),
        }
        counts = {
            "all": (await api.listing(limit="1"))["count"],
            "pending": (await api.listing(state="PENDING", limit="1"))["count"],
            "since": (await api.listing(created_since=str(created["d"]), limit="1"))["count"],
        }
        bad_queries = [
            {"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"offset": "-1"},
            {"offset": "100001"}, {"order": "size:ASC"}, {"order": "name"},
            {"order": "name:UP"}, {"state": "DONE"}, {"state": "SCHEDULING"},
            {"created_since": "yesterday"}, {"created_until": "-5"}, {"created_since": "1.5"},
        ]  # fmt: skip
        bad = [await api.call("GET", tasks_path(), query=q) for q in bad_queries]
    assert results == {
        "default": ["b", "d", "a", "c"],  # created_at:DESC
        "asc": ["c", "a", "d", "b"],
        "name": ["a", "b", "c", "d"],
        "name desc": ["d", "c", "b", "a"],
        "updated": ["c", "d", "b", "a"],
        "updated asc": ["a", "b", "d", "c"],
        "pending": ["a", "b"],
        "failed": ["c"],
        "since": ["b", "d"],
        "until": ["a", "c"],
        "window": ["d", "a"],
        "page 1": ["a", "b", "c"],
        "page 2": ["d"],
        "past": [],
    }
    assert counts == {"all": 4, "pending": 2, "since": 2}
    for (status, doc), query in zip(bad, bad_queries, strict=True):
        assert (status, doc["error_code"]) == (400, "IVA.0004"), query


async def test_updated_order_follows_step_times_when_one_look_applies_many() -> None:
    """Steps due since the last call apply in time order across jobs: a job that started first
    but finished last is the last updated."""
    clock = Clock()
    emulator = emulated(clock, Lifecycle(pending=(10, 10), starting=(5, 5), running=(100, 100)))
    async with running(emulator) as api:
        slow = await api.create("slow")  # final at 115
        emulator.faults = Faults(jobs=FIXED)
        clock.advance(1)
        quick = await api.create("quick")  # final at 1 + 45
        clock.advance(1000)
        newest_first = [
            task["id"] for task in (await api.listing(order="updated_at:DESC"))["tasks"]
        ]
    assert newest_first == [slow, quick]


async def test_list_keeps_name_like_lookups_and_returns_at_most_1000_without_limit() -> None:
    """The pool's lookup after a lost create (name_like) still works with the new filters."""
    clock = Clock()
    emulator = emulated(clock, quota=0)
    async with running(emulator) as api:
        for i in range(3):
            await api.create(f"night-{i}")
        await api.create("xnight-1")
        like = await api.names(name_like="night-1", order="created_at:ASC")
        narrowed = await api.names(name_like="night-", state="PENDING", limit="2")
        # Unfiltered pages take a shortcut; a filter that matches everything must agree.
        pages = {
            (order, offset): (
                await api.names(order=order, offset=offset, limit="2"),
                await api.names(order=order, offset=offset, limit="2", service_version="1.0"),
            )
            for order in ("created_at:ASC", "created_at:DESC")
            for offset in ("0", "1", "3", "4")
        }
        for i in range(1000):
            emulator.set_state(await api.create(f"bulk-{i}"), "SUCCEEDED")
        unpaged = await api.listing()
    assert like == ["night-1", "xnight-1"]
    assert all(plain == filtered for plain, filtered in pages.values()), pages
    assert pages["created_at:DESC", "1"][0] == ["night-2", "night-1"]
    assert pages["created_at:ASC", "3"][0] == ["xnight-1"]
    assert narrowed == ["xnight-1", "night-2"]
    assert (unpaged["count"], len(unpaged["tasks"])) == (1004, 1000)


# -- stop, start ---------------------------------------------------------------------------------


async def test_stop_then_start_runs_the_job_again() -> None:
    """stop: STOPPING then STOPPED (202, no body); start: STARTING, RUNNING, an outcome again.
    Stopping a finished job is 400; starting a running one changes nothing; unknown id 404."""
    clock = Clock()
    emulator = emulated(clock)
    async with running(emulator) as api:
        task_id = await api.create("stoppable")
        clock.advance(20)  # RUNNING
        running_state = await api.state(task_id)
        stop = await api.action(task_id, "stop")
        stopping = await api.state(task_id)
        again = await api.action(task_id, "stop")
        clock.advance(3.1)
        stopped = await api.state(task_id)
        clock.advance(1000)
        still = await api.state(task_id)
        start = await api.action(task_id, "start")
        starting = await api.state(task_id)
        clock.advance(5.1)
        rerunning = await api.state(task_id)
        noop = await api.action(task_id, "start")
        clock.advance(30)
        final = await api.state(task_id)
        late_stop = await api.action(task_id, "stop")
        missing = await api.action("0" * 32, "stop")
    expected = ["RUNNING", "STOPPING", "STOPPED", "STOPPED"]
    assert [running_state, stopping, stopped, still] == expected
    assert stop == again == start == noop == (202, None)
    assert (starting, rerunning, final) == ("STARTING", "RUNNING", "SUCCEEDED")
    assert (late_stop[0], late_stop[1]["error_code"]) == (400, "IVA.0004")
    assert (missing[0], missing[1]["error_code"]) == (404, "IVA.0005")
    assert emulator.calls["stop", 202] == 2
    assert emulator.calls["start", 202] == 2


# -- delete and the quota ------------------------------------------------------------------------


async def test_delete_goes_deleting_then_gone_and_the_quota_counts_it_till_then() -> None:
    """The quota spans services; a DELETING job still counts; once gone, room is back; the
    counters record what each deleted job was when the delete reached it."""
    clock = Clock()
    emulator = emulated(clock, quota=3)
    async with running(emulator) as api:
        first = await api.create("q-1")
        await api.create("q-2", service="other-service")
        clock.advance(20)
        third = await api.create("q-3")
        status, over = await api.call("POST", tasks_path(), doc=body("q-4"))
        deleted = await api.call("DELETE", f"{tasks_path()}/{first}")
        deleting = await api.show(first)
        listed = await api.names(order="name:ASC")
        twice = await api.call("DELETE", f"{tasks_path()}/{first}")
        still_full, _ = await api.call("POST", tasks_path(), doc=body("q-4"))
        clock.advance(2.1)
        gone, gone_doc = await api.call("GET", f"{tasks_path()}/{first}")
        after = await api.names()
        room, _ = await api.call("POST", tasks_path(), doc=body("q-4"))
        await api.call("DELETE", f"{tasks_path()}/{third}")
    assert (status, over["error_code"]) == (400, "IVA.0012")
    assert "exceeds max quota" in over["error_msg"]
    assert deleted == twice == (202, None)
    assert deleting["state"] == "DELETING"
    assert listed == ["q-1", "q-3"]
    assert still_full == 400
    assert (gone, gone_doc["error_code"]) == (404, "IVA.0005")
    assert after == ["q-3"]
    assert room == 201
    assert emulator.deleted == {first: "RUNNING", third: "PENDING"}
    assert emulator.gone == {first: "deleted"}
    assert emulator.created_total == 4
    assert len(emulator.tasks) == 3
    assert len(emulator.jobs_by_source()) == 3
    assert len(emulator.jobs_by_source(gone=True)) == 4


async def test_clear_forgets_every_job_and_frees_the_quota() -> None:
    """Between benchmark measurements: nothing listed, nothing counted, lives no longer queued."""
    clock = Clock()
    emulator = emulated(clock, quota=2)
    async with running(emulator) as api:
        first = await api.create("before-1")
        await api.create("before-2")
        emulator.clear()
        clock.advance(100)
        emulator.refresh()
        empty = await api.listing()
        again = await api.create("after-1")
        await api.create("after-2")
    assert empty == {"count": 0, "tasks": []}
    assert first not in emulator.tasks
    assert emulator.created_total == 2
    assert list(emulator.jobs_by_source(gone=True)) == [
        "obs://in-bucket/after-1.mp4",
        "obs://in-bucket/after-2.mp4",
    ]
    assert emulator.state(again) == "PENDING"


# -- list against a plain reference --------------------------------------------------------------

NAMES = ("a1", "a2", "b1", "ab", "ba")
CREATES = st.lists(
    st.tuples(
        st.sampled_from(NAMES), st.sampled_from((SERVICE, SERVICE, "other")), st.floats(0.05, 6.0)
    ),
    min_size=3,
    max_size=14,
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(NAMES), st.just(SERVICE)),
        st.tuples(st.just("advance"), st.floats(0.05, 30.0)),
        st.tuples(st.just("set"), st.integers(0, 20), st.sampled_from(("RUNNING", "FAILED"))),
        st.tuples(st.just("delete"), st.integers(0, 20)),
        st.tuples(st.just("vanish"), st.integers(0, 20)),
        st.tuples(st.just("stop"), st.integers(0, 20)),
    ),
    max_size=24,
)
QUERIES = st.lists(
    st.fixed_dictionaries(
        {
            "order": st.sampled_from(
                [f"{f}:{d}" for f in ("name", "created_at", "updated_at") for d in ("ASC", "DESC")]
            ),
            "offset": st.integers(0, 5).map(str),
            "limit": st.integers(1, 4).map(str),
        },
        optional={
            "state": st.sampled_from(("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "DELETING")),
            "name_like": st.sampled_from(("a", "b1", "ab", "zz")),
            "since": st.integers(0, 12),  # a job's position: its created_at becomes the bound
            "until": st.integers(0, 12),
        },
    ),
    min_size=1,
    max_size=6,
)


def reference(emulator: Emulator, query: dict[str, str]) -> tuple[int, list[str]]:
    """What list should answer, computed the plain way from the jobs the emulator holds."""
    found = [task for task in emulator.tasks.values() if task["service_name"] == SERVICE]
    if "state" in query:
        found = [task for task in found if task["state"] == query["state"]]
    if "name_like" in query:
        found = [task for task in found if query["name_like"] in task["name"]]
    if "created_since" in query:
        found = [t for t in found if epoch(t["created_at"]) * 1000 >= int(query["created_since"])]
    if "created_until" in query:
        found = [t for t in found if epoch(t["created_at"]) * 1000 <= int(query["created_until"])]
    field, _, direction = query["order"].partition(":")
    descending = direction == "DESC"
    if descending:
        found.reverse()  # creation order, reversed: ties of a sort keep it
    if field == "name":
        found.sort(key=lambda task: task["name"], reverse=descending)
    elif field == "updated_at":  # the precise time (updated_at shows whole seconds)
        found.sort(key=lambda task: emulator._lives[task["id"]].updated, reverse=descending)
    offset, limit = int(query["offset"]), int(query["limit"])
    return len(found), [task["id"] for task in found[offset : offset + limit]]


@settings(max_examples=50, deadline=None)
@given(creates=CREATES, ops=OPS, queries=QUERIES)
def test_list_pages_agree_with_a_plain_reference(
    creates: list[tuple[str, str, float]], ops: list[tuple[Any, ...]], queries: list[dict[str, Any]]
) -> None:
    """Whatever the creates, state changes, deletes and vanishings, every filtered and ordered
    page (the indexed shortcuts included) is the plain filter-sort-slice of the jobs."""

    async def scenario() -> list[tuple[tuple[int, list[str]], tuple[int, list[str]]]]:
        clock = Clock()
        lifecycle = Lifecycle(pending=(1, 9), starting=(1, 9), running=(5, 30), deleting=3.0)
        emulator = Emulator(Faults(jobs=lifecycle, seed=5, quota=0), clock=clock)
        created: list[str] = []
        async with running(emulator) as api:
            for name, service, pause in creates:
                created.append(await api.create(name, service=service))
                clock.advance(pause)
            for op in ops:
                emulator.refresh()  # tasks is current only after a refresh (or any call)
                live = [task_id for task_id in created if task_id in emulator.tasks]
                if op[0] == "create":
                    created.append(await api.create(op[1], service=op[2]))
                elif op[0] == "advance":
                    clock.advance(op[1])
                elif live:
                    task_id = live[op[1] % len(live)]
                    if op[0] == "set":
                        emulator.set_state(task_id, op[2])
                    elif op[0] == "vanish":
                        emulator.vanish(task_id)
                    else:
                        method = "DELETE" if op[0] == "delete" else "POST"
                        path = f"{tasks_path()}/{task_id}" + ("/stop" if op[0] == "stop" else "")
                        await api.call(method, path)
                clock.advance(0.001)  # no two changes at one instant
            emulator.refresh()
            stamps = [epoch(t["created_at"]) * 1000 for t in emulator.tasks.values()] or [0]
            answers = []
            for drawn in queries:
                query = {k: v for k, v in drawn.items() if k not in ("since", "until")}
                for bound in ("since", "until"):
                    if bound in drawn:
                        query[f"created_{bound}"] = str(stamps[drawn[bound] % len(stamps)])
                paging = {k: query[k] for k in ("order", "offset", "limit")}
                window = {k: v for k, v in query.items() if k.startswith("created_")}
                # The drawn query, and its shapes that take the shortcuts: no filter, window only.
                for shape in (query, paging, {**paging, **window}):
                    listed = await api.listing(**shape)
                    got = (listed["count"], [task["id"] for task in listed["tasks"]])
                    answers.append((got, reference(emulator, shape)))
        return answers

    for got, expected in asyncio.run(scenario()):
        assert got == expected


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"time_scale": 0.0}, "time_scale"),
        ({"running": (5.0, 1.0)}, "running"),
        ({"pending": (-1.0, 1.0)}, "pending"),
        ({"deleting": -1.0}, "deleting"),
        ({"p_vanish": 1.5}, "p_vanish"),
        ({"p_failed": 0.6, "p_start_failed": 0.5}, "sum"),
    ],
)
def test_lifecycle_refuses_settings_no_job_could_live_by(
    settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        Lifecycle(**settings)
    assert Lifecycle(p_failed=0.5, p_start_failed=0.5).p_failed == 0.5  # a sum of 1 is fine
