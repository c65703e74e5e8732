"""The pool's own CPU per job, in one process, with no HTTP and no server.

    python -m tests.benchmarks.pool_overhead [--jobs 20000] [--repeats 5] [--no-journal]
                                             [--latency SECONDS]

For tuning ``batchsubmit.pool``: the network benchmark's figures move by ±30% on a shared
machine, this one much less, because nothing but the client runs. Over a generated listing it
times, in CPU-seconds per job (``time.process_time``, the minimum and median of ``--repeats``):

- ``count_work``: the pass over the sources ``submit`` makes before the first call;
- ``plan``: the sources to job specs (listing, filter, name, body), as the pool consumes them;
- ``pool``: ``Pool.run`` over those specs with a fake API whose create yields to the event loop
  once (or sleeps ``--latency``) and answers 201, with the real results writer and journal
  (durable, as ``submit`` runs them);
- ``floor``: the same specs through 64 plain asyncio tasks calling the same fake API and
  writing the same rows, no journal: what a pool needs at the least.

``pool - floor`` is what the pool's machinery costs per job. It uses the pool's test seam (an
``Api``, a ``Sink``, a reporter), so a change to those interfaces may need a change here.
Prints a table, or one JSON line with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson

from batchsubmit.answers import Answer, Kind
from batchsubmit.jobs import JobSpec
from batchsubmit.journal import Journal
from batchsubmit.manifest import load_manifest
from batchsubmit.pool import Pool, PoolSettings
from batchsubmit.results import Outcome, ResultsWriter, utc_now
from batchsubmit.runner import ExpandSummary, count_work, journal_path, plan
from batchsubmit.sources import ExpandStats
from tests.benchmarks import workload

_CREATED = Answer(kind=Kind.CREATED, status=201, job_id="a" * 32, request_id="b" * 32)


class FakeApi:
    """Answers every create 201 after one trip through the event loop, or ``latency`` seconds."""

    secrets: tuple[str, ...] = ()

    def __init__(self, latency: float = 0.0) -> None:
        self._latency = latency

    async def create(self, body: bytes) -> Answer:
        await asyncio.sleep(self._latency)
        return _CREATED

    async def list_page(self, name_like: str, offset: int, limit: int = 100) -> Answer:
        raise AssertionError("no lookups in this benchmark")


class NullReporter:
    def outcome(self, outcome: Outcome) -> None:
        pass

    def log(self, level: str, message: str) -> None:
        pass


def _ignore(_message: str) -> None:
    pass


def _specs(manifest: Any) -> Iterator[JobSpec]:
    return plan(manifest, None, (), ExpandSummary(ExpandStats()), _ignore)


def _timed(action: Callable[[], object]) -> float:
    started = time.process_time()
    action()
    return time.process_time() - started


def _run(main: Coroutine[Any, Any, int]) -> tuple[float, int]:
    """CPU-seconds of an event loop running ``main``, and what it returned."""
    started = time.process_time()
    result = asyncio.run(main)
    return time.process_time() - started, result


async def _pool(
    manifest: Any, root: Path, concurrency: int, journalled: bool, latency: float
) -> int:
    results = root / f"pool-{time.monotonic_ns()}.csv"
    writer = ResultsWriter(results, "csv", _ignore)
    journal = (
        Journal(
            journal_path(results),
            durable=True,
            inherited={},
            before_checkpoint=writer.sync,
        )
        if journalled
        else None
    )
    try:
        pool = Pool(
            FakeApi(latency),
            writer,
            NullReporter(),
            PoolSettings(concurrency=concurrency, rate=0),
            service_url=workload.tasks_url("http://127.0.0.1:9"),
            credentials=None,
            journal=journal,
        )
        await pool.run(_specs(manifest))
        return pool.stats.submitted
    finally:
        writer.sync()
        if journal is not None:
            journal.close()
        writer.close()


async def _floor(manifest: Any, root: Path, concurrency: int, latency: float) -> int:
    results = root / f"floor-{time.monotonic_ns()}.csv"
    writer = ResultsWriter(results, "csv", _ignore)
    api = FakeApi(latency)
    url = workload.tasks_url("http://127.0.0.1:9")
    specs = _specs(manifest)
    done = 0

    async def worker() -> None:
        nonlocal done
        for spec in specs:
            answer = await api.create(spec.body)
            outcome = Outcome(
                source=spec.source,
                name=spec.name,
                job_id=answer.job_id,
                status="submitted",
                http_status=answer.status,
                error_code="",
                error_msg="",
                attempts=1,
                request_id=answer.request_id,
                submitted_at=utc_now(),
                service_url=url,
            )
            writer.write(outcome)
            done += 1

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        writer.close()
    return done


def measure(
    jobs: int, repeats: int, concurrency: int, journalled: bool, latency: float = 0.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="batchsubmit-pool-") as directory:
        root = Path(directory)
        listing = root / "listing.txt"
        workload.write_listing(listing, jobs)
        workload.write_manifest(root / "manifest.toml", listing)
        manifest = load_manifest(root / "manifest.toml")
        seconds: dict[str, list[float]] = {"count_work": [], "plan": [], "pool": [], "floor": []}
        for _ in range(repeats):
            seconds["count_work"].append(_timed(lambda: count_work(manifest, None, (), _ignore)))
            seconds["plan"].append(_timed(lambda: sum(1 for _ in _specs(manifest))))
            pool, done = _run(_pool(manifest, root, concurrency, journalled, latency))
            floor, floor_done = _run(_floor(manifest, root, concurrency, latency))
            if (done, floor_done) != (jobs, jobs):
                raise SystemExit(f"expected {jobs} jobs, got {done} (pool), {floor_done} (floor)")
            seconds["pool"].append(pool)
            seconds["floor"].append(floor)
            for path in root.glob("*.csv*"):
                path.unlink()
    per_job = {
        name: {
            "min_us": min(values) / jobs * 1e6,
            "median_us": statistics.median(values) / jobs * 1e6,
        }
        for name, values in seconds.items()
    }
    return {
        "jobs": jobs,
        "repeats": repeats,
        "journal": journalled,
        "latency": latency,
        "per_job": per_job,
    }


def render(report: dict[str, Any]) -> str:
    per_job = report["per_job"]
    lines = [
        f"Pool overhead, in process, fake API ({report['latency'] * 1000:g} ms): "
        f"{report['jobs']} jobs, "
        f"{'durable journal' if report['journal'] else 'no journal'}, "
        f"CPU microseconds per job (min / median of {report['repeats']})",
    ]
    labels = {
        "count_work": "count_work (pass before the first call)",
        "plan": "plan (listing to specs)",
        "pool": "Pool.run over plan (specs included)",
        "floor": "floor: 64 asyncio tasks over plan",
    }
    for name, label in labels.items():
        lines.append(
            f"  {label:<44} {per_job[name]['min_us']:7.1f} / {per_job[name]['median_us']:7.1f}"
        )
    machinery = per_job["pool"]["min_us"] - per_job["floor"]["min_us"]
    lines.append(f"  {'pool machinery (pool - floor, min)':<44} {machinery:7.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-journal", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0, help="fake API latency, seconds")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()
    report = measure(args.jobs, args.repeats, args.concurrency, not args.no_journal, args.latency)
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        print(render(report))


if __name__ == "__main__":
    main()
