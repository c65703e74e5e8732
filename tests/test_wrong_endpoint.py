"""prune and make-room pointed at an endpoint that holds none of the ledger's jobs (another
region or account): every delete answers "no such job", and none of those jobs may be
recorded PRUNED on that word, in one run or the next, or across make-room's rounds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from batchsubmit.emulator import Faults
from batchsubmit.prune import GONE_LIMIT, PRUNED, PruneConfig, _prune_for_room, prune
from batchsubmit.results import iter_results

from .helpers import LiveEmulator, job_ids
from .test_prune import (
    FAST_LIFE,
    HOUR,
    prune_config,
    record_jobs,
    settle,
    states,
    submit_videos,
)


@pytest.fixture(name="live")
def _live() -> Iterator[LiveEmulator]:
    server = LiveEmulator(Faults(jobs=FAST_LIFE))
    try:
        yield server
    finally:
        server.close()


def _elsewhere_config(results: Path, url: str, concurrency: int = 1) -> PruneConfig:
    config = replace(prune_config(results), base_url=url)
    return replace(config, pool=replace(config.pool, concurrency=concurrency))


def test_a_second_prune_at_the_same_wrong_endpoint_records_nothing(
    live: LiveEmulator, tmp_path: Path
) -> None:
    """The guard stops the first prune with intents kept; the second prune at the same wrong
    endpoint redoes them as a killed prune's and records every one PRUNED on its 404."""
    results = submit_videos(live, tmp_path, 8)
    ids = list(job_ids(results).values())
    settle(live, ids)
    record_jobs(live, results, final_at=time.time() - 48 * HOUR)
    elsewhere = LiveEmulator(Faults(jobs=FAST_LIFE))
    try:
        first = prune(
            _elsewhere_config(results, elsewhere.url), lambda _m: None, lambda _l, _m: None
        )
        assert first.fatal is not None
        assert first.pruned == 0
        second = prune(
            _elsewhere_config(results, elsewhere.url), lambda _m: None, lambda _l, _m: None
        )
    finally:
        elsewhere.close()
    assert not live.emulator.deleted
    assert PRUNED not in set(states(results).values()), (second.gone, second.fatal)


def test_make_room_at_a_wrong_endpoint_records_nothing(live: LiveEmulator, tmp_path: Path) -> None:
    """make-room needing 1 or 2 deletes prunes with limit=needed: each round's guard is new
    and holds fewer than GONE_LIMIT, so each 404 is recorded gone at its end, and since a gone
    job frees no room the loop goes on until every eligible job of the ledger is PRUNED."""
    results = submit_videos(live, tmp_path, 6)
    ids = list(job_ids(results).values())
    settle(live, ids)
    record_jobs(live, results, final_at=time.time() - 48 * HOUR)
    service_url = next(iter(_service_urls(results)))
    elsewhere = LiveEmulator(Faults(jobs=FAST_LIFE))
    try:
        config = _elsewhere_config(results, elsewhere.url)
        stats = anyio.run(
            lambda: _prune_for_room(config, lambda _m: None, lambda _l, _m: None, 1, service_url)
        )
    finally:
        elsewhere.close()
    assert not live.emulator.deleted
    # as a prune ending with fewer than GONE_LIMIT unconfirmed 404s: those are believed; the
    # next one stops make-room (it went on and recorded all six)
    recorded = [s for s in states(results).values() if s == PRUNED]
    assert len(recorded) < GONE_LIMIT, (stats.gone, stats.fatal)
    assert stats.fatal is not None
    assert "no such job" in stats.fatal


def _service_urls(results: Path) -> set[str]:
    return {r.service_url for r in iter_results(results, "csv") if r.service_url}
