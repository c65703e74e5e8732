"""The run's own settings around the pool."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import pytest

from batchsubmit import runner
from batchsubmit.emulator import Emulator, Faults
from batchsubmit.results import Outcome, ResultsWriter
from batchsubmit.runner import GC_THRESHOLD, fewer_collections

from .helpers import config_for, run_submit, video_keys, write_manifest


def test_a_run_collects_garbage_less_often_and_restores_the_collector() -> None:
    """During a run the collector runs every GC_THRESHOLD allocations and skips what existed
    before it; afterwards the process's own settings are back."""
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with fewer_collections():
        assert gc.get_threshold()[0] == GC_THRESHOLD
        assert gc.get_freeze_count() > frozen
        assert gc.isenabled()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


@pytest.mark.anyio
async def test_submit_runs_its_pool_with_fewer_collections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row of a submit is written while the run's collector settings are in force."""
    seen: list[int] = []
    write = ResultsWriter.write

    def spy(self: ResultsWriter, outcome: Outcome) -> None:
        seen.append(gc.get_threshold()[0])
        write(self, outcome)

    monkeypatch.setattr(ResultsWriter, "write", spy)
    before = gc.get_threshold()
    manifest = write_manifest(tmp_path, video_keys(5))
    async with Emulator().serve() as url:
        stats, _log = await run_submit(config_for(manifest, url, tmp_path / "r.csv"))
    assert stats.submitted == 5
    assert seen == [GC_THRESHOLD] * 5
    assert gc.get_threshold() == before


@pytest.mark.anyio
async def test_rows_reach_the_file_while_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are buffered between the pool's batches, but reach the file within FLUSH_EVERY
    even when no new batch comes (a slow service, a short listing)."""
    monkeypatch.setattr(runner, "FLUSH_EVERY", 0.05)
    manifest = write_manifest(tmp_path, video_keys(3))
    results = tmp_path / "r.csv"
    lines_mid_run: list[int] = []

    async def look() -> None:
        await anyio.sleep(1.5)  # the probe was answered at ~1 s, the other two come at ~2 s
        lines_mid_run.append(len(results.read_bytes().splitlines()))

    async with Emulator(Faults(latency=1.0)).serve() as url, anyio.create_task_group() as group:
        group.start_soon(look)
        stats, _log = await run_submit(config_for(manifest, url, results))
    assert stats.submitted == 3
    assert lines_mid_run == [2]  # the header and the probe's row
    assert len(results.read_bytes().splitlines()) == 4
