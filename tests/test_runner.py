"""The run's own settings around the pool."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from batchsubmit.emulator import Emulator
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
