"""The benchmark's server, in a process of its own so that its CPU is not the clients'.

    python -m tests.benchmarks.server --kind emulator|minimal [--latency SECONDS]

Prints its base URL as the first line of stdout, then answers commands read from stdin, one
per line, with one JSON line each:

- ``reset``: forget every job and count, and start counting CPU afresh;
- ``stats``: creates answered 201 and otherwise since the reset, the first and last create's
  arrival (monotonic seconds), and the CPU this process used since the reset.

End of stdin stops it.

``emulator`` is batchsubmit's own VAS emulator (signatures checked, bodies validated, no
quota). ``minimal`` answers every ``POST .../tasks`` with 201 ``[{"id": ...}]`` after reading
the body, checking nothing: the cheapest server aiohttp can be, for when the emulator's own CPU
would be the bottleneck. Both add ``--latency`` seconds before answering.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import time
import uuid
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from batchsubmit.emulator import Emulator, Faults

_TASKS = "/v2/{project_id}/services/{service_name}/tasks"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Counts:
    """Arrivals and answers of create calls since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.first: float | None = None
        self.last: float | None = None
        self.cpu = _cpu()

    def arrived(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now


class _Minimal:
    """201 ``[{"id": ...}]`` for every create, nothing checked."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.counts = _Counts()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(_TASKS, self._create)
        return app

    async def _create(self, request: web.Request) -> web.Response:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        self.counts.arrived(time.monotonic())
        await request.read()
        request_id = uuid.uuid4().hex
        self.counts.statuses[201] += 1
        return web.Response(
            status=201,
            body=b'[{"id":"' + request_id.encode() + b'"}]',
            headers={"X-Request-Id": request_id, "Content-Type": "application/json"},
        )

    def reset(self) -> None:
        self.counts.reset()

    def stats(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "created": counts.statuses[201],
            "errors": sum(n for status, n in counts.statuses.items() if status != 201),
            "statuses": {str(k): v for k, v in counts.statuses.items()},
            "first": counts.first,
            "last": counts.last,
            "cpu": _cpu() - counts.cpu,
        }


class _Emulated:
    """batchsubmit's emulator, with the counting done from its own observation lists."""

    def __init__(self, latency: float) -> None:
        self.emulator = Emulator(Faults(latency=latency, quota=0))
        self.cpu = _cpu()

    def app(self) -> web.Application:
        return self.emulator.app()

    def reset(self) -> None:
        emulator = self.emulator
        emulator.tasks.clear()
        emulator.calls.clear()
        emulator.create_times.clear()
        emulator.accepted_create_times.clear()
        # The name index has no public reset; without this the store (and the server's
        # garbage-collection work) would grow from one measurement to the next.
        scopes = getattr(emulator, "_scopes", None)
        if isinstance(scopes, dict):
            scopes.clear()
        self.cpu = _cpu()

    def stats(self) -> dict[str, Any]:
        emulator = self.emulator
        statuses = {status: n for (op, status), n in emulator.calls.items() if op == "create"}
        times = emulator.create_times
        return {
            "created": statuses.get(201, 0),
            "errors": sum(n for status, n in statuses.items() if status != 201)
            + sum(n for (op, _), n in emulator.calls.items() if op != "create"),
            "statuses": {str(k): v for k, v in statuses.items()},
            "first": times[0] if times else None,
            "last": times[-1] if times else None,
            "cpu": _cpu() - self.cpu,
        }


async def _serve(kind: str, latency: float) -> None:
    server: _Minimal | _Emulated = _Minimal(latency) if kind == "minimal" else _Emulated(latency)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    sys.stdout.write(f"http://127.0.0.1:{port}\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = line.decode().strip()
            if command == "reset":
                server.reset()
                gc.collect()
                reply: dict[str, Any] = {"ok": True}
            elif command == "stats":
                reply = server.stats()
            else:
                reply = {"error": f"unknown command {command!r}"}
            sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
            sys.stdout.flush()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("emulator", "minimal"), default="emulator")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    asyncio.run(_serve(args.kind, args.latency))
    os._exit(0)  # skip the interpreter's teardown: the parent only waits for the exit


if __name__ == "__main__":
    main()
