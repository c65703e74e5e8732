"""The event loop every command runs on: uvloop's when it is installed, else asyncio's.

uvloop (``pip install 'batchsubmit[fast]'``) runs the same aiohttp calls for less CPU: in the
network benchmark, about 5 us less a create at 0 ms latency, out of ~135. Nothing else
changes with it, so this is the one seam: every command starts its event loop here, and a
machine without uvloop runs asyncio's loop as before.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["loop_name", "run"]

T = TypeVar("T")


def _options() -> dict[str, Any]:
    return {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}


def run(main: Callable[..., Awaitable[T]], *args: object) -> T:
    """``anyio.run(main, *args)`` on the fastest event loop installed."""
    return anyio.run(main, *args, backend_options=_options())


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` uses here (the banner and ``check`` say)."""
    return "uvloop" if _options() else "asyncio"
