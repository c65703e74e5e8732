"""The event loop every command runs on: uvloop's when it is installed, else asyncio's.

uvloop (``pip install 'batchsubmit[fast]'``) runs the same aiohttp calls for less CPU: in the
network benchmark, about 5 us less a create at 0 ms latency, out of ~135. Nothing else
changes with it, so this is the one seam: every command starts its event loop here, and a
machine without uvloop runs asyncio's loop as before.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio

__all__ = ["loop_name", "run", "signals_received"]

T = TypeVar("T")


def _options() -> dict[str, Any]:
    return {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}


def run(main: Callable[..., Awaitable[T]], *args: object) -> T:
    """``anyio.run(main, *args)`` on the fastest event loop installed."""
    return anyio.run(_signals_left_to_the_cli, main, args, backend_options=_options())


async def _signals_left_to_the_cli(
    main: Callable[..., Awaitable[T]], args: tuple[object, ...]
) -> T:
    """``main(*args)``, with a loop that does not report a signal that ended it.

    The CLI's handlers raise KeyboardInterrupt (SIGTERM's subclass too) where no receiver of a
    command's is in place, and cli.main() turns it into its one line and exit code. Raised
    inside a task group, it ended the main task with an exception group, which asyncio's
    shutdown logged with its whole traceback ("unhandled exception during asyncio.run()
    shutdown") before that line. Every other report goes to the loop's handler as before."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def report(running: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _only_signals(context.get("exception")):
            return
        if previous is not None:
            previous(running, context)
        else:
            running.default_exception_handler(context)

    loop.set_exception_handler(report)
    return await main(*args)


def _only_signals(exc: BaseException | None) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(KeyboardInterrupt)[1] is None
    return isinstance(exc, KeyboardInterrupt)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` uses here (the banner and ``check`` say)."""
    return "uvloop" if _options() else "asyncio"


@contextmanager
def signals_received(*signals: signal.Signals) -> Iterator[AsyncIterator[int]]:
    """``anyio.open_signal_receiver``, and then the handlers that were there before: the event
    loop puts back the system's default when it lets go (for SIGTERM: die at once, no exit
    code of ours, no message), where the process had the CLI's handler (see cli.py).

    While the loop puts its handler in place, a signal is held and then handed to the
    receiver: the CLI's handler raises, and raised there (inside asyncio's
    add_signal_handler, in a task) it stopped the run with a traceback on stderr."""
    before = {s: signal.getsignal(s) for s in signals}
    held: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        held.append(signum)

    try:
        for number in signals:
            signal.signal(number, hold)
        with anyio.open_signal_receiver(*signals) as received:
            while held:
                signal.raise_signal(held.pop(0))  # to the loop's handler: the receiver hears it
            yield received
    finally:
        for number, handler in before.items():
            if handler is not None:
                signal.signal(number, handler)
        while held:  # the receiver was never in place: the handler that was there hears it
            signal.raise_signal(held.pop(0))
