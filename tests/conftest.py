"""Shared fixtures: anyio on asyncio, and no HUAWEICLOUD_SDK_* variable leaking into a test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .helpers import LiveEmulator


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


@pytest.fixture
def live_emulator() -> Iterator[LiveEmulator]:
    """A standalone emulator (own thread) that a `batchsubmit` subprocess can talk to."""
    server = LiveEmulator()
    try:
        yield server
    finally:
        server.close()
