"""The ceiling for a Python asyncio client: sign and POST creates, nothing else.

    python -m tests.benchmarks.bare_client URL --jobs N [--concurrency 64] [--signer fast|sign]

Plain asyncio and one aiohttp session; ``--concurrency`` worker tasks take the next job
number, build its body (:mod:`workload`), sign it and POST it, then read and parse the answer.
No results file, no journal, no retries, no rate limit. It signs the way batchsubmit's client
does, so that the comparison is about everything else: with ``batchsubmit.auth.RequestSigner``
(the fixed parts of the canonical request built once) when batchsubmit has it, else with
:func:`batchsubmit.auth.sign` (``--signer sign`` forces that). Prints one JSON line: jobs
created, errors, the seconds from the first send to the last answer, and the signer used.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from yarl import URL

from batchsubmit import auth
from batchsubmit.auth import Credentials, sdk_date, sign
from tests.benchmarks import workload

Signer = Callable[[bytes], dict[str, str]]


def make_signer(credentials: Credentials, fixed: dict[str, str], path: str, fast: bool) -> Signer:
    """Headers for a POST of ``body`` to ``path``: batchsubmit's own signer if it has one."""
    signer_class = getattr(auth, "RequestSigner", None) if fast else None
    if signer_class is not None:
        signer = signer_class(credentials, fixed)

        def fast_headers(body: bytes) -> dict[str, str]:
            headers: dict[str, str] = signer.headers("POST", path, None, body)
            return headers

        return fast_headers

    def headers(body: bytes) -> dict[str, str]:
        found = dict(fixed)
        found["X-Sdk-Date"] = sdk_date()
        found["Authorization"] = sign(credentials, "POST", path, None, found, body)
        return found

    return headers


async def _run(base_url: str, jobs: int, concurrency: int, fast: bool) -> dict[str, Any]:
    credentials = Credentials(workload.AK, workload.SK)
    url = workload.tasks_url(base_url)
    path = URL(url).raw_path
    post_url = URL(url, encoded=True)
    fixed = {
        "Content-Type": "application/json",
        "Host": URL(base_url).raw_authority,
        "X-Project-Id": workload.PROJECT_ID,
    }
    signed = make_signer(credentials, fixed, path, fast)
    signer = "RequestSigner" if fast and hasattr(auth, "RequestSigner") else "sign"
    created = 0
    errors: dict[str, int] = {}
    numbers = iter(range(jobs))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal created
            for i in numbers:
                body = workload.body(i)
                async with session.post(post_url, data=body, headers=signed(body)) as response:
                    payload = await response.read()
                    status = response.status
                if status == 201 and orjson.loads(payload)[0]["id"]:
                    created += 1
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"created": created, "errors": errors, "elapsed": elapsed, "signer": signer}


def loop_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every loop client takes (this one, the duty floor's)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    return parser


def main() -> None:
    parser = loop_arguments(__doc__)
    parser.add_argument(
        "--signer",
        choices=("fast", "sign"),
        default="fast",
        help="fast: batchsubmit.auth.RequestSigner if present (default); sign: auth.sign",
    )
    args = parser.parse_args()
    report = asyncio.run(
        _run(args.url.rstrip("/"), args.jobs, args.concurrency, args.signer == "fast")
    )
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


if __name__ == "__main__":
    main()
