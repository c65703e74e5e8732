"""Throttling benchmark (the adaptive-throttling issue): what 503s and a low gateway limit cost.

    .venv/bin/python -m tests.benchmarks.throttling [--jobs 2000]

1. 2,000 videos at --rate 200 and --concurrency 16, with 30% of calls answered 503 at random
   and without: the ratio of wall times (target at most 2.5; 1.43 is the floor, since every
   retry spends rate budget too).
2. 240 videos at --rate 100 against a gateway limited to 30 calls/s, with and without the
   limit stated in the 429 message: throttled calls (target: fewer than half the videos).
Both sides of each comparison run one after the other in this process, against the
in-process emulator, with the production retry policy (backoff from 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from batchsubmit.emulator import Emulator, Faults
from batchsubmit.retry import DEFAULT_RETRY

from ..helpers import config_for, run_submit, video_keys, write_manifest


async def one(
    jobs: int, faults: Faults, rate: float, concurrency: int
) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        manifest = write_manifest(directory, video_keys(jobs))
        emulator = Emulator(faults)
        async with emulator.serve() as url:
            config = config_for(
                manifest,
                url,
                directory / "r.csv",
                rate=rate,
                concurrency=concurrency,
                retry=DEFAULT_RETRY,
                settle=2.0,
            )
            started = time.perf_counter()
            stats, _log = await run_submit(config)
            elapsed = time.perf_counter() - started
        assert stats.submitted == jobs, stats
        dupes = sum(1 for ids in emulator.jobs_by_source().values() if len(ids) > 1)
        assert dupes == 0
        return elapsed, {
            "throttled": emulator.throttled(),
            "retries": stats.retries,
            "unavailable": stats.unavailable,
            "lowest_rate": stats.lowest_rate or 0.0,
            "learned_rate": stats.learned_rate or 0.0,
        }


async def main(jobs: int, repeats: int) -> None:
    ratios = []
    print(f"{jobs} videos, --rate 200 --concurrency 16, {repeats} runs each, side by side")
    for seed in range(1, repeats + 1):
        clean, _ = await one(jobs, Faults(seed=seed), 200, 16)
        flaky, info = await one(jobs, Faults(p503=0.3, seed=seed), 200, 16)
        ratios.append(flaky / clean)
        print(
            f"  run {seed}: no 503s {clean:6.2f} s ({jobs / clean:6.1f} jobs/s); 30% 503s "
            f"{flaky:6.2f} s ({jobs / flaky:6.1f} jobs/s, {info['unavailable']:.0f} 503s, "
            f"lowest pool rate {info['lowest_rate']:.0f}/s); ratio {flaky / clean:.2f}"
        )
    ratio = statistics.median(ratios)
    print(
        f"  median ratio {ratio:.2f} (target <= 2.5; floor 1.43): "
        f"{'PASS' if ratio <= 2.5 else 'MISS'}"
    )
    for hint in (True, False):
        elapsed, info = await one(240, Faults(rate_limit=30, rate_limit_hint=hint), 100, 8)
        print(
            f"240 videos, --rate 100, gateway 30/s, limit {'stated' if hint else 'unstated'}: "
            f"{info['throttled']:.0f} throttled ({'PASS' if info['throttled'] < 120 else 'MISS'}"
            f" < 120), {elapsed:.1f} s ({240 / elapsed:.1f} jobs/s), "
            f"ended at {info['learned_rate']:.1f}/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.jobs, arguments.repeats))
