"""From an OBS object and the job template to a job spec: a create body and a stable name.

Pure. The name is the key that finds a job on the server again after a lost answer, so it
is a function of the source path alone: always valid for VAS, the same on every run, and
unique per source through a hash of the path that no sanitising or truncation removes.
"""

from __future__ import annotations

import base64
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


def source_hash(url: str) -> str:
    """A short, stable, name-safe hash of an ``obs://`` path: the first 60 bits of its SHA-256
    as 12 characters of lower-case RFC 4648 base32."""
    digest = hashlib.sha256(url.encode()).digest()[:8]
    return base64.b32encode(digest).decode("ascii").lower()[:HASH_LENGTH]


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
    """Builds JobSpecs for one service and template; the template is parsed once."""

    def __init__(self, service: Service, job: JobTemplate) -> None:
        pieces = list(_pieces(job.name))
        if not any(field == "hash" for _, field in pieces):
            pieces.append(("-", "hash"))
        self._name_pieces = [(_sanitise(text), field) for text, field in pieces]
        self._description = job.description
        self._version = service.version
        self._extra = dict(job.body)
        self._output = {
            "obs": {"bucket": job.output_bucket, "path": job.output_path},
            **self._extra.pop("output", {}),
        }

    def build(self, ref: ObjectRef) -> JobSpec:
        fields = template_fields(ref)
        name = self.name(fields)
        # The manifest refuses extras under the names batchsubmit builds, so none is lost.
        body: dict[str, object] = {"name": name, "service_version": self._version}
        if self._description is not None:
            body["description"] = self._description.format_map(fields)[:DESCRIPTION_MAX]
        body["input"] = {"type": "obs", "data": [{"bucket": ref.bucket, "path": ref.key}]}
        body["output"] = self._output
        body.update(self._extra)
        return JobSpec(source=fields["source"], name=name, body=orjson.dumps(body))

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
