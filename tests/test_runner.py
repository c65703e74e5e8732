"""The run's own settings around the pool."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batchsubmit import runner
from batchsubmit.emulator import Emulator, Faults

from .helpers import config_for, run_submit, video_keys, write_manifest


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
