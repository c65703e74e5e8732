"""End to end against the in-process emulator: the core issue's done-when scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchsubmit.emulator import Emulator, Faults, max_in_window
from batchsubmit.results import Format

from .helpers import (
    BUCKET,
    REFUSED_BODY,
    assert_exactly_once,
    config_for,
    run_submit,
    video_keys,
    write_manifest,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_503s_end_with_every_video_created_once(tmp_path: Path, fmt: Format) -> None:
    """30% of creates answered 503: every video is still created exactly once, rows match."""
    keys = video_keys(300)
    manifest = write_manifest(tmp_path, keys)
    results = tmp_path / f"results.{fmt}"
    emulator = Emulator(Faults(p503=0.3, seed=1))
    async with emulator.serve() as url:
        stats, _log = await run_submit(config_for(manifest, url, results, fmt))
    assert (stats.submitted, stats.failed, stats.unknown) == (300, 0, 0)
    assert stats.retries > 50
    assert_exactly_once(emulator, results, (f"obs://{BUCKET}/{k}" for k in keys), fmt)


async def test_listing_noise_is_not_submitted(tmp_path: Path) -> None:
    """Folders and the .txt object in an obsutil listing never become jobs."""
    manifest = write_manifest(tmp_path, video_keys(8))
    emulator = Emulator()
    async with emulator.serve() as url:
        await run_submit(config_for(manifest, url, tmp_path / "r.csv"))
    paths = {source for source in emulator.jobs_by_source()}
    assert len(paths) == 8
    assert not any(p.endswith((".txt", "/")) for p in paths)


async def test_rate_limit_is_never_exceeded_and_nearly_reached(tmp_path: Path) -> None:
    """--rate 40 against a 40/s gateway: no 429, no second over 40, at least 32 jobs/s."""
    keys = video_keys(200)
    manifest = write_manifest(tmp_path, keys)
    emulator = Emulator(Faults(rate_limit=40))
    async with emulator.serve() as url:
        stats, _log = await run_submit(config_for(manifest, url, tmp_path / "r.csv", rate=40))
    assert emulator.throttled() == 0
    assert max_in_window(emulator.create_times, 1.0) <= 40
    assert stats.submitted == 200
    assert stats.rate >= 32, f"only {stats.rate:.1f} jobs/s"


async def test_wrong_sk_stops_after_one_call(tmp_path: Path) -> None:
    """A wrong SK: the first call's 401 stops the run; not one call per video."""
    manifest = write_manifest(tmp_path, video_keys(100))
    emulator = Emulator()
    async with emulator.serve() as url:
        config = config_for(manifest, url, tmp_path / "r.csv")
        from dataclasses import replace

        from batchsubmit.auth import Credentials
        from batchsubmit.emulator import EMULATOR_AK

        bad = replace(config, credentials=Credentials(EMULATOR_AK, "wrong-secret"))
        stats, log = await run_submit(bad)
    assert stats.fatal is not None
    assert "HUAWEICLOUD_SDK_SK" in stats.fatal
    assert sum(emulator.calls.values()) <= 3
    assert not emulator.tasks
    assert "wrong-secret" not in log
    assert "wrong-secret" not in (tmp_path / "r.csv").read_text()


async def test_failed_job_does_not_stop_the_others(tmp_path: Path) -> None:
    """A 400 (invalid parameter) fails its job only and the run goes on, with the stop for
    "the first jobs all fail alike" turned off (it has tests of its own in test_pool)."""
    keys = video_keys(20)
    manifest = write_manifest(tmp_path, keys, extra=REFUSED_BODY)
    emulator = Emulator()
    async with emulator.serve() as url:
        config = config_for(manifest, url, tmp_path / "r.csv", same_failures=0)
        stats, _log = await run_submit(config)
    assert stats.failed == 20
    assert stats.fatal is None
    assert "IVA.0004" in stats.first_errors
