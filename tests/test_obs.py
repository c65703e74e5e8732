"""Live OBS prefix sources: signing, ListObjects paging, and a whole run against a test OBS."""

from __future__ import annotations

import ast
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import aiohttp
import orjson
import pytest
from aiohttp import web

import batchsubmit.obs
from batchsubmit.answers import Kind
from batchsubmit.auth import Credentials
from batchsubmit.client import open_session
from batchsubmit.credentials import CredentialProvider, Issued
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_SK, Faults
from batchsubmit.errors import UsageError
from batchsubmit.manifest import load_manifest
from batchsubmit.obs import (
    ObsClient,
    authorization,
    classify,
    list_pages,
    listing_pool,
    parse_list_result,
    spool_prefixes,
    string_to_sign,
)
from batchsubmit.pool import Pool, PoolSettings
from batchsubmit.retry import RetryPolicy
from batchsubmit.sources import ExpandStats, iter_objects

from .helpers import (
    QUICK,
    LiveEmulator,
    ServerThread,
    assert_exactly_once,
    cli_env,
    header_of,
    run_cli,
    serve_app,
    serve_raw,
    signal_after_rows,
    sources,
    submit_args,
    video_keys,
)
from .test_proxy import ForwardProxy, closed_port

NS = "http://obs.myhwclouds.com/doc/2015-06-30/"


def test_signature_matches_the_documented_v2_example() -> None:
    """HMAC-SHA1 over the StringToSign, base64: the S3/OBS V2 documented example."""
    credentials = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    to_sign = string_to_sign(
        "GET", "Tue, 27 Mar 2007 19:36:42 +0000", "/johnsmith/photos/puppy.jpg", {}
    )
    assert to_sign == "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/johnsmith/photos/puppy.jpg"
    assert authorization(credentials, to_sign) == (
        "OBS AKIAIOSFODNN7EXAMPLE:bWq2s1WEIj+Ydj0vQ697zp+IXMU="
    )


def test_security_token_is_a_signed_obs_header() -> None:
    """x-obs-* headers are signed, lower-cased and sorted, before the resource."""
    assert string_to_sign("GET", "D", "/b/", {"x-obs-security-token": "T"}) == (
        "GET\n\n\nD\nx-obs-security-token:T\n/b/"
    )


def test_parse_list_result_with_namespace() -> None:
    """Keys, IsTruncated and NextMarker come out of a namespaced ListBucketResult."""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}">'
        "<Name>b</Name><IsTruncated>true</IsTruncated><NextMarker>k2</NextMarker>"
        "<Contents><Key>a b.mp4</Key><Size>1</Size></Contents>"
        "<Contents><Key>vidéo &amp; co.mov</Key></Contents></ListBucketResult>"
    ).encode()
    page = parse_list_result(xml)
    assert page.keys == ("a b.mp4", "vidéo & co.mov")
    assert page.truncated
    assert page.next_marker == "k2"


class FakeObs(ServerThread):
    """A bucket in a thread: ListObjects with prefix, marker and max-keys; checks signatures
    (security token included) against the keys it knows, and counts calls."""

    def __init__(self, keys: list[str], *, status: int = 200) -> None:
        self.keys = sorted(keys)
        self.status = status
        self.calls = 0
        self.valid = {EMULATOR_AK: Credentials(EMULATOR_AK, EMULATOR_SK)}
        self.seen_aks: list[str] = []
        # call number -> (status, OBS code, message) answered instead, with Retry-After: 0
        self.faults: dict[int, tuple[int, str, str]] = {}
        self.after_call: Callable[[], None] = lambda: None
        self.stuck_marker: str | None = None  # a broken server: every page truncated, this next
        self.stray_keys: list[str] = []  # a broken server: keys outside the prefix on each page
        app = web.Application()
        app.router.add_get("/{bucket}", self._handle)
        super().__init__(lambda: serve_app(app))

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        try:
            return self._answer(request)
        finally:
            self.after_call()

    def _answer(self, request: web.Request) -> web.Response:
        if self.calls in self.faults:
            status, code, message = self.faults[self.calls]
            return error(status, code, message, {"Retry-After": "0"})
        bucket = request.path.strip("/")
        ak = request.headers.get("Authorization", "").removeprefix("OBS ").partition(":")[0]
        self.seen_aks.append(ak)
        keys = self.valid.get(ak)
        token = request.headers.get("x-obs-security-token")
        signed = {"x-obs-security-token": token} if token else {}
        if keys is None or token != keys.security_token:
            return error(403, "InvalidAccessKeyId", "The AK does not exist or has expired.")
        expected = authorization(
            keys, string_to_sign("GET", request.headers["Date"], f"/{bucket}/", signed)
        )
        if request.headers.get("Authorization") != expected:
            return error(403, "SignatureDoesNotMatch", "The request signature does not match.")
        if self.status == 403:
            return error(403, "AccessDenied", "Access Denied")
        if self.status == 404:
            return error(404, "NoSuchBucket", "The specified bucket does not exist")
        prefix = request.query.get("prefix", "")
        marker = request.query.get("marker", "")
        limit = int(request.query.get("max-keys", "1000"))
        found = [k for k in self.keys if k.startswith(prefix) and k > marker]
        page, more = found[:limit], len(found) > limit
        body = "".join(f"<Contents><Key>{escape(k)}</Key></Contents>" for k in page)
        body += "".join(f"<Contents><Key>{escape(k)}</Key></Contents>" for k in self.stray_keys)
        if self.stuck_marker is not None:
            more = True
            body += f"<NextMarker>{escape(self.stuck_marker)}</NextMarker>"
        xml = (
            f'<ListBucketResult xmlns="{NS}"><IsTruncated>{str(more).lower()}</IsTruncated>'
            f"{body}</ListBucketResult>"
        )
        return web.Response(text=xml, content_type="application/xml")


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=f"<Error><Code>{code}</Code><Message>{message}</Message></Error>",
        content_type="application/xml",
        headers=headers,
    )


@pytest.fixture
def fake_obs() -> Iterator[FakeObs]:
    keys = [f"cams/{k}" for k in video_keys(2500)] + ["cams/readme.txt", "other/x.mp4"]
    obs = FakeObs(keys)
    yield obs
    obs.close()


KEYS = Credentials(EMULATOR_AK, EMULATOR_SK)


async def list_all(
    obs: FakeObs,
    prefix: str = "cams/",
    credentials: Credentials | CredentialProvider = KEYS,
    *,
    settings: PoolSettings | None = None,
    logs: list[str] | None = None,
) -> tuple[list[str], Pool]:
    """Every key under ``prefix`` through a listing pool (returned, for its stats)."""
    async with open_session(4) as session:
        client = ObsClient(session, obs.url, credentials)
        pool = listing_pool(
            settings or PoolSettings(),
            lambda _level, message: (logs if logs is not None else []).append(message),
            obs.url,
            client.provider,
        )
        keys = [key async for page in list_pages(pool, client, "in-bucket", prefix) for key in page]
    return keys, pool


@pytest.mark.anyio
async def test_list_prefix_pages_through_everything(fake_obs: FakeObs) -> None:
    """Every key under the prefix, across pages, in order; nothing outside it; one gated call
    per page."""
    keys, pool = await list_all(fake_obs)
    assert len(keys) == 2501
    assert keys == sorted(keys)
    assert fake_obs.calls == 3
    assert pool.stats.calls == 3
    assert pool.stats.retries == 0


def write_prefix_manifest(directory: Path) -> Path:
    manifest = directory / "live.toml"
    manifest.write_text(
        '[service]\nname = "video-analyze"\nversion = "1.0"\nregion = "cn-north-4"\n'
        '[job]\noutput = "obs://out-bucket/results/"\n'
        '[[source]]\nprefix = "obs://in-bucket/cams/"\n',
        encoding="utf-8",
    )
    return manifest


def test_submit_from_a_live_prefix(
    tmp_path: Path, fake_obs: FakeObs, live_emulator: LiveEmulator
) -> None:
    """A prefix source is listed live and every video under it is created exactly once."""
    manifest = write_prefix_manifest(tmp_path)
    results = tmp_path / "r.csv"
    args = submit_args(manifest, live_emulator.url, results, "--obs-endpoint", fake_obs.url)
    summary = tmp_path / "s.json"
    done = run_cli(*args, "--rate", "0", "--concurrency", "16", "--summary", str(summary),
                   timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "listed 2501 objects" in done.stderr
    counted = orjson.loads(summary.read_bytes())
    # the listing's three pages are counted apart from the creates (plain keys: no IAM call)
    assert (counted["opening_calls"], counted["calls"]) == (fake_obs.calls, 2500) == (3, 2500)
    assert_exactly_once(
        live_emulator.emulator, results, sources(f"cams/{k}" for k in video_keys(2500))
    )


def test_a_killed_live_prefix_runs_spool_directory_is_removed_by_the_next_run(
    tmp_path: Path, fake_obs: FakeObs, live_emulator: LiveEmulator
) -> None:
    """The spool directory of a live prefix (its keys, listed before the first create) was
    named by tempfile alone: each run SIGKILL stopped left one in /tmp forever. It is named
    after its process now, and the next run removes it."""
    live_emulator.emulator.faults = Faults(latency=0.02)
    manifest = write_prefix_manifest(tmp_path)
    results = tmp_path / "r.csv"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**cli_env(), "TMPDIR": str(scratch)}
    args = submit_args(manifest, live_emulator.url, results, "--obs-endpoint", fake_obs.url,
                       *QUICK, "--concurrency", "8")  # fmt: skip
    code, _err = signal_after_rows(args, results, 20, signal.SIGKILL, env=env)
    assert code == -signal.SIGKILL
    left = sorted(path.name for path in scratch.iterdir())
    assert any(name.startswith("batchsubmit-spool-") for name in left), left
    live_emulator.emulator.faults = Faults()  # the latency was for the kill to land mid-run
    again = run_cli(*args, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert list(scratch.iterdir()) == []


def test_dry_run_lists_a_live_prefix(tmp_path: Path, fake_obs: FakeObs) -> None:
    """submit --dry-run lists the prefix live too (and sends nothing to VAS)."""
    manifest = write_prefix_manifest(tmp_path)
    done = run_cli(
        "submit", str(manifest), "--dry-run", "--obs-endpoint", fake_obs.url,
        "--results", str(tmp_path / "r.csv"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "listed 2501 objects" in done.stderr
    assert "dry run: 2500 jobs would be submitted" in done.stderr
    assert fake_obs.calls == 3


def test_a_dry_runs_credential_warnings_follow_log_format_and_quiet(
    tmp_path: Path, fake_obs: FakeObs
) -> None:
    """A dry run that lists a live prefix opened its credentials with a log of its own: a
    warning about them (a profile file others can read) was a text line under
    `--log-format json`, and printed under `-q` by a run that went well."""
    manifest = write_prefix_manifest(tmp_path)
    profile = tmp_path / "credentials"
    profile.write_text(
        f"[basic]\nak = {EMULATOR_AK}\nsk = {EMULATOR_SK}\n"
        "project_id = 0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e\n",
        encoding="utf-8",
    )
    profile.chmod(0o644)
    env = {k: v for k, v in cli_env().items() if not k.startswith("HUAWEICLOUD_SDK_")}
    env["HUAWEICLOUD_SDK_CREDENTIALS_FILE"] = str(profile)
    args = ["submit", str(manifest), "--dry-run", "--obs-endpoint", fake_obs.url,
            "--results", str(tmp_path / "r.csv"), "--log-format", "json"]  # fmt: skip
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert any("can be read by other users" in line["msg"] for line in lines)
    quiet = run_cli(*args, "-q", env=env)
    assert (quiet.returncode, quiet.stderr) == (0, "")


def test_live_keys_are_kept_exactly_and_a_control_character_skips_only_its_key(
    tmp_path: Path,
) -> None:
    """Keys OBS lists that end in a space or a no-break space are those keys (they were
    stripped: `cams/x.mp4 ` became a repeat of `cams/x.mp4`, silently skipped, and the other
    pointed at an object that may not exist); a key with a tab is skipped with a warning
    naming it and the source, and the other videos go on (it stopped the whole run, naming a
    spool file deleted at exit)."""
    keys = ["cams/x.mp4", "cams/x.mp4 ", "cams/y.mp4\u00a0", "cams/tab\tname.mp4"]
    obs = FakeObs(keys)
    try:
        manifest = write_prefix_manifest(tmp_path)
        text = manifest.read_text(encoding="utf-8")
        manifest.write_text(text + 'include = ["*.mp4*"]\n', encoding="utf-8")
        done = run_cli(
            "submit", str(manifest), "--dry-run",
            "--obs-endpoint", obs.url, "--results", str(tmp_path / "r.csv"),
        )  # fmt: skip
    finally:
        obs.close()
    assert done.returncode == 0, done.stderr
    sources = [orjson.loads(line)["source"] for line in done.stdout.splitlines()]
    assert sources == [f"obs://in-bucket/{key}" for key in keys[:3]]
    assert "tab\\tname.mp4" in done.stderr
    assert "source[0].prefix" in done.stderr
    assert "0 duplicates" in done.stderr


def test_obs_refusal_stops_before_any_vas_request(
    tmp_path: Path, fake_obs: FakeObs, live_emulator: LiveEmulator
) -> None:
    """OBS says 403: exit 2 with advice, and not one VAS call."""
    fake_obs.status = 403
    manifest = write_prefix_manifest(tmp_path)
    results = tmp_path / "r.csv"
    done = run_cli(
        *submit_args(manifest, live_emulator.url, results, "--obs-endpoint", fake_obs.url)
    )
    assert done.returncode == 2
    assert (
        "listing obs://in-bucket/cams/ failed: HTTP 403 AccessDenied: Access Denied; check the "
        "credentials"
    ) in done.stderr
    assert "Traceback" not in done.stderr
    assert sum(live_emulator.emulator.calls.values()) == 0


def test_expand_refuses_live_prefixes(tmp_path: Path) -> None:
    """expand reads no network: a prefix source is an error that says what to use instead."""
    done = run_cli("expand", str(write_prefix_manifest(tmp_path)), timeout=60)
    assert done.returncode == 2
    assert "source[0].prefix" in done.stderr


@pytest.mark.anyio
async def test_listing_error_names_the_whole_prefix_and_the_answer(fake_obs: FakeObs) -> None:
    """A refused listing names obs://bucket/folder/ (not just the bucket) and OBS's error code
    and message, with advice; a refusal is not retried."""
    fake_obs.status = 403
    with pytest.raises(UsageError) as raised:
        await list_all(fake_obs, "cams/dir/")
    message = str(raised.value)
    assert "listing obs://in-bucket/cams/dir/ failed: HTTP 403 AccessDenied: Access Denied" in (
        message
    )
    assert "check the credentials" in message
    assert fake_obs.calls == 1


@pytest.mark.parametrize("stray", ["other/x.mp4", "cams", "../../y.mp4"])
@pytest.mark.anyio
async def test_a_key_outside_the_prefix_stops_the_listing(fake_obs: FakeObs, stray: str) -> None:
    """A key OBS should not have answered for the prefix would be a job nobody asked for."""
    fake_obs.stray_keys = [stray]
    with pytest.raises(UsageError, match="not under that prefix") as raised:
        await list_all(fake_obs)
    assert repr(stray) in str(raised.value)


@pytest.mark.anyio
async def test_a_next_marker_that_does_not_move_on_stops_the_listing(fake_obs: FakeObs) -> None:
    """A server answering every page truncated with the same NextMarker would be listed for
    ever (the spool growing, no VAS request ever sent): the second such page is an error."""
    fake_obs.stuck_marker = "cams/clip_00001.mp4"
    with pytest.raises(UsageError, match="does not come after") as raised:
        await list_all(fake_obs)
    assert "obs://in-bucket/cams/" in str(raised.value)
    assert fake_obs.calls == 2


@pytest.mark.anyio
async def test_wrong_secret_and_missing_bucket_name_code_and_message(fake_obs: FakeObs) -> None:
    """A wrong SK is OBS's SignatureDoesNotMatch; a missing bucket its NoSuchBucket; both name
    the prefix, the code and the message."""
    with pytest.raises(UsageError) as raised:
        await list_all(fake_obs, credentials=Credentials(EMULATOR_AK, "wrong"))
    assert (
        "listing obs://in-bucket/cams/ failed: HTTP 403 SignatureDoesNotMatch: "
        "The request signature does not match."
    ) in str(raised.value)
    fake_obs.status = 404
    with pytest.raises(UsageError) as raised:
        await list_all(fake_obs)
    assert (
        "listing obs://in-bucket/cams/ failed: HTTP 404 NoSuchBucket: "
        "The specified bucket does not exist; no such bucket"
    ) in str(raised.value)


@pytest.mark.anyio
async def test_a_token_quoted_by_an_answer_aiohttp_cannot_parse_is_hidden() -> None:
    """A header line without a colon holding the security token: aiohttp's error quotes the
    line, and the listing's failure showed it."""
    token = "obs-security-token-DISTINCTIVE"

    def echo(head: str, _body: bytes) -> bytes:
        sent = header_of(head, "x-obs-security-token")
        return f"HTTP/1.1 403 Forbidden\r\nEcho {sent}\r\nContent-Length: 0\r\n\r\n".encode()

    async with serve_raw(echo) as url, open_session(1) as session:
        client = ObsClient(session, url, Credentials(EMULATOR_AK, EMULATOR_SK, token))
        answer = await client.list_page("in-bucket", "cams/", "")
    assert (answer.kind, answer.error_code) == (Kind.UNAVAILABLE, "CONNECTION")
    assert "Echo <hidden>" in answer.error_msg
    assert "DISTINCTIVE" not in answer.error_msg


@pytest.mark.anyio
async def test_a_page_answered_503_twice_is_retried_through_the_gate(fake_obs: FakeObs) -> None:
    """The second page is answered 503 SlowDown, then 503: the gate retries it (Retry-After
    0), the listing goes on from the same marker, and the pool's stats count both retries."""
    fake_obs.faults = {
        2: (503, "SlowDown", "Please reduce your request rate."),
        3: (503, "ServiceUnavailable", "Service is busy."),
    }
    logs: list[str] = []
    keys, pool = await list_all(fake_obs, logs=logs)
    assert len(keys) == len(set(keys)) == 2501
    assert fake_obs.calls == 5
    assert pool.stats.calls == 5
    assert pool.stats.retries == 2
    assert pool.stats.unavailable == 1  # the plain 503; SlowDown is a throttle:
    assert [m for m in logs if "pausing all calls" in m] == [
        "the service asked to wait (Retry-After 0 s): pausing all calls for 0 s"
    ]


@pytest.mark.anyio
async def test_a_page_that_stays_unavailable_fails_after_the_policys_tries(
    fake_obs: FakeObs,
) -> None:
    """Transient answers are retried only as often as the retry policy allows; then the
    listing stops, naming the prefix, the tries and OBS's answer."""
    fake_obs.faults = {
        n: (500, "InternalError", "We encountered an internal error.") for n in (1, 2, 3)
    }
    settings = PoolSettings(retry=RetryPolicy(attempts=3))
    with pytest.raises(UsageError) as raised:
        await list_all(fake_obs, settings=settings)
    assert (
        "listing obs://in-bucket/cams/ failed 3 times: HTTP 500 InternalError: We encountered"
        in (str(raised.value))
    )
    assert fake_obs.calls == 3


@pytest.mark.anyio
async def test_an_unreachable_obs_endpoint_stops_at_once(tmp_path: Path) -> None:
    """Nothing listens at the OBS endpoint: the first page's connection failure stops the
    listing (the gate's first-call rule), naming the prefix and what to check."""
    manifest = load_manifest(write_prefix_manifest(tmp_path))
    with pytest.raises(UsageError) as raised:
        await spool_prefixes(
            manifest,
            f"http://127.0.0.1:{closed_port()}",
            KEYS,
            tmp_path,
            lambda _m: None,
            lambda _m: None,
        )
    message = str(raised.value)
    assert message.startswith(f"{manifest.path}: source[0].prefix: listing obs://in-bucket/cams/ "
                              "failed: cannot reach 127.0.0.1:")  # fmt: skip
    assert "check service.obs_endpoint" in message


@pytest.mark.anyio
async def test_listing_goes_through_the_http_proxy(
    tmp_path: Path, fake_obs: FakeObs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, every page reaches OBS through the proxy (absolute-form requests)
    and its signature still verifies there."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    proxy = ForwardProxy()
    async with proxy.serve() as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        spooled = await spool_prefixes(
            load_manifest(write_prefix_manifest(tmp_path)),
            fake_obs.url,
            KEYS,
            tmp_path,
            lambda _m: None,
            lambda _m: None,
        )
    assert fake_obs.calls == 3
    assert proxy.forwarded["/in-bucket"] == 3
    assert proxy.absolute == 3
    listing = spooled.manifest.sources[0].listing
    assert listing is not None
    assert len(listing.read_text(encoding="utf-8").splitlines()) == 2501


@pytest.mark.anyio
async def test_temporary_credentials_are_renewed_between_pages(fake_obs: FakeObs) -> None:
    """Temporary keys due for a refresh mid-listing are renewed before the next page; every
    page is signed with the keys (and security token) valid when it is sent, and OBS forgets
    the old ones."""
    now = [0.0]
    issued: list[Credentials] = []

    def issue() -> Issued:
        n = len(issued)
        keys = Credentials(f"TEMPAK{n}", f"tempsk{n}", f"token{n}")
        issued.append(keys)
        fake_obs.valid = {keys.ak: keys}  # the previous keys have expired
        return Issued(keys, expires_at=now[0] + 100, issued_at=now[0])

    async def fetch(_session: aiohttp.ClientSession | None) -> Issued:
        return issue()

    first = issue()
    provider = CredentialProvider("ECS metadata", first, fetch, clock=lambda: now[0])
    fake_obs.after_call = lambda: now.__setitem__(0, now[0] + 100)  # 100 s per page
    keys, _pool = await list_all(fake_obs, credentials=provider)
    assert len(keys) == 2501
    assert fake_obs.seen_aks == ["TEMPAK0", "TEMPAK1", "TEMPAK2"]
    assert provider.refreshes == 2


@pytest.mark.anyio
async def test_revoked_temporary_keys_are_renewed_once(fake_obs: FakeObs) -> None:
    """OBS says InvalidAccessKeyId to temporary keys not yet due for a refresh (revoked, or a
    clock off): the page is sent once more with fresh keys; long-term keys are not retried."""
    issued: list[Credentials] = []

    async def fetch(_session: aiohttp.ClientSession | None) -> Issued:
        keys = Credentials(f"TEMPAK{len(issued)}", "tempsk", "token")
        issued.append(keys)
        fake_obs.valid = {keys.ak: keys}
        return Issued(keys, expires_at=10_000.0, issued_at=0.0)

    revoked = Issued(Credentials("OLDAK", "oldsk", "oldtoken"), expires_at=10_000.0)
    provider = CredentialProvider("ECS metadata", revoked, fetch, clock=lambda: 0.0)
    keys, pool = await list_all(fake_obs, credentials=provider)
    assert len(keys) == 2501
    assert fake_obs.seen_aks == ["OLDAK", "TEMPAK0", "TEMPAK0", "TEMPAK0"]
    assert provider.refreshes == 1
    assert pool.stats.calls == 4  # three pages and the renewal, each through the gate
    with pytest.raises(UsageError, match="HTTP 403 InvalidAccessKeyId"):
        await list_all(fake_obs, credentials=Credentials("OLDAK", "oldsk"))


def test_classify_obs_answers() -> None:
    """What each OBS answer means for the gate."""
    empty = f'<ListBucketResult xmlns="{NS}"><IsTruncated>false</IsTruncated></ListBucketResult>'
    ok = classify(200, {}, empty.encode())
    assert ok.kind is Kind.OK
    assert ok.data.keys == ()
    slow = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
    assert classify(503, {"Retry-After": "2"}, slow).kind is Kind.THROTTLED
    assert classify(503, {"Retry-After": "2"}, slow).retry_after == 2.0
    assert classify(429, {}, b"").kind is Kind.THROTTLED
    assert classify(502, {}, b"<html>bad gateway</html>").kind is Kind.UNAVAILABLE
    denied = classify(403, {}, b"<Error><Code>AccessDenied</Code><Message>No</Message></Error>")
    assert (denied.kind, denied.error_code, denied.error_msg) == (Kind.FAILED, "AccessDenied", "No")
    html = classify(200, {}, b"<html><body>captive portal</body></html>")
    assert (html.kind, html.error_code) == (Kind.FAILED, "NOT_A_LISTING")
    assert classify(200, {}, b"not xml").kind is Kind.FAILED
    assert classify(200, {}, b"<ListBucketResult/>", cut=True).error_code == "TOO_LARGE"


def test_a_message_is_masked_before_it_is_cut() -> None:
    """A <Message> quoting the security token across its 200th character: it was cut there
    before tidy() masked it, leaving all of the token but its last character."""
    token = "obs-security-token-DISTINCTIVE"
    message = "Access Denied for " + "x" * (200 - 18 - len(token) + 1) + token + " tail"
    xml = f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
    denied = classify(403, {}, xml.encode(), secrets=(token,))
    assert denied.error_msg.endswith("x<hidden> tail")
    assert "DISTINCTIVE" not in denied.error_msg


def test_obs_sends_nothing_through_urllib() -> None:
    """One HTTP client: obs.py imports nothing from urllib (no blocking urlopen, no second
    retry loop)."""
    tree = ast.parse(Path(batchsubmit.obs.__file__).read_text(encoding="utf-8"))
    imported = [
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    ]
    assert imported
    assert not [name for name in imported if name.split(".")[0] in ("urllib", "http")]


@pytest.mark.anyio
async def test_a_prefix_that_lists_nothing_warns_and_is_counted(
    tmp_path: Path, fake_obs: FakeObs
) -> None:
    """A live prefix with no objects under it (a typo in the folder, most likely) is a warning
    naming it, and is counted in ExpandStats.empty_prefixes for the summary."""
    manifest_path = write_prefix_manifest(tmp_path)
    text = manifest_path.read_text(encoding="utf-8").replace("cams/", "Cams/")
    manifest_path.write_text(text, encoding="utf-8")
    warnings: list[str] = []
    spooled = await spool_prefixes(
        load_manifest(manifest_path),
        fake_obs.url,
        KEYS,
        tmp_path,
        warnings.append,
        lambda _message: None,
    )
    assert len(warnings) == 1
    assert "source[0].prefix: obs://in-bucket/Cams/ lists no objects" in warnings[0]
    stats = ExpandStats()
    assert list(iter_objects(spooled.manifest, stats, warnings.append)) == []
    assert stats.empty_prefixes == ["obs://in-bucket/Cams/"]


def test_a_live_key_no_job_can_name_is_counted_and_the_run_exits_1(
    tmp_path: Path, live_emulator: LiveEmulator
) -> None:
    """A key with a control character (a tab) is skipped with a warning, as documented. Under
    -q on a night that otherwise went well the warning was never shown and exit 0 said all
    went well: the video was never submitted without a word. It is in the summary now, and
    the run exits 1, which shows what -q held back."""
    obs = FakeObs(["cams/a.mp4", "cams/b\tc.mp4"])
    try:
        manifest = write_prefix_manifest(tmp_path)
        summary = tmp_path / "s.json"
        args = submit_args(manifest, live_emulator.url, tmp_path / "r.csv",
                           "--obs-endpoint", obs.url)  # fmt: skip
        done = run_cli(*args, "-q", "--summary", str(summary))
    finally:
        obs.close()
    assert done.returncode == 1, done.stderr
    assert "cannot be submitted" in done.stderr
    data = orjson.loads(summary.read_bytes())
    assert data["exit_code"] == 1
    assert data["counts"]["submitted"] == 1
    assert data["expanded"]["unsubmittable_keys"] == ["obs://in-bucket/'cams/b\\tc.mp4'"]
