"""VAS's formats in one place: what the manifest, the CLI and the emulator agree a VAS name,
id or region looks like, and what identifies one service whatever its endpoint is called.
Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = [
    "BUCKET",
    "JOB_NAME",
    "JOB_NAME_MAX",
    "JOB_NAME_SERVED",
    "OBS_KEY_MAX_BYTES",
    "PROJECT_ID",
    "REGION",
    "REGIONS",
    "SERVICE_NAME",
    "SERVICE_VERSION",
    "TASK_ID",
    "TASK_ID_PATTERN",
    "ServiceIdentity",
    "normalise_base_url",
    "region_of",
    "service_identity",
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
JOB_NAME_MAX = 100
# Job names as batchsubmit makes them (VAS also takes CJK characters; we never write them).
JOB_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
JOB_NAME_SERVED = re.compile(r"[A-Za-z0-9_\-\u4e00-\u9fff]{1,100}")  # what VAS takes
# OBS bucket names: 3-63 characters, lowercase letters, digits, '-' and '.', starting and ending
# with a letter or digit, no '..', '.-' or '-.', not shaped like an IP address.
BUCKET = re.compile(r"(?!.*(?:\.\.|\.-|-\.))[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
OBS_KEY_MAX_BYTES = 1024  # an OBS object key is at most 1,024 bytes of UTF-8

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TASKS_PATH = re.compile(r"/v2/([^/]+)/services/([^/]+)/tasks/?")
# iva.cn-north-4.myhuaweicloud.com and the like: the region is the label after the service's.
_REGIONAL_HOST = re.compile(
    r"[a-z0-9-]+\.([a-z]{2,}(?:-[a-z0-9]+)+)\.(?:[a-z0-9-]+\.)*myhuaweicloud\.[a-z]+"
)


def valid_bucket(name: str) -> bool:
    """An OBS bucket name, as OBS (and so the emulator) accepts it."""
    return bool(BUCKET.fullmatch(name)) and not _IP_ADDRESS.fullmatch(name)


def normalise_base_url(url: str) -> str:
    """``scheme://host[:port]`` with scheme and host in lower case, the default port dropped
    and no trailing slash: every spelling of one endpoint gives one string. ValueError if it
    is not an http(s) URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port  # ValueError for a port out of range
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


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
