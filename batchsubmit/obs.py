"""Live OBS listings for ``prefix`` sources: ListObjects (S3-compatible XML), paged, signed with
OBS's header signature (HMAC-SHA1 over the StringToSign, ``Authorization: OBS AK:signature``).

A prefix is listed once, before the first VAS request, into a spool file of plain ``obs://``
lines that the run then reads like any listing: memory stays flat however large the prefix,
and a listing error stops the run (exit 2) before anything is created. Listing is blocking
I/O on purpose: nothing else runs yet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from .auth import Credentials
from .credentials import CredentialProvider
from .errors import UsageError
from .manifest import Manifest

__all__ = [
    "ListPage",
    "authorization",
    "list_prefix",
    "obs_keys",
    "parse_list_result",
    "signed_headers",
    "spool_prefixes",
]

PAGE = 1000
ATTEMPTS = 4
TIMEOUT = 30.0
PAGE_BYTES_MAX = 16 << 20  # a page of 1,000 keys of 1 KiB is about 1.5 MiB of XML
ERROR_BYTES_MAX = 4096  # of an error answer: its Code and Message come first


@dataclass(frozen=True)
class ListPage:
    keys: tuple[str, ...]
    truncated: bool
    next_marker: str


def string_to_sign(method: str, date: str, resource: str, obs_headers: dict[str, str]) -> str:
    """OBS's StringToSign for a request without body (no Content-MD5 or Content-Type)."""
    canonical = "".join(f"{k.lower()}:{v.strip()}\n" for k, v in sorted(obs_headers.items()))
    return f"{method}\n\n\n{date}\n{canonical}{resource}"


def authorization(credentials: Credentials, to_sign: str) -> str:
    digest = hmac.new(credentials.sk.encode(), to_sign.encode(), hashlib.sha1).digest()
    return f"OBS {credentials.ak}:{base64.b64encode(digest).decode()}"


def signed_headers(
    credentials: Credentials, method: str, resource: str, date: str | None = None
) -> dict[str, str]:
    """Date, Authorization and (temporary credentials) ``x-obs-security-token`` for a request
    without body on ``resource`` (``/bucket/``)."""
    date = date or formatdate(usegmt=True)
    obs_headers = {}
    if credentials.security_token:
        obs_headers["x-obs-security-token"] = credentials.security_token
    to_sign = string_to_sign(method, date, resource, obs_headers)
    return {"Date": date, "Authorization": authorization(credentials, to_sign), **obs_headers}


def obs_keys(credentials: Credentials | CredentialProvider) -> Credentials:
    """The access keys OBS signs with now: OBS takes AK/SK (temporary ones with their security
    token), not an IAM token."""
    if isinstance(credentials, Credentials):
        return credentials
    secret = credentials.fresh()
    if not isinstance(secret, Credentials):
        raise UsageError(
            f"live OBS prefixes need access keys, and {credentials.source_name} gives an IAM "
            "token: use a listing file, or AK/SK (environment, profile file or ECS metadata)"
            if secret is not None
            else f"the credentials from {credentials.source_name} are due for a refresh"
        )
    return secret


def parse_list_result(xml: bytes) -> ListPage:
    """Keys, IsTruncated and NextMarker of a ListBucketResult (namespace or not)."""
    root = ElementTree.fromstring(xml)

    def local(tag: str) -> str:
        return tag.rpartition("}")[2]

    keys: list[str] = []
    truncated = False
    next_marker = ""
    for child in root:
        name = local(child.tag)
        if name == "Contents":
            for field in child:
                if local(field.tag) == "Key":
                    keys.append(field.text or "")
        elif name == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif name == "NextMarker":
            next_marker = child.text or ""
    return ListPage(tuple(keys), truncated, next_marker)


def list_prefix(
    endpoint: str,
    bucket: str,
    prefix: str,
    credentials: Credentials,
    *,
    page: int = PAGE,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Every key under ``prefix``, page after page, following NextMarker (or the last key)."""
    parts = urlsplit(endpoint)
    path_style = _is_address(parts.hostname or "")
    host = parts.netloc if path_style else f"{bucket}.{parts.netloc}"
    base = f"{parts.scheme}://{host}/" + (f"{quote(bucket)}" if path_style else "")
    marker = ""
    while True:
        query = f"prefix={quote(prefix, safe='')}&max-keys={page}"
        if marker:
            query += f"&marker={quote(marker, safe='')}"
        where = f"obs://{bucket}/{prefix}"
        result = parse_list_result(_get(f"{base}?{query}", where, bucket, credentials, sleep))
        yield from result.keys
        if not result.truncated or not result.keys:
            return
        marker = result.next_marker or result.keys[-1]


def _is_address(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _get(
    url: str, where: str, bucket: str, credentials: Credentials, sleep: Callable[[float], None]
) -> bytes:
    """One signed GET, retried on 503 and connection failures; other errors stop the run,
    naming the prefix (``where``) and the answer's error code and message."""
    problem = ""
    for attempt in range(1, ATTEMPTS + 1):
        date = formatdate(usegmt=True)
        obs_headers = {}
        if credentials.security_token:
            obs_headers["x-obs-security-token"] = credentials.security_token
        to_sign = string_to_sign("GET", date, f"/{bucket}/", obs_headers)
        headers = {
            "Date": date,
            "Authorization": authorization(credentials, to_sign),
            **obs_headers,
        }
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            handle: IO[bytes]
            with urllib.request.urlopen(request, timeout=TIMEOUT) as handle:
                page = handle.read(PAGE_BYTES_MAX + 1)
            if len(page) > PAGE_BYTES_MAX:
                raise UsageError(
                    f"listing {where} failed: a page of the answer is over "
                    f"{PAGE_BYTES_MAX >> 20} MiB (is {url.partition('?')[0]} an OBS endpoint?)"
                )
            return page
        except urllib.error.HTTPError as exc:
            problem = _http_problem(exc.code, exc.read(ERROR_BYTES_MAX))
            if exc.code not in (429, 500, 502, 503, 504):
                raise UsageError(f"listing {where} failed: {problem}{_advice(exc.code)}") from None
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        if attempt < ATTEMPTS:
            sleep(min(8.0, 2.0 ** (attempt - 1)))
    raise UsageError(f"listing {where} failed {ATTEMPTS} times: {problem}")


def _http_problem(status: int, body: bytes) -> str:
    """``HTTP 403 AccessDenied: Access Denied`` from an OBS error answer (code and message)."""
    text = body.decode("utf-8", "replace")
    code, message = _xml_text(text, "Code"), _xml_text(text, "Message")
    problem = f"HTTP {status} {code}".strip()
    return f"{problem}: {message}" if message else problem


def _xml_text(body: str, tag: str) -> str:
    start, end = body.find(f"<{tag}>"), body.find(f"</{tag}>")
    if not 0 <= start < end:
        return ""
    return " ".join(body[start + len(tag) + 2 : end].split())[:200]


def _advice(status: int) -> str:
    if status in (401, 403):
        return "; check the credentials (HUAWEICLOUD_SDK_AK/SK) and that they may list the bucket"
    if status == 404:
        return "; no such bucket at this OBS endpoint (check service.obs_endpoint or region)"
    return ""


def spool_prefixes(
    manifest: Manifest,
    endpoint: str | None,
    credentials: Credentials | None,
    directory: Path,
    warn: Callable[[str], None],
    info: Callable[[str], None],
) -> Manifest:
    """List every ``prefix`` source into a spool file and read it as a listing from then on."""
    sources = []
    for index, source in enumerate(manifest.sources):
        if source.prefix is None:
            sources.append(source)
            continue
        if endpoint is None or credentials is None:
            raise UsageError(
                f"{manifest.path}: {source.where}.prefix: live OBS prefixes need an OBS endpoint "
                "and credentials (set service.region or service.obs_endpoint, or use "
                "--obs-endpoint)"
            )
        bucket, _, prefix = source.prefix.removeprefix("obs://").partition("/")
        spool = directory / f"prefix-{index}.txt"
        count = 0
        with spool.open("w", encoding="utf-8") as out:
            for key in list_prefix(endpoint, bucket, prefix, credentials):
                if "\n" in key or "\r" in key:
                    warn(
                        f"obs://{bucket}/{key!r}: a key with a line break cannot be submitted; "
                        "skipped"
                    )
                    continue
                out.write(f"obs://{bucket}/{key}\n")
                count += 1
        info(f"{source.where}: listed {count} objects under {source.prefix}")
        if not count:
            warn(
                f"{manifest.path}: {source.where}.prefix: {source.prefix} lists no objects "
                "(check the bucket and the folder's spelling; OBS keys are case-sensitive)"
            )
        sources.append(replace(source, prefix=None, listing=spool, listed_from=source.prefix))
    return replace(manifest, sources=tuple(sources))
