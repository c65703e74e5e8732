"""Enterprise networks: every VAS and IAM call follows HTTP_PROXY / NO_PROXY as curl and the SDK
do, and the metadata service is never reached through a proxy."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import socket
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from batchsubmit.auth import Credentials
from batchsubmit.cli import main
from batchsubmit.client import Endpoint, VasClient, open_session
from batchsubmit.credentials import find_source, open_provider
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Emulator
from batchsubmit.emulator_iam import IdentityOptions

from .helpers import (
    ServerThread,
    cli,
    config_for,
    header_of,
    run_submit,
    serve_app,
    serve_raw,
    video_keys,
    write_manifest,
)

HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "transfer-encoding", "te"}


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name.startswith("BATCHSUBMIT_"):
            monkeypatch.delenv(name)


class ForwardProxy:
    """A plain HTTP forward proxy: takes absolute-form requests, forwards them unchanged, and
    counts what it forwarded by path."""

    def __init__(self) -> None:
        self.forwarded: Counter[str] = Counter()
        self.absolute = 0

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        out = aiohttp.ClientSession(trust_env=False, auto_decompress=False)
        async with out as self._out, serve_app(app) as url:
            yield url

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        line_target = request._message.url  # the request line's target, as sent
        if line_target.is_absolute():
            self.absolute += 1
        target = f"http://{request.headers['Host']}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        self.forwarded[request.rel_url.path] += 1
        try:
            async with self._out.request(
                request.method,
                target,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            ) as answer:
                payload = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                kept.pop("Content-Length", None)
                return web.Response(status=answer.status, body=payload, headers=kept)
        except aiohttp.ClientConnectionError:
            return web.Response(status=502, text="proxy: cannot connect upstream")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_every_vas_call_of_a_run_goes_through_http_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, each call of a run reaches the emulator through the proxy, and its
    signature still verifies there."""
    emulator = Emulator()
    proxy = ForwardProxy()
    async with emulator.serve() as url, proxy.serve() as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        manifest = write_manifest(tmp_path, video_keys(12))
        stats, log = await run_submit(config_for(manifest, url, tmp_path / "out.csv"))
    assert stats.submitted == 12, log
    assert len(emulator.tasks) == 12
    served = sum(emulator.calls.values())
    assert served == 12
    assert sum(proxy.forwarded.values()) == served
    assert proxy.absolute == served  # absolute-form request lines: real proxy requests


@pytest.mark.anyio
async def test_no_proxy_sends_calls_direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host listed in NO_PROXY is reached directly, as curl does."""
    emulator = Emulator()
    proxy = ForwardProxy()
    async with emulator.serve() as url, proxy.serve() as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        manifest = write_manifest(tmp_path, video_keys(4))
        stats, log = await run_submit(config_for(manifest, url, tmp_path / "out.csv"))
    assert stats.submitted == 4, log
    assert sum(proxy.forwarded.values()) == 0


@pytest.mark.anyio
async def test_metadata_is_never_reached_through_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temporary credentials from metadata come directly; IAM (project lookup) and VAS calls go
    through the proxy."""
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=600.0))
    proxy = ForwardProxy()
    async with emulator.serve() as url, proxy.serve() as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        env = {"BATCHSUBMIT_METADATA_URL": url, "HUAWEICLOUD_SDK_IAM_ENDPOINT": url}
        choice = find_source(env, home=tmp_path, warn=lambda _m: None)
        async with open_session(2) as session:
            provider = await open_provider(
                choice, session, region="cn-north-4", warn=lambda _m: None
            )
        manifest = write_manifest(tmp_path, video_keys(3))
        config = config_for(manifest, url, tmp_path / "out.csv")
        stats, log = await run_submit(dataclasses.replace(config, credentials=provider))
    assert stats.submitted == 3, log
    assert emulator.identity.metadata_tokens_issued == 1
    paths = set(proxy.forwarded)
    assert not any(p.startswith(("/meta-data", "/openstack")) for p in paths), paths
    assert proxy.forwarded["/v3/projects"] == 1
    assert sum(n for p, n in proxy.forwarded.items() if p.startswith("/v2/")) == 3


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that only SSL_CERT_FILE vouches for, and its key."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "ca.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def check_env(home: Path) -> dict[str, str]:
    """A `check` process's environment: the emulator's keys, no proxy, no CA bundle, a
    private home, metadata on a closed local port."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HUAWEICLOUD_", "BATCHSUBMIT_", "SSL_CERT"))
        and "proxy" not in k.lower()
    }
    env.update(
        HUAWEICLOUD_SDK_AK=EMULATOR_AK,
        HUAWEICLOUD_SDK_SK=EMULATOR_SK,
        HUAWEICLOUD_SDK_PROJECT_ID=EMULATOR_PROJECT_ID,
        HOME=str(home),
        BATCHSUBMIT_METADATA_URL=f"http://127.0.0.1:{closed_port()}",
    )
    return env


@asynccontextmanager
async def tls_emulator(emulator: Emulator, cert: Path, key: Path) -> AsyncIterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(emulator.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_a_corporate_ca_bundle_in_ssl_cert_file_is_trusted(
    tmp_path: Path, self_signed: tuple[Path, Path]
) -> None:
    """A service whose certificate only SSL_CERT_FILE vouches for (a TLS-inspecting proxy's CA):
    trusted with the variable, refused and named without it."""
    cert, key = self_signed
    manifest = write_manifest(tmp_path, video_keys(2))
    emulator = Emulator()
    server = ServerThread(lambda: tls_emulator(emulator, cert, key))
    base_env = check_env(tmp_path)
    args = [
        "check", str(manifest), "--endpoint", server.url, "--timeout", "2",
        "--obs-endpoint", f"http://127.0.0.1:{closed_port()}",
    ]  # fmt: skip
    try:
        trusted = subprocess.run(
            cli(*args), env={**base_env, "SSL_CERT_FILE": str(cert)}, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        untrusted = subprocess.run(
            cli(*args), env=base_env, capture_output=True, text=True, timeout=60
        )
    finally:
        server.close()
    assert "TLS verified" in trusted.stdout, trusted.stdout + trusted.stderr
    assert "PASS signature and subscription" in trusted.stdout, trusted.stdout
    assert "FAIL endpoint: TLS with 127.0.0.1" in untrusted.stdout, untrusted.stdout
    assert "SSL_CERT_FILE" in untrusted.stdout
    assert not emulator.tasks


def test_check_goes_through_the_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` behind a proxy: it connects to the proxy, says so, and its signed list call
    reaches the service through it."""
    emulator = Emulator()
    proxy = ForwardProxy()
    vas, forward = ServerThread(emulator.serve), ServerThread(proxy.serve)
    for name, value in (
        ("HUAWEICLOUD_SDK_AK", EMULATOR_AK),
        ("HUAWEICLOUD_SDK_SK", EMULATOR_SK),
        ("HUAWEICLOUD_SDK_PROJECT_ID", EMULATOR_PROJECT_ID),
        ("HTTP_PROXY", forward.url),
        ("HOME", str(tmp_path)),
    ):
        monkeypatch.setenv(name, value)
    manifest = write_manifest(tmp_path, video_keys(2))
    try:
        code = main(
            ["check", str(manifest), "--endpoint", vas.url, "--timeout", "2",
             "--obs-endpoint", f"http://127.0.0.1:{closed_port()}"]
        )  # fmt: skip
    finally:
        vas.close()
        forward.close()
    out = capsys.readouterr().out
    assert code == 3, out  # the OBS endpoint is closed on purpose
    proxy_port = forward.url.rsplit(":", 1)[1]
    vas_port = vas.url.rsplit(":", 1)[1]
    assert f"PASS endpoint: 127.0.0.1:{vas_port} through proxy 127.0.0.1:{proxy_port}: " in out
    assert "PASS signature and subscription" in out
    assert proxy.forwarded[f"/v2/{EMULATOR_PROJECT_ID}/services/video-analyze/tasks"] == 1


def echo_proxy_authorization(head: str, _body: bytes) -> bytes:
    """A proxy that refuses everything, echoing what it was sent: a CONNECT with its
    Proxy-Authorization as the 407's reason phrase, a plain request in a 403 page (Squid's
    %R)."""
    sent = header_of(head, "Proxy-Authorization")
    if head.startswith("CONNECT "):
        return f"HTTP/1.1 407 {sent}\r\nContent-Length: 0\r\n\r\n".encode()
    page = f"<pre>Access denied. Proxy-Authorization: {sent}\n{head}</pre>".encode()
    status = f"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: {len(page)}"
    return f"{status}\r\n\r\n".encode() + page


PROXY_USER = "bob:Pr0xyPassw0rd"
PROXY_BASIC = base64.b64encode(PROXY_USER.encode()).decode()


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:The 'proxy_auth' parameter is deprecated:DeprecationWarning")
async def test_a_proxy_echoing_its_credentials_never_puts_them_in_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proxy's password and its Basic credentials were in no mask list: a 407 whose reason
    echoed Proxy-Authorization (an https endpoint) and a 403 page quoting the request (an http
    one) put base64 of user:password in the results row, the summary and stderr."""
    async with serve_raw(echo_proxy_authorization) as proxy, open_session(1) as session:
        proxy = proxy.replace("http://", f"http://{PROXY_USER}@")
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        answers = []
        for base_url in (f"http://127.0.0.1:{closed_port()}", f"https://127.0.0.1:{closed_port()}"):
            endpoint = Endpoint(
                base_url=base_url, project_id=EMULATOR_PROJECT_ID, service_name="video-analyze"
            )
            client = VasClient(session, endpoint, Credentials(EMULATOR_AK, EMULATOR_SK), timeout=2)
            answers.append(await client.create(b"{}"))
    page, refused = answers
    assert (page.status, refused.error_code) == (403, "CONNECTION")
    assert "Proxy-Authorization: Basic <hidden>" in page.error_msg
    assert "407, message='Basic <hidden>'" in refused.error_msg
    for answer in answers:
        assert PROXY_BASIC[:12] not in answer.error_msg
        assert "Passw0rd" not in answer.error_msg


def test_check_never_shows_the_proxy_credentials_a_refused_connect_echoes(
    tmp_path: Path,
) -> None:
    """`check`'s CONNECT line showed a 407's reason phrase, the Proxy-Authorization it echoed."""
    forward = ServerThread(lambda: serve_raw(echo_proxy_authorization))
    env = {**check_env(tmp_path), "HTTPS_PROXY": forward.url.replace("//", f"//{PROXY_USER}@")}
    manifest = write_manifest(tmp_path, video_keys(1))
    args = [
        "check", str(manifest), "--endpoint", f"https://127.0.0.1:{closed_port()}",
        "--timeout", "2", "--obs-endpoint", f"http://127.0.0.1:{closed_port()}",
    ]  # fmt: skip
    try:
        done = subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=60)
    finally:
        forward.close()
    out = done.stdout + done.stderr
    assert "refused the user in the proxy URL (HTTP 407 Basic <hidden>)" in done.stdout, out
    assert PROXY_BASIC[:12] not in out
    assert "Passw0rd" not in out


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("alice:Pr0xyPassw0rd@127.0.0.1:3128", "not a proxy URL"),  # no scheme
        ("http://alice:Pr0xyPassw0rd@127.0.0.1:99999", "out of range"),
        ("http://alice:Pr0xyPassw0rd@127.0.0.1:abc", "port"),
        ("http://alice:Pr0xyPassw0rd@[::1", "IPv6"),
        ("https://alice:Pr0xyPassw0rd@127.0.0.1:3128", "over TLS"),
        # urllib ends the host part at '#', '?' and '/', and quoted the password as the port
        ("http://alice:Pr0xy#Passw0rd@127.0.0.1:3128", "port"),
        ("http://alice:Pr0xy?Passw0rd@127.0.0.1:3128", "port"),
        ("http://alice:Pr0xy/Passw0rd@127.0.0.1:3128", "port"),
        ("https://alice:Pr0xy@Passw0rd@127.0.0.1:3128", "over TLS"),
        ("http://alice:%E2%82%ACPr0xyPassw0rd@127.0.0.1:3128", "latin-1"),  # was a traceback
    ],
)
def test_a_proxy_variable_no_call_could_use_is_exit_2_with_the_password_hidden(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    said: str,
) -> None:
    """A scheme-less proxy echoed its password in errors, the summary and the results rows;
    a port out of range or an open bracket crashed `check`; an https:// proxy was ignored by
    aiohttp, so calls went direct while `check` said "through proxy". Each is refused before
    any request, naming the variable, the password hidden, whatever characters it holds."""
    monkeypatch.setenv("HTTPS_PROXY", value)
    manifest = write_manifest(tmp_path, video_keys(1))
    for args in (["check", str(manifest)], ["submit", str(manifest), "--emulator"]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "Pr0xy" not in err, err
        assert "Passw0rd" not in err, err
        assert "HTTPS_PROXY=" in err
        assert said in err, err
    assert main(["expand", str(manifest)]) == 0  # sends nothing: the proxy is not its business


class ConnectProxy:
    """An HTTPS proxy as enterprise networks run them: ``CONNECT host:port`` opens a tunnel, or
    is refused with ``refuse``'s status, or needs the user ``user`` ("name:password")."""

    def __init__(self, *, refuse: str = "", user: str = "") -> None:
        self.refuse = refuse
        self.user = user
        self.heads: list[str] = []
        self.tunnels = 0

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            method, target, _version = head.split("\r\n", 1)[0].split(" ")
            wanted = "Basic " + base64.b64encode(self.user.encode()).decode()
            given = [line for line in head.split("\r\n") if ":" in line]
            authorised = f"Proxy-Authorization: {wanted}" in given
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            elif self.user and not authorised:
                writer.write(b'HTTP/1.1 407 Proxy Authentication Required\r\n'
                             b'Proxy-Authenticate: Basic realm="corp"\r\n\r\n')  # fmt: skip
            elif self.refuse:
                writer.write(f"HTTP/1.1 {self.refuse}\r\nContent-Length: 0\r\n\r\n".encode())
            else:
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.tunnels += 1
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("behaviour", "in_url", "trusted", "said"),
    [
        ({}, "", True,
         "PASS endpoint: 127.0.0.1:{vas} through proxy 127.0.0.1:{proxy}: connects, the proxy "
         "opens a tunnel, TLS verified"),
        ({}, "", False,
         "FAIL endpoint: TLS with 127.0.0.1:{vas} through proxy 127.0.0.1:{proxy} failed"),
        ({"refuse": "403 Forbidden"}, "", True,
         "FAIL endpoint: proxy 127.0.0.1:{proxy} refused a tunnel to 127.0.0.1:{vas} "
         "(HTTP 403 Forbidden)"),
        ({"user": "alice:Pr0xyPassw0rd"}, "", True,
         "FAIL endpoint: proxy 127.0.0.1:{proxy} wants a user (HTTP 407 Proxy Authentication "
         "Required): give it in the proxy URL"),
        ({"user": "alice:Pr0xyPassw0rd"}, "alice:wrongPassw0rd@", True,
         "FAIL endpoint: proxy 127.0.0.1:{proxy} refused the user in the proxy URL (HTTP 407"),
        ({"user": "alice:Pr0xyPassw0rd"}, "alice:Pr0xyPassw0rd@", True,
         "PASS endpoint: 127.0.0.1:{vas} through proxy 127.0.0.1:{proxy}: connects, the proxy "
         "opens a tunnel, TLS verified"),
    ],
    ids=["tunnel", "inspecting", "forbidden", "no-user", "wrong-user", "user"],
)  # fmt: skip
def test_check_opens_the_tunnel_an_https_endpoint_needs_through_a_proxy(
    tmp_path: Path,
    self_signed: tuple[Path, Path],
    behaviour: dict[str, str],
    in_url: str,
    trusted: bool,
    said: str,
) -> None:
    """Behind a proxy, `check` tested only TCP to the proxy: its endpoint line passed when the
    proxy refused the endpoint or wanted a user, and a TLS-inspecting proxy's certificate did
    not lead to SSL_CERT_FILE. It now asks for the tunnel the client will ask for (CONNECT,
    with the proxy URL's user) and verifies TLS inside it; the password is never shown."""
    cert, key = self_signed
    proxy = ConnectProxy(**behaviour)
    emulator = Emulator()
    vas = ServerThread(lambda: tls_emulator(emulator, cert, key))
    forward = ServerThread(proxy.serve)
    proxy_url = forward.url.replace("http://", f"http://{in_url}")
    env = {**check_env(tmp_path), "HTTPS_PROXY": proxy_url}
    if trusted:
        env["SSL_CERT_FILE"] = str(cert)
    manifest = write_manifest(tmp_path, video_keys(1))
    args = [
        "check", str(manifest), "--endpoint", vas.url, "--timeout", "2",
        "--obs-endpoint", f"http://127.0.0.1:{closed_port()}",
    ]  # fmt: skip
    try:
        done = subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=60)
    finally:
        vas.close()
        forward.close()
    out = done.stdout + done.stderr
    line = said.format(vas=vas.url.rsplit(":", 1)[1], proxy=forward.url.rsplit(":", 1)[1])
    assert line in done.stdout, out
    assert "Pr0xyPassw0rd" not in out
    assert "wrongPassw0rd" not in out
    assert proxy.heads
    assert all(h.startswith("CONNECT 127.0.0.1:") for h in proxy.heads)
    if said.startswith("PASS"):
        # the client's signed list call took the same tunnel: the check's line is true
        assert "PASS signature and subscription" in done.stdout, out
        assert proxy.tunnels == 2
        assert len({head.split(" ")[1] for head in proxy.heads}) == 1  # the same target
    else:
        assert "SKIP signature and subscription" in done.stdout, out
        if not trusted:
            assert "SSL_CERT_FILE" in done.stdout
    assert not emulator.tasks
