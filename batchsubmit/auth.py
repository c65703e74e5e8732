"""AK/SK credentials and SDK-HMAC-SHA256 request signing, as Huawei's official signer does it.

Pure: no I/O, no clock of its own (the caller passes the time), so tests can pin the
official test vectors. Every attempt is signed afresh, because the gateway rejects old
``X-Sdk-Date`` values.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "Credentials",
    "RequestSigner",
    "Secret",
    "Token",
    "TokenHeaders",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "parse_authorization",
    "request_signer",
    "sdk_date",
    "secrets_of",
    "sign",
]

ALGORITHM = "SDK-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    """An access key pair, optionally temporary (with a security token). Never printed whole."""

    ak: str
    sk: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        temporary = ", temporary" if self.security_token else ""
        return f"Credentials(ak={self.ak!r}, sk=<hidden>{temporary})"


@dataclass(frozen=True)
class Token:
    """An IAM token, sent as ``X-Auth-Token`` instead of a signature. Never printed."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Token(<hidden>)"


Secret = Credentials | Token
"""What a credentials provider hands the client for one request."""


def secrets_of(secret: Secret) -> tuple[str, ...]:
    """The parts of a secret that must never be shown (to mask them in echoed messages)."""
    if isinstance(secret, Token):
        return (secret.value,)
    return tuple(x for x in (secret.security_token, secret.sk) if x)


def sdk_date(epoch: float | None = None) -> str:
    """The ``X-Sdk-Date`` value for a moment (now by default), e.g. ``20240101T000000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if epoch is None else epoch))


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """Each path segment percent-encoded, with the trailing ``/`` the signer always adds."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


Query = Mapping[str, str | int] | Sequence[tuple[str, str]]


def canonical_query(query: Query | None) -> str:
    """Sorted ``k=v`` pairs, both percent-encoded. A sequence of pairs may repeat a key (a
    server's view of ``?a=1&a=2``): every pair is signed, sorted by key, then value, as the
    SDK's signer sorts a list value."""
    if not query:
        return ""
    pairs = sorted(query.items()) if isinstance(query, Mapping) else sorted(query)
    return "&".join(f"{_encode(k)}={_encode(str(v))}" for k, v in pairs)


def canonical_request(
    method: str,
    path: str,
    query: Query | None,
    headers: Mapping[str, str],
    body: bytes,
) -> tuple[str, str]:
    """The canonical request and the ``SignedHeaders`` list; headers with ``_`` are not signed."""
    lowered = {k.lower(): v.strip() for k, v in headers.items() if "_" not in k}
    names = sorted(lowered)
    lines = "".join(f"{name}:{lowered[name]}\n" for name in names)
    signed = ";".join(names)
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    request = "\n".join(
        (method.upper(), canonical_uri(path), canonical_query(query), lines, signed, payload)
    )
    return request, signed


def sign(
    credentials: Credentials,
    method: str,
    path: str,
    query: Query | None,
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """The ``Authorization`` value for a request whose headers already hold Host and X-Sdk-Date.

    The caller adds ``X-Project-Id`` and, for temporary credentials, ``X-Security-Token``
    before calling, so that they are signed.
    """
    date = headers.get("X-Sdk-Date") or headers.get("x-sdk-date")
    if not date:
        raise ValueError("X-Sdk-Date must be set before signing")
    request, signed = canonical_request(method, path, query, headers, body)
    to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(request.encode()).hexdigest()}"
    signature = hmac.new(credentials.sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Access={credentials.ak}, SignedHeaders={signed}, Signature={signature}"


def parse_authorization(value: str) -> dict[str, str] | None:
    """Split an ``Authorization`` header into Access, SignedHeaders and Signature (for servers)."""
    prefix = ALGORITHM + " "
    if not value.startswith(prefix):
        return None
    parts: dict[str, str] = {}
    for item in value[len(prefix) :].split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        parts[key] = val
    if {"Access", "SignedHeaders", "Signature"} - parts.keys():
        return None
    return parts


class RequestSigner:
    """Signs every request of one client: the same headers each time, only the date, path,
    query and body vary. Does exactly what :func:`sign` does, with the fixed parts of the
    canonical request built once (signing is on the per-job hot path).
    """

    def __init__(
        self,
        credentials: Credentials,
        fixed: Mapping[str, str],
        unsigned: Mapping[str, str] | None = None,
    ) -> None:
        """``fixed`` headers are signed; ``unsigned`` ones (which a proxy may rewrite) are only
        sent."""
        self._credentials = credentials
        self._key = credentials.sk.encode()
        self._fixed = {**(unsigned or {}), **fixed}
        lowered = {k.lower(): v.strip() for k, v in fixed.items() if "_" not in k}
        if "x-sdk-date" in lowered:
            raise ValueError("X-Sdk-Date is added by the signer")
        names = sorted([*lowered, "x-sdk-date"])
        at = names.index("x-sdk-date")
        self._before = "".join(f"{n}:{lowered[n]}\n" for n in names[:at])
        self._after = "".join(f"{n}:{lowered[n]}\n" for n in names[at + 1 :])
        self._signed = ";".join(names)
        self._auth_prefix = (
            f"{ALGORITHM} Access={credentials.ak}, SignedHeaders={self._signed}, Signature="
        )
        self._uris: dict[str, str] = {}
        self._date_second = -1
        self._date = ""

    def headers(
        self, method: str, path: str, query: Mapping[str, str | int] | None, body: bytes
    ) -> dict[str, str]:
        """The request's headers: the fixed ones, X-Sdk-Date (now) and Authorization."""
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = sdk_date(second)
        date = self._date
        uri = self._uris.get(path)
        if uri is None:
            uri = self._uris[path] = canonical_uri(path)
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        request = (
            f"{method}\n{uri}\n{canonical_query(query)}\n{self._before}x-sdk-date:{date}\n"
            f"{self._after}\n{self._signed}\n{payload}"
        )
        to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers = dict(self._fixed)
        headers["X-Sdk-Date"] = date
        headers["Authorization"] = self._auth_prefix + signature
        return headers


class TokenHeaders:
    """The headers of every request of one client under an IAM token: nothing to sign."""

    def __init__(
        self, token: Token, fixed: Mapping[str, str], unsigned: Mapping[str, str] | None = None
    ) -> None:
        self._headers = {**(unsigned or {}), **fixed, "X-Auth-Token": token.value}

    def headers(
        self, method: str, path: str, query: Mapping[str, str | int] | None, body: bytes
    ) -> dict[str, str]:
        return dict(self._headers)


def request_signer(
    secret: Secret, fixed: Mapping[str, str], unsigned: Mapping[str, str] | None = None
) -> RequestSigner | TokenHeaders:
    """The per-request header maker for one secret: AK/SK signing (with ``X-Security-Token``
    signed in for temporary credentials) or an IAM token."""
    if isinstance(secret, Token):
        return TokenHeaders(secret, fixed, unsigned)
    if secret.security_token:
        fixed = {**fixed, "X-Security-Token": secret.security_token}
    return RequestSigner(secret, fixed, unsigned)
