"""Which proxy a call to a URL goes through: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``,
read as curl, requests and Huawei's SDK read them (aiohttp's own rules).

The sessions do not use aiohttp's ``trust_env``: it looks the proxy up in a thread for every
request (and ``~/.netrc`` in another), two thread hand-offs a call that doubled a create's
CPU, and a ``~/.netrc`` entry for the endpoint would clash with our signed Authorization
header. Each client asks once per URL instead and passes the answer with every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from .errors import UsageError
from .vas import hide_password

__all__ = ["Proxy", "check_proxy_environment", "proxy_for"]

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@dataclass(frozen=True, slots=True)
class Proxy:
    """The ``proxy`` and ``proxy_auth`` arguments of one aiohttp request (None: direct)."""

    url: str | None = None
    auth: aiohttp.BasicAuth | None = None

    def secrets(self) -> tuple[str, ...]:
        """The proxy's password and its Basic credentials (base64 of ``user:password``), to
        mask wherever a call's secrets are: a proxy's 407 reason phrase or error page (Squid's
        ``%R``) may echo the Proxy-Authorization it was sent."""
        if self.auth is None or not self.auth.password:
            return ()
        return (self.auth.password, self.auth.encode().removeprefix("Basic "))


DIRECT = Proxy()


def proxy_for(url: str | URL) -> Proxy:
    """The proxy the environment names for ``url``, or DIRECT (none set, or NO_PROXY)."""
    with suppress(LookupError):
        proxy, auth = get_env_proxy_for_url(URL(url))
        return Proxy(str(proxy), auth)
    return DIRECT


def check_proxy_environment(environ: Mapping[str, str]) -> None:
    """Refuse a proxy variable no call could use, before any request: a value without its
    scheme (its password was echoed in errors and rows), a port out of range, an open IPv6
    bracket (tracebacks), or an https:// proxy, which aiohttp ignores, so the calls went
    direct while `check` said "through proxy". The message hides a password."""
    for name in _PROXY_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        shown = hide_password(value)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError for a port out of range)
        except ValueError as exc:
            # Not urllib's text: it quotes the "port", which is the password's start when the
            # password holds a '#', '?' or '/' (urllib ends the host part there).
            problem = (
                "an IPv6 address with its '[' not closed"
                if "IPv6" in str(exc)
                else "the port is out of range or not a number (a '#', '?' or '/' in the "
                "password must be percent-encoded)"
            )
            raise UsageError(f"{name}={shown!r}: {problem}; give http://host:port") from None
        if parts.scheme == "https":
            raise UsageError(
                f"{name}={shown!r}: a proxy reached over TLS (https://) is not supported; "
                "give it as http://host:port (the calls to the endpoint are TLS inside the "
                "tunnel either way)"
            )
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(
                f"{name}={shown!r}: not a proxy URL; give http://[user:password@]host:port"
            )
        try:
            auth = aiohttp.BasicAuth.from_url(URL(value))
            if auth is not None:
                auth.encode()
        except (UnicodeEncodeError, ValueError):  # Basic auth is latin-1: a traceback later
            raise UsageError(
                f"{name}={shown!r}: the proxy's user or password has a character Basic "
                "authentication cannot carry (outside latin-1)"
            ) from None
