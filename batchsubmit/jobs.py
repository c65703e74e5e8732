"""From an OBS object and the job template to a job spec: a create body and a stable name.

Pure. The name is the key that finds a job on the server again after a lost answer, so it
is a function of the source path alone: always valid for VAS, the same on every run, and
unique per source through a hash of the path that no sanitising or truncation removes.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from .manifest import DESCRIPTION_MAX, JobTemplate, Service
from .sources import ObjectRef
from .vas import JOB_NAME_MAX

__all__ = ["NAME_MAX", "JobSpec", "SpecBuilder", "source_hash", "template_fields"]

NAME_MAX = JOB_NAME_MAX
HASH_LENGTH = 12  # 60 bits of base32: a collision is unlikely even among millions of videos
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What one create call sends: the serialised body, plus the identity to record it by."""

    source: str
    name: str
    body: bytes


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = [a + b for a in _BASE32 for b in _BASE32]  # 10 bits -> two base32 characters


def source_hash(url: str) -> str:
    """A short, stable, name-safe hash of an ``obs://`` path: the first 60 bits of its SHA-256
    as 12 characters of lower-case RFC 4648 base32 (``b32encode(digest[:8]).lower()[:12]``,
    without base64's slow pure-Python encoder: it is on the per-job path)."""
    bits = int.from_bytes(hashlib.sha256(url.encode()).digest()[:8], "big") >> 4
    pairs = _PAIRS
    return (
        pairs[bits >> 50]
        + pairs[(bits >> 40) & 1023]
        + pairs[(bits >> 30) & 1023]
        + pairs[(bits >> 20) & 1023]
        + pairs[(bits >> 10) & 1023]
        + pairs[bits & 1023]
    )


def template_fields(ref: ObjectRef) -> dict[str, str]:
    """The placeholders a name or description template may use, for one object."""
    folder, _, filename = ref.key.rpartition("/")
    stem, dot, ext = filename.rpartition(".")
    if not dot or not stem:
        stem, ext = filename, ""
    url = ref.url
    return {
        "stem": stem,
        "filename": filename,
        "ext": ext,
        "folder": folder,
        "bucket": ref.bucket,
        "key": ref.key,
        "hash": source_hash(url),
        "source": url,
    }


class SpecBuilder:
    """Builds JobSpecs for one service and template; the template is parsed, and the fixed
    parts of the body serialised, once (this is on the per-job path)."""

    def __init__(self, service: Service, job: JobTemplate) -> None:
        pieces = list(_pieces(job.name))
        if not any(field == "hash" for _, field in pieces):
            pieces.append(("-", "hash"))
        self._name_pieces = [(_sanitise(text), field) for text, field in pieces]
        self._description = job.description
        extra = dict(job.body)
        output = {
            "obs": {"bucket": job.output_bucket, "path": job.output_path},
            **extra.pop("output", {}),
        }
        # The body is {"name", "service_version", ["description"], "input", "output", extras...}
        # (the manifest refuses extras under the first four names): the bytes orjson.dumps would
        # write for that dict, spliced around the per-job values.
        self._after_name = b',"service_version":' + orjson.dumps(service.version)
        self._input = b',"input":{"type":"obs","data":[{"bucket":'
        extras = orjson.dumps(extra)[1:-1] if extra else b""
        self._tail = (
            b',"output":' + orjson.dumps(output) + (b"," + extras if extras else b"") + b"}"
        )

    def build(self, ref: ObjectRef) -> JobSpec:
        fields = template_fields(ref)
        name = self.name(fields)
        parts = [b'{"name":', orjson.dumps(name), self._after_name]
        if self._description is not None:
            description = self._description.format_map(fields)[:DESCRIPTION_MAX]
            parts += (b',"description":', orjson.dumps(description))
        parts += (
            self._input,
            orjson.dumps(ref.bucket),
            b',"path":',
            orjson.dumps(ref.key),
            b"}]}",
            self._tail,
        )
        return JobSpec(source=fields["source"], name=name, body=b"".join(parts))

    def name(self, fields: dict[str, str]) -> str:
        """Render the name template: invalid characters become ``_``, long parts are cut."""
        parts: list[tuple[str, bool]] = []
        for text, field in self._name_pieces:
            if text:
                parts.append((text, False))
            if field == "hash":
                parts.append((fields["hash"], True))  # base32: always valid
            elif field is not None:
                parts.append((_sanitise(fields[field]), False))
        return _fit(parts)


def _pieces(template: str) -> Iterator[tuple[str, str | None]]:
    for text, field, _spec, _conversion in string.Formatter().parse(template):
        yield text, field


def _sanitise(text: str) -> str:
    return _INVALID_NAME_CHARS.sub("_", text)


def _fit(parts: list[tuple[str, bool]]) -> str:
    """Join the parts, cutting the longest non-hash parts until the name fits NAME_MAX."""
    texts = [text for text, _ in parts]
    excess = sum(map(len, texts)) - NAME_MAX
    while excess > 0:
        cuttable = [i for i, (_, is_hash) in enumerate(parts) if not is_hash and texts[i]]
        if not cuttable:
            return "".join(texts)[:NAME_MAX]
        index = max(cuttable, key=lambda i: len(texts[i]))
        cut = min(excess, len(texts[index]))
        texts[index] = texts[index][: len(texts[index]) - cut]
        excess -= cut
    name = "".join(texts)
    return name or "job"
