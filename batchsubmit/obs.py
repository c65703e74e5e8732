"""Live OBS listings for ``prefix`` sources: ListObjects (S3-compatible XML), paged, signed with
OBS's header signature (HMAC-SHA1 over the StringToSign, ``Authorization: OBS AK:signature``).

A prefix is listed once, before the first VAS request, into a spool file of plain ``obs://``
lines that the run then reads like any listing: memory stays flat however large the prefix
(one page at a time), and a listing error stops the run (exit 2) before anything is created.

Every page is a call through a :class:`~batchsubmit.pool.Pool`'s gate, like every call to
Huawei Cloud: the run's in-flight cap and rate, the one retry policy (backoff, Retry-After,
throttle learning on OBS's ``SlowDown``). :class:`ObsClient` sends one page and turns what
happened into an :class:`~batchsubmit.answers.Answer` (:func:`classify`); it never retries.
The listing runs before the run's own pool exists, so it has a pool of its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path
from typing import Any
from xml.parsers import expat

import aiohttp
from yarl import URL

from .answers import Answer, Kind, retry_after_seconds, tidy
from .auth import Credentials, Secret, canonical_query
from .client import describe, not_connected, open_session, read_capped, stopped_unsent
from .credentials import CredentialProvider, static_provider
from .errors import CredentialError, UsageError
from .manifest import Manifest
from .pool import Pool, PoolSettings, Stopped
from .proxies import proxy_for
from .vas import CONTROL, OBS_KEY_MAX_BYTES

__all__ = [
    "ListPage",
    "ObsClient",
    "Spooled",
    "authorization",
    "classify",
    "list_pages",
    "listing_pool",
    "obs_keys",
    "parse_list_result",
    "problem",
    "signed_headers",
    "spool_prefixes",
]

PAGE = 1000
TIMEOUT = 30.0  # seconds a page may take in all (the default of --timeout)
CONNECT_TIMEOUT = 10.0
PAGE_BYTES_MAX = 16 << 20  # a page of 1,000 keys of 1 KiB is about 1.5 MiB of XML
ERROR_BYTES_MAX = 4096  # of an error answer: its Code and Message come first
# OBS's throttling answer (503, or 429 behind some gateways): slow down, like VAS's 429.
SLOW_DOWN = "SlowDown"
# OBS's refusals of keys that a credential source can replace (temporary keys that expired or
# were revoked): asked for once more with fresh keys, as VAS's 401.
RENEWABLE = frozenset({"InvalidAccessKeyId", "ExpiredToken", "InvalidToken"})

LogFn = Callable[[str, str], None]


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
    return _access_keys(credentials.fresh(), credentials)


def _access_keys(secret: Secret | None, provider: CredentialProvider) -> Credentials:
    if not isinstance(secret, Credentials):
        raise UsageError(
            f"live OBS prefixes need access keys, and {provider.source_name} gives an IAM "
            "token: use a listing file, or AK/SK (environment, profile file or ECS metadata)"
            if secret is not None
            else f"the credentials from {provider.source_name} are due for a refresh"
        )
    return secret


def parse_list_result(xml: bytes) -> ListPage:
    """Keys, IsTruncated and NextMarker of a ListBucketResult (namespace or not). Raises
    ValueError for an answer that is not one: not XML, a DTD (OBS sends none: its entities
    could define keys, or expand a 16 MiB page into gigabytes), no IsTruncated or one that is
    neither true nor false (a page that cannot say whether more follow is not surely read)."""
    parser = expat.ParserCreate(namespace_separator="}")
    keys: list[str] = []
    truncated: list[bool] = []  # IsTruncated, once read
    next_marker = [""]
    path: list[str] = []
    text: list[str] = []

    def refuse_dtd(*_args: object) -> None:
        raise ValueError("the answer declares a DTD, which OBS never sends")

    def start(tag: str, _attributes: object) -> None:
        name = tag.rpartition("}")[2]
        if not path and name != "ListBucketResult":
            raise ValueError(f"the answer is <{name[:40]}>, not a ListBucketResult")
        path.append(name)
        text.clear()

    def end(_tag: str) -> None:
        value = "".join(text)
        text.clear()
        where = tuple(path)
        path.pop()
        if where == ("ListBucketResult", "Contents", "Key"):
            keys.append(value)
        elif where == ("ListBucketResult", "IsTruncated"):
            flag = value.strip().lower()
            if flag not in ("true", "false", "1", "0"):
                raise ValueError(f"IsTruncated is {value[:20]!r}, neither true nor false")
            truncated.append(flag in ("true", "1"))
        elif where == ("ListBucketResult", "NextMarker"):
            next_marker[0] = value

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(xml, True)
    except expat.ExpatError as exc:
        raise ValueError(f"the answer is not XML ({exc})") from None
    if not truncated:
        raise ValueError(
            "the ListBucketResult has no IsTruncated: whether more keys follow is unknown"
        )
    return ListPage(tuple(keys), truncated[-1], next_marker[0])


# -- what an OBS answer means -------------------------------------------------------------------


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    cut: bool = False,
    secrets: Sequence[str] = (),
) -> Answer:
    """One ListObjects answer as an Answer: 200 with a ListBucketResult is OK (``data``: the
    :class:`ListPage`); ``SlowDown`` and 429 are throttles, another 5xx is transient (a read);
    the rest (403 ``AccessDenied``, ``SignatureDoesNotMatch``, 404 ``NoSuchBucket``, a page over
    the cap, an answer that is not a listing) fails the listing. ``cut``: ``body`` is only the
    start of a longer answer."""
    request_id = headers.get("x-obs-request-id", "") or headers.get("x-amz-request-id", "")
    if 200 <= status < 300:
        if cut:
            return Answer(
                kind=Kind.FAILED,
                status=status,
                error_code="TOO_LARGE",
                error_msg=f"a page of the answer is over {PAGE_BYTES_MAX >> 20} MiB",
                request_id=request_id,
            )
        try:
            page = parse_list_result(body)
        except ValueError as exc:
            return Answer(
                kind=Kind.FAILED,
                status=status,
                error_code="NOT_A_LISTING",
                error_msg=str(exc),
                request_id=request_id,
            )
        return Answer(kind=Kind.OK, status=status, data=page, request_id=request_id)
    text = body.decode("utf-8", "replace")
    code, message = _xml_text(text, "Code"), _xml_text(text, "Message")
    request_id = request_id or _xml_text(text, "RequestId")
    common: dict[str, Any] = {
        "status": status,
        "error_code": code,
        "error_msg": message,
        "request_id": request_id,
    }
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if status == 429 or code == SLOW_DOWN:
        kind = Kind.THROTTLED
    elif status >= 500 or status == 408:
        kind = Kind.UNAVAILABLE
    else:
        return tidy(Answer(kind=Kind.FAILED, advice=_advice(status), **common), secrets)
    return tidy(Answer(kind=kind, retry_after=retry_after, **common), secrets)


def _xml_text(body: str, tag: str) -> str:
    """The element's text in one line, whole: tidy() cuts it once the secrets are masked."""
    start, end = body.find(f"<{tag}>"), body.find(f"</{tag}>")
    if not 0 <= start < end:
        return ""
    return " ".join(body[start + len(tag) + 2 : end].split())


def _advice(status: int) -> str:
    if status in (401, 403):
        return "check the credentials (HUAWEICLOUD_SDK_AK/SK) and that they may list the bucket"
    if status == 404:
        return "no such bucket at this OBS endpoint (check service.obs_endpoint or region)"
    if 300 <= status < 400:
        return "OBS redirected: the bucket is in another region (check service.obs_endpoint)"
    return ""


def problem(answer: Answer) -> str:
    """``HTTP 403 AccessDenied: Access Denied`` (an OBS answer), or what went wrong without
    one."""
    if answer.status and not 200 <= answer.status < 300:
        shown = f"HTTP {answer.status} {answer.error_code}".strip()
        return f"{shown}: {answer.error_msg}" if answer.error_msg else shown
    return answer.error_msg or answer.error_code or "no answer"


# -- sending ------------------------------------------------------------------------------------


class ObsClient:
    """Signed ListObjects pages (and a bucket's HEAD) on one OBS endpoint; never raises for what
    happened, never retries (the gate does). Asks the credentials provider for valid keys before
    every call, so a long listing never signs with temporary keys that have expired."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        credentials: Credentials | CredentialProvider,
        *,
        timeout: float = TIMEOUT,
    ) -> None:
        self._session = session
        self._endpoint = endpoint
        if isinstance(credentials, Credentials):
            credentials = static_provider(credentials)
        credentials.bind(session)
        self._provider = credentials
        # ``timeout`` bounds the whole page (as --timeout bounds a VAS call): a socket timeout
        # alone let an answer trickling a byte every few seconds hold the run for days.
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=min(CONNECT_TIMEOUT, timeout), sock_read=timeout
        )
        self.calls = 0  # pages asked for, retries included
        self.last: Answer | None = None  # the latest page's answer

    @property
    def provider(self) -> CredentialProvider:
        return self._provider

    def bucket_url(self, bucket: str) -> URL:
        """The bucket's URL: path style for an IP address or localhost, else virtual host."""
        endpoint = URL(self._endpoint)
        host, port = endpoint.host or "", endpoint.explicit_port
        if _is_address(host):
            return URL.build(scheme=endpoint.scheme, host=host, port=port, path=f"/{bucket}")
        return URL.build(scheme=endpoint.scheme, host=f"{bucket}.{host}", port=port, path="/")

    async def list_page(self, bucket: str, prefix: str, marker: str, limit: int = PAGE) -> Answer:
        """One page of the keys under ``prefix`` after ``marker``."""
        self.calls += 1
        self.last = answer = await self._list_page(bucket, prefix, marker, limit)
        return answer

    async def head_bucket(self, bucket: str) -> Answer:
        """HEAD of the bucket: OK when it exists and these keys may reach it (``check``)."""
        self.calls += 1
        self.last = answer = await self._signed("HEAD", self.bucket_url(bucket), bucket)
        return answer

    async def _list_page(self, bucket: str, prefix: str, marker: str, limit: int) -> Answer:
        base = self.bucket_url(bucket)
        query: dict[str, str | int] = {"prefix": prefix, "max-keys": limit}
        if marker:
            query["marker"] = marker
        url = URL(f"{base}?{canonical_query(query)}", encoded=True)
        return await self._signed("GET", url, bucket)

    async def _signed(self, method: str, url: URL, bucket: str) -> Answer:
        """Keys from the provider, sign, send. OBS refusing temporary keys as expired or unknown
        (revoked, or this machine's clock is off) is sent once more with fresh ones."""
        provider = self._provider
        try:
            keys = _access_keys(provider.fresh() or await provider.current(), provider)
            answer = await self._send(method, url, bucket, keys)
            if answer.error_code not in RENEWABLE or not provider.refreshable:
                return answer
            renewed = await provider.rejected(keys)
        except (CredentialError, UsageError) as exc:
            return Answer(kind=Kind.FAILED, error_code="CREDENTIALS", error_msg=str(exc))
        except Stopped:  # the run stopped before the keys could be renewed: nothing was sent
            return stopped_unsent()
        if not isinstance(renewed, Credentials):
            return answer
        return await self._send(method, url, bucket, renewed)

    async def _send(self, method: str, url: URL, bucket: str, keys: Credentials) -> Answer:
        proxy = proxy_for(url)
        secrets = self._provider.secrets() + proxy.secrets()
        headers = signed_headers(keys, method, f"/{bucket}/")
        host = url.raw_authority
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                proxy=proxy.url,
                proxy_auth=proxy.auth,
            ) as response:
                ok = 200 <= response.status < 300
                if ok and method == "HEAD":  # no body: its status is the answer
                    return Answer(kind=Kind.OK, status=response.status)
                body, cut = await read_capped(response, PAGE_BYTES_MAX if ok else ERROR_BYTES_MAX)
                return classify(
                    response.status,
                    response.headers,
                    body,
                    cut=cut and ok,
                    secrets=secrets,
                )
        except aiohttp.ClientConnectorCertificateError as exc:
            return Answer(
                kind=Kind.FAILED, error_code="TLS", error_msg=f"{host}: {exc.certificate_error}"
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return tidy(not_connected(exc, host), secrets)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # aiohttp's texts quote the answer (a header line it cannot parse): masked too
            code = "TIMEOUT" if isinstance(exc, asyncio.TimeoutError) else "CONNECTION"
            failed = Answer(kind=Kind.UNAVAILABLE, error_code=code, error_msg=describe(exc))
            return tidy(failed, secrets)


def _is_address(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- listing through the gate -------------------------------------------------------------------


class _NoRows:
    """The listing pool makes no creates, so it writes no results rows."""

    def write(self, outcome: object) -> None:
        return None

    def flush(self) -> None:
        return None


class _LogReporter:
    def __init__(self, log: LogFn) -> None:
        self.log = log

    def outcome(self, outcome: object) -> None:
        return None


class _NoCreates:
    """The listing pool's ``api``: it runs no pass, only :meth:`Pool.call`."""

    async def create(self, body: bytes) -> Answer:
        return Answer(kind=Kind.FAILED, error_msg="the OBS listing pool creates nothing")

    async def list_page(self, name_like: str, offset: int, limit: int = 0) -> Answer:
        return Answer(kind=Kind.FAILED, error_msg="the OBS listing pool lists no VAS tasks")

    @property
    def secrets(self) -> tuple[str, ...]:
        return ()


def listing_pool(
    settings: PoolSettings, log: LogFn, service_url: str, credentials: CredentialProvider | None
) -> Pool:
    """A pool for the listing alone, with the run's in-flight cap, rate and retry policy (it
    runs before the run's pool exists): no results, no journal, no deadline or job limits.
    ``credentials``' renewals go through its gate too."""
    own = PoolSettings(
        concurrency=settings.concurrency,
        rate=settings.rate,
        retry=settings.retry,
        controller=settings.controller,
        seed=settings.seed,
    )
    return Pool(
        _NoCreates(),
        _NoRows(),
        _LogReporter(log),
        own,
        service_url=service_url,
        credentials=credentials,
    )


async def list_pages(
    pool: Pool, client: ObsClient, bucket: str, prefix: str, *, page: int = PAGE
) -> AsyncIterator[tuple[str, ...]]:
    """The keys under ``prefix``, a page at a time, following NextMarker (or the last key).
    Raises UsageError naming ``obs://bucket/prefix`` and OBS's code and message when a page
    cannot be had."""
    where = f"obs://{bucket}/{prefix}"
    marker = ""
    while True:
        before = client.calls
        try:
            answer = await pool.call(client.list_page, bucket, prefix, marker, page)
        except Stopped:  # the endpoint cannot be reached at all (the gate's first-call rule)
            answer = client.last or Answer(kind=Kind.FAILED, error_msg="stopped")
            raise UsageError(
                f"listing {where} failed: {problem(answer)}; check service.obs_endpoint (or "
                "--obs-endpoint) and this machine's network (DNS, proxy, firewall)"
            ) from None
        if answer.kind is not Kind.OK:
            tries = client.calls - before
            if answer.kind is Kind.FAILED or tries == 1:
                advice = answer.advice
                if answer.error_code in ("TOO_LARGE", "NOT_A_LISTING"):
                    advice = f"is {client.bucket_url(bucket)} an OBS endpoint?"
                tail = f"; {advice}" if advice else ""
                raise UsageError(f"listing {where} failed: {problem(answer)}{tail}")
            raise UsageError(f"listing {where} failed {tries} times: {problem(answer)}")
        result: ListPage = answer.data
        stray = next((key for key in result.keys if not key.startswith(prefix)), None)
        if stray is not None:  # each key would become a job nobody asked for
            raise UsageError(
                f"listing {where} failed: OBS answered the key {stray[:120]!r}, which is not "
                "under that prefix; nothing was sent to VAS (is the endpoint OBS?)"
            )
        yield result.keys
        if not result.truncated:
            return
        # OBS may answer a truncated page with no keys (deleted objects it skipped): its
        # NextMarker goes on; one with neither keys nor a marker cannot say where.
        following = result.next_marker or (result.keys[-1] if result.keys else "")
        if not following:
            raise UsageError(
                f"listing {where} failed: OBS answered a truncated page with no keys and no "
                "next marker; the keys after it cannot be listed (is the endpoint OBS?)"
            )
        if following <= marker:  # OBS lists in key order: a marker that does not move on
            raise UsageError(  # would list the same page forever
                f"listing {where} failed: OBS answered a truncated page whose next marker "
                f"{following[:80]!r} does not come after {marker[:80]!r}; stopping rather than "
                "listing forever (is the endpoint OBS?)"
            )
        marker = following


def _spool_page(
    out: Any,
    keys: Sequence[str],
    bucket: str,
    where: str,
    warn: Callable[[str], None],
    skipped: list[str],
) -> int:
    """Write one page's keys to the spool; the count written. A key over OBS's 1,024 bytes
    stops the listing naming the source (it stopped the run naming the spool file, a
    temporary file deleted at exit)."""
    written = 0
    for key in keys:
        if CONTROL.search(key):  # a tab, a line break...: not a path VAS takes
            warn(
                f"obs://{bucket}/{key!r}: a key with a control character "
                f"cannot be submitted ({where}.prefix); skipped"
            )
            skipped.append(f"obs://{bucket}/{key!r}")
            continue
        size = len(key.encode())
        if size > OBS_KEY_MAX_BYTES:
            raise UsageError(
                f"OBS answered a key of {size} bytes (an OBS key is at most "
                f"{OBS_KEY_MAX_BYTES:,} bytes): {key[:80]!r}...; nothing was sent to VAS "
                "(is the endpoint OBS?)"
            )
        out.write(f"obs://{bucket}/{key}\n")
        written += 1
    return written


@dataclass(frozen=True, slots=True)
class Spooled:
    """The manifest with its prefixes read from spool files, and the listing calls it took."""

    manifest: Manifest
    calls: int


async def spool_prefixes(
    manifest: Manifest,
    endpoint: str | None,
    credentials: Credentials | CredentialProvider | None,
    directory: Path,
    warn: Callable[[str], None],
    info: Callable[[str], None],
    *,
    settings: PoolSettings | None = None,
    log: LogFn | None = None,
    session: aiohttp.ClientSession | None = None,
    pool: Pool | None = None,
    timeout: float = TIMEOUT,
) -> Spooled:
    """List every ``prefix`` source into a spool file and read it as a listing from then on.
    Prefixes are listed one after another, each page after the one before (marker paging),
    through ``pool`` (by default a :func:`listing_pool` of ``settings``)."""
    if not any(source.prefix is not None for source in manifest.sources):
        return Spooled(manifest, 0)
    if endpoint is None or credentials is None:
        where = next(s.where for s in manifest.sources if s.prefix is not None)
        raise UsageError(
            f"{manifest.path}: {where}.prefix: live OBS prefixes need an OBS endpoint "
            "and credentials (set service.region or service.obs_endpoint, or use "
            "--obs-endpoint)"
        )
    settings = settings or PoolSettings()
    async with AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(open_session(settings.concurrency))
        client = ObsClient(session, endpoint, credentials, timeout=timeout)
        if pool is None:
            logged = log or (lambda _level, _message: None)
            pool = listing_pool(settings, logged, endpoint, client.provider)
        sources = []
        for index, source in enumerate(manifest.sources):
            if source.prefix is None:
                sources.append(source)
                continue
            bucket, _, prefix = source.prefix.removeprefix("obs://").partition("/")
            spool = directory / f"prefix-{index}.txt"
            count = 0
            skipped: list[str] = []
            named = f"{manifest.path}: {source.where}.prefix"
            with spool.open("w", encoding="utf-8") as out:
                try:
                    async for keys in list_pages(pool, client, bucket, prefix):
                        count += _spool_page(out, keys, bucket, source.where, warn, skipped)
                except UsageError as exc:  # named after the source (several may share a prefix)
                    raise UsageError(f"{named}: {exc}") from None
            info(f"{source.where}: listed {count} objects under {source.prefix}")
            if not count:
                warn(
                    f"{manifest.path}: {source.where}.prefix: {source.prefix} lists no objects "
                    "(check the bucket and the folder's spelling; OBS keys are case-sensitive)"
                )
            spooled = replace(source, prefix=None, listing=spool, listed_from=source.prefix)
            sources.append(replace(spooled, unsubmittable=tuple(skipped)))
    return Spooled(replace(manifest, sources=tuple(sources)), pool.stats.calls)
