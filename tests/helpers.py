"""Shared test helpers: listings in obsutil format, manifests, and in-process runs."""

from __future__ import annotations

import asyncio
import atexit
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp import web

from batchsubmit.auth import Credentials
from batchsubmit.client import Endpoint, VasClient
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Emulator, Faults
from batchsubmit.manifest import load_manifest
from batchsubmit.pool import PoolSettings, RunStats
from batchsubmit.progress import LineReporter, Log
from batchsubmit.results import Format, iter_rows
from batchsubmit.retry import RetryPolicy
from batchsubmit.runner import RunConfig, prepare, submit

FAST_RETRY = RetryPolicy(base=0.01, cap=0.05, throttle_base=0.01, throttle_cap=0.05)
BUCKET = "in-bucket"


def video_keys(count: int, start: int = 0) -> list[str]:
    """Keys with the awkward parts real buckets have: spaces, upper-case extensions, unicode."""
    keys = []
    for i in range(start, start + count):
        kind = i % 4
        if kind == 0:
            keys.append(f"cams/gate {i % 7}/clip {i:05d}.mp4")
        elif kind == 1:
            keys.append(f"cams/lobby/CLIP_{i:05d}.MP4")
        elif kind == 2:
            keys.append(f"cams/entrée/vidéo-{i:05d} (copy).mov")
        else:
            keys.append(f"cams/yard/{i:05d}#take,1.mkv")
    return keys


def sources(keys: Iterable[str], bucket: str = BUCKET) -> list[str]:
    """The ``obs://`` paths of keys."""
    return [f"obs://{bucket}/{key}" for key in keys]


def obsutil_listing(keys: Iterable[str], *, bucket: str = BUCKET, noise: bool = True) -> str:
    """What `obsutil ls -s` prints: header, folders, objects (plus a .txt), summary."""
    keys = list(keys)
    lines = ["Start at 2026-11-27 02:00:01.123 +0800 CST", "Folder list:"]
    if noise:
        lines += [f"obs://{bucket}/cams/", f"obs://{bucket}/cams/lobby/"]
    lines += ["", "Object list:"]
    lines += [f"obs://{bucket}/{key}" for key in keys]
    if noise:
        lines.append(f"obs://{bucket}/cams/readme.txt")
    lines += [
        "",
        "Total size of prefix [cams/] is: 1.2GB",
        "Folder number is: 2",
        f"File number is: {len(keys) + 1}",
        "",
    ]
    return "\n".join(lines)


# A [job.body] every create is refused for (400 IVA.0004) that the manifest cannot know is
# wrong: VAS wants 1 to 10 headers on a webhook output, and this one has none.
REFUSED_BODY = '[job.body.output.webhook]\nurl = "https://hook.example/"'


def write_manifest(
    directory: Path, keys: Iterable[str], *, name: str = "nightly", extra: str = ""
) -> Path:
    (directory / "listing.txt").write_text(obsutil_listing(keys), encoding="utf-8")
    manifest = directory / f"{name}.toml"
    manifest.write_text(
        f"""
[service]
name = "video-analyze"
version = "1.0"
region = "cn-north-4"

[job]
output = "obs://out-bucket/results/"
{extra}

[[source]]
listing = "listing.txt"
""",
        encoding="utf-8",
    )
    return manifest


def config_for(
    manifest: Path, url: str, results: Path, fmt: Format = "csv", **settings: Any
) -> RunConfig:
    defaults: dict[str, Any] = {
        "concurrency": 16,
        "rate": 0.0,
        "retry": FAST_RETRY,
        "settle": 0.0,
        "lookup_spacing": 0.0,
        "grace": 5.0,
    }
    defaults.update(settings)
    return RunConfig(
        manifest=load_manifest(manifest),
        endpoint=Endpoint(
            base_url=url, project_id=EMULATOR_PROJECT_ID, service_name="video-analyze"
        ),
        credentials=Credentials(EMULATOR_AK, EMULATOR_SK),
        results=results,
        format=fmt,
        pool=PoolSettings(**defaults),
        durable=False,
    )


async def run_submit(config: RunConfig) -> tuple[RunStats, str]:
    """One submit run in this event loop; returns its stats and its log text."""
    stream = io.StringIO()
    log = Log(stream)
    warn = lambda message: log.line("warning", message)  # noqa: E731
    prepared = prepare(config, warn)
    try:
        stats, _summary = await submit(config, prepared, LineReporter(log, None), warn)
    finally:
        prepared.lock.release()
    return stats, stream.getvalue()


def rows(results: Path, fmt: Format = "csv") -> list[tuple[str, str, str, str]]:
    return list(iter_rows(results, fmt))


def job_ids(results: Path, fmt: Format = "csv") -> dict[str, str]:
    """source -> job id of its submitted row, from the results file (full rows)."""
    import csv

    import orjson

    found: dict[str, str] = {}
    if fmt == "csv":
        with results.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["status"] == "submitted":
                    assert row["source"] not in found, f"two submitted rows for {row['source']}"
                    found[row["source"]] = row["job_id"]
    else:
        for line in results.read_bytes().splitlines():
            data = orjson.loads(line)
            if data["status"] == "submitted":
                assert data["source"] not in found, f"two submitted rows for {data['source']}"
                found[data["source"]] = data["job_id"]
    return found


def assert_exactly_once(
    emulator: Emulator, results: Path, sources: Iterable[str], fmt: Format = "csv"
) -> None:
    """Every source has exactly one job on the server and its row carries that job's id."""
    on_server = emulator.jobs_by_source()
    expected = set(sources)
    duplicates = {s: ids for s, ids in on_server.items() if len(ids) != 1}
    assert not duplicates, f"sources with more than one job: {list(duplicates.items())[:3]}"
    assert set(on_server) == expected, (
        f"missing on server: {sorted(expected - set(on_server))[:3]}, "
        f"unexpected: {sorted(set(on_server) - expected)[:3]}"
    )
    recorded = job_ids(results, fmt)
    assert recorded == {s: ids[0] for s, ids in on_server.items()}


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve an aiohttp app on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_raw(answer: Callable[[str, bytes], bytes]) -> AsyncIterator[str]:
    """A server on a free port of 127.0.0.1 that writes ``answer(head, body)`` (any bytes:
    a malformed answer aiohttp's server would never send) for each request, then closes the
    connection; yields its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = header_of(head, "Content-Length")
            body = await reader.readexactly(int(length)) if length else b""
            writer.write(answer(head, body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def header_of(head: str, name: str) -> str:
    """The value of header ``name`` in a request's head ("" without it)."""
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


class ServerThread:
    """A server (an async context manager yielding its URL) run in a background thread, for
    tests that run the CLI as a process; ``close`` stops it."""

    def __init__(self, serve: Callable[[], AbstractAsyncContextManager[str]]) -> None:
        self.url = ""
        self._serve = serve
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the test server did not start")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._serve() as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class LiveEmulator(ServerThread):
    """The emulator serving from a background thread."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.emulator = Emulator(faults or Faults())
        super().__init__(self.emulator.serve)

    def settled_tasks(self, quiet: float = 0.2) -> int:
        """The number of jobs once no create is still being answered: a killed client's calls
        that reached the emulator complete after it died."""
        count = -1
        while count != len(self.emulator.tasks):
            count = len(self.emulator.tasks)
            time.sleep(quiet)
        return count


_BASE_ENV = dict(os.environ)  # before any test's monkeypatch: the fork server's environment
_ZYGOTE_CLIENT = Path(__file__).with_name("zygote_client.py")
_zygote: tuple[subprocess.Popen[bytes], str] | None = None


def _stop_zygote() -> None:
    if _zygote is not None:
        _zygote[0].kill()
        _zygote[0].wait()
        shutil.rmtree(os.path.dirname(_zygote[1]), ignore_errors=True)


def zygote_socket() -> str:
    """This test process's fork server (tests/zygote.py), started on first use: the socket
    its clients connect to. "" when it does not come up (the clients then run the real
    ``python -m batchsubmit``)."""
    global _zygote
    if _zygote is None:
        folder = tempfile.mkdtemp(prefix="zygote-")
        path = os.path.join(folder, "s")
        env = {k: v for k, v in _BASE_ENV.items() if not k.startswith("HUAWEICLOUD_SDK_")}
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote", path],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            # none of the test's pipes: an orphan (it ends within a second) must not hold them
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        _zygote = server, path
        atexit.register(_stop_zygote)
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    server, path = _zygote
    return path if server.poll() is None and os.path.exists(path) else ""


def cli_env() -> dict[str, str]:
    """The environment for a `batchsubmit` process talking to the emulator (its commands
    forked from the fork server, tests/zygote.py, where :func:`cli` starts them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    env.update(
        BATCHSUBMIT_TEST_ZYGOTE=zygote_socket(),
        HUAWEICLOUD_SDK_AK=EMULATOR_AK,
        HUAWEICLOUD_SDK_SK=EMULATOR_SK,
        HUAWEICLOUD_SDK_PROJECT_ID=EMULATOR_PROJECT_ID,
        PYTHONUNBUFFERED="1",
    )
    return env


# Unpaced, and a short --settle: a killed run's last creates wait it out (and get --lookups
# lookups) before the next run may create them, 15 s at the defaults.
QUICK = ("--rate", "0", "--settle", "0.2")


def submit_args(manifest: Path, url: str, results: Path, *extra: str) -> list[str]:
    """``batchsubmit submit`` arguments for a run against an emulator at ``url``."""
    return ["submit", str(manifest), "--endpoint", url, "--results", str(results), *extra]


def cli(*args: str) -> list[str]:
    """``batchsubmit ARGS`` as a process: forked from the fork server when the environment
    (:func:`cli_env`) names it, so that it does not pay the imports again (tests/zygote.py).
    ``BATCHSUBMIT_TEST_REAL=1`` in the tests' environment runs every one as a real process."""
    if _BASE_ENV.get("BATCHSUBMIT_TEST_REAL") == "1":
        return real_cli(*args)
    return [sys.executable, "-I", "-S", str(_ZYGOTE_CLIENT), *args]


def real_cli(*args: str) -> list[str]:
    """``python -m batchsubmit ARGS`` from its first line: for a test whose signal or SIGKILL
    must meet the very process it started (the fork server's command is its grandchild)."""
    return [sys.executable, "-m", "batchsubmit", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``batchsubmit`` as a process against the emulator's credentials."""
    return subprocess.run(
        cli(*args), env=env or cli_env(), capture_output=True, text=True, timeout=timeout
    )


def signal_after_rows(
    args: list[str], results: Path, rows: int, signum: int, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Start ``batchsubmit``, send ``signum`` once ``results`` has ``rows`` lines; return its
    exit code and stderr. A SIGKILL must meet the command itself: a real process."""
    command = real_cli(*args) if signum == signal.SIGKILL else cli(*args)
    process = subprocess.Popen(command, env=env or cli_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while count_lines(results) < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signum)
    _out, err = process.communicate(timeout=60)
    return process.returncode, err


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@contextmanager
def emulator_client(url: str) -> Iterator[Callable[[bytes], str]]:
    """A blocking ``create(body) -> job id`` against an emulator served elsewhere (a thread),
    for tests that set up jobs on it before a run."""

    async def create(body: bytes) -> str:
        async with aiohttp.ClientSession() as session:
            endpoint = Endpoint(
                base_url=url, project_id=EMULATOR_PROJECT_ID, service_name="video-analyze"
            )
            client = VasClient(session, endpoint, Credentials(EMULATOR_AK, EMULATOR_SK))
            answer = await client.create(body)
        assert answer.job_id, answer
        return answer.job_id

    yield lambda body: anyio.run(create, body)
