"""Where credentials come from, and keeping them valid for a whole run.

Sources, first found wins, in the order of Huawei's own SDK (``huaweicloudsdkcore``):

1. the environment: ``HUAWEICLOUD_SDK_AK`` / ``_SK`` (/ ``_SECURITY_TOKEN``);
2. an IAM password: ``BATCHSUBMIT_IAM_USER`` / ``_DOMAIN`` / ``_PASSWORD``, exchanged for a
   project-scoped token (``X-Auth-Token``);
3. the SDK's profile file: ``HUAWEICLOUD_SDK_CREDENTIALS_FILE`` or ``~/.huaweicloud/credentials``,
   section ``[basic]``;
4. the ECS metadata service (an agency on the server): temporary AK/SK and a security token.

:func:`find_source` picks the source from a mapping of the environment (the CLI passes
``os.environ``; nothing here reads it) without any I/O beyond the profile file;
:func:`open_provider` fetches the first credentials and the project id. A
:class:`CredentialProvider` then hands the client a valid secret for every request: tokens and
temporary credentials are fetched again before ``min(40 min, lifetime / 10)`` remains, one
refresh at a time, every caller waiting for it, so nothing is ever sent with credentials that
have expired.

Refreshes use the run's HTTP session (so they follow the same proxy settings as VAS) and go
through the run's gate (:meth:`~batchsubmit.engine.gate.Gate.other`: its stop rule and rate
controller, counted, but no in-flight slot, since a refresh can be awaited by calls that hold
one). The metadata service is always reached directly, never through a proxy, on a session of
its own.

Secrets never appear in a message, a ``repr`` or an exception chain raised from here.
"""

from __future__ import annotations

import configparser
import errno
import hashlib
import io
import math
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import orjson
from yarl import URL

from .answers import MAX_HEADER_FIELD, exception_text, mask, retry_after_seconds, shorten
from .auth import Credentials, RequestSigner, Secret, Token, canonical_query, secrets_of
from .errors import CredentialError, CredentialsUnavailable
from .proxies import proxy_for
from .vas import hide_password

__all__ = [
    "DEFAULT_METADATA_URL",
    "MARGIN_CAP",
    "Choice",
    "CredentialProvider",
    "EnvKeys",
    "Found",
    "IamPassword",
    "Issued",
    "Metadata",
    "Profile",
    "Route",
    "find_source",
    "iam_endpoint_for",
    "open_provider",
    "parse_profile",
    "refresh_margin",
    "region_of",
    "static_provider",
    "valid_project_id",
]

DEFAULT_METADATA_URL = "http://169.254.169.254"
MARGIN_CAP = 2400.0  # seconds: the SDK refreshes when less than 40 minutes remain
# seconds: the longest life credentials may claim. IAM tokens live 24 h (VAS-API.md) and
# temporary keys no longer (STS's longest); an hour more for the clocks of this machine and
# the service. Longer is a broken answer or a clock years off: refused, never used past a
# real expiry that the answer does not tell.
MAX_LIFETIME = 25 * 3600.0
PASSWORD_ROUNDS = 100_000  # PBKDF2-SHA256 rounds of the password's hash in the cache key
IAM_TIMEOUT = 15.0  # seconds an IAM call may take in all
METADATA_CONNECT_TIMEOUT = 1.0  # a laptop has no metadata service: fail fast
METADATA_TIMEOUT = 5.0
METADATA_TTL = 21600  # seconds asked for the metadata session token (its maximum, 6 h)
RETRY_AFTER_FAILED_REFRESH = 30.0  # seconds, at most, before a failed refresh is tried again
_PROJECT_ID = re.compile(r"[0-9a-f]{32}")
_REGIONAL = re.compile(r"https?://[a-z0-9-]+\.([a-z]{2}-[a-z]+-\d+)\.myhuaweicloud\.com(?::\d+)?/?")
_JSON = "application/json"

Warn = Callable[[str], None]


# -- what a source gives ------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvKeys:
    """An access key pair from the environment."""

    credentials: Credentials
    name: str = "environment (HUAWEICLOUD_SDK_AK/SK)"


@dataclass(frozen=True)
class IamPassword:
    """An IAM user's password login, exchanged for tokens."""

    user: str
    domain: str
    password: str = field(repr=False)
    name: str = "IAM password (BATCHSUBMIT_IAM_USER)"
    cache: Path | None = None  # BATCHSUBMIT_IAM_TOKEN_CACHE: a 0600 file kept between runs

    def __repr__(self) -> str:
        return f"IamPassword(user={self.user!r}, domain={self.domain!r}, password=<hidden>)"


@dataclass(frozen=True)
class Profile:
    """The SDK's profile file, section ``[basic]``."""

    path: Path
    credentials: Credentials
    project_id: str | None = None
    iam_endpoint: str | None = None

    @property
    def name(self) -> str:
        return f"profile file {self.path}"


@dataclass(frozen=True)
class Metadata:
    """The ECS metadata service: temporary credentials of the server's agency."""

    url: str

    @property
    def name(self) -> str:
        return f"ECS metadata ({self.url})"


Found = EnvKeys | IamPassword | Profile | Metadata


@dataclass(frozen=True)
class Choice:
    """The source that will be used, what was looked at before it, and the settings found."""

    source: Found
    tried: tuple[str, ...]
    project_id: str | None
    project_id_from: str
    iam_endpoint: str | None


# -- pure helpers -------------------------------------------------------------------------------


def refresh_margin(lifetime: float) -> float:
    """How long before expiry to fetch anew: the SDK's 40 minutes, or a tenth of the lifetime
    when that is shorter (so short-lived credentials are not fetched for every call)."""
    return max(0.0, min(MARGIN_CAP, lifetime / 10.0))


def valid_project_id(value: str, where: str) -> str:
    """The project id, white space stripped, if it is 32 lowercase hex digits."""
    value = value.strip()
    if not _PROJECT_ID.fullmatch(value):
        shown = value if value.isascii() and value.isprintable() and len(value) <= 64 else "..."
        raise CredentialError(
            f"{where}: {shown!r} is not a project id (32 hex digits, as the console's "
            "'My Credentials' page shows for the region)"
        )
    return value


def region_of(endpoint: str | None) -> str | None:
    """The region of a Huawei Cloud regional endpoint (``https://iva.cn-north-4....``)."""
    if not endpoint:
        return None
    found = _REGIONAL.fullmatch(endpoint.lower())
    return found.group(1) if found else None


def iam_endpoint_for(region: str | None) -> str | None:
    return f"https://iam.{region}.myhuaweicloud.com" if region else None


def _stripped(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _access_key(ak: str, where: str) -> str:
    if not _header_safe(ak):
        raise CredentialError(f"{where} does not look like an access key (letters and digits)")
    return ak


def _security_token(token: str | None, where: str) -> str | None:
    """A security token as it can be sent (X-Security-Token): printable ASCII, no spaces.
    Checked when it is read, so a pasted control character is an error naming its source
    before any request, not a crash once a job is under way. The token itself is not shown."""
    if token and not _header_safe(token):
        raise CredentialError(
            f"{where} holds a character a header cannot carry (a control character, a space "
            "or non-ASCII): paste it again"
        )
    return token or None


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable() and not any(c.isspace() for c in value)


def parse_profile(text: str, path: Path) -> Profile | None:
    """The ``[basic]`` section of a profile file (CRLF and a BOM work); None if it has none."""
    parser = configparser.ConfigParser(interpolation=None)
    # The lines a file opened in text mode gives, as the SDK reads it: CR, LF and CRLF end
    # a line; U+2028, U+0085 and the like (which str.splitlines() also breaks at) do not.
    lines = list(io.StringIO(text.lstrip("\ufeff"), newline=None))
    try:
        parser.read_file(lines, source=str(path))
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        if line is None and isinstance(exc, configparser.ParsingError) and exc.errors:
            line = exc.errors[0][0]  # the line itself is not shown: it may hold the SK
        where = f"{path}:{line}" if line else str(path)
        raise CredentialError(f"{where}: not an INI file ({type(exc).__name__})") from None
    if not parser.has_section("basic"):
        return None
    basic = {k: v.strip() for k, v in parser.items("basic")}
    for key in ("ak", "sk", "security_token", "project_id"):
        value = basic.get(key, "")
        if "\n" in value or re.search(r"\s[;#]", value):
            # configparser reads an indented next line, or an inline comment, into the value
            # (the SDK does the same, and signs with it): refused, naming the line.
            why = (
                "the next line is indented, so it was read as part of the value"
                if "\n" in value
                else "an inline comment ('; ...' or '# ...') is part of the value in this "
                "file format (as the SDK reads it): put comments on lines of their own"
            )
            raise CredentialError(f"{path}:{_line_of(lines, key)}: [basic] {key}: {why}")
    ak, sk = basic.get("ak", ""), basic.get("sk", "")
    missing = [key for key, value in (("ak", ak), ("sk", sk)) if not value]
    if missing:
        raise CredentialError(
            f"{path}: [basic] has no {' and no '.join(missing)}: give both ak and sk "
            "(and security_token for temporary credentials)"
        )
    project = basic.get("project_id") or None
    if project is not None:
        project = valid_project_id(project, f"{path}: [basic] project_id")
    return Profile(
        path=path,
        credentials=Credentials(
            _access_key(ak, f"{path}: [basic] ak"),
            sk,
            _security_token(basic.get("security_token"), f"{path}: [basic] security_token"),
        ),
        project_id=project,
        iam_endpoint=_iam_endpoint(basic.get("iam_endpoint"), f"{path}: [basic] iam_endpoint"),
    )


def _line_of(lines: Sequence[str], key: str) -> int:
    """The number of the line setting ``key`` in section ``[basic]`` (0 if not found)."""
    section = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        elif section == "basic" and re.match(rf"{key}\s*[=:]", stripped, re.IGNORECASE):
            return number
    return 0


def _one_named_source(*, keys: bool, login: bool, named_file: bool) -> None:
    """Refuse two sources given by name at once: access keys in the environment, an IAM
    login (``BATCHSUBMIT_IAM_*``), a profile file named by ``HUAWEICLOUD_SDK_CREDENTIALS_FILE``.
    The SDK's order would pick one without a word, and which account or project the operator
    meant cannot be known (keys exported for another job, a login left in a crontab). The
    default profile file and the metadata service are where keys are looked for when none is
    named, so they never conflict."""
    given = (
        ("HUAWEICLOUD_SDK_AK/SK", keys),
        ("BATCHSUBMIT_IAM_USER/DOMAIN/PASSWORD", login),
        ("HUAWEICLOUD_SDK_CREDENTIALS_FILE", named_file),
    )
    named = [what for what, set_ in given if set_]
    if len(named) > 1:
        raise CredentialError(
            f"several credential sources are set ({' and '.join(named)}); which one is meant "
            "cannot be known: unset all but one"
        )


def _iam_endpoint(value: str | None, where: str) -> str | None:
    """An IAM endpoint as given (the environment's, a profile's): an http(s) URL without a
    path or a user part (the endpoint is named in every IAM error, a password with it; and
    aiohttp refuses a URL with credentials beside our own header, a traceback)."""
    endpoint = (value or "").strip().rstrip("/") or None
    if endpoint is not None and not (
        re.fullmatch(r"https?://[^/\s?#@]+", endpoint) and _parses(endpoint)
    ):
        raise CredentialError(
            f"{where} {hide_password(endpoint)!r}: give an http(s) URL (a host, a port up to "
            "65535) without a path or user name"
        )
    return endpoint


def _parses(url: str) -> bool:
    """Whether aiohttp can ask ``url``: a host, a port that is a number in range, IPv6
    brackets closed (else a ValueError traceback, or retries of a call never made)."""
    try:
        parts = urlsplit(url)
        _port = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        return False
    return bool(parts.hostname)


def find_source(
    env: Mapping[str, str],
    *,
    home: Path,
    warn: Warn,
    project_id: str | None = None,
    region: str | None = None,
) -> Choice:
    """The first credential source present, as the SDK orders them; a half-given one (an AK
    without SK, a user without password) is an error naming what is missing. No network.

    ``project_id`` is the manifest's (it wins over the environment and the profile);
    ``region`` is the endpoint's, for the IAM endpoint.
    """
    tried: list[str] = []
    project_from = "service.project_id" if project_id else ""
    if not project_id and _stripped(env, "HUAWEICLOUD_SDK_PROJECT_ID"):
        project_id = valid_project_id(
            env["HUAWEICLOUD_SDK_PROJECT_ID"], "HUAWEICLOUD_SDK_PROJECT_ID"
        )
        project_from = "HUAWEICLOUD_SDK_PROJECT_ID"
    iam_endpoint = _iam_endpoint(
        _stripped(env, "HUAWEICLOUD_SDK_IAM_ENDPOINT"), "HUAWEICLOUD_SDK_IAM_ENDPOINT"
    )

    def choice(source: Found, pid: str | None = None, endpoint: str | None = None) -> Choice:
        nonlocal project_id, project_from
        if not project_id and pid:
            project_id, project_from = pid, source.name
        return Choice(
            source=source,
            tried=tuple(tried),
            project_id=project_id,
            project_id_from=project_from,
            iam_endpoint=iam_endpoint or endpoint or iam_endpoint_for(region),
        )

    ak, sk = _stripped(env, "HUAWEICLOUD_SDK_AK"), _stripped(env, "HUAWEICLOUD_SDK_SK")
    token = _stripped(env, "HUAWEICLOUD_SDK_SECURITY_TOKEN")
    user = _stripped(env, "BATCHSUBMIT_IAM_USER")
    domain = _stripped(env, "BATCHSUBMIT_IAM_DOMAIN")
    password = env.get("BATCHSUBMIT_IAM_PASSWORD", "").strip("\r\n")
    named = _stripped(env, "HUAWEICLOUD_SDK_CREDENTIALS_FILE")
    for name, value in (
        ("HUAWEICLOUD_SDK_SK", sk),
        ("BATCHSUBMIT_IAM_USER", user),
        ("BATCHSUBMIT_IAM_DOMAIN", domain),
        ("BATCHSUBMIT_IAM_PASSWORD", password),
    ):
        _utf8(value, name)
    _one_named_source(
        keys=bool(ak or sk or token),
        login=bool(user or domain or password),
        named_file=bool(named),
    )
    if ak or sk or token:
        _require(
            (("HUAWEICLOUD_SDK_AK", ak), ("HUAWEICLOUD_SDK_SK", sk)),
            "an access key pair (add HUAWEICLOUD_SDK_SECURITY_TOKEN for temporary credentials)",
        )
        keys = Credentials(
            _access_key(ak, "HUAWEICLOUD_SDK_AK"),
            sk,
            _security_token(token, "HUAWEICLOUD_SDK_SECURITY_TOKEN"),
        )
        return choice(EnvKeys(keys))
    tried.append("environment: HUAWEICLOUD_SDK_AK/SK not set")

    if user or domain or password:
        _require(
            (
                ("BATCHSUBMIT_IAM_USER", user),
                ("BATCHSUBMIT_IAM_DOMAIN", domain),
                ("BATCHSUBMIT_IAM_PASSWORD", password),
            ),
            "an IAM user name, its account (domain) name and its password",
        )
        cache = _stripped(env, "BATCHSUBMIT_IAM_TOKEN_CACHE")
        return choice(
            IamPassword(
                user,
                domain,
                password,
                cache=_user_path(cache, "BATCHSUBMIT_IAM_TOKEN_CACHE", home) if cache else None,
            )
        )
    tried.append("IAM password: BATCHSUBMIT_IAM_USER not set")

    path = (
        _user_path(named, "HUAWEICLOUD_SDK_CREDENTIALS_FILE", home)
        if named
        else home / ".huaweicloud" / "credentials"
    )
    profile = _read_profile(path, explicit=bool(named), warn=warn, tried=tried)
    if profile is not None:
        if (
            profile.project_id
            and project_from == "HUAWEICLOUD_SDK_PROJECT_ID"
            and project_id != profile.project_id
        ):
            # The SDK pairs the profile's keys with the profile's project; which one is meant
            # cannot be known, and the wrong one signs jobs into another project.
            raise CredentialError(
                f"HUAWEICLOUD_SDK_PROJECT_ID ({project_id}) and {path}: [basic] project_id "
                f"({profile.project_id}) differ: remove one, or set service.project_id"
            )
        return choice(profile, profile.project_id, profile.iam_endpoint)

    url = _stripped(env, "BATCHSUBMIT_METADATA_URL").rstrip("/") or DEFAULT_METADATA_URL
    if not (re.fullmatch(r"http://[^/\s?#@]+", url) and _parses(url)):
        raise CredentialError(
            f"BATCHSUBMIT_METADATA_URL {hide_password(url)!r}: give an http URL (a host, a port "
            f"up to 65535) without a path or user name, e.g. {DEFAULT_METADATA_URL}"
        )
    return choice(Metadata(url))


def _utf8(value: str, name: str) -> None:
    """Bytes that are not UTF-8 in the environment reach Python as lone surrogates, which
    cannot be signed with or sent (a traceback quoting a character of the SK): an error
    naming the variable, nothing of the value shown."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CredentialError(
            f"{name} is not UTF-8 (typed or saved in another encoding?): set it again"
        ) from None


def _user_path(value: str, name: str, home: Path) -> Path:
    """A path from the environment, ``~`` and ``~/...`` under ``home`` (the one find_source is
    given: Path.expanduser would read $HOME, and only the CLI reads the environment).
    ``~user/...`` is still that account's home from the system's user database (not the
    environment), as a shell expands it; a ``~user`` with no home is an error naming the
    variable (Path.expanduser raises RuntimeError: a traceback)."""
    if value == "~" or value.startswith("~/"):
        return home / value[1:].lstrip("/")  # "~//x" is under home too, not /x
    try:
        return Path(value).expanduser()
    except RuntimeError:
        shown = value if value.isprintable() and len(value) <= 200 else "..."
        raise CredentialError(
            f"{name} {shown!r}: no such user's home directory (~user): give the path in full"
        ) from None


def _require(values: tuple[tuple[str, str], ...], what: str) -> None:
    missing = [name for name, value in values if not value]
    if missing:
        given = [name for name, value in values if value]
        raise CredentialError(
            f"{', '.join(given)} set but {' and '.join(missing)} missing: give {what}"
        )


def _read_profile(path: Path, *, explicit: bool, warn: Warn, tried: list[str]) -> Profile | None:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        if explicit:
            raise CredentialError(
                f"HUAWEICLOUD_SDK_CREDENTIALS_FILE: {path}: no such file"
            ) from None
        tried.append(f"profile file {path}: not found")
        return None
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read the profile file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"{path}: not UTF-8 text") from None
    profile = parse_profile(text, path)
    if profile is None:
        if explicit:
            raise CredentialError(f"{path}: no [basic] section with ak and sk")
        tried.append(f"profile file {path}: no [basic] section")
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} can be read by other users: run chmod 600 {path}")
    return profile


# -- keeping credentials valid ------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A secret and when it expires on this machine's clock (None: it does not)."""

    secret: Secret
    expires_at: float | None = None
    issued_at: float = 0.0

    @property
    def refresh_at(self) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - refresh_margin(self.expires_at - self.issued_at)


Fetch = Callable[[aiohttp.ClientSession | None], Awaitable[Issued]]
# How a call to IAM or the metadata service is made: ``route(call)`` -> its result (a gate's
# :meth:`~batchsubmit.engine.gate.Gate.other`: stop rule, rate, retries).
Route = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def _direct(call: Callable[[], Awaitable[Any]]) -> Any:
    return await call()


class CredentialProvider:
    """Hands out a valid secret for every request (httpx's Auth, split in two: the client asks
    for the current secret, then signs with it, purely).

    ``source_name`` says where the credentials came from (never a secret): the summary shows it.
    """

    def __init__(
        self,
        source_name: str,
        issued: Issued,
        fetch: Fetch | None = None,
        *,
        project_id: str = "",
        warn: Warn | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source_name = source_name
        self.project_id = project_id
        self._issued = issued
        self._fetch = fetch
        self._warn = warn
        self._clock = clock
        self._due = issued.refresh_at if fetch is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._route: Route | None = None
        self._lock: anyio.Lock | None = None
        self._seen: list[str] = list(secrets_of(issued.secret))
        self.refreshes = 0
        self.opening_calls = 0  # the calls that fetched the first credentials (IAM, metadata)
        self._attempts = 0  # refreshes tried, failed ones included
        self._failure: str | None = None  # why the last one failed, if it did

    def __repr__(self) -> str:
        return f"CredentialProvider(source={self.source_name!r})"

    @property
    def refreshable(self) -> bool:
        return self._fetch is not None

    @property
    def expires_at(self) -> float | None:
        return self._issued.expires_at

    def bind(self, session: aiohttp.ClientSession | None) -> None:
        """Refresh through ``session`` (the run's) from now on, in its event loop."""
        self._session = session
        self._lock = None

    def route(self, route: Route | None) -> None:
        """Send refreshes through ``route`` (the run's gate: its stop rule and rate controller,
        counted; see :meth:`~batchsubmit.engine.gate.Gate.other`) from now on; None: directly."""
        self._route = route

    async def ensure(self) -> None:
        """Refresh now if due, before a call takes its in-flight slot (the gate asks), so calls
        do not hold slots while they wait for it. Raises CredentialError like :meth:`current`
        (the pool stops the run there, rather than let the call try a round of its own)."""
        if self._fetch is None or self.fresh() is not None:
            return
        await self.current()

    def secrets(self) -> tuple[str, ...]:
        """Every secret handed out so far, to mask in echoed messages."""
        return tuple(self._seen)

    def fresh(self) -> Secret | None:
        """The current secret if it is not due for a refresh (cheap, synchronous), else None."""
        due = self._due
        if due is None or self._clock() < due:
            return self._issued.secret
        return None

    async def current(self) -> Secret:
        """A secret valid for a while yet; refreshes first if it is due (one refresh at a time,
        every caller waiting for it, and sharing its outcome). Raises CredentialError if none
        can be had."""
        secret = self.fresh()
        if secret is not None:
            return secret
        attempts = self._attempts
        async with self._guard():
            secret = self.fresh()
            if secret is not None:
                return secret
            self._raise_if_failed_since(attempts)
            await self._renew(forced=False)
            return self._issued.secret

    def _raise_if_failed_since(self, attempts: int) -> None:
        """A caller that waited while a refresh failed gets that failure, rather than a refresh
        of its own: with every retry of the gate in each, 64 calls queued behind an IAM outage
        would otherwise each wait out a whole round before the run could stop."""
        if self._attempts != attempts and self._failure is not None:
            raise CredentialError(self._failure)

    async def rejected(self, secret: Secret) -> Secret | None:
        """The service refused ``secret`` (401): a new one if the source can give one (or
        another call has already fetched one), else None."""
        if self._fetch is None:
            return None
        if secret != self._issued.secret:
            return await self.current()
        due, self._due = self._due, -float("inf")  # nobody signs with it while we fetch
        attempts = self._attempts
        try:
            async with self._guard():
                if secret != self._issued.secret:
                    return self._issued.secret
                self._raise_if_failed_since(attempts)
                await self._renew(forced=True)
                return self._issued.secret
        finally:
            if self._due == -float("inf"):
                self._due = due

    def _guard(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    async def _renew(self, *, forced: bool) -> None:
        fetch = self._fetch
        assert fetch is not None
        old = self._issued
        session = self._session
        self._attempts += 1
        try:
            if self._route is None:
                issued = await fetch(session)
            else:
                issued = await self._route(lambda: fetch(session))
        except CredentialError as exc:
            now = self._clock()
            # A failed refresh with time left on the old credentials: keep them a while.
            if not forced and old.expires_at is not None and old.refresh_at is not None:
                margin = old.expires_at - old.refresh_at
                if now < old.expires_at - margin / 2:
                    self._due = now + min(RETRY_AFTER_FAILED_REFRESH, margin / 4)
                    if self._warn is not None:
                        self._warn(f"refreshing credentials failed, retrying soon: {exc}")
                    return
            self._failure = (
                f"credentials from {self.source_name} expired and could not be refreshed: {exc}"
            )
            raise CredentialError(self._failure) from None
        self._failure = None
        self._issued = issued
        self._due = issued.refresh_at
        now = self._clock()
        if self._due is not None and self._due <= now:
            # Due as soon as issued (this machine's clock is off?): ask again at most once a
            # second rather than before every call.
            self._due = now + min(1.0, max(0.0, (issued.expires_at or now) - now))
            if self._warn is not None:
                self._warn(
                    f"credentials from {self.source_name} were due for a refresh as soon as "
                    "they were issued: check this machine's clock (NTP)"
                )
        self._seen.extend(s for s in secrets_of(issued.secret) if s not in self._seen)
        self.refreshes += 1


def static_provider(credentials: Credentials, source_name: str = "given") -> CredentialProvider:
    """Long-term (or externally managed temporary) credentials: nothing to refresh."""
    return CredentialProvider(source_name, Issued(credentials))


# -- opening a source (I/O) ---------------------------------------------------------------------


async def open_provider(
    choice: Choice,
    session: aiohttp.ClientSession,
    *,
    region: str | None,
    warn: Warn,
    timeout: float = IAM_TIMEOUT,
    metadata_connect_timeout: float = METADATA_CONNECT_TIMEOUT,
    clock: Callable[[], float] = time.time,
    route: Route = _direct,
) -> CredentialProvider:
    """Fetch the first credentials of ``choice`` and the project id (discovered from the
    region through IAM when neither the manifest nor the source gives it; "" when there is
    no region either). Each call to IAM or the metadata service goes through ``route`` (the
    CLI's: a gate with the run's rate and retry policy).

    Raises CredentialError (exit 2) naming what failed, CredentialsUnavailable (exit 3) when
    the service did not answer usefully after the retries; a failed metadata source lists
    every source tried before it.
    """
    source = choice.source
    project_id = choice.project_id
    iam = choice.iam_endpoint
    fetch: Fetch | None = None
    if isinstance(source, EnvKeys | Profile):
        issued = Issued(source.credentials)
    elif isinstance(source, IamPassword):
        iam = _need_iam(iam, "an IAM password login")
        _no_password_in_clear(iam)
        if project_id is None and region is None:
            raise CredentialError(
                "an IAM token is scoped to a project: set service.project_id or "
                "HUAWEICLOUD_SDK_PROJECT_ID (no region to look it up by)"
            )
        login = _IamLogin(source, iam, region, timeout, clock, warn)
        issued, found = await login.token(session, project_id, route=route)
        project_id = project_id or found
        login.project_id = project_id
        fetch = login.refresh
    else:
        meta = _MetadataFetch(source.url, metadata_connect_timeout, clock)
        try:
            issued = await route(lambda: meta(None))
        except CredentialsUnavailable as exc:
            raise CredentialsUnavailable(f"{source.name} did not answer: {exc}") from None
        except CredentialError as exc:
            tried = "; ".join((*choice.tried, f"{source.name}: {exc}"))
            raise CredentialError(f"no credentials found. Tried: {tried}") from None
        fetch = meta
    if project_id is None and region is not None:
        iam = _need_iam(iam, "finding the project id")
        secret = issued.secret
        project_id = await route(lambda: _discover_project(session, iam, region, secret, timeout))
    # Without a region to look it up by, the project id stays unknown (""): callers that
    # know it from elsewhere (a results file's service URL) pass it in; others refuse.
    return CredentialProvider(
        source.name, issued, fetch, project_id=project_id or "", warn=warn, clock=clock
    )


_LOOPBACK = re.compile(r"(localhost|127(\.\d{1,3}){3}|::1)", re.IGNORECASE)


def _no_password_in_clear(iam: str) -> None:
    """A password login sends the password in the request body: over plain http only to
    this machine (the emulator, a local tunnel), never across a network."""
    parts = urlsplit(iam)
    if parts.scheme == "http" and not _LOOPBACK.fullmatch(parts.hostname or ""):
        raise CredentialError(
            f"the IAM endpoint {iam!r} is plain http: an IAM password login would send the "
            "password unencrypted; give an https:// IAM endpoint (http is taken only for "
            "this machine: 127.0.0.1, ::1, localhost)"
        )


def _need_iam(iam: str | None, why: str) -> str:
    if iam is None:
        raise CredentialError(
            f"{why} needs IAM: set HUAWEICLOUD_SDK_IAM_ENDPOINT (the endpoint has no region)"
        )
    return iam


def _expiry(doc: Any, key: str, where: str) -> float:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, str):
        raise CredentialError(f"{where}: the answer has no {key}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CredentialError(f"{where}: {key} {value[:40]!r} is not a time") from None
    if moment.tzinfo is None:  # local time? UTC? a guess either way (the SDK wants ...Z)
        raise CredentialError(f"{where}: {key} {value[:40]!r} has no time zone (...Z)")
    return moment.timestamp()


def _local_expiry(doc: Any, started: float, where: str) -> float:
    """``expires_at`` on this machine's clock: from the answer's own ``issued_at`` when it has
    one (so a skewed clock does not shorten or stretch the lifetime), else as given."""
    expires = _expiry(doc, "expires_at", where)
    if isinstance(doc, dict) and isinstance(doc.get("issued_at"), str):
        expires = started + expires - _expiry(doc, "issued_at", where)
    if expires <= started:
        # Signing with them would be refused; asking again would get the same, before every
        # call (41 fetches for 20 creates). Stop and say which clock to look at.
        raise CredentialError(
            f"{where}: the credentials it gave had expired before they arrived (expires_at "
            f"{str(doc.get('expires_at'))[:40]}): this machine's clock or the service's is "
            "wrong (NTP?); nothing was sent with them"
        )
    if expires - started > MAX_LIFETIME:
        # Believed, they would be used until refused (the real expiry is not in the answer);
        # shortened, every refresh would get the same answer. Stop and say so.
        raise CredentialError(
            f"{where}: the credentials it gave expire {_lifetime(expires - started)} after "
            f"they arrived (expires_at {str(doc.get('expires_at'))[:40]}), longer than the "
            f"{MAX_LIFETIME / 3600:.0f} h any token or temporary key lives: this machine's "
            "clock or the service's is wrong (NTP?); nothing was sent with them"
        )
    return expires


def _lifetime(seconds: float) -> str:
    days = seconds / 86400
    return f"{days / 365.25:.0f} years" if days >= 730 else f"{days:.1f} days"


def _message(body: bytes, secrets: Sequence[str] = ()) -> str:
    """A short error text from an IAM/metadata answer, with any secret masked first: the
    whole text (at most the 1 MiB read), as a cut before masking leaves a secret's start."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    text = ""
    if isinstance(doc, dict):
        inner = doc.get("error")
        inner = inner if isinstance(inner, dict) else {}
        text = str(doc.get("error_msg") or inner.get("message") or doc.get("message") or "")
    if not text:
        text = body.decode("utf-8", "replace")
    return shorten(" ".join(mask(text, secrets).split()), 200)


def _failure(exc: BaseException, secrets: Sequence[str]) -> str:
    """What went wrong, ``secrets`` masked first: aiohttp's texts quote the answer (a header
    line it cannot parse, echoing the password it was sent)."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return shorten(mask(f"{type(exc).__name__}: {exception_text(exc)}", secrets), 200)


def _lost(where: str, exc: BaseException, secrets: Sequence[str] = ()) -> CredentialError:
    """A call to IAM or the metadata service that raised. One that never connected is not
    retried (like a run's first VAS call: the others would not connect either, and a machine
    off ECS learns at once that no source is left); one that connected and then timed out or
    broke is worth another try."""
    failure = _failure(exc, secrets)
    message = f"{where}: {failure}" if where else failure
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return CredentialError(message)
    return CredentialsUnavailable(message)


def _refused(message: str, status: int, headers: Mapping[str, str]) -> CredentialError:
    """A non-success answer from IAM or the metadata service: 429 and 5xx are worth another
    try (honouring Retry-After), anything else is final."""
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        return CredentialsUnavailable(message, throttled=status == 429, retry_after=retry_after)
    return CredentialError(message)


class _IamLogin:
    """Password login to IAM: a token scoped to the project, fetched again when due."""

    def __init__(
        self,
        source: IamPassword,
        iam: str,
        region: str | None,
        timeout: float,
        clock: Callable[[], float],
        warn: Warn,
    ) -> None:
        self._source = source
        self._iam = iam
        self._region = region
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout))
        self._clock = clock
        self._warn = warn
        self.project_id: str | None = None
        self._password_hash = ""  # made once, when a token cache is first used

    def _cache_key(self, project_id: str | None) -> str:
        """This login's key in the token cache. The password's own hash is in it, salted with
        the login's name and slow: another password never reuses a token, and the file holds
        nothing the password can be read back from. Made once (50 ms of CPU, on the event
        loop), not at every renewal."""
        source = self._source
        who = "\0".join((self._iam, source.domain, source.user))
        if not self._password_hash:
            self._password_hash = hashlib.pbkdf2_hmac(
                "sha256", source.password.encode(), who.encode(), PASSWORD_ROUNDS
            ).hex()
        scope = project_id or f"name={self._region}"
        return hashlib.sha256("\0".join((who, scope, self._password_hash)).encode()).hexdigest()

    async def refresh(self, session: aiohttp.ClientSession | None) -> Issued:
        """A new token (never the cached one: it is due, or it was just refused)."""
        if session is None:
            async with aiohttp.ClientSession(max_field_size=MAX_HEADER_FIELD) as own:
                issued, _ = await self.token(own, self.project_id, cached=False)
                return issued
        issued, _ = await self.token(session, self.project_id, cached=False)
        return issued

    async def token(
        self,
        session: aiohttp.ClientSession,
        project_id: str | None,
        *,
        cached: bool = True,
        route: Route = _direct,
    ) -> tuple[Issued, str]:
        """A token for the project (from the cache file when one is there and not due), the
        login itself through ``route``."""
        path = self._source.cache
        # Read once: for the lookup and, after the login, whether the file may be replaced.
        cache = None if path is None else _read_cache_file(path)
        key = "" if cache is None else self._cache_key(project_id)
        if cached and cache is not None:
            found = _cached_token(cache, key, self._clock(), self._warn)
            if found is not None:
                return found
        issued, pid = await route(lambda: self._login(session, project_id))
        if cache is not None:
            _write_token_cache(cache, key, issued, pid, self._warn)
        return issued, pid

    async def _login(
        self, session: aiohttp.ClientSession, project_id: str | None
    ) -> tuple[Issued, str]:
        source = self._source
        scope = {"id": project_id} if project_id else {"name": self._region}
        body = orjson.dumps(
            {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": source.user,
                                "password": source.password,
                                "domain": {"name": source.domain},
                            }
                        },
                    },
                    "scope": {"project": scope},
                }
            }
        )
        where = f"IAM login of {source.user!r} at {self._iam}"
        started = self._clock()
        proxy = proxy_for(self._iam)
        secrets = (source.password, *proxy.secrets())
        try:
            async with session.post(
                f"{self._iam}/v3/auth/tokens",
                data=body,
                headers={"Content-Type": _JSON, "Accept": _JSON},
                timeout=self._timeout,
                allow_redirects=False,
                proxy=proxy.url,
                proxy_auth=proxy.auth,
            ) as response:
                payload = await response.content.read(1 << 20)
                value = response.headers.get("X-Subject-Token", "").strip()
                status = response.status
                headers = response.headers
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _lost(where, exc, secrets) from None
        if status not in (200, 201):
            hint = ""
            if status == 401:
                hint = (
                    " (check BATCHSUBMIT_IAM_USER, BATCHSUBMIT_IAM_DOMAIN and "
                    "BATCHSUBMIT_IAM_PASSWORD)"
                )
            text = _message(payload, secrets)
            raise _refused(f"{where}: HTTP {status}: {text}{hint}", status, headers)
        if not value:
            raise CredentialError(f"{where}: the answer has no X-Subject-Token")
        if not _header_safe(value):  # as a cached one: sent as is, it was echoed unmasked
            raise CredentialError(
                f"{where}: the answer's X-Subject-Token is not one IAM issues (a control "
                "character, a space or non-ASCII)"
            )
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            doc = None
        token = doc.get("token") if isinstance(doc, dict) else None
        expires = _local_expiry(token, started, where)
        project = token.get("project") if isinstance(token, dict) else None
        found = project.get("id") if isinstance(project, dict) else None
        pid = project_id or (found if isinstance(found, str) else "")
        if not pid:
            raise CredentialError(f"{where}: the token names no project")
        pid = valid_project_id(pid, f"{where}: project id")
        return Issued(Token(value), expires, started), pid


@dataclass(frozen=True)
class _CacheFile:
    """The token cache file as one login read it: its lookup and its write (which replaces
    only a cache) decide from the same read, not one each."""

    path: Path
    error: OSError | None = None  # opening or examining it failed: no ``info``
    info: os.stat_result | None = None
    read_error: OSError | None = None  # a regular file that could not be read
    data: bytes = b""  # read only from a regular file


def _read_cache_file(path: Path) -> _CacheFile:
    try:
        # O_NONBLOCK: a named pipe at the path opens at once (and is then refused as not a
        # regular file) rather than wait for a writer for ever; a regular file ignores it.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return _CacheFile(path, error=exc)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return _CacheFile(path, info=info)
        try:
            return _CacheFile(path, info=info, data=os.read(fd, 1 << 16))
        except OSError as exc:
            return _CacheFile(path, info=info, read_error=exc)
    except OSError as exc:
        return _CacheFile(path, error=exc)
    finally:
        os.close(fd)


def _cached_token(cache: _CacheFile, key: str, now: float, warn: Warn) -> tuple[Issued, str] | None:
    """A cached token for ``key`` not yet due for a refresh; None otherwise. A file that other
    users could read is not trusted (and is replaced by the next login)."""
    path, error, info = cache.path, cache.error, cache.info
    if error is not None or info is None:  # no info only with an error
        if error is not None and not isinstance(error, FileNotFoundError):
            warn(f"{path}: token cache not used: {error.strerror}")
        return None
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_uid != os.getuid():
        problem = "another user owns it"
    elif info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problem = "other users can read it (it must be 0600)"
    if problem is not None:
        warn(f"{path}: token cache not used: {problem}")
        return None
    if cache.read_error is not None:
        warn(f"{path}: token cache not used: {cache.read_error.strerror}")
        return None
    data = cache.data
    if not data.strip():  # touched (and chmod 600) beforehand: nothing cached yet
        return None
    try:
        doc = orjson.loads(data)
        if doc.get("key") != key:
            return None
        token = str(doc["token"])
        if not _header_safe(token):  # a damaged or planted cache: a header it cannot carry
            warn(f"{path}: token cache not used: its token is not one IAM issues")
            return None
        expires_at, issued_at = float(doc["expires_at"]), float(doc["issued_at"])
        if not (math.isfinite(expires_at) and math.isfinite(issued_at)):
            raise ValueError("nan")  # "nan" never fell due: a token kept past its expiry
        lifetime = expires_at - issued_at
        if not 0 < lifetime <= MAX_LIFETIME:
            warn(
                f"{path}: token cache not used: its token would live "
                f"{lifetime / 3600:.0f} h, which no IAM token does"
            )
            return None
        # The writer's clock (another machine's, or this one before a step): a token has no
        # more life left than its whole lifetime from now, whatever that clock said.
        expires_at = min(expires_at, now + lifetime)
        issued = Issued(Token(token), expires_at, expires_at - lifetime)
        project_id = valid_project_id(str(doc["project_id"]), f"{path}: project_id")
    except (
        orjson.JSONDecodeError,
        AttributeError,
        KeyError,
        TypeError,
        ValueError,
        CredentialError,
    ):
        # named, its content not shown (it may hold a token): the login goes on and the
        # next token replaces it
        warn(f"{path}: token cache not used: it is damaged (not the JSON batchsubmit writes)")
        return None
    refresh_at = issued.refresh_at
    if refresh_at is None or now >= refresh_at:
        return None
    return issued, project_id


def _write_token_cache(
    cache: _CacheFile, key: str, issued: Issued, project_id: str, warn: Warn
) -> None:
    """Keep the token for the next run in a file only this user can read (0600, written
    whole and renamed, so a reader never sees half of it)."""
    path = cache.path
    assert isinstance(issued.secret, Token)
    doc = {
        "key": key,
        "token": issued.secret.value,
        "expires_at": issued.expires_at,
        "issued_at": issued.issued_at,
        "project_id": project_id,
    }
    problem = _not_a_cache(cache)
    if problem is not None:
        warn(f"{path}: token cache not written: {problem}")
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(doc))
        os.replace(temporary, path)
    except OSError as exc:
        with suppress(OSError):  # not there, or its folder is not one (a file at the parent)
            temporary.unlink(missing_ok=True)
        warn(f"{path}: cannot write the token cache: {exc.strerror}")


def _not_a_cache(cache: _CacheFile) -> str | None:
    """Why the file read as ``cache`` must not be replaced by the token cache, if it must not:
    only nothing, an empty file, an earlier cache or a symbolic link (the link, not its
    target) is replaced. A path naming another file by mistake (the manifest, a results
    file, a profile) lost that file, a token left in its place."""
    error = cache.error
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        return None  # nothing there (the write says why)
    if error is not None:
        if error.errno == errno.ELOOP:  # a symbolic link: os.replace replaces the link itself
            return None
        return error.strerror or "it cannot be read"
    if cache.info is None or not stat.S_ISREG(cache.info.st_mode):
        return "not a regular file"
    if cache.read_error is not None:
        return cache.read_error.strerror or "it cannot be read"
    data = cache.data
    if not data.strip():
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "key" in doc and "token" in doc:
        return None
    return "it is not a token cache (name another file, or remove this one)"


class _MetadataFetch:
    """Temporary credentials from the ECS metadata service, never through a proxy."""

    def __init__(self, url: str, connect_timeout: float, clock: Callable[[], float]) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=METADATA_TIMEOUT, sock_connect=connect_timeout)
        self._clock = clock

    async def __call__(self, _session: aiohttp.ClientSession | None) -> Issued:
        started = self._clock()
        session_token = ""
        try:
            async with aiohttp.ClientSession(trust_env=False, timeout=self._timeout) as session:
                async with session.put(
                    f"{self._url}/meta-data/latest/api/token",
                    headers={"X-Metadata-Token-Ttl-Seconds": str(METADATA_TTL)},
                    allow_redirects=False,
                ) as response:
                    payload = await response.content.read(1 << 16)
                    # 404/405: no token API here (it is optional); the official SDK then
                    # asks for securitykey without one, and so do we.
                    if response.status not in (200, 404, 405):
                        raise _refused(
                            f"session token: HTTP {response.status}: {_message(payload)}",
                            response.status,
                            response.headers,
                        )
                    if response.status == 200:
                        session_token = payload.decode("utf-8", "replace").strip()
                if session_token and not _header_safe(session_token):
                    # sent as is, aiohttp refused it as a header injection: a traceback
                    raise CredentialError(
                        "session token: the answer to PUT /meta-data/latest/api/token is not "
                        "a token (a control character, a space or non-ASCII)"
                    )
                async with session.get(
                    f"{self._url}/openstack/latest/securitykey",
                    headers={"X-Metadata-Token": session_token} if session_token else {},
                    allow_redirects=False,
                ) as response:
                    payload = await response.content.read(1 << 20)
                    status = response.status
                    headers = response.headers
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # aiohttp's text may quote the securitykey answer, and it may echo the token
            raise _lost("", exc, (session_token,)) from None
        if status != 200:
            # an error status with a credential in the body (broken or hostile): not echoed
            text = _message(payload, (session_token, *_credential_secrets(payload)))
            if status == 401 and "agency" in text.lower():
                text += " (this server has no agency: attach one in the ECS console)"
            raise _refused(f"securitykey: HTTP {status}: {text}", status, headers)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            doc = None
        credential = doc.get("credential") if isinstance(doc, dict) else None
        if not isinstance(credential, dict):
            raise CredentialError("securitykey: the answer has no credential")
        parts = [credential.get(k) for k in ("access", "secret", "securitytoken")]
        if not all(isinstance(p, str) and p.strip() for p in parts):
            raise CredentialError("securitykey: access, secret or securitytoken is missing")
        ak, sk, token = (str(p).strip() for p in parts)
        expires = _local_expiry(credential, started, "securitykey")
        keys = Credentials(
            _access_key(ak, "securitykey access"), sk, _security_token(token, "securitykey")
        )
        return Issued(keys, expires, started)


def _credential_secrets(payload: bytes) -> tuple[str, ...]:
    """The secret and security token of a securitykey answer, if it holds any."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ()
    credential = doc.get("credential") if isinstance(doc, dict) else None
    if not isinstance(credential, dict):
        return ()
    found = (credential.get("secret"), credential.get("securitytoken"))
    return tuple(v for v in found if isinstance(v, str) and v.strip())


async def _discover_project(
    session: aiohttp.ClientSession,
    iam: str,
    region: str | None,
    secret: Secret,
    timeout: float,
) -> str:
    """The project id of the region, from IAM (``GET /v3/projects?name=``), as the SDK does."""
    if region is None:
        raise CredentialError(
            "no project id: set service.project_id or HUAWEICLOUD_SDK_PROJECT_ID (the endpoint "
            "has no region to look it up by)"
        )
    path = "/v3/projects"
    query = {"name": region}
    fixed = {"Content-Type": _JSON, "Host": urlsplit(iam).netloc}
    if isinstance(secret, Token):
        headers = {**fixed, "X-Auth-Token": secret.value}
    else:
        if secret.security_token:
            fixed["X-Security-Token"] = secret.security_token
        headers = RequestSigner(secret, fixed).headers("GET", path, query, b"")
    where = f"looking up the project id of {region} at {iam}"
    proxy = proxy_for(iam)
    secrets = (*secrets_of(secret), *proxy.secrets())
    try:
        async with session.get(
            URL(f"{iam}{path}?{canonical_query(query)}", encoded=True),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout)),
            allow_redirects=False,
            proxy=proxy.url,
            proxy_auth=proxy.auth,
        ) as response:
            payload = await response.content.read(1 << 20)
            status = response.status
            answered = response.headers
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise _lost(where, exc, secrets) from None
    if status != 200:
        text = _message(payload, secrets)
        raise _refused(
            f"{where}: HTTP {status}: {text}; or set service.project_id", status, answered
        )
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = None
    projects = doc.get("projects") if isinstance(doc, dict) else None
    if not isinstance(projects, list):  # a hostile or broken answer: never a traceback
        projects = []
    ids = [
        p["id"]
        for p in projects
        if isinstance(p, dict) and p.get("name") == region and isinstance(p.get("id"), str)
    ]
    if not ids:
        raise CredentialError(f"{where}: IAM lists no project named {region}")
    return valid_project_id(ids[0], where)
