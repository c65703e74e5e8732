"""Benchmark of following jobs (issue 14): calls per job per pass, and the follow's peak memory.

    .venv/bin/python -m tests.benchmarks.follow                     # 100,000 followed jobs
    .venv/bin/python -m tests.benchmarks.follow --jobs 20000 --ledger 1000000

Not part of the test run. Three processes: an emulator serving ``--jobs`` jobs (created
straight into its store, not through 100,000 create calls), this orchestrator, and the
measured follow (``python -m tests.benchmarks.follow measure ...``), so that its peak RSS
(``ru_maxrss``) is the follow's own. The jobs move through their lives in real time (time scale
1, some minutes long), so the passes see a realistic share of changes; 20% fail.

Measured per pass: list and show calls, divided by the jobs not final at the pass's start.
A sweep (the first pass, and every ``SWEEP_EVERY``-th) lists the windows around every job's
creation: about ceil(N/100) calls. A "changes" pass lists only what changed since the last
pass (newest first): about ceil(changed/100) + 1 calls. ``--ledger`` adds rows of jobs
already recorded final (a ledger of many nights): they should cost memory only as 16 to 32
bytes a row of offset index, never a call.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "video-analyze"


def _serve(jobs: int, ledger: Path, seed: int) -> None:
    """Child: an emulator holding ``jobs`` jobs; writes their results rows to ``ledger``,
    prints its URL, and serves until stdin closes."""
    from batchsubmit.emulator import EMULATOR_PROJECT_ID, Emulator, Faults, Lifecycle

    life = Lifecycle(
        time_scale=1,
        pending=(5.0, 60.0),
        starting=(5.0, 30.0),
        running=(30.0, 400.0),
        p_failed=0.2,
        p_unknown_state=0.05,
        p_vanish=0.01,
    )
    emulator = Emulator(Faults(quota=0, seed=seed, jobs=life))

    async def main() -> None:
        async with emulator.serve() as url:
            service_url = f"{url}/v2/{EMULATOR_PROJECT_ID}/services/{SERVICE}/tasks"
            scope = (EMULATOR_PROJECT_ID, SERVICE)
            with ledger.open("w", encoding="utf-8", newline="") as out:
                out.write(
                    "source,name,job_id,status,http_status,error_code,error_msg,attempts,"
                    "request_id,submitted_at,service_url,reconciled\r\n"
                )
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
                for i in range(jobs):
                    doc = {
                        "name": f"clip_{i:07d}",
                        "service_version": "1.0",
                        "input": {"type": "obs", "data": [{"bucket": "in", "path": f"v/{i}.mp4"}]},
                        "output": {"obs": {"bucket": "out", "path": "r/"}},
                    }
                    task_id = emulator._store(doc, scope)
                    out.write(
                        f"obs://in/v/{i}.mp4,clip_{i:07d},{task_id},submitted,201,,,1,,"
                        f"{stamp},{service_url},False\r\n"
                    )
            print(url, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


def _add_final_rows(ledger: Path, rows: int, service_url: str) -> None:
    """Rows of jobs from earlier nights, already recorded final in the follow record."""
    from batchsubmit.record import JobRecord, RecordWriter, record_path

    stamp = "2026-11-01T02:00:00.000Z"
    with (
        ledger.open("a", encoding="utf-8", newline="") as out,
        RecordWriter(record_path(ledger), durable=False) as writer,
    ):
        for i in range(rows):
            job_id = uuid.uuid4().hex
            out.write(
                f"obs://old/v/{i}.mp4,old_{i:07d},{job_id},submitted,201,,,1,,"
                f"{stamp},{service_url},False\r\n"
            )
            writer.append(
                JobRecord(
                    job_id=job_id,
                    source=f"obs://old/v/{i}.mp4",
                    name=f"old_{i:07d}",
                    state="SUCCEEDED",
                    final=True,
                    created_at="2026-11-01T02:00:00Z",
                    updated_at="2026-11-01T03:00:00Z",
                    checked_at=stamp,
                    final_at=stamp,
                )
            )


def _measure(ledger: Path, passes: int, interval: float, concurrency: int) -> None:
    """Child: follow ``ledger`` for ``passes`` passes; print the figures as JSON."""
    import anyio

    from batchsubmit.auth import Credentials
    from batchsubmit.emulator import EMULATOR_AK, EMULATOR_SK
    from batchsubmit.follow import FollowConfig, follow, prepare_follow
    from batchsubmit.pool import PoolSettings
    from batchsubmit.progress import LineReporter, Log

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stream = io.StringIO()
    log = Log(stream)
    config = FollowConfig(
        results=ledger,
        format="csv",
        credentials=Credentials(EMULATOR_AK, EMULATOR_SK),
        pool=PoolSettings(concurrency=concurrency, rate=0.0),
        follow=True,
        interval=interval,
        durable=False,
    )
    started = time.monotonic()
    follower = prepare_follow(config, lambda m: log.line("warning", m))
    loaded = time.monotonic() - started
    followed = follower.stats.followed
    # Stop after ``passes`` passes: watch the pass lines and stop the pool after the last.
    lines: list[str] = []

    class Counting(LineReporter):
        def log(self, level: str, message: str) -> None:
            super().log(level, message)
            if message.startswith("pass "):
                lines.append(message)
                if len(lines) >= passes and follower.pool is not None:
                    follower.pool.stop("benchmark: enough passes")

    reporter = Counting(log, None, every=1e9)
    stats = anyio.run(functools.partial(follow, follower, reporter, watch_signals=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_pass = []
    last_list = last_show = 0
    last_final = 0
    for line in lines:
        found = re.match(r"pass (\d+) \((\w+)\): (\d+)/(\d+) final.*\((\d+) list, (\d+) show", line)
        assert found, line
        final, lists, shows = (int(found.group(i)) for i in (3, 5, 6))
        open_at_start = followed - last_final
        per_pass.append(
            {
                "pass": int(found.group(1)),
                "kind": found.group(2),
                "not_final_at_start": open_at_start,
                "list_calls": lists - last_list,
                "show_calls": shows - last_show,
                "calls_per_job": round((lists - last_list + shows - last_show) / open_at_start, 5)
                if open_at_start
                else None,
                "final_after": final,
            }
        )
        last_list, last_show, last_final = lists, shows, final
    print(
        orjson.dumps(
            {
                "ledger_rows": stats.videos,
                "followed": followed,
                "already_final": stats.already_final,
                "load_seconds": round(loaded, 2),
                "elapsed_seconds": round(stats.elapsed, 2),
                "baseline_rss_mb": round(baseline, 1),
                "peak_rss_mb": round(peak, 1),
                "passes": per_pass,
            }
        ).decode()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.follow")
    parser.add_argument("mode", nargs="?", default="run", choices=("run", "serve", "measure"))
    parser.add_argument("--jobs", type=int, default=100_000, help="followed jobs")
    parser.add_argument("--ledger", type=int, default=0, help="ledger rows in all (0: --jobs)")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--file", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        _serve(args.jobs, args.file, args.seed)
        return 0
    if args.mode == "measure":
        _measure(args.file, args.passes, args.interval, args.concurrency)
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="follow-bench-") as folder:
        ledger = Path(folder) / "ledger.csv"
        print(f"creating {args.jobs} jobs on the emulator...", file=sys.stderr)
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.follow", "serve", "--jobs", str(args.jobs),
             "--file", str(ledger), "--seed", str(args.seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        assert server.stdout is not None
        assert server.stdin is not None
        url = server.stdout.readline().strip()
        try:
            extra = max(0, args.ledger - args.jobs)
            if extra:
                print(f"adding {extra} ledger rows already final...", file=sys.stderr)
                from batchsubmit.emulator import EMULATOR_PROJECT_ID

                _add_final_rows(
                    ledger, extra, f"{url}/v2/{EMULATOR_PROJECT_ID}/services/{SERVICE}/tasks"
                )
            print(f"following: {args.passes} passes, {args.interval:g} s apart", file=sys.stderr)
            measured = subprocess.run(
                [sys.executable, "-m", "tests.benchmarks.follow", "measure", "--file", str(ledger),
                 "--passes", str(args.passes), "--interval", str(args.interval),
                 "--concurrency", str(args.concurrency)],
                capture_output=True, text=True, env=env, cwd=ROOT, check=False,
            )  # fmt: skip
        finally:
            server.stdin.close()
            server.wait(30)
        if measured.returncode != 0:
            print(measured.stderr, file=sys.stderr)
            return 2
        data: dict[str, Any] = orjson.loads(measured.stdout.splitlines()[-1])
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    print(
        f"\n{data['followed']} followed of {data['ledger_rows']} ledger rows: peak RSS "
        f"{data['peak_rss_mb']} MB (interpreter and imports {data['baseline_rss_mb']} MB), "
        f"record and ledger read in {data['load_seconds']} s"
    )
    for item in data["passes"]:
        print(
            f"pass {item['pass']} ({item['kind']}): {item['list_calls']} list + "
            f"{item['show_calls']} show calls for {item['not_final_at_start']} jobs not final: "
            f"{item['calls_per_job']} calls/job"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
