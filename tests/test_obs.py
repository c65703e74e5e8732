"""Live OBS prefix sources: signing, ListObjects paging, and a whole run against a test OBS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from batchsubmit.auth import Credentials
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_SK
from batchsubmit.errors import UsageError
from batchsubmit.manifest import load_manifest
from batchsubmit.obs import (
    authorization,
    list_prefix,
    parse_list_result,
    spool_prefixes,
    string_to_sign,
)
from batchsubmit.sources import ExpandStats, iter_objects

from .helpers import (
    LiveEmulator,
    ServerThread,
    assert_exactly_once,
    run_cli,
    serve_app,
    sources,
    submit_args,
    video_keys,
)

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
    """A bucket in a thread: ListObjects with prefix, marker and max-keys; checks signatures."""

    def __init__(self, keys: list[str], *, status: int = 200) -> None:
        self.keys = sorted(keys)
        self.status = status
        self.calls = 0
        app = web.Application()
        app.router.add_get("/{bucket}", self._handle)
        super().__init__(lambda: serve_app(app))

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        bucket = request.path.strip("/")
        expected = authorization(
            Credentials(EMULATOR_AK, EMULATOR_SK),
            string_to_sign("GET", request.headers["Date"], f"/{bucket}/", {}),
        )
        if request.headers.get("Authorization") != expected or self.status == 403:
            return web.Response(
                status=403,
                text="<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
            )
        prefix = request.query.get("prefix", "")
        marker = request.query.get("marker", "")
        limit = int(request.query.get("max-keys", "1000"))
        found = [k for k in self.keys if k.startswith(prefix) and k > marker]
        page, more = found[:limit], len(found) > limit
        body = "".join(f"<Contents><Key>{escape(k)}</Key></Contents>" for k in page)
        xml = (
            f'<ListBucketResult xmlns="{NS}"><IsTruncated>{str(more).lower()}</IsTruncated>'
            f"{body}</ListBucketResult>"
        )
        return web.Response(text=xml, content_type="application/xml")


@pytest.fixture
def fake_obs() -> Iterator[FakeObs]:
    keys = [f"cams/{k}" for k in video_keys(2500)] + ["cams/readme.txt", "other/x.mp4"]
    obs = FakeObs(keys)
    yield obs
    obs.close()


def test_list_prefix_pages_through_everything(fake_obs: FakeObs) -> None:
    """Every key under the prefix, across pages, in order; nothing outside it."""
    keys = list(
        list_prefix(
            fake_obs.url, "in-bucket", "cams/", Credentials(EMULATOR_AK, EMULATOR_SK), page=1000
        )
    )
    assert len(keys) == 2501
    assert keys == sorted(keys)
    assert fake_obs.calls == 3


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
    done = run_cli(*args, "--rate", "0", "--concurrency", "16", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "listed 2501 objects" in done.stderr
    assert_exactly_once(
        live_emulator.emulator, results, sources(f"cams/{k}" for k in video_keys(2500))
    )


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
    assert "AccessDenied" in done.stderr
    assert sum(live_emulator.emulator.calls.values()) == 0


def test_expand_refuses_live_prefixes(tmp_path: Path) -> None:
    """expand reads no network: a prefix source is an error that says what to use instead."""
    done = run_cli("expand", str(write_prefix_manifest(tmp_path)), timeout=60)
    assert done.returncode == 2
    assert "source[0].prefix" in done.stderr


def test_listing_error_names_the_whole_prefix_and_the_answer(fake_obs: FakeObs) -> None:
    """A refused listing names obs://bucket/folder/ (not just the bucket) and OBS's error code
    and message, with advice."""
    fake_obs.status = 403
    credentials = Credentials(EMULATOR_AK, EMULATOR_SK)
    with pytest.raises(UsageError) as raised:
        list(list_prefix(fake_obs.url, "in-bucket", "cams/dir/", credentials))
    message = str(raised.value)
    assert "listing obs://in-bucket/cams/dir/ failed: HTTP 403 AccessDenied: Access Denied" in (
        message
    )
    assert "check the credentials" in message


def test_a_prefix_that_lists_nothing_warns_and_is_counted(
    tmp_path: Path, fake_obs: FakeObs
) -> None:
    """A live prefix with no objects under it (a typo in the folder, most likely) is a warning
    naming it, and is counted in ExpandStats.empty_prefixes for the summary."""
    manifest_path = write_prefix_manifest(tmp_path)
    text = manifest_path.read_text(encoding="utf-8").replace("cams/", "Cams/")
    manifest_path.write_text(text, encoding="utf-8")
    warnings: list[str] = []
    spooled = spool_prefixes(
        load_manifest(manifest_path),
        fake_obs.url,
        Credentials(EMULATOR_AK, EMULATOR_SK),
        tmp_path,
        warnings.append,
        lambda _message: None,
    )
    assert len(warnings) == 1
    assert "source[0].prefix: obs://in-bucket/Cams/ lists no objects" in warnings[0]
    stats = ExpandStats()
    assert list(iter_objects(spooled, stats, warnings.append)) == []
    assert stats.empty_prefixes == ["obs://in-bucket/Cams/"]
