"""Hostile ListObjects answers to a live OBS prefix that were read as complete listings (a
DTD, an empty truncated page, no IsTruncated, a trickle, a key too long): each stops the run
before any create, naming the source."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from aiohttp import web

from batchsubmit.auth import Credentials
from batchsubmit.client import open_session
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_SK
from batchsubmit.errors import UsageError
from batchsubmit.obs import ObsClient, list_pages, listing_pool, parse_list_result
from batchsubmit.pool import PoolSettings

from .helpers import run_cli, serve_app
from .test_obs import FakeObs, write_prefix_manifest

NS = "http://obs.myhwclouds.com/doc/2015-06-30/"


def listing(keys: list[str], truncated: str | None, marker: str | None = None) -> str:
    body = f'<ListBucketResult xmlns="{NS}">'
    if truncated is not None:
        body += f"<IsTruncated>{truncated}</IsTruncated>"
    if marker is not None:
        body += f"<NextMarker>{marker}</NextMarker>"
    body += "".join(f"<Contents><Key>{key}</Key></Contents>" for key in keys)
    return body + "</ListBucketResult>"


def test_a_dtd_is_refused_not_expanded() -> None:
    """A DTD's entity became a key (cams/from-entity.mp4, a job nobody asked for), and an
    entity under expat's 100x amplification limit made a 4 MiB page take 2 GB of memory."""
    xml = (
        '<?xml version="1.0"?><!DOCTYPE ListBucketResult [<!ENTITY k "cams/from-entity.mp4">]>'
        + listing(["&k;"], "false")
    )
    with pytest.raises(ValueError, match="DTD"):
        parse_list_result(xml.encode())
    bomb = f'<!DOCTYPE ListBucketResult [<!ENTITY a "{"x" * 280}">]>' + listing(
        ["cams/" + "&a;" * 1000], "false"
    )
    with pytest.raises(ValueError, match="DTD"):
        parse_list_result(bomb.encode())


def test_a_page_that_does_not_say_whether_more_follow_is_refused() -> None:
    """No IsTruncated (or a value that is neither true nor false) was read as 'the last page':
    the keys on later pages were never listed, and the run went on with a partial set."""
    with pytest.raises(ValueError, match="IsTruncated"):
        parse_list_result(listing(["cams/a.mp4"], None, "cams/a.mp4").encode())
    with pytest.raises(ValueError, match="IsTruncated"):
        parse_list_result(listing(["cams/a.mp4"], "yes", "cams/a.mp4").encode())
    assert parse_list_result(listing(["cams/a.mp4"], "1").encode()).truncated
    assert not parse_list_result(listing(["cams/a.mp4"], "0").encode()).truncated
    page = parse_list_result(listing(["cams/a &amp; b.mp4", "cams/c.mp4"], "true", "m").encode())
    assert (page.keys, page.truncated, page.next_marker) == (
        ("cams/a & b.mp4", "cams/c.mp4"),
        True,
        "m",
    )


async def _list(pages: dict[str, str]) -> list[str]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.query.get("marker", "")])

    app = web.Application()
    app.router.add_get("/{bucket}", handle)
    async with serve_app(app) as url, open_session(2) as session:
        client = ObsClient(session, url, Credentials(EMULATOR_AK, EMULATOR_SK))
        pool = listing_pool(PoolSettings(rate=0), lambda _l, _m: None, url, client.provider)
        return [k async for page in list_pages(pool, client, "in-bucket", "cams/") for k in page]


@pytest.mark.anyio
async def test_a_truncated_page_without_keys_goes_on_from_its_next_marker() -> None:
    """A truncated page with no keys ended the listing as if it were complete: cams/z.mp4 on
    the page after it was never listed (OBS may answer such a page; its NextMarker goes on)."""
    pages = {
        "": listing(["cams/a.mp4"], "true", "cams/a.mp4"),
        "cams/a.mp4": listing([], "true", "cams/m"),
        "cams/m": listing(["cams/z.mp4"], "false"),
    }
    assert await _list(pages) == ["cams/a.mp4", "cams/z.mp4"]
    pages["cams/a.mp4"] = listing([], "true")
    with pytest.raises(UsageError, match="no keys and no next marker"):
        await _list(pages)


@pytest.mark.anyio
async def test_a_page_that_trickles_in_is_bounded_by_the_timeout() -> None:
    """The page had only a socket timeout: an answer sending a byte every 0.2 s (a stalled
    proxy) held the run before its first create for as long as it went on, whatever
    --timeout or --deadline said. The timeout now bounds the whole page."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 10_000
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b" ")
            await anyio.sleep(0.2)
        return response

    app = web.Application()
    app.router.add_get("/{bucket}", trickle)
    async with serve_app(app) as url, open_session(2) as session:
        client = ObsClient(session, url, Credentials(EMULATOR_AK, EMULATOR_SK), timeout=1.0)
        with anyio.fail_after(10):
            answer = await client.list_page("in-bucket", "cams/", "")
    assert answer.error_code == "TIMEOUT"


def test_listing_errors_name_the_manifest_source_not_the_spool_file(tmp_path: Path) -> None:
    """A key over OBS's 1,024 bytes stopped the run naming the spool file
    (/tmp/batchsubmit-spool-.../prefix-0.txt:1, deleted at exit), and a refusal named the
    prefix only: neither said which [[source]] of which manifest. Both name it now."""
    manifest = write_prefix_manifest(tmp_path)
    obs = FakeObs(["cams/" + "a" * 1100 + ".mp4", "cams/ok.mp4"])
    try:
        args = ("submit", str(manifest), "--dry-run", "--obs-endpoint", obs.url,
                "--results", str(tmp_path / "r.csv"))  # fmt: skip
        long_key = run_cli(*args)
        obs.status = 403
        refused = run_cli(*args)
    finally:
        obs.close()
    assert long_key.returncode == 2, long_key.stderr
    assert f"{manifest}: source[0].prefix: OBS answered a key of 1109 bytes" in long_key.stderr
    assert "batchsubmit-spool-" not in long_key.stderr
    assert refused.returncode == 2, refused.stderr
    assert f"{manifest}: source[0].prefix: listing obs://in-bucket/cams/ failed: HTTP 403" in (
        refused.stderr
    )
    assert long_key.stdout == refused.stdout == ""
