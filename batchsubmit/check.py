"""``batchsubmit check``: is a run set up right? It creates nothing and returns in seconds.

Each check is one :class:`CheckResult` (PASS, WARN, FAIL or SKIP, with what to fix); the CLI
renders them. Every network step has its own short time limit, so an endpoint that accepts
connections and never answers costs one limit, not a hang. Checks that need what an earlier
one could not establish (credentials, the service's answer) are skipped, saying why.

Reads only: credentials and the project id (IAM or metadata when that is the source), the
endpoint's DNS, TCP and TLS, one VAS list with ``limit=1`` (through the pool's gate), a
one-key OBS listing per ``prefix`` source and ``HEAD`` of the output bucket.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import anyio
from yarl import URL

from .answers import Answer, Kind, mask, one_line
from .auth import Credentials
from .client import Endpoint, VasClient
from .credentials import Choice, CredentialProvider, IamPassword, open_provider
from .errors import BatchSubmitError, CredentialError
from .manifest import Manifest
from .obs import ObsClient, listing_pool
from .obs import problem as obs_problem
from .pool import Pool, PoolSettings, RunStats, Stopped, new_gate
from .proxies import Proxy
from .results import Format, read_ledger
from .retry import RetryPolicy
from .runner import count_work
from .vas import REGIONS, url_host

__all__ = ["QUOTA", "CheckPlan", "CheckResult", "Status", "run_checks"]

QUOTA = 5000  # saved jobs VAS keeps per user
DEFAULT_CHECK_TIMEOUT = 5.0  # seconds for each network step
PREFIXES_AT_ONCE = 8  # prefix sources checked side by side (one OBS call each)
_STATUS_LINE = re.compile(r"HTTP/1\.[01] (\d{3})(?: (.*))?")
Status = Literal["PASS", "WARN", "FAIL", "SKIP"]

# Each check's calls go through a gate of their own, one at a time and never retried: a check
# reports what it got.
_ONCE = PoolSettings(concurrency=1, rate=0.0, retry=RetryPolicy(attempts=1, throttles=1))

_LIST_ADVICE = {
    "APIGW.0301": "the signature was refused: the SK does not belong to the AK (mistyped or "
    "rotated?); check HUAWEICLOUD_SDK_SK or the profile file's sk",
    "APIGW.0303": "the request was refused as expired or badly dated: set this machine's clock "
    "right (NTP)",
    "IVA.0001": "the token or temporary credentials were refused as expired or invalid: log in "
    "again, or check the IAM user and the server's agency",
    "IVA.0002": "the project id is not valid here: check service.project_id (or "
    "HUAWEICLOUD_SDK_PROJECT_ID) for this region",
    "IVA.0007": "the account is not subscribed to this service in this region: subscribe in "
    "the VAS console, or check service.name and service.region",
    "IVA.0008": "the service is in beta and this account is not admitted: apply in the console",
    "IVA.0009": "forbidden: the IAM user (or agency) has no VAS permission; add a VAS policy to "
    "its user group",
    "IVA.0014": "the account is restricted (arrears or frozen): check billing in the console",
    "IVA.0015": "an IAM policy denies this call: check the policies of the user or agency",
}


@dataclass(frozen=True)
class CheckResult:
    """One line of the check: what was checked, how it went, and what to do."""

    name: str
    status: Status
    detail: str


@dataclass(frozen=True, kw_only=True)
class CheckPlan:
    """What to check, as the CLI read it from the manifest, the options and the environment."""

    manifest: Manifest
    base_url: str
    obs_endpoint: str | None
    choice: Choice | CredentialError  # the source found, or why none was
    region: str | None  # the region of the manifest's endpoint, None for a custom endpoint
    results: Path
    format: Format
    proxy: str | None = None  # the proxy the endpoint is reached through, if any
    timeout: float = DEFAULT_CHECK_TIMEOUT
    quota: int = QUOTA


async def run_checks(
    plan: CheckPlan,
    session: aiohttp.ClientSession,
    warn: Callable[[str], None],
) -> list[CheckResult]:
    """Every check, in order; never raises for what it finds."""
    results: list[CheckResult] = []
    provider = await _credentials(plan, session, warn, results)
    results.append(_region(plan))
    reachable = await _connect(plan, results)
    answer = None
    if provider is not None and reachable:
        answer = await _list_one(plan, session, provider, results)
    else:
        why = "no credentials" if provider is None else "the endpoint cannot be reached"
        results.append(CheckResult("signature and subscription", "SKIP", why))
    results.append(_quota(plan, provider, answer, warn))
    results.extend(await _prefixes(plan, session, provider))
    results.append(await _output_bucket(plan, session, provider))
    return results


# -- each check -------------------------------------------------------------------------------


async def _credentials(
    plan: CheckPlan,
    session: aiohttp.ClientSession,
    warn: Callable[[str], None],
    results: list[CheckResult],
) -> CredentialProvider | None:
    name = "credentials"
    if isinstance(plan.choice, CredentialError):
        results.append(CheckResult(name, "FAIL", str(plan.choice)))
        return None
    choice = plan.choice
    if isinstance(choice.source, IamPassword) and choice.source.cache is not None:
        # The token cache neither read (a cached token would pass a mistyped password) nor
        # written (check creates nothing): the login itself is what is checked.
        choice = replace(choice, source=replace(choice.source, cache=None))
    gate = new_gate(_ONCE, RunStats(), lambda _level, _message: None)
    try:
        with anyio.fail_after(plan.timeout * 2 + 2):
            provider = await open_provider(
                choice,
                session,
                region=plan.region,
                warn=warn,
                timeout=plan.timeout,
                route=gate.other,
            )
    except CredentialError as exc:
        results.append(CheckResult(name, "FAIL", str(exc)))
        return None
    except TimeoutError:
        results.append(CheckResult(name, "FAIL", f"{plan.choice.source.name}: no answer in time"))
        return None
    if not provider.project_id:
        results.append(
            CheckResult(
                name,
                "FAIL",
                f"found: {provider.source_name}, but no project id: set service.project_id "
                "(a custom endpoint has no region to look it up by)",
            )
        )
        return None
    origin = plan.choice.project_id_from or "looked up in IAM for the region"
    results.append(
        CheckResult(
            name,
            "PASS",
            f"found: {provider.source_name}; project {provider.project_id} ({origin})",
        )
    )
    return provider


def _region(plan: CheckPlan) -> CheckResult:
    name = "region"
    if plan.region is None:
        return CheckResult(name, "PASS", f"custom endpoint {plan.base_url} (no region to check)")
    if plan.region in REGIONS:
        return CheckResult(name, "PASS", f"{plan.region} is a region Huawei lists for VAS")
    return CheckResult(
        name,
        "WARN",
        f"{plan.region!r} is not a region Huawei lists for VAS ({', '.join(REGIONS)}): "
        "check service.region for a typo",
    )


async def _connect(plan: CheckPlan, results: list[CheckResult]) -> bool:
    """DNS, TCP and (https) TLS to the endpoint. Through a proxy: DNS and TCP to the proxy,
    then for https the tunnel the client will ask for (CONNECT) and TLS inside it, so a
    proxy that refuses the endpoint, wants a user, or inspects TLS is found here."""
    name = "endpoint"
    endpoint = urlsplit(plan.base_url)
    parts = urlsplit(plan.proxy) if plan.proxy else endpoint
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    via = f" through proxy {host}:{port}" if plan.proxy else ""
    tls = endpoint.scheme == "https"
    tunnel = tls and plan.proxy is not None
    limit = plan.timeout
    loop = asyncio.get_running_loop()

    def fail(text: str) -> bool:
        results.append(CheckResult(name, "FAIL", text))
        return False

    try:
        with anyio.fail_after(limit):
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (TimeoutError, socket.gaierror) as exc:
        what = "no answer from DNS in time" if isinstance(exc, TimeoutError) else str(exc)
        return fail(f"DNS: cannot resolve {host}{via} ({what}): check the region or endpoint "
                    "spelling, and this machine's DNS")  # fmt: skip
    stage = f"connecting to {host}:{port}{via}"
    writer: asyncio.StreamWriter | None = None
    try:
        with anyio.fail_after(limit):
            direct_tls = tls and not tunnel
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if direct_tls else None,
                server_hostname=host if direct_tls else None,
            )  # fmt: skip
            if tunnel:
                target = tunnel_target(plan.base_url)
                stage = f"the proxy {host}:{port}'s answer to CONNECT {target}"
                refused = await _open_tunnel(reader, writer, target, plan.proxy or "")
                if refused:
                    return fail(f"proxy {host}:{port} {refused}")
                stage = f"TLS with {endpoint.netloc}{via}"
                await writer.start_tls(
                    ssl.create_default_context(), server_hostname=endpoint.hostname
                )
    except TimeoutError:
        if plan.proxy:
            return fail(f"{stage} timed out after {limit:g} s: is the proxy up, and does it "
                        "reach the endpoint? (HTTPS_PROXY / HTTP_PROXY)")  # fmt: skip
        return fail(f"{stage} timed out after {limit:g} s: a firewall may drop it; set "
                    "HTTPS_PROXY if this network needs a proxy")  # fmt: skip
    except ssl.SSLError as exc:
        where = f"{endpoint.netloc}{via}" if tunnel else f"{host}:{port}"
        return fail(f"TLS with {where} failed ({exc.reason or exc}): a proxy that inspects "
                    "TLS needs its CA bundle in SSL_CERT_FILE")  # fmt: skip
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        closed = isinstance(exc, asyncio.IncompleteReadError)
        what = "it closed the connection" if closed else "an answer too long to be HTTP's"
        return fail(f"{stage}: {what}: is it an HTTP proxy? (HTTPS_PROXY / HTTP_PROXY)")
    except OSError as exc:
        what = "refused" if isinstance(exc, ConnectionRefusedError) else exc.strerror or str(exc)
        return fail(
            f"{stage}: {what}: check the endpoint and port"
            + (", and the proxy (HTTPS_PROXY / HTTP_PROXY)" if plan.proxy else "")
        )
    finally:
        if writer is not None:
            writer.close()
            with anyio.move_on_after(1), suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    if tunnel:
        done = "connects, the proxy opens a tunnel, TLS verified"
    else:
        done = "resolves, connects" + (", TLS verified" if tls else "")
    results.append(CheckResult(name, "PASS", f"{endpoint.netloc}{via}: {done}"))
    return True


def tunnel_target(base_url: str) -> str:
    """``host:port`` as CONNECT names it (RFC 9110: the port always, 443 by default), as
    aiohttp asks for the calls' own tunnel: a proxy's allow-list sees the same target."""
    parts = urlsplit(base_url)
    return f"{url_host(parts.hostname or '')}:{parts.port or 443}"


async def _open_tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, proxy: str
) -> str:
    """Ask the proxy for a tunnel to ``target`` as aiohttp will (CONNECT, with the proxy
    URL's user as Basic auth); "" if it opens one, else what it said. Never shows the
    password."""
    request = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    auth = aiohttp.BasicAuth.from_url(URL(proxy))
    if auth is not None:
        request.append(f"Proxy-Authorization: {auth.encode()}")
    writer.write(("\r\n".join(request) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    # masked before it is cut: a reason phrase may echo the Proxy-Authorization it was sent
    secrets = Proxy(proxy, auth).secrets()
    status_line = mask(head.split(b"\r\n", 1)[0].decode("latin-1"), secrets)
    found = _STATUS_LINE.fullmatch(status_line)
    if found is None:
        return f"answered CONNECT with {one_line(status_line)[:80]!r}, not HTTP: is it a proxy?"
    code, reason = int(found.group(1)), one_line(found.group(2))[:80]
    if 200 <= code < 300:
        return ""
    said = f"HTTP {code} {reason}".rstrip()
    if code == 407:
        if auth is None:
            return (f"wants a user ({said}): give it in the proxy URL, "
                    "HTTPS_PROXY=http://user:password@host:port")  # fmt: skip
        return f"refused the user in the proxy URL ({said}): check the user and password"
    return (f"refused a tunnel to {target} ({said}): ask for the endpoint to be allowed, "
            "or list it in NO_PROXY if it is reached directly")  # fmt: skip


async def _list_one(
    plan: CheckPlan,
    session: aiohttp.ClientSession,
    provider: CredentialProvider,
    results: list[CheckResult],
) -> Answer | None:
    """One list with ``limit=1`` through the pool's gate (no retries: a check reports)."""
    name = "signature and subscription"
    service = plan.manifest.service.name
    endpoint = Endpoint(
        base_url=plan.base_url, project_id=provider.project_id, service_name=service
    )
    client = VasClient(session, endpoint, provider, timeout=plan.timeout)
    pool = Pool(
        client,
        _NoRows(),
        _NoReports(),
        _ONCE,
        service_url=endpoint.tasks_url,
        credentials=provider,
    )
    try:
        with anyio.fail_after(plan.timeout + 2):
            answer = await pool.call(client.list_tasks, {"offset": 0, "limit": 1})
    except TimeoutError:
        answer = Answer(kind=Kind.UNAVAILABLE, error_code="TIMEOUT", error_msg="no answer")
    if answer.kind is Kind.OK:
        results.append(
            CheckResult(name, "PASS", f"the signature is accepted and {service} answers")
        )
        return answer
    code = answer.error_code
    if code in _LIST_ADVICE:
        advice = _LIST_ADVICE[code]
    elif answer.status == 404:
        advice = f"no service {service!r} here: check service.name and the endpoint"
    elif answer.kind is Kind.THROTTLED:
        advice = "throttled: try again in a minute (other runs may be under way)"
    elif code == "TIMEOUT":
        advice = (
            f"the endpoint accepted the connection but gave no answer within {plan.timeout:g} s: "
            "is it the VAS endpoint? is a proxy needed (HTTPS_PROXY)?"
        )
    elif code == "CONNECTION":  # an answer broken off or not HTTP, or a proxy's refusal
        advice = (
            f"{answer.error_msg or 'the connection broke off'}: is it the VAS endpoint? "
            "with a proxy (HTTPS_PROXY), does it allow this endpoint (and need a user)?"
        )
    else:  # the service's own words, then what to do when there is advice
        said = answer.error_msg or "no error message"
        advice = f"{said}; {answer.advice}" if answer.advice else said
    shown = f"HTTP {answer.status} {code}".strip() if answer.status else code
    results.append(CheckResult(name, "FAIL", f"{shown}: {advice}"))
    return None


def _quota(
    plan: CheckPlan,
    provider: CredentialProvider | None,
    answer: Answer | None,
    warn: Callable[[str], None],
) -> CheckResult:
    name = "quota"
    # The ledger and the listings first, whatever the service said: what stops a submit
    # (a bad listing line, a damaged or foreign results file) must not pass here.
    try:
        planned, note = _planned(plan, provider, warn)
    except BatchSubmitError as exc:
        return CheckResult(
            name,
            "FAIL",
            f"tonight's creates cannot be counted: {exc} (submit stops on this too, exit 2)",
        )
    data = answer.data if answer is not None else None
    count = data.get("count") if isinstance(data, dict) else None
    if provider is None or not isinstance(count, int) or isinstance(count, bool) or count < 0:
        # a count of true or -3 is no count: it read as 1 job, or room for 5003
        odd = f" (the service's count {one_line(str(count))[:40]!r} is not a number of jobs)"
        return CheckResult(name, "SKIP", f"the saved jobs could not be counted"
                           f"{odd if count is not None else ''}; {planned} creates "
                           f"planned{note}")  # fmt: skip
    room = max(0, plan.quota - count)
    text = (
        f"{count} saved jobs of {plan.quota} for this service (the quota counts every "
        f"service of the account), room for {room}; {planned} creates planned{note}"
    )
    if room == 0 or planned > room:
        return CheckResult(
            name,
            "FAIL",
            f"no room: {text}; delete finished jobs (batchsubmit prune) or cap the run "
            "(--max-jobs)",
        )
    return CheckResult(name, "PASS", text)


def _planned(
    plan: CheckPlan, provider: CredentialProvider | None, warn: Callable[[str], None]
) -> tuple[int, str]:
    """Tonight's creates: the listing and path sources not yet in the ledger. Raises what
    submit would stop on (BatchSubmitError naming the file and line). Without credentials
    the project id may be unknown: the file is still read, but then counts nothing as done."""
    manifest = plan.manifest
    local = tuple(s for s in manifest.sources if s.prefix is None)
    note = " (live prefixes not counted)" if len(local) < len(manifest.sources) else ""
    project_id = provider.project_id if provider is not None else None
    if not project_id and isinstance(plan.choice, Choice):
        project_id = plan.choice.project_id
    endpoint = Endpoint(
        base_url=plan.base_url,
        project_id=project_id or manifest.service.project_id or "0" * 32,
        service_name=manifest.service.name,
    )
    ledger = read_ledger(plan.results, plan.format, endpoint.tasks_url, warn)
    counted = count_work(replace(manifest, sources=local), ledger, {}, warn)
    return counted.planned, note


async def _prefixes(
    plan: CheckPlan, session: aiohttp.ClientSession, provider: CredentialProvider | None
) -> list[CheckResult]:
    """Each ``prefix`` source's check, in the manifest's order, ``PREFIXES_AT_ONCE`` at a
    time: one after another, a manifest of many prefixes behind a firewall that drops OBS
    took ``--timeout`` for each."""
    sources = [(s.where, s.prefix) for s in plan.manifest.sources if s.prefix is not None]
    found: list[CheckResult] = [CheckResult("", "SKIP", "")] * len(sources)
    limiter = anyio.CapacityLimiter(PREFIXES_AT_ONCE)

    async def one(index: int, where: str, prefix: str) -> None:
        async with limiter:
            found[index] = await _prefix(plan, session, provider, where, prefix)

    async with anyio.create_task_group() as group:
        for index, (where, prefix) in enumerate(sources):
            group.start_soon(one, index, where, prefix)
    return found


async def _prefix(
    plan: CheckPlan,
    session: aiohttp.ClientSession,
    provider: CredentialProvider | None,
    where: str,
    prefix: str,
) -> CheckResult:
    """One ListObjects page of one key."""
    name = f"source {prefix}"
    keys = _keys(provider)
    if provider is None or isinstance(keys, str) or plan.obs_endpoint is None:
        why = keys if isinstance(keys, str) else "no OBS endpoint (service.obs_endpoint)"
        return CheckResult(name, "SKIP" if provider is None else "FAIL", why)
    bucket, _, key_prefix = prefix.removeprefix("obs://").partition("/")
    client = ObsClient(session, plan.obs_endpoint, provider, timeout=plan.timeout)
    answer = await _obs_once(plan, client, client.list_page, bucket, key_prefix, "", 1)
    if answer.kind is Kind.OK:
        return CheckResult(name, "PASS", f"{where}: readable")
    return CheckResult(name, "FAIL", f"{where}: {_obs_failure(answer, bucket, 'list')}")


async def _output_bucket(
    plan: CheckPlan, session: aiohttp.ClientSession, provider: CredentialProvider | None
) -> CheckResult:
    """HEAD of the output bucket."""
    bucket = plan.manifest.job.output_bucket
    name = f"output bucket {bucket}"
    keys = _keys(provider)
    if provider is None or isinstance(keys, str) or plan.obs_endpoint is None:
        why = keys if isinstance(keys, str) else "no OBS endpoint (service.obs_endpoint)"
        return CheckResult(name, "SKIP", why)
    client = ObsClient(session, plan.obs_endpoint, provider, timeout=plan.timeout)
    answer = await _obs_once(plan, client, client.head_bucket, bucket)
    if answer.kind is Kind.OK:
        return CheckResult(name, "PASS", "exists")
    return CheckResult(name, "FAIL", _obs_failure(answer, bucket, "reach"))


async def _obs_once(
    plan: CheckPlan, client: ObsClient, call: Callable[..., Awaitable[Answer]], *args: object
) -> Answer:
    """One OBS call through a gate like the run's listing has (its first-call and stop rules);
    no retries: a check reports what it got."""
    assert plan.obs_endpoint is not None
    pool = listing_pool(_ONCE, lambda _level, _message: None, plan.obs_endpoint, client.provider)
    try:
        with anyio.fail_after(plan.timeout + 2):
            return await pool.call(call, *args)
    except TimeoutError:
        return Answer(kind=Kind.UNAVAILABLE, error_msg=f"no answer within {plan.timeout:g} s")
    except Stopped:
        return client.last or Answer(kind=Kind.FAILED, error_msg="stopped")


def _obs_failure(answer: Answer, bucket: str, verb: str) -> str:
    if answer.status and not 200 <= answer.status < 300:
        return _obs_problem(answer.status, answer.error_code, bucket, verb)
    return _obs_problem(0, obs_problem(answer), bucket, verb)  # no answer, or not a listing


# -- OBS ----------------------------------------------------------------------------------------


def _keys(provider: CredentialProvider | None) -> Credentials | str:
    if provider is None:
        return "no credentials"
    secret = provider.fresh()
    if not isinstance(secret, Credentials):
        return (
            f"OBS needs access keys; {provider.source_name} gives an IAM token (use AK/SK, a "
            "profile file or ECS metadata, or a listing file)"
        )
    return secret


def _obs_problem(status: int, code: str, bucket: str, verb: str) -> str:
    if status == 0:
        return f"OBS: {code}: check service.obs_endpoint (or --obs-endpoint)"
    shown = f"HTTP {status} {code}".strip()
    if status == 404:
        return f"{shown}: no bucket {bucket!r} at this OBS endpoint (check the name and region)"
    if status in (401, 403):
        return (
            f"{shown}: these credentials may not {verb} bucket {bucket!r} (grant the user or "
            "agency OBS read access to it)"
        )
    return f"{shown}: OBS refused"


class _NoRows:
    """The check writes no results."""

    def write(self, outcome: object) -> None:
        return None

    def flush(self) -> None:
        return None


class _NoReports:
    def outcome(self, outcome: object) -> None:
        return None

    def log(self, level: str, message: str) -> None:
        return None
