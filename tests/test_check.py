"""`batchsubmit check`: one line per check with what to fix, in seconds, creating nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from batchsubmit.check import PREFIXES_AT_ONCE, tunnel_target
from batchsubmit.cli import main
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Emulator, Faults
from batchsubmit.emulator_iam import IamUser, IdentityOptions
from batchsubmit.obs import string_to_sign
from batchsubmit.results import COLUMNS

from .helpers import ServerThread, obsutil_listing, serve_app, video_keys

WRONG_SK = "wrong-sk-DISTINCTIVE-93ad"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The emulator's keys, no proxy, a private home, metadata on a closed local port."""
    for name in list(os.environ):
        if name.startswith(("BATCHSUBMIT_", "HUAWEICLOUD_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BATCHSUBMIT_METADATA_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", EMULATOR_AK)
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", EMULATOR_SK)
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", EMULATOR_PROJECT_ID)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeObs:
    """OBS for HEAD bucket and a one-key ListObjects, checking the signature (HMAC-SHA1)."""

    def __init__(self, buckets: set[str], denied: frozenset[str] = frozenset()) -> None:
        self.buckets = buckets
        self.denied = denied
        self.calls: list[tuple[str, str]] = []
        self.together = 0  # >0: a listing is answered once this many are in flight (or after 5 s)
        self._listings = 0
        self._all_here: asyncio.Event | None = None

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_route("*", "/{bucket}", self._bucket)
        async with serve_app(app) as url:
            yield url

    async def _bucket(self, request: web.Request) -> web.Response:
        bucket = request.match_info["bucket"]
        self.calls.append((request.method, bucket))
        token = request.headers.get("x-obs-security-token")
        to_sign = string_to_sign(
            request.method,
            request.headers.get("Date", ""),
            f"/{bucket}/",
            {"x-obs-security-token": token} if token else {},
        )
        digest = hmac.new(EMULATOR_SK.encode(), to_sign.encode(), hashlib.sha1).digest()
        expected = f"OBS {EMULATOR_AK}:{base64.b64encode(digest).decode()}"
        if request.headers.get("Authorization") != expected:
            return _xml(403, "SignatureDoesNotMatch")
        if bucket not in self.buckets:
            return _xml(404, "NoSuchBucket")
        if bucket in self.denied:
            return _xml(403, "AccessDenied")
        if request.method == "HEAD":
            return web.Response(status=200)
        if self.together:
            self._all_here = self._all_here or asyncio.Event()
            self._listings += 1
            if self._listings >= self.together:
                self._all_here.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_here.wait(), 5)
        return web.Response(
            status=200,
            content_type="application/xml",
            text="<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
        )


def _xml(status: int, code: str) -> web.Response:
    body = f"<Error><Code>{code}</Code></Error>"
    return web.Response(status=status, text=body, content_type="application/xml")


class Services:
    """The emulator and the fake OBS, served from a background thread for the CLI."""

    def __init__(self, emulator: Emulator, obs: FakeObs) -> None:
        self.emulator = emulator
        self.obs = obs
        self.vas = ServerThread(emulator.serve)
        self.obs_server = ServerThread(obs.serve)

    def close(self) -> None:
        self.vas.close()
        self.obs_server.close()


@pytest.fixture
def services() -> Iterator[Services]:
    found = Services(
        Emulator(Faults()), FakeObs({"in-bucket", "out-bucket", "private"}, frozenset({"private"}))
    )
    try:
        yield found
    finally:
        found.close()


def manifest(tmp: Path, *, region: str = "cn-north-4", prefix: str = "obs://in-bucket/cams/",
             videos: int = 3, output: str = "out-bucket") -> Path:  # fmt: skip
    (tmp / "listing.txt").write_text(obsutil_listing(video_keys(videos)), encoding="utf-8")
    path = tmp / "nightly.toml"
    path.write_text(
        f"""
[service]
name = "video-analyze"
version = "1.0"
region = "{region}"

[job]
output = "obs://{output}/results/"

[[source]]
listing = "listing.txt"

[[source]]
prefix = "{prefix}"
""",
        encoding="utf-8",
    )
    return path


def check(
    capsys: pytest.CaptureFixture[str], path: Path, vas: str, obs: str, *extra: str
) -> tuple[int, list[str], str, float]:
    started = time.monotonic()
    code = main(
        ["check", str(path), "--endpoint", vas, "--obs-endpoint", obs, "--timeout", "1", *extra]
    )
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    return code, out.splitlines(), err, elapsed


def name_of(entry: str) -> str:
    """``PASS credentials: found ...`` -> ``credentials``."""
    return entry.split(" ", 1)[1].partition(": ")[0]


def line(lines: list[str], name: str) -> str:
    found = [entry for entry in lines if name_of(entry).startswith(name)]
    assert len(found) == 1, lines
    return found[0]


def test_all_pass_and_nothing_is_created(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A good set-up: every line PASS, exit 0, and the service saw only one list call."""
    code, lines, err, elapsed = check(
        capsys, manifest(tmp_path), services.vas.url, services.obs_server.url
    )
    assert code == 0, [*lines, err]
    assert all(entry.startswith("PASS ") for entry in lines), lines
    names = [name_of(entry) for entry in lines]
    assert names == [
        "credentials", "region", "endpoint", "signature and subscription", "quota",
        "source obs://in-bucket/cams/", "output bucket out-bucket",
    ]  # fmt: skip
    assert "environment (HUAWEICLOUD_SDK_AK/SK)" in line(lines, "credentials")
    assert "3 creates planned" in line(lines, "quota")
    assert not services.emulator.tasks
    assert set(services.emulator.calls) == {("list", 200)}
    assert services.obs.calls == [("GET", "in-bucket"), ("HEAD", "out-bucket")]
    assert elapsed < 5


def test_a_wrong_sk_is_named_without_showing_it(
    services: Services,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", WRONG_SK)
    code, lines, err, _ = check(
        capsys, manifest(tmp_path), services.vas.url, services.obs_server.url
    )
    assert code == 3
    signature = line(lines, "signature")
    assert signature.startswith("FAIL")
    assert "APIGW.0301" in signature
    assert "SK does not belong to the AK" in signature
    assert line(lines, "output bucket").startswith("FAIL")  # OBS refuses the same SK
    assert WRONG_SK not in "\n".join(lines) + err
    assert not services.emulator.tasks


def test_an_unsubscribed_service_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = Services(Emulator(Faults(), services={"another-service"}), FakeObs({"out-bucket"}))
    try:
        code, lines, _, _ = check(capsys, manifest(tmp_path), found.vas.url, found.obs_server.url)
    finally:
        found.close()
    assert code == 3
    signature = line(lines, "signature")
    assert "IVA.0007" in signature
    assert "not subscribed" in signature
    assert line(lines, "quota").startswith("SKIP")


def test_an_unreadable_prefix_and_a_missing_bucket(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _, _ = check(
        capsys,
        manifest(tmp_path, prefix="obs://private/cams/"),
        services.vas.url,
        services.obs_server.url,
    )
    assert code == 3
    source = line(lines, "source obs://private/cams/")
    assert source.startswith("FAIL")
    assert "AccessDenied" in source
    assert "may not list" in source
    code, lines, _, _ = check(
        capsys,
        manifest(tmp_path, prefix="obs://nobucket/x/"),
        services.vas.url,
        services.obs_server.url,
    )
    assert "no bucket 'nobucket'" in line(lines, "source obs://nobucket/x/")


def test_prefix_sources_are_checked_side_by_side(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One after another, each prefix took its own ``--timeout`` when OBS was slow or
    dropped: a manifest of many prefixes made check take minutes. Here OBS answers a listing
    only once four are in flight: checked one at a time, the first would time out."""
    path = manifest(tmp_path)
    text = path.read_text(encoding="utf-8")
    cameras = range(2, PREFIXES_AT_ONCE + 1)
    for camera in cameras:
        text += f'\n[[source]]\nprefix = "obs://in-bucket/cams{camera}/"\n'
    path.write_text(text, encoding="utf-8")
    services.obs.together = PREFIXES_AT_ONCE  # all at once: as many connections as prefixes
    code, lines, err, _elapsed = check(capsys, path, services.vas.url, services.obs_server.url)
    assert code == 0, (lines, err)
    sources = [entry for entry in lines if name_of(entry).startswith("source ")]
    assert [name_of(entry) for entry in sources] == [
        "source obs://in-bucket/cams/",
        *(f"source obs://in-bucket/cams{camera}/" for camera in cameras),
    ]  # the manifest's order, whatever order the answers came in
    assert all(entry.startswith("PASS") for entry in sources), sources


def test_the_output_bucket_is_one_head_through_the_gate(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or forbidden output bucket is named; each is one signed HEAD, sent by the
    OBS client through a gate like the listing's (a refusal is not retried: a check reports)."""
    code, lines, _, _ = check(
        capsys, manifest(tmp_path, output="nobucket"), services.vas.url, services.obs_server.url
    )
    assert code == 3
    missing = line(lines, "output bucket nobucket")
    assert missing.startswith("FAIL")
    assert "no bucket 'nobucket'" in missing
    code, lines, _, _ = check(
        capsys, manifest(tmp_path, output="private"), services.vas.url, services.obs_server.url
    )
    forbidden = line(lines, "output bucket private")
    assert forbidden.startswith("FAIL")
    assert "may not reach" in forbidden
    assert services.obs.calls.count(("HEAD", "nobucket")) == 1
    assert services.obs.calls.count(("HEAD", "private")) == 1


def test_no_room_under_the_quota(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tonight's 5 planned creates do not fit in a quota of 4: FAIL saying how to make room."""
    code, lines, _, _ = check(
        capsys, manifest(tmp_path, videos=5), services.vas.url, services.obs_server.url,
        "--quota", "4",
    )  # fmt: skip
    assert code == 3
    quota = line(lines, "quota")
    assert quota.startswith("FAIL quota: no room")
    assert "5 creates planned" in quota
    assert "prune" in quota


def test_an_unknown_region_warns(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _, _ = check(
        capsys, manifest(tmp_path, region="cn-nowhere-9"), services.vas.url,
        services.obs_server.url,
    )  # fmt: skip
    region = line(lines, "region")
    assert region.startswith("WARN")
    assert "'cn-nowhere-9' is not a region Huawei lists" in region
    assert code == 0  # a warning alone does not fail the check


def test_an_unreachable_endpoint_is_named_in_seconds(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused, and accepted but never answered: each its own message, within seconds."""
    code, lines, _, elapsed = check(
        capsys, manifest(tmp_path), f"http://127.0.0.1:{closed_port()}", services.obs_server.url
    )
    assert code == 3
    assert "refused" in line(lines, "endpoint")
    assert line(lines, "signature").startswith("SKIP")
    assert elapsed < 5

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts connections; nobody ever answers
    try:
        port = silent.getsockname()[1]
        code, lines, _, elapsed = check(
            capsys, manifest(tmp_path), f"http://127.0.0.1:{port}", services.obs_server.url
        )
    finally:
        silent.close()
    assert code == 3
    assert line(lines, "endpoint").startswith("PASS")
    signature = line(lines, "signature")
    assert signature.startswith("FAIL")
    assert "gave no answer within 1 s" in signature
    assert elapsed < 6


def test_no_credentials_is_a_failed_check_listing_the_sources(
    services: Services,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"):
        monkeypatch.delenv(name)
    code, lines, _, elapsed = check(
        capsys, manifest(tmp_path), services.vas.url, services.obs_server.url
    )
    assert code == 3
    credentials = line(lines, "credentials")
    assert credentials.startswith("FAIL")
    assert "ECS metadata" in credentials
    assert "profile file" in credentials
    assert elapsed < 5


RESULTS_HEADER = ",".join(COLUMNS) + "\r\n"
ROW = "obs://in-bucket/a.mp4,a-000000000000,,failed,400,X,x,1,,2026-12-01T00:00:00Z,,False,2\r\n"


@pytest.mark.parametrize(
    ("listing_tail", "results", "expected"),
    [
        ("this is not a path\n", None, "listing.txt:"),
        ("", RESULTS_HEADER + 'obs://in-bucket/"broken\r\n' + ROW, "r.csv:2"),
        ("", "hello,world\r\n1,2\r\n", "r.csv"),
    ],
)
@pytest.mark.parametrize("keys", [True, False])
def test_what_stops_a_submit_fails_the_check(
    services: Services,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    listing_tail: str,
    results: str | None,
    expected: str,
    keys: bool,
) -> None:
    """A bad listing line, a damaged results file or a file that is not a results file stop
    `submit` (exit 2): `check` on the same set-up fails too, naming the file (and line),
    with or without credentials; it never says "all checks passed"."""
    if not keys:
        for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"):
            monkeypatch.delenv(name)
    path = manifest(tmp_path)
    with (tmp_path / "listing.txt").open("a", encoding="utf-8") as listing:
        listing.write(listing_tail)
    if results is not None:
        (tmp_path / "r.csv").write_text(results, encoding="utf-8", newline="")
    code, lines, err, _ = check(
        capsys, path, services.vas.url, services.obs_server.url,
        "--results", str(tmp_path / "r.csv"),
    )  # fmt: skip
    assert code == 3, [*lines, err]
    quota = line(lines, "quota")
    assert quota.startswith("FAIL quota: tonight's creates cannot be counted"), quota
    assert expected in quota
    assert "all checks passed" not in err
    assert not services.emulator.tasks


def test_a_bad_manifest_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[service]\n")
    assert main(["check", str(path)]) == 2


CODES = [
    (401, "APIGW.0301", "SK does not belong to the AK"),
    (401, "APIGW.0303", "clock"),
    (401, "IVA.0001", "expired or invalid"),
    (400, "IVA.0002", "project id is not valid"),
    (403, "IVA.0007", "not subscribed"),
    (403, "IVA.0009", "no VAS permission"),
    (403, "IVA.0015", "IAM policy denies"),
]


def check_against_list(
    answer: Callable[[web.Request], Awaitable[web.Response]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, list[str]]:
    """`check` against a service whose list call is ``answer`` (OBS closed on purpose)."""
    app = web.Application()
    app.router.add_get("/v2/{project}/services/{service}/tasks", answer)

    @asynccontextmanager
    async def served() -> AsyncIterator[str]:
        async with serve_app(app) as url:
            yield url

    vas = ServerThread(served)
    try:
        result, lines, _, _ = check(
            capsys, manifest(tmp_path), vas.url, f"http://127.0.0.1:{closed_port()}"
        )
    finally:
        vas.close()
    return result, lines


@pytest.mark.parametrize(("status", "code", "advice"), CODES)
def test_each_refusal_of_the_list_call_is_explained(
    status: int,
    code: str,
    advice: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A gateway or VAS refusal of the one list call: its code and its own advice."""

    async def refuse(_request: web.Request) -> web.Response:
        return web.json_response({"error_code": code, "error_msg": "refused"}, status=status)

    result, lines = check_against_list(refuse, tmp_path, capsys)
    assert result == 3
    signature = line(lines, "signature")
    assert signature.startswith(f"FAIL signature and subscription: HTTP {status} {code}: ")
    assert advice in signature
    others = [a for _s, c, a in CODES if c != code]
    assert not any(other in signature for other in others)


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (200, b"<html>a login page</html>", "unreadable answer body"),
        (500, b'{"error_code": "X.1", "error_msg": "the gateway is confused"}', "confused"),
    ],
)
def test_an_odd_answer_to_the_list_call_says_what_it_was(
    status: int, body: bytes, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An HTML 200 or an unknown error: the line says what came back ("see the error above"
    pointed at nothing printed above)."""

    async def odd(_request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type="text/html")

    result, lines = check_against_list(odd, tmp_path, capsys)
    assert result == 3
    signature = line(lines, "signature")
    assert said in signature, signature
    assert "see the error above" not in signature


@pytest.mark.parametrize(
    ("base_url", "target"),
    [
        ("https://iva.cn-north-4.myhuaweicloud.com", "iva.cn-north-4.myhuaweicloud.com:443"),
        ("https://127.0.0.1:8443", "127.0.0.1:8443"),
        ("https://[::1]", "[::1]:443"),
    ],
)
def test_check_asks_the_proxy_for_the_target_the_calls_will(base_url: str, target: str) -> None:
    """CONNECT names host:port always (RFC 9110), as aiohttp's own tunnel does; check sent
    the URL's netloc, no port for a regional endpoint, so a proxy's allow-list saw another
    target than the calls'."""
    assert tunnel_target(base_url) == target


def test_an_iam_login_is_checked_against_iam_and_no_token_cache_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With BATCHSUBMIT_IAM_TOKEN_CACHE set, check wrote the cache (and made its folder) while
    saying nothing was created, and a token cached by an earlier run passed the credentials
    check without asking IAM, so a mistyped password passed too (the run then stops once
    the token is due)."""
    from batchsubmit.client import open_session
    from batchsubmit.credentials import find_source, open_provider

    emulator = Emulator(
        Faults(), identity=IdentityOptions(users=(IamUser("nightly", "acme", "pw-right"),))
    )
    vas = ServerThread(emulator.serve)
    cache = tmp_path / "cache" / "iam-token.json"
    for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_PROJECT_ID"):
        monkeypatch.delenv(name)
    login = {"BATCHSUBMIT_IAM_USER": "nightly", "BATCHSUBMIT_IAM_DOMAIN": "acme",
             "BATCHSUBMIT_IAM_PASSWORD": "pw-right", "HUAWEICLOUD_SDK_IAM_ENDPOINT": vas.url,
             "BATCHSUBMIT_IAM_TOKEN_CACHE": str(cache)}  # fmt: skip
    for name, value in login.items():
        monkeypatch.setenv(name, value)
    path = manifest(tmp_path)  # a listing only: OBS takes no IAM token
    path.write_text(path.read_text().split("[[source]]\nprefix")[0], encoding="utf-8")
    try:
        code, lines, err, _ = check(capsys, path, vas.url, vas.url)
        assert code == 0, [*lines, err]
        assert not cache.parent.exists()

        async def earlier_run() -> None:  # a submit that logged in and kept the token
            choice = find_source(os.environ, home=tmp_path, warn=print, region="cn-north-4")
            async with open_session(1) as session:
                await open_provider(choice, session, region="cn-north-4", warn=print)

        anyio.run(earlier_run)
        kept = cache.read_bytes()
        monkeypatch.setenv("BATCHSUBMIT_IAM_PASSWORD", "pw-mistyped")
        code, lines, err, _ = check(capsys, path, vas.url, vas.url)
        assert code == 3, [*lines, err]
        assert line(lines, "credentials").startswith("FAIL"), lines
        assert "pw-mistyped" not in "\n".join([*lines, err])
        assert cache.read_bytes() == kept
    finally:
        vas.close()


@pytest.mark.parametrize("count", ["-3", "true", "1.5", '"12"'])
def test_a_count_that_is_no_count_is_not_believed(
    count: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list answer whose count is negative, a boolean or not a whole number: SKIP, saying
    the count is no count; -3 and true passed ("-3 saved jobs, room for 5003", "True saved
    jobs ..., room for 4999")."""

    async def odd(_request: web.Request) -> web.Response:
        body = f'{{"count": {count}, "tasks": []}}'
        return web.Response(body=body, content_type="application/json")

    _result, lines = check_against_list(odd, tmp_path, capsys)
    quota = line(lines, "quota")
    assert quota.startswith("SKIP quota: the saved jobs could not be counted"), quota
    assert "is not a number of jobs" in quota
