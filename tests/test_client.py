"""The client against plain aiohttp handlers: what it sends and what it makes of answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from batchsubmit.answers import Kind
from batchsubmit.auth import Credentials
from batchsubmit.client import Endpoint, VasClient

from .helpers import serve_app

pytestmark = pytest.mark.anyio
TOKEN = "temporary-security-token-that-is-a-secret"


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[VasClient]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
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
