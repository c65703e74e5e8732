"""batchsubmit's VAS client alone, against the bare loop's ``session.post``: what the client adds.

    python -m tests.benchmarks.client_loop URL --jobs N --client vas|post

Both build every body first (:mod:`workload`), then run 64 workers on uvloop (asyncio's loop if
it is not installed) that send them: ``vas`` through :class:`batchsubmit.client.VasClient` on
:func:`~batchsubmit.client.open_session` (signing, the answer's checks, masking, its Answer),
``post`` as the bare loop does (``session.post``, the same signer, ``orjson.loads`` of the
answer). ``instructions.py --parts`` counts both; the difference is the client's own work per
call, beyond aiohttp's. Prints nothing; exits 1 if a create was not answered with a job id.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
from yarl import URL

from batchsubmit.auth import Credentials
from batchsubmit.client import Endpoint, VasClient, open_session
from tests.benchmarks import workload
from tests.benchmarks.bare_client import make_signer


async def _run(base_url: str, jobs: int, client: str) -> bool:
    bodies = [workload.body(i) for i in range(jobs)]
    credentials = Credentials(workload.AK, workload.SK)
    send: Callable[[bytes], Awaitable[bool]]
    if client == "vas":
        session = open_session(64)
        endpoint = Endpoint(
            base_url=base_url, project_id=workload.PROJECT_ID, service_name=workload.SERVICE
        )
        vas = VasClient(session, endpoint, credentials)

        async def send_vas(body: bytes) -> bool:
            return bool((await vas.create(body)).job_id)

        send = send_vas
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        url = workload.tasks_url(base_url)
        fixed = {
            "Content-Type": "application/json",
            "Host": URL(base_url).raw_authority,
            "X-Project-Id": workload.PROJECT_ID,
        }
        signed = make_signer(credentials, fixed, URL(url).raw_path, True)
        post_url = URL(url, encoded=True)

        async def send_post(body: bytes) -> bool:
            async with session.post(post_url, data=body, headers=signed(body)) as response:
                payload = await response.read()
            return bool(orjson.loads(payload)[0]["id"])

        send = send_post
    numbers = iter(bodies)
    answered = True

    async def worker() -> None:
        nonlocal answered
        for body in numbers:
            answered = await send(body) and answered

    async with session:
        await asyncio.gather(*(worker() for _ in range(64)))
    return answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--client", choices=("vas", "post"), required=True)
    args = parser.parse_args()
    main_coroutine = _run(args.url.rstrip("/"), args.jobs, args.client)
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        answered = uvloop.run(main_coroutine)
    else:
        answered = asyncio.run(main_coroutine)
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
