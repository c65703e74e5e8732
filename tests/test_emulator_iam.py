"""The emulator's fake IAM and ECS metadata: tokens and temporary credentials, only as issued.

VAS calls are checked against what was issued: a forged token or security token is refused,
an expired one is refused 401 IVA.0001 "The token must be updated" and counted. Expiry is
tested with a clock the test moves (``Identity.clock``), and once in real time.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from batchsubmit.answers import MAX_HEADER_FIELD
from batchsubmit.auth import Credentials
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Emulator
from batchsubmit.emulator_iam import (
    IAM_PROJECTS_PATH,
    IAM_TOKEN_PATH,
    METADATA_SECURITYKEY_PATH,
    METADATA_TOKEN_PATH,
    NO_AGENCY_MESSAGE,
    IamUser,
    IdentityOptions,
)

from .test_emulator import TASKS, Client, Reply, assert_error, job, running

pytestmark = pytest.mark.anyio

PASSWORD = "iam-password-that-is-a-secret"
USER = IamUser("alice", "acme", PASSWORD)
IAM_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what the official SDK parses


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def login_body(
    name: str = "alice",
    password: str = PASSWORD,
    domain: str = "acme",
    scope: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": name, "password": password, "domain": {"name": domain}}
                },
            },
            "scope": {"project": scope or {"id": EMULATOR_PROJECT_ID}},
        }
    }


async def raw(
    client: Client, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> Reply:
    """An unsigned call (IAM login and metadata are not AK/SK signed)."""
    async with client.session.request(
        method, client.base + path, headers=headers, **kwargs
    ) as response:
        return Reply(response.status, response.headers, await response.read())


async def login(client: Client, **kwargs: Any) -> Reply:
    return await raw(client, "POST", IAM_TOKEN_PATH, json=login_body(**kwargs))


async def with_token(client: Client, token: str, path: str = TASKS) -> Reply:
    """A VAS create (or a GET of ``path``) authenticated by X-Auth-Token alone."""
    if path == TASKS:
        return await client.create(job(), credentials=None, extra={"X-Auth-Token": token})
    return await client.call("GET", path, credentials=None, extra={"X-Auth-Token": token})


async def securitykey(client: Client) -> dict[str, str]:
    session = await raw(client, "PUT", METADATA_TOKEN_PATH, {"X-Metadata-Token-Ttl-Seconds": "60"})
    assert session.status == 200, session.raw
    reply = await raw(
        client, "GET", METADATA_SECURITYKEY_PATH, {"X-Metadata-Token": session.raw.decode()}
    )
    assert reply.status == 200, reply.raw
    credential: dict[str, str] = reply.json["credential"]
    return credential


async def with_temporary(client: Client, credential: dict[str, str], token: str | None) -> Reply:
    extra = {"X-Security-Token": token} if token is not None else {}
    return await client.create(
        job(), credentials=Credentials(credential["access"], credential["secret"]), extra=extra
    )


# -- IAM -----------------------------------------------------------------------------------------


async def test_password_login_issues_a_token_that_vas_calls_accept() -> None:
    """201 with X-Subject-Token and expires_at in IAM's form; the token alone makes a create."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,), token_ttl=600))
    async with running(emulator) as client:
        before = time.time()
        reply = await login(client)
        token = reply.headers["X-Subject-Token"]
        created = await with_token(client, token)
        by_name = await login(client, scope={"name": "cn-north-4"})  # the project by name
    assert reply.status == 201, reply.raw
    expires = datetime.strptime(reply.json["token"]["expires_at"], IAM_FORMAT)
    assert before + 599 <= expires.replace(tzinfo=UTC).timestamp() <= time.time() + 601
    assert reply.json["token"]["project"]["id"] == EMULATOR_PROJECT_ID
    assert token.encode() not in reply.raw
    assert PASSWORD.encode() not in reply.raw
    assert created.status == 201, created.raw
    assert by_name.status == 201
    assert emulator.identity.tokens_issued == 2
    assert len(emulator.tasks) == 1


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"password": "wrong-password"}, 401),
        ({"password": PASSWORD[:-1]}, 401),
        ({"name": "mallory"}, 401),
        ({"domain": "other"}, 401),
        ({"scope": {"id": "f" * 32}}, 401),  # a project of another account
        ({"scope": {"name": "cn-east-3"}}, 401),
        ({"name": ""}, 400),
        ({"scope": {"domain": "acme"}}, 400),  # not project-scoped
    ],
)
async def test_a_bad_login_issues_no_token(kwargs: dict[str, Any], status: int) -> None:
    emulator = Emulator(identity=IdentityOptions(users=(USER,)))
    async with running(emulator) as client:
        reply = await login(client, **kwargs)
    assert reply.status == status, reply.raw
    assert "X-Subject-Token" not in reply.headers
    assert reply.json["error"]["message"]
    assert b"password-" not in reply.raw  # no password echoed
    assert emulator.identity.tokens_issued == 0


@pytest.mark.parametrize(
    "methods",
    [
        ["password", "token"],  # a method IAM knows, but with no "token" block
        ["password", "sms"],  # no such method
        ["password", "password"],
        ["token"],
        [],
        "password",  # not a list
        [None],
    ],
)
async def test_a_login_listing_other_methods_than_password_is_400(methods: object) -> None:
    """IAM authenticates by each method listed in auth.identity.methods, each with its block;
    an unknown one is a 400. Only ["password"] with its password block makes a token here."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,)))
    body = login_body()
    body["auth"]["identity"]["methods"] = methods
    async with running(emulator) as client:
        reply = await raw(client, "POST", IAM_TOKEN_PATH, json=body)
    assert reply.status == 400, reply.raw
    assert "auth.identity.methods" in reply.json["error"]["message"]
    assert "X-Subject-Token" not in reply.headers
    assert PASSWORD.encode() not in reply.raw
    assert emulator.identity.tokens_issued == 0


async def test_an_expired_token_is_refused_iva_0001_and_counted() -> None:
    """Until expires_at the token works; from then on 401 IVA.0001 "The token must be updated";
    a fresh login works again."""
    clock = Clock()
    emulator = Emulator(identity=IdentityOptions(users=(USER,), token_ttl=5))
    emulator.identity.clock = clock
    async with running(emulator) as client:
        first = (await login(client)).headers["X-Subject-Token"]
        clock.now += 4.9
        fresh = await with_token(client, first)
        clock.now += 0.1
        expired = await with_token(client, first)
        listed = await with_token(client, first, TASKS + "?limit=1")
        second = (await login(client)).headers["X-Subject-Token"]
        again = await with_token(client, second)
    assert fresh.status == 201
    assert "The token must be updated" in assert_error(expired, 401, "IVA.0001")
    assert_error(listed, 401, "IVA.0001")
    assert again.status == 201
    assert emulator.identity.refused_expired_tokens == 2
    assert emulator.identity.refused_expired == 2
    assert len(emulator.tasks) == 2


async def test_token_expiry_follows_the_real_clock() -> None:
    emulator = Emulator(identity=IdentityOptions(users=(USER,), token_ttl=0.3))
    async with running(emulator) as client:
        token = (await login(client)).headers["X-Subject-Token"]
        assert (await with_token(client, token)).status == 201
        await asyncio.sleep(0.35)
        assert_error(await with_token(client, token), 401, "IVA.0001")


async def test_a_token_is_bound_to_its_project() -> None:
    emulator = Emulator(identity=IdentityOptions(users=(USER,)))
    async with running(emulator) as client:
        token = (await login(client)).headers["X-Subject-Token"]
        other = f"/v2/{'f' * 32}/services/c-video-analysis/tasks"
        reply = await client.call(
            "GET", other, credentials=None, extra={"X-Auth-Token": token, "X-Project-Id": "f" * 32}
        )
    assert_error(reply, 400, "IVA.0002")


async def test_projects_by_region_name_signed_or_with_a_token() -> None:
    """GET /v3/projects?name={region} answers the project, as the SDK reads it when the project
    id is missing; unsigned or forged calls are refused."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,), region="ap-southeast-3"))
    async with running(emulator) as client:
        path = IAM_PROJECTS_PATH
        signed = await client.call("GET", path, query={"name": "ap-southeast-3"})
        other = await client.call("GET", path, query={"name": "cn-north-4"})
        unsigned = await client.call(
            "GET", path, query={"name": "ap-southeast-3"}, credentials=None
        )
        wrong_sk = await client.call(
            "GET", path, query={"name": "x"}, credentials=Credentials(EMULATOR_AK, "bad")
        )
        token = (await login(client)).headers["X-Subject-Token"]
        by_token = await raw(client, "GET", path + "?name=ap-southeast-3", {"X-Auth-Token": token})
        forged = await raw(client, "GET", path + "?name=ap-southeast-3", {"X-Auth-Token": "MIIx"})
    assert signed.status == 200, signed.raw
    [project] = signed.json["projects"]
    assert (project["id"], project["name"]) == (EMULATOR_PROJECT_ID, "ap-southeast-3")
    assert other.json["projects"] == []
    assert by_token.json["projects"] == signed.json["projects"]
    for refused in (unsigned, wrong_sk, forged):
        assert refused.status == 401, refused.raw
        assert EMULATOR_SK.encode() not in refused.raw


async def test_iam_and_metadata_are_off_by_default() -> None:
    async with running(Emulator()) as client:
        replies = [
            await login(client),
            await client.call("GET", IAM_PROJECTS_PATH, query={"name": "cn-north-4"}),
            await raw(client, "PUT", METADATA_TOKEN_PATH, {"X-Metadata-Token-Ttl-Seconds": "60"}),
        ]
    for reply in replies:
        assert_error(reply, 404, "APIG.0101")


# -- ECS metadata --------------------------------------------------------------------------------


async def test_metadata_issues_temporary_credentials_accepted_only_with_their_token() -> None:
    """The securitykey answer signs a create with its own security token; without it, with
    another issued token, or with a wrong SK the call is refused."""
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=600))
    async with running(emulator) as client:
        before = time.time()
        first = await securitykey(client)
        second = await securitykey(client)
        good = await with_temporary(client, first, first["securitytoken"])
        missing = await with_temporary(client, first, None)
        swapped = await with_temporary(client, first, second["securitytoken"])
        wrong_sk = await with_temporary(
            client, {**first, "secret": "not-the-sk"}, first["securitytoken"]
        )
    assert set(first) == {"access", "secret", "securitytoken", "expires_at"}
    expires = datetime.strptime(first["expires_at"], IAM_FORMAT).replace(tzinfo=UTC)
    assert before + 599 <= expires.timestamp() <= time.time() + 601
    assert first["access"] != second["access"]
    assert good.status == 201, good.raw
    for refused in (missing, swapped, wrong_sk):
        assert_error(refused, 401, "APIGW.0301")
        assert first["securitytoken"].encode() not in refused.raw
        assert first["secret"].encode() not in refused.raw
    assert emulator.identity.credentials_issued == 2
    assert len(emulator.tasks) == 1


async def test_expired_temporary_credentials_are_refused_iva_0001_and_counted() -> None:
    clock = Clock()
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=5))
    emulator.identity.clock = clock
    async with running(emulator) as client:
        credential = await securitykey(client)
        clock.now += 4.9
        fresh = await with_temporary(client, credential, credential["securitytoken"])
        clock.now += 0.1
        expired = await with_temporary(client, credential, credential["securitytoken"])
        renewed = await securitykey(client)
        again = await with_temporary(client, renewed, renewed["securitytoken"])
    assert fresh.status == 201
    assert "The token must be updated" in assert_error(expired, 401, "IVA.0001")
    assert again.status == 201
    assert emulator.identity.refused_expired_credentials == 1
    assert emulator.identity.refused_expired_tokens == 0
    assert emulator.identity.credentials_issued == 2


async def test_metadata_session_token_is_required_and_bounded() -> None:
    clock = Clock()
    emulator = Emulator(identity=IdentityOptions(metadata=True))
    emulator.identity.clock = clock
    async with running(emulator) as client:
        no_ttl = await raw(client, "PUT", METADATA_TOKEN_PATH)
        too_long = await raw(
            client, "PUT", METADATA_TOKEN_PATH, {"X-Metadata-Token-Ttl-Seconds": "21601"}
        )
        huge = await raw(  # past Python's int() digit limit: a 400, not a 500
            client, "PUT", METADATA_TOKEN_PATH, {"X-Metadata-Token-Ttl-Seconds": "9" * 5000}
        )
        session = await raw(
            client, "PUT", METADATA_TOKEN_PATH, {"X-Metadata-Token-Ttl-Seconds": "10"}
        )
        headers = {"X-Metadata-Token": session.raw.decode()}
        without = await raw(client, "GET", METADATA_SECURITYKEY_PATH)
        forged = await raw(client, "GET", METADATA_SECURITYKEY_PATH, {"X-Metadata-Token": "x"})
        valid = await raw(client, "GET", METADATA_SECURITYKEY_PATH, headers)
        clock.now += 10
        stale = await raw(client, "GET", METADATA_SECURITYKEY_PATH, headers)
    assert (no_ttl.status, too_long.status, huge.status, session.status) == (400, 400, 400, 200)
    assert valid.status == 200
    for refused in (without, forged, stale):
        assert refused.status == 401
        assert NO_AGENCY_MESSAGE.encode() not in refused.raw  # the SDK then renews its token
    assert emulator.identity.credentials_issued == 1


async def test_no_agency_is_401_naming_cloud_service_agency() -> None:
    emulator = Emulator(identity=IdentityOptions(metadata=True, agency=False))
    async with running(emulator) as client:
        session = await raw(
            client, "PUT", METADATA_TOKEN_PATH, {"X-Metadata-Token-Ttl-Seconds": "60"}
        )
        reply = await raw(
            client, "GET", METADATA_SECURITYKEY_PATH, {"X-Metadata-Token": session.raw.decode()}
        )
    assert reply.status == 401
    assert "Cloud Service Agency" in reply.raw.decode()
    assert emulator.identity.credentials_issued == 0


async def test_official_sdk_reads_the_metadata_credentials() -> None:
    """huaweicloudsdkcore's own metadata client gets working credentials from the emulator."""
    internal = pytest.importorskip("huaweicloudsdkcore.auth.internal")
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=600))
    async with running(emulator) as client:
        accessor = internal.MetadataAccessor()
        accessor._METADATA_ENDPOINT = client.base
        credential = await asyncio.to_thread(accessor.get_credential)
        reply = await with_temporary(
            client,
            {"access": credential.access, "secret": credential.secret},
            credential.security_token,
        )
    assert reply.status == 201, reply.raw
    assert credential.expire_at is not None
    assert emulator.identity.metadata_tokens_issued == 1


async def test_official_sdk_discovers_the_project_and_signs_temporary_credentials() -> None:
    """huaweicloudsdkvas, given temporary credentials and no project id, finds the project with
    GET /v3/projects?name={region} and lists with X-Security-Token; once the credentials have
    expired it gets 401 IVA.0001."""
    vas = pytest.importorskip("huaweicloudsdkvas.v2")
    core = pytest.importorskip("huaweicloudsdkcore.auth.credentials")
    region = pytest.importorskip("huaweicloudsdkcore.region.region")
    exceptions = pytest.importorskip("huaweicloudsdkcore.exceptions.exceptions")
    clock = Clock()
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=600))
    emulator.identity.clock = clock
    async with running(emulator) as client:
        credential = await securitykey(client)
        credentials = (
            core.BasicCredentials(credential["access"], credential["secret"])
            .with_security_token(credential["securitytoken"])
            .with_iam_endpoint(client.base)
        )

        def build() -> Any:
            return (
                vas.VasClient.new_builder()
                .with_credentials(credentials)
                .with_region(region.Region("cn-north-4", client.base))
                .build()
            )

        sdk = await asyncio.to_thread(build)
        request = vas.ListTasksDetailsRequest(service_name="c-video-analysis", limit=1)
        listed = await asyncio.to_thread(sdk.list_tasks_details, request)
        clock.now += 600
        with pytest.raises(exceptions.ClientRequestException) as expired:
            await asyncio.to_thread(sdk.list_tasks_details, request)
    assert credentials.project_id == EMULATOR_PROJECT_ID
    assert (listed.status_code, listed.count) == (200, 0)
    assert (expired.value.status_code, expired.value.error_code) == (401, "IVA.0001")
    assert emulator.identity.refused_expired_credentials == 1


# -- the CLI options -----------------------------------------------------------------------------


def test_cli_options_build_the_identity() -> None:
    from batchsubmit import arguments

    args = arguments.parser().parse_args(
        [
            *("emulator", "--iam-user", "bob:acme:pa:ss", "--iam-user", "eve:x:y", "--metadata"),
            *("--credential-ttl", "5", "--token-ttl", "7", "--no-agency", "--region", "cn-east-3"),
            *("--iam-outage", "3"),
        ]
    )
    assert args.iam_outage == 3
    assert args.iam_user == [IamUser("bob", "acme", "pa:ss"), IamUser("eve", "x", "y")]
    assert (args.metadata, args.no_agency, args.region) == (True, True, "cn-east-3")
    assert (args.credential_ttl, args.token_ttl) == (5.0, 7.0)
    defaults = arguments.parser().parse_args(["emulator"])
    assert (defaults.iam_user, defaults.metadata, defaults.token_ttl) == ([], False, 86400.0)
    assert defaults.iam_outage == 0
    assert "pa:ss" not in repr(args.iam_user)


async def test_standalone_emulator_serves_iam_and_metadata_behind_options() -> None:
    """`batchsubmit emulator --iam-user ... --metadata`: the banner names the variables that
    point a run at its IAM and metadata (never the password); both answer on the one port,
    the first call 503 with `--iam-outage 1`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchsubmit", "emulator", "--port", "0",
        "--iam-user", f"alice:acme:{PASSWORD}", "--metadata", "--credential-ttl", "30",
        "--iam-outage", "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode() for _ in range(4)]
        found = re.search(r"BATCHSUBMIT_METADATA_URL=(\S+)", lines[3])
        assert found, lines
        url = found.group(1)
        assert f"HUAWEICLOUD_SDK_IAM_ENDPOINT={url} BATCHSUBMIT_IAM_USER=alice" in lines[2]
        assert "BATCHSUBMIT_IAM_DOMAIN=acme" in lines[2]
        async with aiohttp.ClientSession(max_field_size=MAX_HEADER_FIELD) as session:
            client = Client(session, url)
            busy = await login(client)
            token = (await login(client)).headers["X-Subject-Token"]
            created = await with_token(client, token)
            credential = await securitykey(client)
            signed = await with_temporary(client, credential, credential["securitytoken"])
        assert (busy.status, created.status, signed.status) == (503, 201, 201)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 20)
    text = "".join(lines) + out.decode() + err.decode()
    assert process.returncode == 0, text
    assert PASSWORD not in text
    assert "IAM tokens issued 1, temporary credentials issued 1" in err.decode()


def test_bad_iam_user_is_refused_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    from batchsubmit import arguments

    with pytest.raises(SystemExit):
        arguments.parser().parse_args(["emulator", "--iam-user", "nodomain-secretpw"])
    assert "secretpw" not in capsys.readouterr().err


def test_iam_user_parse() -> None:
    assert IamUser.parse("a:b:c:d") == IamUser("a", "b", "c:d")
    assert PASSWORD not in repr(IdentityOptions(users=(USER,)))
    for bad in ("a:b", "a::c", ":b:c", "a:b:"):
        with pytest.raises(ValueError, match="NAME:DOMAIN:PASSWORD"):
            IamUser.parse(bad)
