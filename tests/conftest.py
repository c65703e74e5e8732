"""Shared fixtures: anyio on asyncio, and no HUAWEICLOUD_SDK_* variable leaking into a test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's real credentials out of every test."""
    for name in list(os.environ):
        if name.startswith("HUAWEICLOUD_SDK_"):
            monkeypatch.delenv(name)
