"""The client against plain aiohttp handlers: what it sends and what it makes of answers."""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import aiohttp.abc
import pytest
from aiohttp import web

from batchsubmit.answers import ERROR_CAP, MESSAGE_CAP, READ_CAP, UNREACHABLE, Kind
from batchsubmit.auth import Credentials
from batchsubmit.client import Endpoint, VasClient, open_session

from .helpers import ServerThread, header_of, serve_app, serve_raw

pytestmark = pytest.mark.anyio
TOKEN = "temporary-security-token-that-is-a-secret"


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], token: str = TOKEN
) -> AsyncIterator[VasClient]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as url, open_session(4) as session:
        endpoint = Endpoint(base_url=url, project_id="p" * 32, service_name="video-analyze")
        yield VasClient(session, endpoint, Credentials("AK", "SK" * 20, token), timeout=2)


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


async def test_a_token_as_request_id_or_code_with_no_message_is_hidden() -> None:
    """A gateway that sets the security token as the request id or as the error code, with no
    message to mask: the token reached the results row, the summary and `check` unmasked."""

    async def handler(request: web.Request) -> web.Response:
        token = request.headers["X-Security-Token"]
        if request.method == "POST":
            body = {"error_code": "APIGW.0101"}
        elif request.query.get("limit") == "1":
            body = {"error_code": token}
        else:  # a page over READ_CAP: not read, its request id kept
            return web.Response(body=b" " * (READ_CAP + 1), headers={"X-Request-Id": token})
        return web.json_response(body, status=403, headers={"X-Request-Id": token})

    async with serving(handler) as client:
        by_id = await client.create(b"{}")
        by_code = await client.list_tasks({"limit": 1})
        too_large = await client.list_tasks({"limit": 2})
    assert (by_id.error_code, by_id.request_id) == ("APIGW.0101", "<hidden>")
    assert (by_code.error_code, by_code.request_id) == ("<hidden>", "<hidden>")
    assert (too_large.error_code, too_large.request_id) == ("TOO_LARGE", "<hidden>")


async def test_a_token_quoted_by_an_answer_aiohttp_cannot_parse_is_hidden() -> None:
    """A header line without a colon holding the security token: aiohttp's error quotes the
    line, and that text went into the row, the summary and stderr unmasked."""

    def echo(head: str, _body: bytes) -> bytes:
        token = header_of(head, "X-Security-Token")
        return f"HTTP/1.1 403 Forbidden\r\nEcho {token}\r\nContent-Length: 0\r\n\r\n".encode()

    async with serve_raw(echo) as url, open_session(1) as session:
        endpoint = Endpoint(base_url=url, project_id="p" * 32, service_name="video-analyze")
        client = VasClient(session, endpoint, Credentials("AK", "SK" * 20, TOKEN), timeout=2)
        answer = await client.create(b"{}")
    assert (answer.kind, answer.error_code) == (Kind.AMBIGUOUS, "CONNECTION")
    assert "Echo <hidden>" in answer.error_msg
    assert TOKEN[:12] not in answer.error_msg


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


@pytest.mark.parametrize("task_id", ["../../../v3/evil", "a/b?c#d", "a%2Fb", "..", ""])
async def test_an_id_that_cannot_be_one_is_never_sent(task_id: str) -> None:
    """show and delete of an id from an old row that cannot be a job id ('/', '..', '%'):
    nothing is sent (it would name another path on the service, quoted or not); the answer
    says why. A usable id is one path segment."""
    seen: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.raw_path))
        return web.json_response({}, status=404)

    async with serving(handler) as client:
        answers = [await client.show(task_id), await client.delete(task_id)]
        await client.show("task_ab-12")
    assert [(a.kind, a.error_code) for a in answers] == [(Kind.FAILED, "NOT_A_JOB_ID")] * 2
    tasks = f"/v2/{'p' * 32}/services/video-analyze/tasks/"
    assert seen == [("GET", tasks + "task_ab-12")]


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


# -- bounded answers ------------------------------------------------------------------------------

HUGE_PAGE = 64 << 20
_PAGE_CHUNK = b"<p>" + b"x" * (64 * 1024 - 3)


async def huge_502(request: web.Request) -> web.StreamResponse:
    """A 64 MiB HTML 502 page, streamed (the server holds one 64 KiB chunk)."""
    await request.read()
    response = web.StreamResponse(status=502, headers={"Content-Type": "text/html"})
    response.content_length = HUGE_PAGE
    await response.prepare(request)
    try:
        for _ in range(HUGE_PAGE // len(_PAGE_CHUNK)):
            await response.write(_PAGE_CHUNK)
    except ConnectionError:
        pass  # the client hung up: it read what it needed
    return response


_RSS_PROBE = """
import asyncio, resource, sys
from batchsubmit.auth import Credentials
from batchsubmit.client import Endpoint, VasClient, open_session
async def main():
    async with open_session(16) as session:
        endpoint = Endpoint(base_url=sys.argv[1], project_id="p" * 32, service_name="s")
        client = VasClient(session, endpoint, Credentials("AK", "SK"), timeout=60)
        answers = await asyncio.gather(*(client.create(b"{}") for _ in range(16)))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          max(len(a.error_msg) for a in answers), {a.kind.name for a in answers})
asyncio.run(main())
"""


def test_sixteen_huge_error_pages_in_flight_stay_small() -> None:
    """16 creates in flight, each answered by a 64 MiB HTML 502: the client reads at most
    ERROR_CAP bytes of each (peak RSS of a fresh process stays in tens of MB; reading them
    whole took 1.1 GB), the creates are ambiguous, and each message is one short line."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", huge_502)
    server = ServerThread(lambda: serve_app(app))
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, server.url],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        server.close()
    assert probe.returncode == 0, probe.stderr
    peak_kib, longest, kinds = probe.stdout.split(maxsplit=2)
    assert int(peak_kib) < 100 * 1024, f"peak RSS {int(peak_kib) >> 10} MiB"
    assert int(longest) <= MESSAGE_CAP
    assert kinds.strip() == "{'AMBIGUOUS'}"


async def test_a_read_answer_over_the_cap_is_not_read_whole() -> None:
    """A success answer larger than READ_CAP: a read is unavailable, a create ambiguous (its
    job may exist), and neither holds the body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        status = 201 if request.method == "POST" else 200
        response = web.StreamResponse(status=status)
        await response.prepare(request)
        try:
            for _ in range(64):
                await response.write(b" " * (64 * 1024))
        except ConnectionError:
            pass
        return response

    async with serving(handler) as client:
        read = await client.list_page("x", 0)
        create = await client.create(b"{}")
        show = await client.show("f" * 32)  # up to SHOW_CAP: 4 MiB is read (not JSON here)
    assert (read.kind, read.error_code) == (Kind.UNAVAILABLE, "TOO_LARGE")
    assert (create.kind, create.error_code) == (Kind.AMBIGUOUS, "TOO_LARGE")
    assert (show.kind, show.error_msg) == (Kind.UNAVAILABLE, "unreadable answer body")


async def test_a_small_compressed_answer_that_grows_past_the_cap_is_not_read_whole() -> None:
    """A gzip body of a few KiB (its Content-Length far under the cap) that decompresses to
    more than READ_CAP: read by the cap like any other, not in one go."""
    bomb = gzip.compress(b" " * (READ_CAP * 2))
    assert len(bomb) < READ_CAP // 100

    async def handler(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=bomb, status=201, headers=headers)

    async with serving(handler) as client:
        create = await client.create(b"{}")
    assert (create.kind, create.error_code) == (Kind.AMBIGUOUS, "TOO_LARGE")


async def test_a_secret_straddling_the_read_cap_is_not_leaked() -> None:
    """An error body whose message starts just before ERROR_CAP and echoes the security token
    across the cut: none of the token reaches the answer, wherever the cut falls in it."""
    for offset in (3, 5, len(TOKEN) // 2, len(TOKEN) - 1):

        async def handler(request: web.Request, offset: int = offset) -> web.Response:
            head = '{"error_code": "APIGW.0301", "padding": "'
            tail = '", "error_msg": "x-security-token:'
            pad = ERROR_CAP - offset - len(head) - len(tail)
            text = head + "p" * pad + tail + TOKEN + '", "z": "' + "z" * 100 + '"}'
            return web.Response(status=401, text=text, content_type="application/json")

        async with serving(handler) as client:
            answer = await client.create(b"{}")
        assert (answer.kind, answer.error_code) == (Kind.FATAL, "APIGW.0301")
        assert TOKEN[:3] not in answer.error_msg


async def test_a_json_escaped_secret_straddling_the_read_cap_is_not_leaked() -> None:
    """The cut dropped as many bytes as the token has: one a JSON encoder writes with each '/'
    as '\\/' is longer, and left as many characters of its start as it had slashes."""
    token = "gQ/" * 20 + "END"  # longer than the SK: the cut is the token's length

    async def handler(request: web.Request) -> web.Response:
        written = request.headers["X-Security-Token"].replace("/", "\\/")
        head = '{"error_code": "APIGW.0301", "padding": "'
        tail = '", "error_msg": "x-security-token:'
        pad = ERROR_CAP - len(head) - len(tail) - len(written) + 5
        text = head + "p" * pad + tail + written + '"}'
        return web.Response(status=401, text=text, content_type="application/json")

    async with serving(handler, token) as client:
        answer = await client.create(b"{}")
    assert answer.kind is Kind.FATAL
    assert answer.error_msg.startswith("x-security")
    assert "gQ" not in answer.error_msg


# -- an endpoint that cannot be reached -----------------------------------------------------------


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class NoSuchName(aiohttp.abc.AbstractResolver):
    """A resolver that fails as the system's does for a mistyped region (no DNS traffic)."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def test_unreachable_endpoints_are_named_and_marked() -> None:
    """Refused, unresolvable and TLS-failing endpoints: NOT_SENT, with a code in UNREACHABLE and
    the host named."""
    refused = Endpoint(
        base_url=f"http://127.0.0.1:{_closed_port()}", project_id="p", service_name="s"
    )
    nowhere = Endpoint(
        base_url="https://iva.cn-nowhere-9.myhuaweicloud.com", project_id="p", service_name="s"
    )

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="plain http")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", plain)
    async with serve_app(app) as url:
        tls = Endpoint(base_url=url.replace("http:", "https:"), project_id="p", service_name="s")
        found = {}
        for name, endpoint, resolver in (
            ("refused", refused, None),
            ("dns", nowhere, NoSuchName()),
            ("tls", tls, None),
        ):
            connector = aiohttp.TCPConnector(resolver=resolver) if resolver else None
            async with aiohttp.ClientSession(connector=connector) as session:
                client = VasClient(session, endpoint, Credentials("AK", "SK"))
                found[name] = await client.create(b"{}")
    assert {name: a.error_code for name, a in found.items()} == {
        "refused": "CONNECT",
        "dns": "DNS",
        "tls": "TLS",
    }
    for name, endpoint in (("refused", refused), ("dns", nowhere), ("tls", tls)):
        assert found[name].kind is Kind.NOT_SENT
        assert found[name].error_code in UNREACHABLE
        assert endpoint.host in found[name].error_msg
