"""VAS's formats and the service identity the ledger is keyed by."""

from __future__ import annotations

import pytest

from batchsubmit.vas import (
    JOB_NAME,
    PROJECT_ID,
    TASK_ID,
    normalise_base_url,
    region_of,
    service_identity,
    usable_task_id,
    valid_bucket,
)

PROJECT = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://iva.cn-north-4.myhuaweicloud.com", "https://iva.cn-north-4.myhuaweicloud.com"),
        ("HTTPS://IVA.cn-north-4.MYHUAWEICLOUD.COM/", "https://iva.cn-north-4.myhuaweicloud.com"),
        (
            "https://iva.cn-north-4.myhuaweicloud.com:443",
            "https://iva.cn-north-4.myhuaweicloud.com",
        ),
        ("http://127.0.0.1:80/", "http://127.0.0.1"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://host:80", "https://host:80"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
    ],
)
def test_normalise_base_url(url: str, expected: str) -> None:
    """Scheme and host case, default ports and trailing slashes do not change an endpoint."""
    assert normalise_base_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://host", "host:80", "https://", "http://h:99999"])
def test_normalise_base_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the caller's
        normalise_base_url(url)


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://iva.cn-north-4.myhuaweicloud.com", "cn-north-4"),
        ("https://IVA.AP-SOUTHEAST-1.myhuaweicloud.com:443", "ap-southeast-1"),
        ("https://iva.cn-east-3.example.myhuaweicloud.cn", "cn-east-3"),
        ("http://127.0.0.1:8080", None),
        ("https://vas.example.com", None),
    ],
)
def test_region_of(url: str, region: str | None) -> None:
    assert region_of(url) == region


def test_service_identity() -> None:
    """Project and service from the path, the region from a Huawei Cloud host; the key is the
    same for every spelling of one regional endpoint, different for another project."""
    one = service_identity(
        f"https://iva.cn-north-4.myhuaweicloud.com/v2/{PROJECT}/services/s/tasks"
    )
    two = service_identity(
        f"HTTPS://Iva.Cn-North-4.MyHuaweiCloud.com:443/v2/{PROJECT}/services/s/tasks/"
    )
    local = service_identity(f"http://localhost:5000/v2/{PROJECT}/services/s/tasks")
    other = service_identity(f"http://localhost:5000/v2/{'f' * 32}/services/s/tasks")
    assert (one.project_id, one.service_name, one.region) == (PROJECT, "s", "cn-north-4")
    assert one.key == two.key == f"{PROJECT}/s@cn-north-4"
    assert local.key != one.key
    assert local.same_service(one)
    assert not other.same_service(local)
    with pytest.raises(ValueError):  # noqa: PT011
        service_identity("https://iva.cn-north-4.myhuaweicloud.com/v2/p/services/s")


def test_formats() -> None:
    """The patterns VAS states: 32-hex project ids, task ids as show checks them, job names,
    bucket names."""
    assert PROJECT_ID.fullmatch(PROJECT)
    assert not PROJECT_ID.fullmatch("my_project-1")
    assert not PROJECT_ID.fullmatch(PROJECT.upper())
    assert TASK_ID.fullmatch(PROJECT)
    assert TASK_ID.fullmatch("taskABCD_123")
    assert not TASK_ID.fullmatch("task-123")
    for usable in (PROJECT, "taskABCD_123", "task-123", "A" * 64, "_"):
        assert usable_task_id(usable), usable
    for unusable in ("", "A" * 65, "../x", "a.b", "a b", "a\n", "\x1b", "\x85", "é", 5, None):
        assert not usable_task_id(unusable), unusable
    assert JOB_NAME.fullmatch("a" * 100)
    assert not JOB_NAME.fullmatch("a" * 101)
    assert valid_bucket("my-bucket.1")
    assert not valid_bucket("my..bucket")
    assert not valid_bucket("My-Bucket")
