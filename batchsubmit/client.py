"""The VAS client: sign, send, and turn what happened into an Answer. The only module that
speaks HTTP to VAS; it never retries (the pool decides) and never raises for a bad answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from . import __version__
from .answers import (
    ERROR_CAP,
    MAX_HEADER_FIELD,
    READ_CAP,
    SHOW_CAP,
    Answer,
    Kind,
    classify,
    credentials_failed,
    exception_text,
    longest_written,
    tidy,
)
from .auth import (
    Credentials,
    RequestSigner,
    Secret,
    TokenHeaders,
    canonical_query,
    request_signer,
)
from .credentials import CredentialProvider, static_provider
from .engine.gate import Stopped
from .errors import CredentialError
from .proxies import proxy_for
from .vas import url_host, usable_task_id

__all__ = ["DEFAULT_TIMEOUT", "Endpoint", "VasClient", "open_session"]

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
LIST_PAGE = 100
RECEIVE_BUFFER_FLOOR = 1 << 20  # bytes: over asyncio's 256 KiB read buffer
# Sent, not signed (a proxy may rewrite them). Answers are small JSON: asking for them
# uncompressed saves both ends the work; one that comes compressed anyway is still read.
Query = Mapping[str, str | int] | None
Headers = dict[str, str]
UNSIGNED_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",
    "User-Agent": f"batchsubmit/{__version__}",
}


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where the tasks of one service live: ``{base}/v2/{project}/services/{service}/tasks``."""

    base_url: str
    project_id: str
    service_name: str

    @property
    def tasks_path(self) -> str:
        return f"/v2/{quote(self.project_id)}/services/{quote(self.service_name)}/tasks"

    @property
    def tasks_url(self) -> str:
        """Also the ``service_url`` recorded in every results row: the ledger's key."""
        return self.base_url + self.tasks_path

    @property
    def host(self) -> str:
        parts = urlsplit(self.base_url)
        default = {"http": 80, "https": 443}[parts.scheme]
        host = url_host(parts.hostname or "")
        return host if parts.port in (None, default) else f"{host}:{parts.port}"


def open_session(concurrency: int) -> aiohttp.ClientSession:
    """One session per run: its connection pool is what makes calls cheap.

    Like curl, requests and Huawei's SDK, calls follow ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
    ``NO_PROXY`` (each client looks its proxy up once: proxies.py; ``NO_PROXY`` as urllib
    reads it: host names, domain suffixes, ``*``), and the session verifies TLS against
    OpenSSL's default paths, which ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` replace (a corporate
    CA bundle; aiohttp reads them once, at import). The metadata service is never reached
    through it (see credentials.py).
    """
    _raise_mmap_threshold()
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(connector=connector, max_field_size=MAX_HEADER_FIELD)


def _raise_mmap_threshold() -> None:
    """asyncio reads every answer into a fresh buffer of ``max_size`` (256 KiB), and glibc
    serves blocks that big with mmap, shrinks them with mremap and frees them with munmap:
    three system calls and a page fault per answer, ~15 us of kernel time per job here.
    Freeing one larger mmapped block raises glibc's adaptive threshold above that size, so
    the buffers come from the heap instead. Elsewhere this is just a short-lived allocation.
    Kept on the benchmark's word (issue 13, 0 ms, 64 in flight, pinned): on asyncio's loop
    150 -> 135 us of CPU a job (10%); on uvloop, which keeps its own buffers, about 1%.
    """
    block = bytearray(RECEIVE_BUFFER_FLOOR)
    del block


class VasClient:
    """Calls on one service's tasks with one set of credentials."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        credentials: Credentials | CredentialProvider,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``credentials``: a provider that keeps them valid (IAM tokens, temporary keys from
        ECS metadata), or plain long-term keys."""
        self._session = session
        self._endpoint = endpoint
        self._path = endpoint.tasks_path
        self._url = endpoint.tasks_url
        self._post_url = URL(self._url, encoded=True)
        proxy = proxy_for(self._url)
        self._proxy, self._proxy_auth = proxy.url, proxy.auth
        self._proxy_secrets = proxy.secrets()
        # One timer a call (a sock_read limit re-arms one for every chunk read); connecting
        # has its own, shorter limit, so that a call that never connected is known unsent.
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=min(CONNECT_TIMEOUT, timeout / 2)
        )
        self._fixed = {
            "Content-Type": "application/json",
            "Host": endpoint.host,
            "X-Project-Id": endpoint.project_id,
        }
        if isinstance(credentials, Credentials):
            credentials = static_provider(credentials)
        credentials.bind(session)
        self._provider = credentials
        self._secret: Secret | None = None
        self._signer: RequestSigner | TokenHeaders | None = None
        self._secrets: tuple[str, ...] = credentials.secrets() + self._proxy_secrets

    def _headers(
        self, secret: Secret, method: str, path: str, query: Query, body: bytes
    ) -> Headers:
        """Headers signed with ``secret``; the signer is rebuilt only when the secret changes."""
        if secret is not self._secret or self._signer is None:
            self._signer = request_signer(secret, self._fixed, UNSIGNED_HEADERS)
            self._secret = secret
            self._secrets = self._provider.secrets() + self._proxy_secrets
        return self._signer.headers(method, path, query, body)

    async def _signed(
        self, method: str, path: str, query: Query, url: URL, body: bytes, *, create: bool
    ) -> Answer:
        """Ask the provider for a valid secret, sign, send. A 401 to a secret that can be
        renewed (an IAM token, temporary keys) is sent once more with a fresh one: the gateway
        refused it, so nothing was created; a second 401 stops the run like any other."""
        provider = self._provider
        try:
            secret = provider.fresh() or await provider.current()
            answer = await self._send(
                method, url, self._headers(secret, method, path, query, body), body, create=create
            )
            if answer.status != 401 or not provider.refreshable:
                return answer
            renewed = await provider.rejected(secret)
        except CredentialError as exc:
            return credentials_failed(provider.source_name, exc)
        except Stopped:  # the run stopped before the credentials could be renewed
            return stopped_unsent()
        if renewed is None:
            return answer
        headers = self._headers(renewed, method, path, query, body)
        return await self._send(method, url, headers, body, create=create)

    @property
    def tasks_url(self) -> str:
        """The tasks URL this client calls (``--endpoint``'s, where one was given)."""
        return self._url

    @property
    def provider(self) -> CredentialProvider:
        """Where this client's secrets come from (the pool routes its refreshes)."""
        return self._provider

    @property
    def secrets(self) -> tuple[str, ...]:
        """What this client masks in the answers it gives (the credentials' and the proxy's
        secrets), for a caller that shows what a 200 answer's data says."""
        return self._secrets

    async def create(self, body: bytes) -> Answer:
        """One create call. A lost answer is AMBIGUOUS: the job may exist."""
        return await self._signed("POST", self._path, None, self._post_url, body, create=True)

    async def list_page(self, name_like: str, offset: int, limit: int = LIST_PAGE) -> Answer:
        """One page of tasks whose name contains ``name_like``."""
        query: dict[str, str | int] = {"name_like": name_like, "offset": offset, "limit": limit}
        url = URL(f"{self._url}?{canonical_query(query)}", encoded=True)
        return await self._signed("GET", self._path, query, url, b"", create=False)

    async def list_tasks(self, query: dict[str, str | int]) -> Answer:
        """One page of tasks matching ``query`` (``state``, ``created_since``, ``order``,
        ``offset``, ``limit``, ``name_like``...): the answer's data is ``{count, tasks}``."""
        url = URL(f"{self._url}?{canonical_query(query)}", encoded=True)
        return await self._signed("GET", self._path, query, url, b"", create=False)

    async def show(self, task_id: str) -> Answer:
        """One task's details (the only call that returns ``hosting_result``)."""
        return await self._task_call("GET", task_id)

    async def delete(self, task_id: str) -> Answer:
        """Delete one task (202, asynchronous; 404 means it is already gone)."""
        return await self._task_call("DELETE", task_id)

    async def _task_call(self, method: str, task_id: str) -> Answer:
        """A call on one task, its id one path segment. An id that cannot be one (an old
        row's ``..`` or ``a/b``) is not sent at all: quoted or not, it would name another
        path on the service."""
        if not usable_task_id(task_id):
            return Answer(
                kind=Kind.FAILED,
                error_code="NOT_A_JOB_ID",
                error_msg=f"{task_id[:80]!r} is not a job id; nothing was sent",
            )
        segment = quote(task_id, safe="")
        path = f"{self._path}/{segment}"
        url = URL(f"{self._url}/{segment}", encoded=True)
        return await self._signed(method, path, None, url, b"", create=False)

    async def _send(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        body: bytes,
        *,
        create: bool,
    ) -> Answer:
        sent = False
        try:
            async with self._session.request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            ) as response:
                sent = True
                status = response.status
                if not 200 <= status < 300:
                    cap = ERROR_CAP
                elif method == "GET" and url.raw_path != self._path:
                    cap = SHOW_CAP  # a show: hosting_result.data holds result.json itself
                else:
                    cap = READ_CAP
                payload, cut = await read_capped(response, cap)
                if cut:
                    if status < 300:
                        too_large = _too_large(status, response.headers, cap, create=create)
                        return tidy(too_large, self._secrets)
                    # A secret straddling the cut (as it is or JSON-escaped, the longer) would
                    # leave its first characters unmasked.
                    payload = payload[: max(0, len(payload) - longest_written(self._secrets))]
                # The gateway echoes its canonical request on signature errors, security token
                # included: classify masks every secret, then cuts the message short.
                return classify(
                    status, response.headers, payload, create=create, secrets=self._secrets
                )
        except aiohttp.ClientConnectorCertificateError as exc:
            return Answer(
                kind=Kind.FATAL,
                error_code="TLS",
                error_msg=f"{self._endpoint.host}: {exc.certificate_error}",
                advice="the endpoint's TLS certificate was not accepted",
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return tidy(not_connected(exc, self._endpoint.host), self._secrets)
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            # aiohttp's texts quote the answer (a header line it cannot parse, a proxy's
            # reason phrase): the secrets a server echoes there are masked like a message's.
            kind = Kind.AMBIGUOUS if create else Kind.UNAVAILABLE
            code = "TIMEOUT" if isinstance(exc, asyncio.TimeoutError) else "CONNECTION"
            where = "after the answer began" if sent else "after sending"
            failed = Answer(kind=kind, error_code=code, error_msg=f"{describe(exc)} ({where})")
            return tidy(failed, self._secrets)


def stopped_unsent() -> Answer:
    """The run stopped before a call's credentials could be renewed: nothing was sent."""
    return Answer(
        kind=Kind.NOT_SENT,
        error_code="STOPPED",
        error_msg="the run stopped before the credentials could be renewed; nothing was sent",
    )


def not_connected(
    exc: aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError, host: str
) -> Answer:
    """A call that never connected, so nothing was sent (safe to retry; fatal as a run's first
    call): DNS, a TLS handshake, refused or unreachable, or the connect timeout."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Answer(
            kind=Kind.NOT_SENT,
            error_code="CONNECT_TIMEOUT",
            error_msg=f"connecting to {host} timed out: {describe(exc)}",
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        code = "DNS"
    elif isinstance(exc, aiohttp.ClientConnectorSSLError):
        code = "TLS"
    else:
        code = "CONNECT"
    return Answer(
        kind=Kind.NOT_SENT,
        error_code=code,
        error_msg=f"cannot reach {host}: {describe(exc.os_error)}",
    )


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, and whether there was more. An answer cut short
    closes its connection rather than draining a 64 MiB page into the pool's connection."""
    length = response.content_length
    if length is not None and length <= cap and "Content-Encoding" not in response.headers:
        # The common case, read in one go: the parser stops at Content-Length (a compressed
        # body, though asked for uncompressed, may grow past it and is read by the cap).
        return await response.read(), False
    content = response.content
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(cap + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            response.close()
            return b"".join(chunks)[:cap], True
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), False


def _too_large(status: int, headers: Mapping[str, str], cap: int, *, create: bool) -> Answer:
    """A success answer over the cap: a create's job may exist (look it up); a read failed."""
    return Answer(
        kind=Kind.AMBIGUOUS if create else Kind.UNAVAILABLE,
        status=status,
        error_code="TOO_LARGE",
        error_msg=f"the answer was larger than {cap >> 10} KiB; not read",
        request_id=headers.get("X-Request-Id", ""),  # tidy() cuts it, once masked
    )


def describe(exc: BaseException) -> str:
    """An exception as a short message: its type and text."""
    text = exception_text(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
