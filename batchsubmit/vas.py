"""VAS's formats in one place: what the manifest, the CLI and the emulator agree a VAS name,
id or region looks like, and what identifies one service whatever its endpoint is called.
Pure: no I/O."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias, Union
from urllib.parse import unquote, urlsplit

__all__ = [
    "BASE_URL",
    "BUCKET",
    "CONTROL",
    "CREATE_BODY",
    "JOB_NAME",
    "JOB_NAME_MAX",
    "JOB_NAME_SERVED",
    "JOB_NOT_FOUND",
    "OBS_KEY_MAX_BYTES",
    "PROJECT_ID",
    "REGION",
    "REGIONS",
    "SERVICE_NAME",
    "SERVICE_VERSION",
    "TASK_ID",
    "TASK_ID_PATTERN",
    "TASK_ID_USABLE",
    "ServiceIdentity",
    "Shape",
    "body_problem",
    "hide_password",
    "normalise_base_url",
    "region_of",
    "service_identity",
    "service_of",
    "url_host",
    "usable_task_id",
    "valid_bucket",
]

# The regions huaweicloudsdkvas knows (VasRegion, 3.1.219); an endpoint outside them still
# works, but a region name outside them is most likely a typo.
REGIONS = (
    "cn-north-1",
    "cn-north-4",
    "cn-east-2",
    "cn-east-3",
    "cn-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
)

PROJECT_ID = re.compile(r"[0-9a-f]{32}")  # IAM project ids: 32 lower-case hex digits
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # e.g. c-video-analysis
# The SDK's model: "two integers between 0 and 999 separated by a dot", e.g. "1.0".
SERVICE_VERSION = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}")
REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")  # e.g. cn-north-4
# What show answers 400 for (VAS's own pattern): a 32-hex id or "task" and 8 word characters.
TASK_ID_PATTERN = r"^[0-9a-f]{32}|task\w{8}$"  # as VAS's 400 quotes it
TASK_ID = re.compile(r"[0-9a-f]{32}|task\w{8}", re.ASCII)
# What a job id from the server must be before it is recorded or put in a path. Not TASK_ID:
# the ids VAS really hands out might differ from what it documents. Only what cannot be an id
# is refused: empty, over 64 characters, or anything but ASCII letters, digits, '_' and '-'
# ('/', '.', '%', white space, control characters...), so an id never climbs out of its path.
TASK_ID_USABLE = re.compile(r"[A-Za-z0-9_-]{1,64}")
JOB_NAME_MAX = 100
# Job names as batchsubmit makes them (VAS also takes CJK characters; we never write them).
JOB_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
JOB_NAME_SERVED = re.compile(r"[A-Za-z0-9_\-\u4e00-\u9fff]{1,100}")  # what VAS takes
# OBS bucket names: 3-63 characters, lowercase letters, digits, '-' and '.', starting and ending
# with a letter or digit, no '..', '.-' or '-.', not shaped like an IP address.
BUCKET = re.compile(r"(?!.*(?:\.\.|\.-|-\.))[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
# VAS's "not found" (a job deleted, or never there): a 404 with any other code is the gateway's
# (a wrong path, a service it does not route) and says nothing about the job.
JOB_NOT_FOUND = "IVA.0005"
OBS_KEY_MAX_BYTES = 1024
# Control characters (C0, DEL, C1: U+0085 is a line break): in no path, name or row we take.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # an OBS object key is at most 1,024 bytes of UTF-8

# The create body's shape: every object's fields and their JSON types, as the request models
# of huaweicloudsdkvas (3.1.219) have them (tests/test_sdk_oracle.py holds the two equal). The
# SDK can send nothing else, so these are the fields VAS is known to take; "object" is free
# (a service's own settings, webhook headers). A field outside them, or of another type, is a
# mistake that would otherwise cost one failed create per video, or a job run without it.
Shape: TypeAlias = Union[str, list["Shape"], Mapping[str, "Shape"]]  # noqa: UP007 (recursive)
_OUTPUT_TYPE: Final[Shape] = ["string"]  # data_category: the data kinds this output receives
_TIMING: Final[Mapping[str, Shape]] = {
    "type": "string",
    "timezone": "string",
    "days_of_week": ["integer"],
    "days_of_month": ["integer"],
    "date": "string",
    "periods": [{"begin_at": "string", "end_at": "string"}],
    "frequency": {
        "interval": "integer",
        "duration": "integer",
        "begin_at": "string",
        "end_at": "string",
    },
}
_INPUT_DATA: Final[Mapping[str, Shape]] = {
    "stream_name": "string",
    "bucket": "string",
    "path": "string",
    "url": "string",
    "headers": "object",
    "certificate_check": "boolean",
    "rtsp_path_in_response": "string",
    "node_id": "string",
    "device_id": "string",
    "stream_type": "integer",
    "id": "string",
}
CREATE_BODY: Final[Mapping[str, Shape]] = {
    "name": "string",
    "description": "string",
    "service_version": "string",
    "edge_pool_id": "string",
    "resource_order_id": "string",
    "timing": _TIMING,
    "input": {
        "type": "string",
        "data": [_INPUT_DATA],
        "vcn": {"ip": "string", "port": "integer", "username": "string", "password": "string"},
    },
    "output": {
        "obs": {"bucket": "string", "path": "string", "data_category": _OUTPUT_TYPE},
        "dis": {"stream_name": "string", "data_category": _OUTPUT_TYPE},
        "webhook": {"url": "string", "headers": "object", "data_category": _OUTPUT_TYPE},
        "hosting": {"data_category": _OUTPUT_TYPE},
        "localpath": {"mount_source_path": "string", "data_category": _OUTPUT_TYPE},
    },
    "service_config": {"common": "object"},
}
_JSON_TYPES: Final = {"string": str, "integer": int, "boolean": bool, "object": dict}


def body_problem(
    value: object, where: str = "", shape: Shape = CREATE_BODY
) -> tuple[str, str] | None:
    """The first field of ``value`` outside ``shape`` or of the wrong type, as (its key,
    what is wrong), keys spelled from ``where``; None if it fits. Required fields and the
    values' own rules (names, buckets) are the caller's."""
    if isinstance(shape, str):
        expected = _JSON_TYPES[shape]
        fits = isinstance(value, expected) and (shape != "integer" or not isinstance(value, bool))
        return None if fits else (where, f"must be {_article(shape)}, not {_json_kind(value)}")
    if isinstance(shape, list):
        if not isinstance(value, list):
            return where, f"must be a list, not {_json_kind(value)}"
        for index, item in enumerate(value):
            found = body_problem(item, f"{where}[{index}]", shape[0])
            if found is not None:
                return found
        return None
    if not isinstance(value, dict):
        return where, f"must be an object, not {_json_kind(value)}"
    for key, item in value.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in shape:
            return path, f"is not a field VAS takes here; allowed: {', '.join(sorted(shape))}"
        found = body_problem(item, path, shape[key])
        if found is not None:
            return found
    return None


def _article(kind: str) -> str:
    return f"an {kind}" if kind in ("integer", "object") else f"a {kind}"


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


_DEFAULT_PORTS = {"http": 80, "https": 443}
_TASKS_PATH = re.compile(r"/v2/([^/]+)/services/([^/]+)/tasks/?")
# iva.cn-north-4.myhuaweicloud.com and the like: the region is the label after the service's.
_REGIONAL_HOST = re.compile(
    r"[a-z0-9-]+\.([a-z]{2,}(?:-[a-z0-9]+)+)\.(?:[a-z0-9-]+\.)*myhuaweicloud\.[a-z]+"
)


@functools.lru_cache(maxsize=256)
def valid_bucket(name: str) -> bool:
    """An OBS bucket name, as OBS (and so the emulator) accepts it. Cached: a listing names
    one bucket on every line, and both passes over it ask."""
    return bool(BUCKET.fullmatch(name)) and not _IP_ADDRESS.fullmatch(name)


# What an endpoint may look like: scheme and host (a name or a bracketed IPv6 address), an
# optional port, no path, query or user name (normalise_base_url then checks the port range).
BASE_URL = re.compile(
    r"https?://[A-Za-z0-9.-]+(:\d{1,5})?/?|https?://\[[0-9A-Fa-f:]+\](:\d{1,5})?/?",
    re.IGNORECASE,
)


def hide_password(url: str) -> str:
    """``url`` as an error message may show it: a password in its user part (a URL an
    operator typed by mistake, with credentials in it; with or without its scheme) replaced
    by ``***``. The password runs from the user's ``:`` to the *last* ``@``, as urllib reads
    it: one holding ``/``, ``@``, ``#``, ``?`` or white space is hidden whole too (what comes
    after the last ``@`` may be the host or not; hiding too much is the safe side)."""
    url = url.strip()
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    at = url.rfind("@")
    if at < start:
        return url
    user, colon, _password = url[start:at].partition(":")
    if not colon:
        return url
    return f"{url[:start]}{user}:***{url[at:]}"


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def normalise_base_url(url: str) -> str:
    """``scheme://host[:port]`` with scheme and host in lower case, the default port dropped
    and no trailing slash: every spelling of one endpoint gives one string. ValueError if it
    is not an http(s) URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    host = url_host(parts.hostname.lower().rstrip("."))
    port = parts.port  # ValueError for a port out of range
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def url_host(host: str) -> str:
    """A host as a URL, a Host header or CONNECT names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def usable_task_id(value: object) -> bool:
    """Whether a job id from the server can be recorded and used in a path (TASK_ID_USABLE)."""
    return isinstance(value, str) and TASK_ID_USABLE.fullmatch(value) is not None


def region_of(base_url: str) -> str | None:
    """The region a Huawei Cloud endpoint names (``iva.cn-north-4.myhuaweicloud.com``), if any."""
    host = (urlsplit(base_url).hostname or "").lower()
    found = _REGIONAL_HOST.fullmatch(host)
    return found.group(1) if found else None


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """What identifies a service to VAS: project and service name, plus the region when the
    endpoint names one. ``endpoint`` (normalised) is kept to tell "same service, another
    spelling or address" apart from "the same endpoint"."""

    project_id: str
    service_name: str
    region: str | None
    endpoint: str

    @property
    def key(self) -> str:
        """``project/service@region`` (or ``@endpoint`` without a region): one ledger key."""
        return f"{self.project_id}/{self.service_name}@{self.region or self.endpoint}"

    def same_service(self, other: ServiceIdentity) -> bool:
        """Same project and service name: the same jobs, wherever they were reached."""
        return (self.project_id, self.service_name) == (other.project_id, other.service_name)


def service_identity(service_url: str) -> ServiceIdentity:
    """The identity of a ``service_url`` (``{base}/v2/{project}/services/{name}/tasks``, as in
    every results row); ValueError if it is not one."""
    text = service_url.strip()
    parts = urlsplit(text)
    found = _TASKS_PATH.fullmatch(parts.path)
    if not found:
        raise ValueError(f"{service_url!r} is not a VAS tasks URL")
    endpoint = normalise_base_url(f"{parts.scheme}://{parts.netloc}")
    return ServiceIdentity(
        project_id=unquote(found.group(1)),
        service_name=unquote(found.group(2)),
        region=region_of(endpoint),
        endpoint=endpoint,
    )


def service_of(service_url: str) -> str:
    """``project/service`` of a results row's ``service_url``: one string for every spelling
    of one service's endpoint (what :meth:`ServiceIdentity.same_service` compares); the URL
    itself, stripped, when it is not a VAS tasks URL."""
    try:
        identity = service_identity(service_url)
    except ValueError:
        return service_url.strip()
    return f"{identity.project_id}/{identity.service_name}"
