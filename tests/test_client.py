"""The client against plain aiohttp handlers: what it sends and what it makes of answers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from batchsubmit.answers import Kind
from batchsubmit.auth import Credentials
from batchsubmit.client import Endpoint, VasClient, open_session

from .helpers import serve_app

pytestmark = pytest.mark.anyio
TOKEN = "temporary-security-token-that-is-a-secret"


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[VasClient]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as url, open_session(4) as session:
        endpoint = Endpoint(base_url=url, project_id="p" * 32, service_name="video-analyze")
        yield VasClient(session, endpoint, Credentials("AK", "SK" * 20, TOKEN), timeout=2)


async def test_security_token_echoed_by_the_gateway_is_hidden() -> None:
    """A 401 whose message echoes the canonical request (token included) never carries it on."""

    async def handler(request: web.Request) -> web.Response:
        token = request.headers["X-Security-Token"]
        return web.json_response(
            {
                "error_code": "APIGW.0301",
                "error_msg": f"canonicalRequest: x-security-token:{token}",
            },
            status=401,
        )

    async with serving(handler) as client:
        answer = await client.create(b"{}")
    assert answer.kind is Kind.FATAL
    assert TOKEN not in answer.error_msg
    assert "<hidden>" in answer.error_msg


async def test_request_carries_signature_headers_and_body() -> None:
    """A create is a signed POST of the exact body, with the project and date headers."""
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        seen["body"] = (await request.read()).decode()
        seen["path"] = request.path
        return web.json_response([{"id": "f" * 32}], status=201)

    async with serving(handler) as client:
        answer = await client.create(b'{"name":"x"}')
    assert (answer.kind, answer.job_id) == (Kind.CREATED, "f" * 32)
    assert seen["body"] == '{"name":"x"}'
    assert seen["path"] == f"/v2/{'p' * 32}/services/video-analyze/tasks"
    assert seen["Authorization"].startswith("SDK-HMAC-SHA256 Access=AK, SignedHeaders=")
    assert seen["X-Project-Id"] == "p" * 32
    assert "X-Sdk-Date" in seen
    assert seen["User-Agent"].startswith("batchsubmit/")
    assert seen["Accept-Encoding"] == "identity"
    signed = seen["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "user-agent" not in signed  # proxies may rewrite these two
    assert "accept-encoding" not in signed


async def test_a_compressed_answer_is_still_read() -> None:
    """A gateway that compresses although asked not to: the answer is decompressed and read."""

    async def handler(request: web.Request) -> web.Response:
        response = web.json_response([{"id": "c" * 32}], status=201)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async with serving(handler) as client:
        answer = await client.create(b'{"name":"x"}')
    assert (answer.kind, answer.job_id) == (Kind.CREATED, "c" * 32)


async def test_lost_answer_after_sending_is_ambiguous_for_a_create() -> None:
    """The connection drops after the request went out: a create is AMBIGUOUS, a read is not."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=201)

    async with serving(handler) as client:
        create = await client.create(b"{}")
        lookup = await client.list_page("x", 0)
    assert create.kind is Kind.AMBIGUOUS
    assert lookup.kind is Kind.UNAVAILABLE


async def test_refused_connection_was_not_sent() -> None:
    """Nothing listening: the request never left, so it is safe to retry (NOT_SENT)."""
    endpoint = Endpoint(base_url="http://127.0.0.1:9", project_id="p", service_name="s")
    async with aiohttp.ClientSession() as session:
        answer = await VasClient(session, endpoint, Credentials("AK", "SK")).create(b"{}")
    assert answer.kind is Kind.NOT_SENT


_MMAP_PROBE = """
import asyncio, asyncio.selector_events, ctypes, socket, sys
class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    sys.exit(3)
libc.mallinfo2.restype = Info
from batchsubmit import client
size = asyncio.selector_events._SelectorSocketTransport.max_size
left, right = socket.socketpair()
def mapped_while_held():
    # what asyncio does with each answer: recv(max_size), which shrinks the buffer to fit
    right.send(b"HTTP/1.1 201 Created" * 20)
    before = libc.mallinfo2().hblks
    answer = left.recv(size)
    return libc.mallinfo2().hblks - before
async def open_one():
    async with client.open_session(4):
        pass
first = mapped_while_held()
if {session}:
    asyncio.run(open_one())
print(first, mapped_while_held())
"""


@pytest.mark.parametrize("session", [False, True])
def test_answer_buffers_come_from_the_heap_once_a_session_is_open(session: bool) -> None:
    """asyncio's 256 KiB read buffer (one per answer) is mmapped by glibc until its threshold
    is raised, which open_session does; a fresh process shows the difference (glibc only)."""
    probe = subprocess.run(
        [sys.executable, "-c", _MMAP_PROBE.format(session=session)],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 3:
        pytest.skip("not glibc (no mallinfo2)")
    assert probe.returncode == 0, probe.stderr
    first, then = map(int, probe.stdout.split())
    if first == 0:
        pytest.skip("this allocator already serves such buffers from the heap")
    assert (first, then) == ((1, 0) if session else (1, 1))
