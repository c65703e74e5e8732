"""The local VAS emulator, exercised over real HTTP with requests signed by batchsubmit.auth."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from batchsubmit.answers import MAX_HEADER_FIELD
from batchsubmit.auth import Credentials, sdk_date, sign
from batchsubmit.emulator import (
    EMULATOR_AK,
    EMULATOR_PROJECT_ID,
    EMULATOR_SK,
    Emulator,
    Faults,
    Lifecycle,
    RequestRecord,
    max_in_window,
)

pytestmark = pytest.mark.anyio

SERVICE = "c-video-analysis"
TASKS = f"/v2/{EMULATOR_PROJECT_ID}/services/{SERVICE}/tasks"
CREDENTIALS = Credentials(EMULATOR_AK, EMULATOR_SK)
HEX32 = re.compile(r"[0-9a-f]{32}")
ASC = "created_at:ASC"
TEN_HEADERS = {f"X-H{i}": str(i) for i in range(10)}
IN = {"bucket": "my-bucket", "path": "videos/a.mp4"}
OUT = {"bucket": "out-bucket", "path": "results/"}


def job(name: str = "job-0001", path: str = "videos/a.mp4", **extra: Any) -> dict[str, Any]:
    """A valid create body, the seed document's shape."""
    body: dict[str, Any] = {
        "name": name,
        "service_version": "1.0",
        "input": {"type": "obs", "data": [{"bucket": "my-bucket", "path": path}]},
        "output": {"obs": {"bucket": "out-bucket", "path": "results/"}},
    }
    body.update(extra)
    return body


@dataclasses.dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)


class Client:
    """Signs each call as the project's client does and returns the whole answer."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.host = base.removeprefix("http://")

    async def call(
        self,
        method: str,
        path: str = TASKS,
        *,
        query: dict[str, str] | None = None,
        doc: object = None,
        raw: bytes | None = None,
        credentials: Credentials | None = CREDENTIALS,
        date: str | None = None,
        extra: Mapping[str, str] | None = None,
        without: tuple[str, ...] = (),
        timeout: float = 5.0,
    ) -> Reply:
        """``without``: headers not sent at all (nor added by aiohttp), e.g. Content-Type."""
        body = raw if raw is not None else b"" if doc is None else orjson.dumps(doc)
        headers = {
            "Content-Type": "application/json",
            "Host": self.host,
            "X-Sdk-Date": sdk_date() if date is None else date,
            "X-Project-Id": EMULATOR_PROJECT_ID,
            **(extra or {}),
        }
        for name in without:
            del headers[name]
        if credentials is not None:
            headers["Authorization"] = sign(credentials, method, path, query, headers, body)
        async with self.session.request(
            method,
            self.base + path,
            params=query,
            data=body,
            headers=headers,
            skip_auto_headers=without,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def create(self, doc: object, **kwargs: Any) -> Reply:
        return await self.call("POST", doc=doc, **kwargs)


@asynccontextmanager
async def running(emulator: Emulator) -> AsyncIterator[Client]:
    # Header lines as long as batchsubmit's client takes: the emulator's IAM tokens are long.
    async with (
        emulator.serve() as base,
        aiohttp.ClientSession(max_field_size=MAX_HEADER_FIELD) as session,
    ):
        yield Client(session, base)


def assert_error(reply: Reply, status: int, code: str) -> str:
    """Check an error answer's shape; return its message."""
    assert (reply.status, reply.json["error_code"]) == (status, code), reply.raw
    assert reply.json["request_id"] == reply.headers["X-Request-Id"]
    message: str = reply.json["error_msg"]
    return message


# -- create ---------------------------------------------------------------------------------------


async def test_create_answers_id_array_and_stores_task_details() -> None:
    """A good create is 201 with a JSON array of one id; the job is stored as show returns it."""
    emulator = Emulator()
    async with running(emulator) as client:
        reply = await client.create(job(description="first"))
        assert reply.status == 201
        assert HEX32.fullmatch(reply.headers["X-Request-Id"])
        [created] = reply.json
        task_id = created["id"]
        assert HEX32.fullmatch(task_id)
        shown = await client.call("GET", f"{TASKS}/{task_id}")
    assert shown.status == 200
    assert shown.json == emulator.tasks[task_id]
    task = emulator.tasks[task_id]
    assert task["name"] == "job-0001"
    assert task["description"] == "first"
    assert (task["project_id"], task["service_name"]) == (EMULATOR_PROJECT_ID, SERVICE)
    assert (task["state"], task["creator"]) == ("PENDING", "emulator")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", task["created_at"])
    assert task["input"] == job()["input"]
    assert emulator.jobs_by_source() == {"obs://my-bucket/videos/a.mp4": [task_id]}
    assert emulator.calls[("create", 201)] == 1
    assert len(emulator.create_times) == len(emulator.accepted_create_times) == 1


async def test_list_lag_hides_a_new_job_from_lists_not_from_show() -> None:
    """The list_lag fault: a service whose lists show new jobs late (what --settle waits out).
    The job is listed once its lag is over; show finds it at once."""
    now = [1000.0]
    emulator = Emulator(Faults(list_lag=3.0), clock=lambda: now[0])
    async with running(emulator) as client:
        [created] = (await client.create(job())).json
        listed = await client.call("GET", query={"name_like": "job-0001"})
        shown = await client.call("GET", f"{TASKS}/{created['id']}")
        now[0] += 3.5
        later = await client.call("GET", query={"name_like": "job-0001"})
    assert (listed.json["count"], listed.json["tasks"]) == (0, [])
    assert shown.status == 200
    assert [task["id"] for task in later.json["tasks"]] == [created["id"]]


async def test_list_lag_hidden_jobs_are_out_of_count_and_paging_too() -> None:
    """A lagging index leaves a new job out of ``count`` and out of the paging: every page is
    full, and the pages ``count`` promises hold every listed job (not a count that depends on
    the page size, nor short pages with the hidden jobs cut out after paging)."""
    now = [1000.0]
    emulator = Emulator(Faults(list_lag=3.0), clock=lambda: now[0])
    async with running(emulator) as client:
        for i in range(6):
            await client.create(job(name=f"old-{i}"))
        now[0] += 3.5
        for i in range(6):
            await client.create(job(name=f"new-{i}"))
        one = await client.call("GET", query={"limit": "1", "order": ASC})
        pages = [
            await client.call("GET", query={"limit": "2", "offset": str(offset), "order": ASC})
            for offset in (0, 2, 4)
        ]
    assert one.json["count"] == 6
    assert [p.json["count"] for p in pages] == [6, 6, 6]
    names = [task["name"] for p in pages for task in p.json["tasks"]]
    assert names == [f"old-{i}" for i in range(6)]


async def test_official_sdk_signer_is_accepted() -> None:
    """The emulator checks signatures as Huawei's own signer makes them, not only as ours does."""
    signer_module = pytest.importorskip("huaweicloudsdkcore.signer.signer")
    credentials_module = pytest.importorskip("huaweicloudsdkcore.auth.credentials")
    request_module = pytest.importorskip("huaweicloudsdkcore.sdk_request")
    emulator = Emulator()
    async with running(emulator) as client:
        await client.create(job(name="a"))
        request = request_module.SdkRequest(
            method="GET",
            schema="http",
            host=client.host,
            resource_path=TASKS,
            query_params=[("name_like", "a"), ("limit", 100)],
            header_params={
                "Content-Type": "application/json",
                "X-Sdk-Date": sdk_date(),
                "X-Project-Id": EMULATOR_PROJECT_ID,
            },
            body="",
        )
        signer = signer_module.Signer(
            credentials_module.BasicCredentials(EMULATOR_AK, EMULATOR_SK, EMULATOR_PROJECT_ID)
        )
        signed = signer.sign(request)
        async with client.session.get(
            client.base + TASKS,
            params={"name_like": "a", "limit": "100"},
            headers=dict(signed.header_params),
        ) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["count"] == 1


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("tamper", ["wrong sk", "body changed after signing"])
async def test_bad_signature_is_401_echoing_canonical_request_but_not_sk(tamper: str) -> None:
    """A signature that does not verify is refused, the message helps debugging and hides the SK."""
    emulator = Emulator()
    async with running(emulator) as client:
        if tamper == "wrong sk":
            reply = await client.create(job(), credentials=Credentials(EMULATOR_AK, "x" * 40))
        else:
            body = orjson.dumps(job())
            headers = {
                "Content-Type": "application/json",
                "Host": client.host,
                "X-Sdk-Date": sdk_date(),
            }
            headers["Authorization"] = sign(CREDENTIALS, "POST", TASKS, None, headers, body)
            async with client.session.post(
                client.base + TASKS, data=body.replace(b"job-0001", b"job-0002"), headers=headers
            ) as response:
                reply = Reply(response.status, response.headers, await response.read())
    message = assert_error(reply, 401, "APIGW.0301")
    assert f"POST\n{TASKS}/\n" in message  # the server's canonical request, as the gateway shows
    assert EMULATOR_SK.encode() not in reply.raw
    assert b"x" * 40 not in reply.raw
    assert emulator.tasks == {}


@pytest.mark.parametrize(
    "date",
    [
        "2024-01-01T00:00:00Z",  # not the SDK format
        "20241301T000000Z",  # month 13
        "20240101T000000",  # no Z
        "expired",
        "future",
    ],
)
async def test_bad_or_skewed_date_is_401_apigw_0303(date: str) -> None:
    """X-Sdk-Date must parse and be within the clock skew, as the gateway's replay protection."""
    now = time.time()
    if date == "expired":
        date = sdk_date(now - 901)
    elif date == "future":
        date = sdk_date(now + 901)
    emulator = Emulator()
    async with running(emulator) as client:
        reply = await client.create(job(), date=date)
    assert_error(reply, 401, "APIGW.0303")
    assert emulator.tasks == {}


async def test_date_within_skew_is_accepted() -> None:
    """A client clock a few minutes off still works (the skew window is not zero)."""
    async with running(Emulator()) as client:
        reply = await client.create(job(), date=sdk_date(time.time() - 600))
    assert reply.status == 201


@pytest.mark.parametrize("case", ["unknown ak", "no authorization", "date not signed"])
async def test_unusable_authorization_is_401_apigw_0301(case: str) -> None:
    """An unknown AK, a missing Authorization or one that leaves x-sdk-date unsigned is refused."""
    emulator = Emulator()
    async with running(emulator) as client:
        if case == "unknown ak":
            reply = await client.create(job(), credentials=Credentials("NOSUCHAK", EMULATOR_SK))
        elif case == "no authorization":
            reply = await client.create(job(), credentials=None)
        else:
            headers = {"Host": client.host}
            authorization = sign(
                CREDENTIALS, "GET", TASKS, None, {**headers, "X-Sdk-Date": sdk_date()}, b""
            )
            # Signed with the date, then sent with SignedHeaders naming host only.
            authorization = authorization.replace("host;x-sdk-date", "host")
            reply = await client.call(
                "GET", credentials=None, extra={"Authorization": authorization}
            )
    message = assert_error(reply, 401, "APIGW.0301")
    if case == "unknown ak":
        assert "ak not found" in message
    assert emulator.tasks == {}


async def test_temporary_credentials_need_their_security_token() -> None:
    """An AK with a security token is refused without it or with another one, accepted with it."""
    emulator = Emulator(security_tokens={EMULATOR_AK: "STSTOKEN"})
    async with running(emulator) as client:
        missing = await client.create(job())
        wrong = await client.create(job(), extra={"X-Security-Token": "OTHER"})
        wrong_sk = await client.create(
            job(),
            credentials=Credentials(EMULATOR_AK, "bad"),
            extra={"X-Security-Token": "STSTOKEN"},
        )
        right = await client.create(job(), extra={"X-Security-Token": "STSTOKEN"})
    assert_error(missing, 401, "APIGW.0301")
    assert_error(wrong, 401, "APIGW.0301")
    assert_error(wrong_sk, 401, "APIGW.0301")
    assert b"STSTOKEN" not in wrong_sk.raw  # the echoed canonical request hides the token
    assert right.status == 201
    assert len(emulator.tasks) == 1


async def send_raw(base: str, head: bytes) -> Reply:
    """A request written byte by byte (what no HTTP client library would send)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    top, _, raw = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(int(lines[0].split()[1]), headers, raw)


@pytest.mark.parametrize(
    "case",
    [
        "token added after signing",
        "SignedHeaders unsorted",
        "a repeated query key sent, one signed",
        "a header byte that is not UTF-8",
    ],
)
async def test_what_a_careless_signer_sends_is_401_not_accepted_or_a_crash(case: str) -> None:
    """The gateway verifies what was sent, as declared: a security token must be signed, the
    SignedHeaders list is taken as written, every query pair is signed; bytes that are not
    UTF-8 are refused like any bad signature (not a 500)."""
    emulator = Emulator(security_tokens={EMULATOR_AK: "STSTOKEN"})
    async with running(emulator) as client:
        headers = {
            "Content-Type": "application/json",
            "Host": client.host,
            "X-Sdk-Date": sdk_date(),
            "X-Project-Id": EMULATOR_PROJECT_ID,
        }
        token = {"X-Security-Token": "STSTOKEN"}
        url = client.base + TASKS
        if case == "token added after signing":
            headers["Authorization"] = sign(CREDENTIALS, "GET", TASKS, None, headers, b"")
            headers.update(token)
        elif case == "SignedHeaders unsorted":
            headers.update(token)
            headers["Authorization"] = sign(CREDENTIALS, "GET", TASKS, None, headers, b"").replace(
                "content-type;host", "host;content-type"
            )
        elif case == "a repeated query key sent, one signed":
            headers.update(token)
            headers["Authorization"] = sign(CREDENTIALS, "GET", TASKS, {"limit": 1}, headers, b"")
            url += "?limit=1&limit=100"
        if case != "a header byte that is not UTF-8":
            async with client.session.get(URL(url, encoded=True), headers=headers) as response:
                reply = Reply(response.status, response.headers, await response.read())
        else:
            headers.update(token)
            headers["Authorization"] = sign(CREDENTIALS, "GET", TASKS, None, headers, b"")
            headers["Content-Type"] = "application/json\udcff"  # sent as the byte 0xff
            lines = [f"GET {TASKS} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
            text = "\r\n".join([*lines, "Connection: close", "", ""])
            reply = await send_raw(client.base, text.encode("utf-8", "surrogateescape"))
    assert_error(reply, 401, "APIGW.0301")
    assert b"STSTOKEN" not in reply.raw


async def test_a_repeated_query_key_signed_as_sent_is_accepted() -> None:
    """The other side of the rule: both pairs signed (sorted, as the SDK signs a list value)."""
    emulator = Emulator()
    async with running(emulator) as client:
        headers = {
            "Host": client.host,
            "X-Sdk-Date": sdk_date(),
            "X-Project-Id": EMULATOR_PROJECT_ID,
        }
        pairs = [("limit", "100"), ("limit", "1")]
        headers["Authorization"] = sign(CREDENTIALS, "GET", TASKS, pairs, headers, b"")
        url = URL(client.base + TASKS + "?limit=100&limit=1", encoded=True)
        async with client.session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()


async def test_signatures_can_be_turned_off() -> None:
    """verify_signatures=False accepts unsigned calls (for tools that cannot sign)."""
    async with running(Emulator(verify_signatures=False)) as client:
        reply = await client.create(job(), credentials=None)
    assert reply.status == 201


async def test_project_and_service_are_checked() -> None:
    """X-Project-Id must match the path, the project id be well formed, the service subscribed."""
    emulator = Emulator(services={SERVICE})
    async with running(emulator) as client:
        mismatch = await client.create(job(), extra={"X-Project-Id": "f" * 32})
        path = f"/v2/my-project/services/{SERVICE}/tasks"
        malformed = await client.call("POST", path, doc=job(), extra={"X-Project-Id": "my-project"})
        other = await client.call(
            "POST", f"/v2/{EMULATOR_PROJECT_ID}/services/other-service/tasks", doc=job()
        )
        subscribed = await client.create(job())
    assert_error(mismatch, 400, "IVA.0002")
    assert "32 hex digits" in assert_error(malformed, 400, "IVA.0002")
    assert "other-service" in assert_error(other, 403, "IVA.0007")
    assert subscribed.status == 201
    assert len(emulator.tasks) == 1


async def test_a_create_without_json_content_type_or_project_header_creates_nothing() -> None:
    """The official SDK sends Content-Type: application/json and X-Project-Id on every call;
    a create without either is a 400 (IVA.0003, IVA.0002) that created nothing, not a 201 the
    real service might refuse. A JSON media type with parameters is still JSON."""
    emulator = Emulator()
    async with running(emulator) as client:
        untyped = await client.create(job(name="a"), without=("Content-Type",))
        text = await client.create(job(name="b"), extra={"Content-Type": "text/plain"})
        no_project = await client.create(job(name="c"), without=("X-Project-Id",))
        listed = await client.call("GET", query={"limit": "1"}, without=("X-Project-Id",))
        typed = await client.create(
            job(name="d"), extra={"Content-Type": "Application/JSON; charset=UTF-8"}
        )
    assert "Content-Type" in assert_error(untyped, 400, "IVA.0003")
    assert "text/plain" in assert_error(text, 400, "IVA.0003")
    assert "X-Project-Id" in assert_error(no_project, 400, "IVA.0002")
    assert "X-Project-Id" in assert_error(listed, 400, "IVA.0002")
    assert typed.status == 201, typed.raw
    assert [task["name"] for task in emulator.tasks.values()] == ["d"]


async def test_without_a_service_list_every_name_the_manifest_takes_is_subscribed() -> None:
    """No ``services`` given: the emulator takes what vas.SERVICE_NAME (the manifest's rule)
    takes, and refuses the rest as unsubscribed; one rule, not two."""
    emulator = Emulator()
    async with running(emulator) as client:

        async def status(service: str) -> int:
            path = f"/v2/{EMULATOR_PROJECT_ID}/services/{service}/tasks"
            return (await client.call("POST", path, doc=job())).status

        taken = [await status(name) for name in ("Video_Analyze", "c-video-analysis", "v2")]
        refused = [await status(name) for name in ("-video", "x" * 65)]
    assert taken == [201, 201, 201]
    assert refused == [403, 403]


async def test_unknown_route_is_json_404() -> None:
    """Unknown paths get a JSON error with a request id, so the client's error parsing holds."""
    async with running(Emulator()) as client:
        reply = await client.call("PUT", f"{TASKS}/{'a' * 32}/rename", doc={})
        other = await client.call("GET", f"/v1/{EMULATOR_PROJECT_ID}/services/{SERVICE}/tasks")
    assert_error(reply, 404, "APIG.0101")
    assert_error(other, 404, "APIG.0101")


# -- create body validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{not json", "IVA.0003", "JSON"),
        (b"[1, 2]", "IVA.0003", "object"),
        (job(name="bad name!"), "IVA.0004", "name"),
        (job(name="x" * 101), "IVA.0004", "name"),
        (job(description="d" * 501), "IVA.0004", "description"),
        (job(service_version=""), "IVA.0004", "service_version"),
        ({k: v for k, v in job().items() if k != "input"}, "IVA.0004", "input"),
        ({k: v for k, v in job().items() if k != "output"}, "IVA.0004", "output"),
        (job(priority=1), "IVA.0004", "priority"),
        (job(input={"type": "obs", "data": []}), "IVA.0004", "input.data"),
        (
            job(input={"type": "obs", "data": [{"bucket": "Bad_Bucket", "path": "a.mp4"}]}),
            "IVA.0004",
            "input.data[0].bucket",
        ),
        (
            job(input={"type": "obs", "data": [{"bucket": "my-bucket", "path": ""}]}),
            "IVA.0004",
            "input.data[0].path",
        ),
        (job(output={}), "IVA.0004", "output"),
        (job(output={"ftp": {}}), "IVA.0004", "ftp"),
        (job(timing={"type": "once"}), "IVA.0004", "timing"),
        # Nested fields as the SDK's request models have them, and no others: a body the
        # service would refuse, or echo back in a form the SDK cannot parse.
        (
            job(output={"obs": OUT, "hosting": {"result_json_overdue_at": "soon"}}),
            "IVA.0004",
            "output.hosting.result_json_overdue_at",
        ),
        (
            job(input={"type": "obs", "data": [{**IN, "stream_type": "abc"}]}),
            "IVA.0004",
            "input.data[0].stream_type must be an integer",
        ),
        (job(input={"type": "obs", "data": [IN], "extra": 1}), "IVA.0004", "input.extra"),
        (job(path="é" * 513), "IVA.0004", "input.data[0].path is longer than an OBS key"),
        (job(service_config={"common": 5}), "IVA.0004", "service_config.common must be an object"),
        (job(service_config={"fps": 5}), "IVA.0004", "service_config.fps"),
        (
            job(output={"obs": {**OUT, "data_category": "person"}}),
            "IVA.0004",
            "output.obs.data_category must be a list",
        ),
        (job(resource_order_id=7), "IVA.0004", "resource_order_id must be a string"),
        # VAS requires 1 to 10 headers on a webhook output.
        (job(output={"webhook": {"url": "https://h.example/"}}), "IVA.0004", "1 to 10"),
        (
            job(output={"webhook": {"url": "https://h.example/", "headers": {}}}),
            "IVA.0004",
            "1 to 10",
        ),
        (
            job(
                output={
                    "webhook": {"url": "https://h.example/", "headers": {**TEN_HEADERS, "K": "v"}}
                }
            ),
            "IVA.0004",
            "output.webhook.headers",
        ),
        (
            job(output={"webhook": {"url": "https://h.example/", "headers": {"X-N": 1}}}),
            "IVA.0004",
            "output.webhook.headers.X-N",
        ),
        (
            job(output={"webhook": {"url": "https://h.example/", "headers": ["X-N: 1"]}}),
            "IVA.0004",
            "output.webhook.headers",
        ),
    ],
)
async def test_bad_create_body_is_400_naming_the_field(body: object, code: str, field: str) -> None:
    """Each malformed body gets the service's error code and a message naming what is wrong."""
    emulator = Emulator()
    async with running(emulator) as client:
        if isinstance(body, bytes):
            reply = await client.create(None, raw=body)
        else:
            reply = await client.create(body)
    assert field in assert_error(reply, 400, code)
    assert emulator.tasks == {}


async def test_accepted_variants_of_create_body() -> None:
    """Chinese names, url inputs, other output types and optional fields are accepted."""
    bodies = [
        job(name="任务_1"),
        job(
            input={"type": "url", "data": [{"url": "https://example.com/v.mp4"}]},
            timing={"type": "once"},
        ),
        job(output={"webhook": {"url": "http://hook.example/x", "headers": {"X-K": "v"}}}),
        job(
            output={"webhook": {"url": "https://h.example/", "headers": TEN_HEADERS}, "hosting": {}}
        ),
        job(service_config={"common": {"fps": 5}}, resource_order_id="r", edge_pool_id="e"),
        job(
            input={"type": "obs", "data": [{**IN, "stream_type": 1, "certificate_check": True}]},
            output={"obs": {**OUT, "data_category": ["person"]}, "hosting": {"data_category": []}},
        ),
    ]
    async with running(Emulator()) as client:
        replies = [await client.create(body) for body in bodies]
    assert [reply.status for reply in replies] == [201] * len(bodies), [r.raw for r in replies]


# -- list, show, delete --------------------------------------------------------------------------


async def test_list_filters_by_name_like_and_pages_with_count() -> None:
    """count is every match before paging; offset/limit cut the page; name_like is a substring."""
    emulator = Emulator()
    async with running(emulator) as client:
        for i in range(25):
            assert (await client.create(job(name=f"job-{i:02d}"))).status == 201
        for name in ("other-1", "xjob-07"):
            await client.create(job(name=name))

        async def names(**query: str) -> tuple[int, list[str]]:
            reply = await client.call("GET", query=query)
            assert reply.status == 200, reply.raw
            return reply.json["count"], [task["name"] for task in reply.json["tasks"]]

        assert await names(name_like="job-", offset="20", limit="10", order=ASC) == (
            26,
            ["job-20", "job-21", "job-22", "job-23", "job-24", "xjob-07"],
        )
        count, first_page = await names(name_like="job-", limit="10", order=ASC)
        assert (count, first_page) == (26, [f"job-{i:02d}" for i in range(10)])
        assert await names(name_like="job-1", limit="3", order=ASC) == (
            10,
            ["job-10", "job-11", "job-12"],
        )
        # A query as long as the stored names must still find longer names containing it.
        assert await names(name_like="job-07", order=ASC) == (2, ["job-07", "xjob-07"])
        assert await names(name_like="nothing") == (0, [])
        assert await names(order="name:DESC", limit="2") == (27, ["xjob-07", "other-1"])
        assert (await names(order="created_at:DESC", limit="1"))[1] == ["xjob-07"]
        assert (await names(offset="100"))[0] == 27
        for bad in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"offset": "-1"}):
            assert_error(await client.call("GET", query=bad), 400, "IVA.0004")
        assert_error(await client.call("GET", query={"order": "size:ASC"}), 400, "IVA.0004")
        assert_error(await client.call("GET", query={"state": "DONE"}), 400, "IVA.0004")
        assert (await names(state="PENDING", service_version="1.0"))[0] == 27
        assert (await names(service_version="2.0"))[0] == 0


async def test_show_and_delete_unknown_task_is_404_and_delete_removes() -> None:
    """show of an unknown id is 404 IVA.0005; delete answers 202 and the job is gone."""
    emulator = Emulator(Faults(jobs=Lifecycle(deleting=0)))
    async with running(emulator) as client:
        missing = await client.call("GET", f"{TASKS}/{'0' * 32}")
        [created] = (await client.create(job())).json
        deleted = await client.call("DELETE", f"{TASKS}/{created['id']}")
        after = await client.call("GET", f"{TASKS}/{created['id']}")
        listed = await client.call("GET", query={"name_like": "job-0001"})
    assert_error(missing, 404, "IVA.0005")
    assert deleted.status == 202
    assert_error(after, 404, "IVA.0005")
    assert listed.json == {"count": 0, "tasks": []}
    assert emulator.tasks == {}


# -- faults --------------------------------------------------------------------------------------


async def test_rate_limit_throttles_per_operation_with_hint_and_headers() -> None:
    """Beyond the limit a call is 429 APIG.0308 before any other check, and does nothing."""
    faults = Faults(rate_limit=3, ratelimit_headers=True, retry_after=2)
    emulator = Emulator(faults)
    async with running(emulator) as client:
        creates = [await client.create(job(name=f"j{i}")) for i in range(5)]
        # The limit is per operation: list still has its own budget.
        listed = await client.call("GET")
        # A throttled call is refused before its signature is even looked at.
        unsigned = await client.create(job(), credentials=None)
        emulator.faults = dataclasses.replace(faults, rate_limit=0)
        unlimited = await client.create(job(name="after"))
    assert [reply.status for reply in creates] == [201, 201, 201, 429, 429]
    message = assert_error(creates[3], 429, "APIG.0308")
    assert "limit:3, time:1 second" in message
    assert creates[3].headers["Retry-After"] == "2"
    assert creates[0].headers["X-ratelimit"] == "3"
    assert creates[0].headers["X-ratelimit-used"] == "1"
    assert creates[3].headers["X-ratelimit-used"] == "3"
    assert creates[0].headers["X-ratelimit-window"] == "1 second"
    assert listed.status == 200
    assert_error(unsigned, 429, "APIG.0308")
    assert unlimited.status == 201
    assert "X-ratelimit" not in unlimited.headers
    assert len(emulator.tasks) == 4
    assert emulator.throttled() == 3
    assert len(emulator.create_times) == 7
    assert len(emulator.accepted_create_times) == 4
    assert max_in_window(emulator.accepted_create_times[:3]) == 3


async def test_rate_limit_without_hint_and_window_slides() -> None:
    """Without the hint the 429 message has no numbers; a second later calls pass again."""
    emulator = Emulator(Faults(rate_limit=1, rate_limit_hint=False))
    async with running(emulator) as client:
        first = await client.call("GET")
        second = await client.call("GET")
        await asyncio.sleep(1.05)
        third = await client.call("GET")
    assert first.status == 200
    assert not re.search(r"\d", assert_error(second, 429, "APIG.0308"))
    assert "Retry-After" not in second.headers
    assert third.status == 200


async def test_p503_creates_nothing_and_carries_retry_after() -> None:
    """A 503 IVA.0010 fault leaves no job behind and tells when to retry if configured."""
    emulator = Emulator(Faults(p503=1.0, retry_after=1.5))
    async with running(emulator) as client:
        created = await client.create(job())
        listed = await client.call("GET")
    assert_error(created, 503, "IVA.0010")
    assert created.headers["Retry-After"] == "1.5"
    assert_error(listed, 503, "IVA.0010")
    assert emulator.tasks == {}
    assert emulator.calls[("create", 503)] == 1


async def test_fault_draws_are_reproducible_with_a_seed() -> None:
    """Two emulators with the same seed answer the same call sequence identically."""
    outcomes = []
    for _ in range(2):
        async with running(Emulator(Faults(p503=0.5, seed=7))) as client:
            outcomes.append([(await client.call("GET")).status for _ in range(20)])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 503}


async def test_p_lost_creates_the_job_and_drops_the_connection() -> None:
    """A lost answer: the client sees a disconnect, yet the job exists and can be found by name."""
    emulator = Emulator(Faults(p_lost=1.0))
    async with running(emulator) as client:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await client.create(job(name="lost-1"))
        emulator.faults = Faults()
        found = await client.call("GET", query={"name_like": "lost-1"})
    assert [task["name"] for task in emulator.tasks.values()] == ["lost-1"]
    assert found.json["count"] == 1
    assert emulator.calls[("create", 0)] == 1


async def test_p_5xx_after_create_creates_the_job() -> None:
    """500/502/504 after a create are ambiguous: every one of them left a job behind."""
    emulator = Emulator(Faults(p_5xx_after_create=1.0, seed=1))
    async with running(emulator) as client:
        replies = [await client.create(job(name=f"j{i}")) for i in range(12)]
    statuses = {reply.status for reply in replies}
    assert statuses == {500, 502, 504}
    for reply in replies:
        code = reply.json["error_code"]
        assert reply.status != 500 or code == "IVA.0006"
    assert len(emulator.tasks) == 12


async def test_p_slow_creates_the_job_and_shutdown_does_not_wait_for_it() -> None:
    """A slow answer trips the client's timeout after the job exists; stopping is still quick."""
    emulator = Emulator(Faults(p_slow=1.0, slow_seconds=30))
    started = time.monotonic()
    async with running(emulator) as client:
        with pytest.raises(asyncio.TimeoutError):
            await client.create(job(), timeout=0.3)
    assert time.monotonic() - started < 1.0  # the 1 s shutdown backstop was not needed
    assert len(emulator.tasks) == 1


async def test_latency_delays_every_call() -> None:
    """latency is added before the call is handled."""
    async with running(Emulator(Faults(latency=0.2))) as client:
        started = time.monotonic()
        reply = await client.call("GET")
        elapsed = time.monotonic() - started
    assert reply.status == 200
    assert elapsed >= 0.2


async def test_quota_is_400_iva_0012_and_delete_frees_it() -> None:
    """At the quota a create is refused without a job; deleting one makes room again."""
    emulator = Emulator(Faults(quota=2, jobs=Lifecycle(deleting=0)))
    async with running(emulator) as client:
        first, _ = [(await client.create(job(name=f"j{i}"))).json for i in range(2)]
        over = await client.create(job(name="j2"))
        await client.call("DELETE", f"{TASKS}/{first[0]['id']}")
        again = await client.create(job(name="j3"))
    assert_error(over, 400, "IVA.0012")
    assert again.status == 201
    assert sorted(task["name"] for task in emulator.tasks.values()) == ["j1", "j3"]


# -- max_in_window -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([], 0),
        ([5.0], 1),
        ([0.0, 0.5, 0.99, 1.0], 3),
        ([0.0, 1.0, 2.0], 1),  # half-open: a call at t+1 is in the next window
        ([2.0, 0.0, 0.2, 1.1, 1.15], 3),  # unsorted input; the busiest window is [0.2, 1.2)
    ],
)
def test_max_in_window(times: list[float], expected: int) -> None:
    """The sliding-window count tests use to check a client's rate limiting."""
    assert max_in_window(times) == expected


def test_max_in_window_other_width() -> None:
    """The window width is a parameter."""
    assert max_in_window([0.0, 0.3, 0.6, 0.9], window=0.5) == 2


# -- as strict as VAS ----------------------------------------------------------------------------


async def test_credentials_are_bound_to_one_project() -> None:
    """A well-formed project id that is not the credentials' is refused 400 IVA.0002, as VAS
    refuses it (the client stops the run on it, advising to check the project id)."""
    other = "f" * 32
    path = f"/v2/{other}/services/{SERVICE}/tasks"
    emulator = Emulator()
    async with running(emulator) as client:
        created = await client.call("POST", path, doc=job(), extra={"X-Project-Id": other})
        listed = await client.call("GET", path, extra={"X-Project-Id": other})
        own = await client.create(job())
    assert "not a project of these credentials" in assert_error(created, 400, "IVA.0002")
    assert_error(listed, 400, "IVA.0002")
    assert own.status == 201
    assert len(emulator.tasks) == 1
    # The binding is to the emulator's project, whichever it is.
    bound = Emulator(project_id=other)
    async with running(bound) as client:
        mine = await client.call("POST", path, doc=job(), extra={"X-Project-Id": other})
        default = await client.create(job())
    assert mine.status == 201
    assert_error(default, 400, "IVA.0002")


async def test_a_security_token_is_accepted_only_as_issued() -> None:
    """A permanent AK sent with any X-Security-Token (signed correctly) is refused: the emulator
    issued none for it. An unknown X-Auth-Token is refused too. Neither is echoed."""
    emulator = Emulator()
    async with running(emulator) as client:
        forged = await client.create(job(), extra={"X-Security-Token": "FORGED-STS-TOKEN"})
        token = await client.create(
            job(), credentials=None, extra={"X-Auth-Token": "MIIFORGEDIAMTOKEN"}
        )
        plain = await client.create(job())
    assert "not issued" in assert_error(forged, 401, "APIGW.0301")
    assert "not issued" in assert_error(token, 401, "APIGW.0301")
    assert b"FORGED-STS-TOKEN" not in forged.raw
    assert b"MIIFORGEDIAMTOKEN" not in token.raw
    assert plain.status == 201
    assert len(emulator.tasks) == 1
    assert emulator.identity.refused_unknown == 2


@pytest.mark.parametrize(
    "bad", ["abc", "A" * 32, "0" * 31, "0" * 33, "task-1234567", "task123456789", "tàsk1234567"]
)
async def test_malformed_task_id_is_400_quoting_the_pattern(bad: str) -> None:
    """show (and delete) of an id VAS could never have issued is 400 with VAS's id pattern,
    not 404: a client that builds ids wrongly learns it at once."""
    async with running(Emulator()) as client:
        shown = await client.call("GET", f"{TASKS}/{bad}")
        deleted = await client.call("DELETE", f"{TASKS}/{bad}")
    for reply in (shown, deleted):
        assert r"^[0-9a-f]{32}|task\w{8}$" in assert_error(reply, 400, "IVA.0004")


@pytest.mark.parametrize("good", ["0" * 32, "task1234abcd", "task_abc_def"])
async def test_well_formed_unknown_task_id_is_404(good: str) -> None:
    async with running(Emulator()) as client:
        reply = await client.call("GET", f"{TASKS}/{good}")
    assert_error(reply, 404, "IVA.0005")


async def test_timestamps_are_written_as_vas_writes_them() -> None:
    """created_at / updated_at look like "2018-06-12T13:00:01Z" in create, show and list."""
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    emulator = Emulator()
    async with running(emulator) as client:
        before = time.time()
        [created] = (await client.create(job())).json
        shown = await client.call("GET", f"{TASKS}/{created['id']}")
        listed = await client.call("GET")
    for raw in (shown.raw, listed.raw):
        assert b"+00:00" not in raw
    for task in (shown.json, *listed.json["tasks"]):
        for key in ("created_at", "updated_at"):
            assert stamp.fullmatch(task[key]), task[key]
            moment = datetime.strptime(task[key], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert before - 1 <= moment.timestamp() <= time.time()


async def test_update_is_refused_plainly_as_not_emulated() -> None:
    """PUT .../tasks/{id} passes the common checks, then says in VAS's error format that the
    emulator does not emulate it (not APIG.0101 "does not exist": VAS has it)."""
    emulator = Emulator()
    async with running(emulator) as client:
        [created] = (await client.create(job())).json
        item = f"{TASKS}/{created['id']}"
        update = await client.call("PUT", item, doc={"description": "changed"})
        unsigned = await client.call("PUT", item, doc={}, credentials=None)
        malformed = await client.call("PUT", f"{TASKS}/abc", doc={})
    message = assert_error(update, 501, "EMU.0501")
    assert "does not emulate update" in message
    assert_error(unsigned, 401, "APIGW.0301")
    assert_error(malformed, 400, "IVA.0004")
    assert emulator.tasks[created["id"]]["description"] == ""
    assert emulator.calls["update", 501] == 1


async def test_request_log_has_one_record_per_request_and_no_secret() -> None:
    """method, path, status, error code and request id, for answered, refused, unknown and
    dropped calls; never the SK, the signature or the security token."""
    records: list[RequestRecord] = []
    token = "STS-SECRET-TOKEN-0123"
    emulator = Emulator(security_tokens={EMULATOR_AK: token}, request_log=records.append)
    sts = {"X-Security-Token": token}
    async with running(emulator) as client:
        created = await client.create(job(), extra=sts)
        wrong = await client.create(
            job(), credentials=Credentials(EMULATOR_AK, "x" * 40), extra=sts
        )
        listed = await client.call("GET", query={"name_like": "job", "limit": "5"}, extra=sts)
        missing = await client.call("GET", f"{TASKS}/{'0' * 32}", extra=sts)
        unknown = await client.call("GET", "/nowhere")
        emulator.faults = Faults(p_lost=1.0)
        with pytest.raises(aiohttp.ClientError):
            await client.create(job(name="lost"), extra=sts)
    replies = [created, wrong, listed, missing, unknown]
    expected = [
        ("POST", TASKS, 201, ""),
        ("POST", TASKS, 401, "APIGW.0301"),
        ("GET", f"{TASKS}?name_like=job&limit=5", 200, ""),
        ("GET", f"{TASKS}/{'0' * 32}", 404, "IVA.0005"),
        ("GET", "/nowhere", 404, "APIG.0101"),
        ("POST", TASKS, 0, ""),
    ]
    assert [(r.method, r.path, r.status, r.error_code) for r in records] == expected
    assert [r.request_id for r in records[:5]] == [r.headers["X-Request-Id"] for r in replies]
    assert records[5].request_id == ""  # nobody heard an answer, so it has no id
    text = "\n".join(map(str, records))
    assert f"POST {TASKS} 401 APIGW.0301 {wrong.headers['X-Request-Id']}" in text
    assert text.endswith(f"POST {TASKS} dropped - -")
    for secret in (EMULATOR_SK, token, "x" * 40, "Signature", "Authorization"):
        assert secret not in text


def test_emulator_options_show_their_defaults() -> None:
    """Every option of `batchsubmit emulator` has a help text that states its default."""
    from batchsubmit import arguments

    parser = arguments.parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    emulator = commands.choices["emulator"]
    options = [a for a in emulator._actions if a.dest != "help"]
    assert len(options) >= 19
    for action in options:
        assert "(default: " in (action.help or ""), action.option_strings
    text = emulator.format_help()
    assert "0 = unlimited (default: 5000)" in " ".join(text.split())
    assert "(default: 8080)" in text
    assert "%(default)" not in text


async def test_standalone_banner_is_enough_to_point_a_run_at_it_and_logs_requests() -> None:
    """`batchsubmit emulator --port 0 --log-requests`: stdout has a copy-paste line with the
    three HUAWEICLOUD_SDK_* values and the endpoint; a call signed with exactly those works and
    is logged on stderr, without the SK."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchsubmit", "emulator", "--port", "0", "--log-requests",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        export = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        then = (await asyncio.wait_for(process.stdout.readline(), 5)).decode()
        assert export.startswith("export ")
        env = dict(item.split("=", 1) for item in shlex.split(export)[1:])
        assert env == {
            "HUAWEICLOUD_SDK_AK": EMULATOR_AK,
            "HUAWEICLOUD_SDK_SK": EMULATOR_SK,
            "HUAWEICLOUD_SDK_PROJECT_ID": EMULATOR_PROJECT_ID,
        }
        found = re.search(r"--endpoint (http://127\.0\.0\.1:\d+)$", then.strip())
        assert found, then
        credentials = Credentials(env["HUAWEICLOUD_SDK_AK"], env["HUAWEICLOUD_SDK_SK"])
        tasks = f"/v2/{env['HUAWEICLOUD_SDK_PROJECT_ID']}/services/{SERVICE}/tasks"
        async with aiohttp.ClientSession() as session:
            reply = await Client(session, found.group(1)).call(
                "POST", tasks, doc=job(), credentials=credentials
            )
        assert reply.status == 201, reply.raw
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    log = err.decode()
    assert process.returncode == 0, log
    assert f"request POST {tasks} 201 - {reply.headers['X-Request-Id']}" in log
    assert "1 jobs were created" in log
    assert EMULATOR_SK not in log
