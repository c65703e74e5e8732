"""The one workload every benchmark client sends, so that their figures compare like with like.

Job ``i`` reads ``obs://bench-in/cam-NN/clip-IIIIIII.mp4``; its create body is exactly what
``batchsubmit`` builds from the manifest written by :func:`write_manifest` (name
``{stem}-{hash}``, a description, service_version, obs input and output). The bare loop and the
SDK client build the same body from ``i`` without reading a listing; ``run.py`` checks, before
measuring, that all three agree byte for byte (the SDK: as JSON values).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchsubmit.emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK
from batchsubmit.jobs import source_hash

__all__ = [
    "AK",
    "DESCRIPTION",
    "IN_BUCKET",
    "OUT_BUCKET",
    "OUT_PATH",
    "PROJECT_ID",
    "SERVICE",
    "SK",
    "VERSION",
    "body",
    "body_fields",
    "sdk_env",
    "source",
    "tasks_url",
    "write_ledger",
    "write_listing",
    "write_manifest",
]

AK = EMULATOR_AK
SK = EMULATOR_SK
PROJECT_ID = EMULATOR_PROJECT_ID
SERVICE = "video-analyze"
VERSION = "1.0"
IN_BUCKET = "bench-in"
OUT_BUCKET = "bench-out"
OUT_PATH = "results/"
DESCRIPTION = "benchmark of {source}"
# Where the manifest points; every network benchmark overrides it with --endpoint.
MANIFEST_ENDPOINT = "http://127.0.0.1:9"


def source(i: int) -> str:
    return f"obs://{IN_BUCKET}/cam-{i % 100:02d}/clip-{i:07d}.mp4"


def body_fields(i: int) -> dict[str, Any]:
    """Job ``i``'s create body as JSON values, in batchsubmit's key order."""
    url = source(i)
    key = url[len(IN_BUCKET) + 7 :]
    return {
        "name": f"clip-{i:07d}-{source_hash(url)}",
        "service_version": VERSION,
        "description": DESCRIPTION.format(source=url),
        "input": {"type": "obs", "data": [{"bucket": IN_BUCKET, "path": key}]},
        "output": {"obs": {"bucket": OUT_BUCKET, "path": OUT_PATH}},
    }


def body(i: int) -> bytes:
    return orjson.dumps(body_fields(i))


def tasks_url(base_url: str) -> str:
    """The service URL batchsubmit records in every results row (the ledger's key)."""
    return f"{base_url}/v2/{PROJECT_ID}/services/{SERVICE}/tasks"


def sdk_env() -> dict[str, str]:
    """The variables batchsubmit (and Huawei's SDK) read credentials from: the emulator's."""
    return {
        "HUAWEICLOUD_SDK_AK": AK,
        "HUAWEICLOUD_SDK_SK": SK,
        "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT_ID,
    }


def _listing_lines(count: int) -> Iterator[str]:
    yield "Start at 2026-11-27 02:00:01.123 +0800 CST\n"
    yield "Folder list:\n"
    yield f"obs://{IN_BUCKET}/\n"
    yield "\nObject list:\n"
    for i in range(count):
        yield source(i) + "\n"
    yield "\nTotal size of prefix [] is: 1.2TB\n"
    yield "Folder number is: 1\n"
    yield f"File number is: {count}\n"


def write_listing(path: Path, count: int) -> None:
    """A saved ``obsutil ls -s`` listing of ``count`` videos (job 0 to count - 1)."""
    with path.open("w", encoding="utf-8", buffering=1 << 20) as handle:
        chunk: list[str] = []
        for line in _listing_lines(count):
            chunk.append(line)
            if len(chunk) >= 10_000:
                handle.writelines(chunk)
                chunk.clear()
        handle.writelines(chunk)


def write_manifest(path: Path, listing: Path) -> None:
    path.write_text(
        "[service]\n"
        f'name = "{SERVICE}"\n'
        f'version = "{VERSION}"\n'
        f'endpoint = "{MANIFEST_ENDPOINT}"\n'
        f'project_id = "{PROJECT_ID}"\n'
        "\n[job]\n"
        f'output = "obs://{OUT_BUCKET}/{OUT_PATH}"\n'
        'name = "{stem}-{hash}"\n'
        f'description = "{DESCRIPTION}"\n'
        "\n[[source]]\n"
        f'listing = "{listing.resolve()}"\n',
        encoding="utf-8",
    )


def write_ledger(path: Path, count: int, service_url: str) -> None:
    """A results file (CSV) in which jobs 0 to count - 1 were submitted to ``service_url``."""
    from batchsubmit.results import COLUMNS, SCHEMA

    with path.open("w", encoding="utf-8", newline="", buffering=1 << 20) as handle:
        handle.write(",".join(COLUMNS) + "\r\n")
        chunk: list[str] = []
        for i in range(count):
            fields = body_fields(i)
            job_id = f"{i:032x}"
            chunk.append(
                f"{source(i)},{fields['name']},{job_id},submitted,201,,,1,{job_id},"
                f"2026-11-28T02:00:00.000Z,{service_url},False,{SCHEMA}\r\n"
            )
            if len(chunk) >= 10_000:
                handle.writelines(chunk)
                chunk.clear()
        handle.writelines(chunk)
