"""The TOML manifest, read into frozen values; every error names the file and the key or line.

Pure apart from reading the one manifest file: listing files are only located here
(relative to the manifest) and read later, streamed, by :mod:`batchsubmit.sources`.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import vas
from .errors import ManifestError

__all__ = [
    "BODY_BYTES_MAX",
    "BODY_DEPTH_MAX",
    "DESCRIPTION_MAX",
    "NAME_FIELDS",
    "JobTemplate",
    "Manifest",
    "Service",
    "Source",
    "load_manifest",
    "parse_manifest",
    "parse_obs_url",
    "path_problem",
]

DESCRIPTION_MAX = 500
# [job.body] bounds: VAS bodies are a few levels deep and a few KiB; far beyond is a mistake
# (and unbounded nesting crashed the TOML parser and the JSON encoder).
BODY_DEPTH_MAX = 32
BODY_BYTES_MAX = 64 * 1024
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what a JSON number in the body may hold
DEFAULT_NAME_TEMPLATE = "{stem}-{hash}"
# Fields a name or description template may use; see jobs.template_fields().
NAME_FIELDS = frozenset({"stem", "filename", "ext", "folder", "bucket", "key", "hash"})
DESCRIPTION_FIELDS = NAME_FIELDS | {"source"}
# Create-body fields batchsubmit builds itself; [job.body] may not replace them.
RESERVED_BODY_FIELDS = frozenset({"name", "description", "service_version", "input"})

_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")
_TABLE_HEADER = re.compile(r"^\s*\[(\[)?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


@dataclass(frozen=True, kw_only=True)
class Service:
    """Which VAS service the jobs go to; ``endpoint`` is the base URL without a path."""

    name: str
    version: str
    endpoint: str
    project_id: str | None
    obs_endpoint: str | None = None  # where live ``prefix`` sources are listed


@dataclass(frozen=True, kw_only=True)
class JobTemplate:
    """How each job's create body is built from a source video."""

    output_bucket: str
    output_path: str
    name: str
    description: str | None
    body: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Source:
    """One ``[[source]]``: a listing file, explicit paths or a live OBS prefix, with optional
    glob filters."""

    where: str
    listing: Path | None
    paths: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    prefix: str | None = None
    listed_from: str | None = None  # the live prefix a spooled listing was listed from
    # keys that live prefix listed and no job can name (a control character): never dropped
    # without a word, they are counted and make the run exit 1
    unsubmittable: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Manifest:
    path: Path
    service: Service
    job: JobTemplate
    sources: tuple[Source, ...]


def not_utf8(exc: UnicodeDecodeError, head: bytes) -> str:
    """What to say of a file that is not UTF-8. A UTF-16 one is what Windows PowerShell 5's
    ``>`` writes (``obsutil ls -s ... > listing.txt``): say so, and how to save it again."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return (
            "UTF-16 text, not UTF-8 (Windows PowerShell's > writes UTF-16): save it again as "
            "UTF-8, e.g. `... | Out-File -Encoding utf8 FILE`"
        )
    return f"not UTF-8 text ({exc.reason} at byte {exc.start})"


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; raises ManifestError naming what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(str(path), "no such manifest file") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(str(path), not_utf8(exc, data)) from None
    except OSError as exc:
        raise ManifestError(str(path), f"cannot read: {exc.strerror}") from None
    # A BOM (Windows Notepad's UTF-8) is not TOML; it was "line 1: Invalid statement".
    return parse_manifest(text.removeprefix("\ufeff"), path)


def parse_manifest(text: str, path: Path) -> Manifest:
    """Validate a manifest's text; ``path`` locates relative listing files and errors."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        line = _most_nested_line(text)
        raise ManifestError(
            f"{path}:{line}",
            f"values nested too deeply to read (batchsubmit takes at most {BODY_DEPTH_MAX} "
            "levels in job.body)",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_LINE.search(message)
        where = f"{path}:{found.group(1)}" if found else str(path)
        raise ManifestError(
            where, f"TOML syntax error: {_TOML_LINE.sub('', message).strip()}"
        ) from None
    return _Reader(path, text).manifest(data)


def _most_nested_line(text: str) -> int:
    """The line with the most opening brackets: where a parser's recursion ran out."""
    lines = text.split("\n")  # TOML's lines (see _Reader)
    counts = [line.count("{") + line.count("[") for line in lines]
    return counts.index(max(counts)) + 1


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (None if it can be opened as one): said plainly,
    a directory or a symlink loop is not "no such file"."""
    if "\x00" in str(path):  # os.stat raises ValueError, not OSError, for it
        return f"{str(path)!r} holds a NUL character: no file has such a name"
    try:
        status = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path} is a symbolic link to a file that does not exist"
        return f"no such file: {path}"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop (it points back to itself)"
        return f"{path}: {exc.strerror}"
    if stat.S_ISDIR(status.st_mode):
        return f"{path} is a directory, not a file"
    if not stat.S_ISREG(status.st_mode) and not stat.S_ISFIFO(status.st_mode):
        return f"{path} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied"
    return None


def parse_obs_url(url: str) -> tuple[str, str]:
    """Split ``obs://bucket/key`` into bucket and key; ValueError says what is wrong."""
    if not url.startswith("obs://"):
        raise ValueError(f"{url!r} is not an obs:// path")
    bucket, slash, key = url[6:].partition("/")
    if not vas.valid_bucket(bucket):
        raise ValueError(
            f"{bucket!r} in {url!r} is not a valid OBS bucket name "
            "(3 to 63 lowercase letters, digits, '-' or '.')"
        )
    if not slash:
        key = ""
    return bucket, key


class _Reader:
    """Walks the parsed TOML, keeping the file name for every error."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        # TOML's line break is LF alone: str.splitlines() also breaks at U+2028, U+0085...,
        # which a comment or a string may hold, and every line after them was misnumbered.
        self.lines = text.split("\n")

    def error(self, key: str, what: str) -> ManifestError:
        line = self._line_of(key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ManifestError(where, f"{key}: {what}")

    def _line_of(self, key: str) -> int | None:
        """Best effort: the line defining a dotted key inside its own table, for the message.

        ``source[1].listing`` is looked for under the second ``[[source]]`` header only, so
        that a key of the same name in another table (``name`` in ``[service]`` and
        ``[job]``) never gives a wrong line; a key naming a table gives its header's line.
        """
        parent, _, leaf = key.rpartition(".")
        leaf = re.sub(r"\[\d+\]$", "", leaf)
        pattern = re.compile(rf"^\s*(\"?){re.escape(leaf)}\1\s*=")
        section = ""
        arrays: dict[str, int] = {}
        for number, line in enumerate(self.lines, 1):
            header = _TABLE_HEADER.match(line)
            if header:
                section = re.sub(r"\s*\.\s*", ".", header.group(2))
                if header.group(1):
                    arrays[section] = index = arrays.get(section, -1) + 1
                    section = f"{section}[{index}]"
                if section == key:
                    return number
            elif section == parent and pattern.match(line):
                return number
        return None

    def table(self, data: Any, key: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.error(key, f"must be a table, not {_kind(data)}")
        for name in data:
            if name not in allowed:
                choices = ", ".join(sorted(allowed))
                raise self.error(_join(key, name), f"unknown key (expected one of: {choices})")
        for name in sorted(required - data.keys()):
            raise self.error(_join(key, name), "missing required key")
        return data

    def string(self, data: Mapping[str, Any], key: str, name: str) -> str | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(_join(key, name), f"must be a string, not {_kind(value)}")
        return value

    def strings(self, data: Mapping[str, Any], key: str, name: str) -> tuple[str, ...]:
        value = data.get(name, [])
        full = _join(key, name)
        if not isinstance(value, list):
            raise self.error(full, f"must be a list of strings, not {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{full}[{index}]", f"must be a string, not {_kind(item)}")
        return tuple(value)

    def manifest(self, data: dict[str, Any]) -> Manifest:
        self.table(data, "", {"service", "job", "source"}, {"service", "job", "source"})
        return Manifest(
            path=self.path,
            service=self.service(data["service"]),
            job=self.job(data["job"]),
            sources=self.sources(data["source"]),
        )

    def service(self, data: Any) -> Service:
        allowed = {"name", "version", "region", "endpoint", "project_id", "obs_endpoint"}
        table = self.table(data, "service", allowed, {"name", "version"})
        name = self.string(table, "service", "name") or ""
        if not vas.SERVICE_NAME.fullmatch(name):
            raise self.error(
                "service.name", f"{name!r} is not a VAS service name (e.g. video-analyze)"
            )
        version = self.string(table, "service", "version") or ""
        if not version.strip():
            raise self.error("service.version", 'must not be empty (e.g. "1.0")')
        if not vas.SERVICE_VERSION.fullmatch(version):
            raise self.error(
                "service.version",
                f"{version!r} is not a VAS service version: two numbers 0-999 joined by a dot "
                '(e.g. "1.0"); VAS would refuse every job',
            )
        region = self.string(table, "service", "region")
        endpoint = self.string(table, "service", "endpoint")
        if region and endpoint:
            raise self.error("service.endpoint", "give either region or endpoint, not both")
        if region is not None:
            if not vas.REGION.fullmatch(region):
                raise self.error(
                    "service.region", f"{region!r} is not a region id (e.g. cn-north-4)"
                )
            endpoint = f"https://iva.{region}.myhuaweicloud.com"
        elif endpoint is not None:
            endpoint = self.base_url(
                endpoint, "service.endpoint", "https://iva.cn-north-4.myhuaweicloud.com"
            )
        else:
            raise self.error("service.region", "missing: give region (or endpoint)")
        obs_endpoint = self.string(table, "service", "obs_endpoint")
        if obs_endpoint is not None:
            obs_endpoint = self.base_url(
                obs_endpoint, "service.obs_endpoint", "https://obs.cn-north-4.myhuaweicloud.com"
            )
        elif region is not None:
            obs_endpoint = f"https://obs.{region}.myhuaweicloud.com"
        project_id = self.string(table, "service", "project_id")
        if project_id is not None:
            project_id = project_id.strip()
            if not vas.PROJECT_ID.fullmatch(project_id):
                raise self.error(
                    "service.project_id",
                    f"{project_id[:80]!r} is not a project id (32 lower-case hex digits, as "
                    "the console's My Credentials page shows it)",
                )
        return Service(
            name=name,
            version=version,
            endpoint=endpoint,
            project_id=project_id,
            obs_endpoint=obs_endpoint,
        )

    def job(self, data: Any) -> JobTemplate:
        allowed = {"output", "name", "description", "body"}
        table = self.table(data, "job", allowed, {"output"})
        output = self.string(table, "job", "output") or ""
        try:
            bucket, out_path = parse_obs_url(output)
        except ValueError as exc:
            raise self.error("job.output", f"{exc} (e.g. obs://out-bucket/results/)") from None
        name = self.string(table, "job", "name") or DEFAULT_NAME_TEMPLATE
        self.template(name, "job.name", NAME_FIELDS)
        description = self.string(table, "job", "description")
        if description is not None:
            literal = self.template(description, "job.description", DESCRIPTION_FIELDS)
            if len(literal) > DESCRIPTION_MAX:
                raise self.error(
                    "job.description",
                    f"its fixed text alone is {len(literal)} characters; "
                    f"VAS takes at most {DESCRIPTION_MAX}",
                )
        body = table.get("body", {})
        if not isinstance(body, dict):
            raise self.error("job.body", f"must be a table, not {_kind(body)}")
        for field in sorted(RESERVED_BODY_FIELDS & body.keys()):
            raise self.error(
                f"job.body.{field}", "is built by batchsubmit; set it in [job] instead"
            )
        extra_output = body.get("output", {})
        if not isinstance(extra_output, dict):
            raise self.error("job.body.output", f"must be a table, not {_kind(extra_output)}")
        if "obs" in extra_output:
            raise self.error("job.body.output.obs", "set the OBS output with job.output instead")
        self.body(body)
        problem = vas.body_problem(body, "job.body")
        if problem is not None:  # each create would be refused (400), or run without it
            raise self.error(*problem)
        return JobTemplate(
            output_bucket=bucket,
            output_path=out_path,
            name=name,
            description=description,
            body=body,
        )

    def base_url(self, url: str, key: str, example: str) -> str:
        """An http(s) URL without a path, normalised (scheme and host case, default port)."""
        try:
            if vas.BASE_URL.fullmatch(url):
                return vas.normalise_base_url(url)
        except ValueError:
            pass
        shown = vas.hide_password(url)
        raise self.error(key, f"{shown!r} is not an http(s) URL without a path (e.g. {example})")

    def body(self, body: dict[str, Any]) -> None:
        """Bound [job.body]: depth, size and numbers JSON can carry, each error naming its key.
        Walked with a stack, not recursion: the point is to refuse what recursion cannot take."""
        stack: list[tuple[str, Any, int]] = [("job.body", body, 1)]
        while stack:
            key, value, depth = stack.pop()
            if isinstance(value, dict | list) and depth > BODY_DEPTH_MAX:
                shown = key if len(key) <= 120 else key[:100] + "..." + key[-17:]
                raise self.error(shown, f"nested {depth} levels deep; at most {BODY_DEPTH_MAX}")
            if isinstance(value, dict):
                stack.extend((f"{key}.{k}", v, depth + 1) for k, v in value.items())
            elif isinstance(value, list):
                stack.extend((f"{key}[{i}]", v, depth + 1) for i, v in enumerate(value))
            elif isinstance(value, bool):
                continue
            elif isinstance(value, float) and not math.isfinite(value):
                raise self.error(key, f"{value} is not a number JSON can carry")
            elif isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
                raise self.error(key, f"{value} is out of range (a 64-bit integer)")
        try:
            size = len(orjson.dumps(body))
        except orjson.JSONEncodeError as exc:
            raise self.error("job.body", f"cannot be sent as JSON: {exc}") from None
        if size > BODY_BYTES_MAX:
            raise self.error(
                "job.body", f"is {size} bytes as JSON; at most {BODY_BYTES_MAX} (64 KiB)"
            )

    def template(self, template: str, key: str, fields: frozenset[str]) -> str:
        """Check a template's placeholders; return its fixed text."""
        literal = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise self.error(
                key, f"bad template {template!r}: {exc} (write {{{{ for a brace)"
            ) from None
        for text, field, spec, conversion in parsed:
            literal.append(text)
            if field is None:
                continue
            if field in fields and (spec or conversion):
                written = "{" + field + (f"!{conversion}" if conversion else "")
                written += (f":{spec}" if spec else "") + "}"
                raise self.error(
                    key,
                    f"{written}: a placeholder takes no conversion or format here "
                    f"(write {{{field}}})",
                )
            if field not in fields:
                choices = ", ".join("{" + f + "}" for f in sorted(fields))
                raise self.error(key, f"unknown placeholder {{{field}}} (use {choices})")
        return "".join(literal)

    def sources(self, data: Any) -> tuple[Source, ...]:
        if not isinstance(data, list) or not data:
            raise self.error("source", "give at least one [[source]] table")
        return tuple(self.source(item, f"source[{i}]") for i, item in enumerate(data))

    def source(self, data: Any, key: str) -> Source:
        allowed = {"listing", "paths", "prefix", "include", "exclude"}
        table = self.table(data, key, allowed, set())
        listing = self.string(table, key, "listing")
        paths = self.strings(table, key, "paths")
        prefix = self.string(table, key, "prefix")
        if sum(k in table for k in ("listing", "paths", "prefix")) != 1:
            raise self.error(
                key,
                'give exactly one of listing = "file", paths = [...] or '
                'prefix = "obs://bucket/folder/"',
            )
        if prefix is not None:
            try:
                parse_obs_url(prefix)
            except ValueError as exc:
                raise self.error(f"{key}.prefix", str(exc)) from None
            if vas.CONTROL.search(prefix):
                raise self.error(f"{key}.prefix", f"control character in {prefix!r}")
        for index, url in enumerate(paths):
            try:
                _bucket, object_key = parse_obs_url(url)
            except ValueError as exc:
                raise self.error(f"{key}.paths[{index}]", str(exc)) from None
            if not object_key or object_key.endswith("/"):
                raise self.error(f"{key}.paths[{index}]", f"{url!r} names a folder, not a video")
            if vas.CONTROL.search(url):
                raise self.error(f"{key}.paths[{index}]", f"control character in {url!r}")
        listing_path = None
        if listing is not None:
            listing_path = self.path.parent / listing
            problem = path_problem(listing_path)
            if problem is not None:
                problem = problem.replace("no such file", "no such listing file")
                raise self.error(f"{key}.listing", problem)
        return Source(
            where=key,
            listing=listing_path,
            paths=paths,
            include=self.strings(table, key, "include"),
            exclude=self.strings(table, key, "exclude"),
            prefix=prefix,
        )


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds.update({list: "a list", dict: "a table"})
    return kinds.get(type(value), type(value).__name__)
