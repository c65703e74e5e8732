"""Which proxy a call to a URL goes through: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``,
read as curl, requests and Huawei's SDK read them (aiohttp's own rules).

The sessions do not use aiohttp's ``trust_env``: it looks the proxy up in a thread for every
request (and ``~/.netrc`` in another), two thread hand-offs a call that doubled a create's
CPU, and a ``~/.netrc`` entry for the endpoint would clash with our signed Authorization
header. Each client asks once per URL instead and passes the answer with every request.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

__all__ = ["Proxy", "proxy_for"]


@dataclass(frozen=True, slots=True)
class Proxy:
    """The ``proxy`` and ``proxy_auth`` arguments of one aiohttp request (None: direct)."""

    url: str | None = None
    auth: aiohttp.BasicAuth | None = None


DIRECT = Proxy()


def proxy_for(url: str | URL) -> Proxy:
    """The proxy the environment names for ``url``, or DIRECT (none set, or NO_PROXY)."""
    with suppress(LookupError):
        proxy, auth = get_env_proxy_for_url(URL(url))
        return Proxy(str(proxy), auth)
    return DIRECT
