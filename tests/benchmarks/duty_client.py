"""The bare loop plus the least of what the tool must do for each job: the floor under issue 13.

    python -m tests.benchmarks.duty_client URL --jobs N [--concurrency 64]

The bare loop (:mod:`bare_client`) signs and POSTs, and does nothing else. A tool that may not
create a job twice nor lose one must also, for each job, whatever code does it:

- read its listing line twice: once in a pass that checks every line before the first call,
  once to build the job (here a line is checked only for its ``obs://bucket/`` prefix);
- journal the intent before the create goes out: one JSON line, and one ``fdatasync`` for each
  batch of ``concurrency`` intents (on the event loop, the cheapest way in CPU);
- write its results row: one CSV line, the file synced at the end.

Each is written here as plainly as it can be, with none of the rules the tool keeps
(validation, retries, lookups, the rate controller, progress, masking), so the CPU this client
costs over the bare loop is what any client doing those duties pays. ``run.py`` shows it
beside the bare loop and batchsubmit. Prints one JSON line like the bare loop's.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from yarl import URL

from batchsubmit.auth import Credentials, RequestSigner
from batchsubmit.results import COLUMNS, utc_now
from tests.benchmarks import workload
from tests.benchmarks.bare_client import loop_arguments

PREFIX = f"obs://{workload.IN_BUCKET}/"


def _video(line: str) -> bool:
    """A listing line that names a video: a path in the bucket, not a folder."""
    return line.startswith(PREFIX) and not line.endswith("/")


def _checked(listing: Path) -> int:
    """The pass before the first call: every line read and checked; how many videos."""
    with listing.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if _video(line.rstrip("\n")))


async def _run(base_url: str, listing: Path, work: Path, concurrency: int) -> dict[str, Any]:
    jobs = _checked(listing)
    url = workload.tasks_url(base_url)
    post_url = URL(url, encoded=True)
    fixed = {
        "Content-Type": "application/json",
        "Host": URL(base_url).raw_authority,
        "X-Project-Id": workload.PROJECT_ID,
    }
    signer = RequestSigner(Credentials(workload.AK, workload.SK), fixed)
    path = URL(url).raw_path
    created = 0
    errors: dict[str, int] = {}
    journal = (work / "journal").open("ab")
    results = (work / "results.csv").open("w", encoding="utf-8", buffering=1 << 16)
    results.write(",".join(COLUMNS) + "\n")
    lines = (line.rstrip("\n") for line in listing.open(encoding="utf-8"))
    numbered = enumerate(s for s in lines if _video(s))
    ready: list[tuple[str, str, bytes]] = []

    def next_job() -> tuple[str, str, bytes] | None:
        """The next job (source, name, body), its intent journalled and synced (a batch of
        ``concurrency`` at a time, built before it is journalled, as a tool must)."""
        if not ready:
            batch = []
            for _, (i, source) in zip(range(concurrency), numbered, strict=False):
                fields = workload.body_fields(i)
                batch.append((source, fields["name"], orjson.dumps(fields)))
            if not batch:
                return None
            at = utc_now()
            journal.writelines(
                orjson.dumps({"source": s, "name": n, "service_url": url, "at": at}) + b"\n"
                for s, n, _ in batch
            )
            journal.flush()
            os.fdatasync(journal.fileno())
            ready.extend(reversed(batch))
        return ready.pop()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal created
            while (job := next_job()) is not None:
                source, name, body = job
                headers = signer.headers("POST", path, None, body)
                async with session.post(post_url, data=body, headers=headers) as response:
                    payload = await response.read()
                    status = response.status
                    request_id = response.headers.get("X-Request-Id", "")
                job_id = orjson.loads(payload)[0]["id"] if status == 201 else ""
                fields = (
                    source,
                    name,
                    job_id,
                    "submitted",
                    str(status),
                    "",
                    "",
                    "1",
                    request_id,
                    utc_now(),
                    url,
                    "False",
                    "2",
                )
                results.write(",".join(fields) + "\n")
                if job_id:
                    created += 1
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    results.flush()
    os.fsync(results.fileno())
    results.close()
    journal.close()
    return {"created": created, "errors": errors, "elapsed": elapsed, "jobs": jobs}


def main() -> None:
    parser = loop_arguments(__doc__)
    parser.add_argument(
        "--listing",
        type=Path,
        help="the workload's listing of --jobs videos (run.py passes batchsubmit's); "
        "by default one is written first, and its CPU counted",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duty-client-") as work:
        listing = args.listing
        if listing is None:
            listing = Path(work) / "listing.txt"
            workload.write_listing(listing, args.jobs)
        report = asyncio.run(_run(args.url.rstrip("/"), listing, Path(work), args.concurrency))
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


if __name__ == "__main__":
    main()
