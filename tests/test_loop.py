"""The event-loop seam: uvloop when installed, asyncio's loop otherwise, for every command."""

from __future__ import annotations

import asyncio
import importlib.util
import signal

import pytest

from batchsubmit.engine import loop

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module(tag: str) -> tuple[str, str]:
    await asyncio.sleep(0)
    return tag, type(asyncio.get_running_loop()).__module__


def test_run_passes_arguments_and_returns_the_result() -> None:
    tag, _module = loop.run(_loop_module, "x")
    assert tag == "x"


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (the `fast` extra)")
def test_uvloop_runs_the_command_when_installed() -> None:
    _tag, module = loop.run(_loop_module, "x")
    assert module.startswith("uvloop")
    assert loop.loop_name() == "uvloop"


def test_asyncio_runs_it_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    _tag, module = loop.run(_loop_module, "x")
    assert module.startswith("asyncio")
    assert loop.loop_name() == "asyncio"


def test_version_names_the_event_loop(capsys: pytest.CaptureFixture[str]) -> None:
    from batchsubmit import __version__, cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    said = capsys.readouterr().err  # argparse's exit message goes to stderr
    assert said == f"batchsubmit {__version__} (event loop: {loop.loop_name()})\n"


def test_a_signal_receiver_puts_back_the_handler_it_found() -> None:
    """The event loop resets SIGTERM to the system default when a receiver closes: a second
    SIGTERM during a run's wind-down killed the process (exit -15, no message) instead of
    reaching the CLI's handler. The handler found before is put back."""

    def mine(_signum: int, _frame: object) -> None:
        pass

    async def receive_once() -> None:
        with loop.signals_received(signal.SIGTERM):
            await asyncio.sleep(0)

    before = signal.signal(signal.SIGTERM, mine)
    try:
        loop.run(receive_once)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


class _Signal(KeyboardInterrupt):
    """What the CLI's SIGTERM handler raises (cli._Terminated)."""


async def _signalled_in_a_task() -> None:
    """A signal raised inside a task group: the CLI's handler, once a command's own receiver
    was gone (the chaos run met it as prune ended)."""
    import anyio

    async def raises() -> None:
        raise _Signal

    async with anyio.create_task_group() as group:
        group.start_soon(raises)
        await anyio.sleep(5)


@pytest.mark.parametrize("uvloop", [False, True] if HAS_UVLOOP else [False])
def test_a_signal_ending_the_loop_is_left_to_the_cli_to_say(
    uvloop: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio logged "unhandled exception during asyncio.run() shutdown" with the whole
    traceback for a signal that ended the command's main task; cli.main() says it in one
    line ("SIGTERM received; stopped at once") and exits 143. Other exceptions it still logs."""
    if not uvloop:
        monkeypatch.setattr(loop, "_options", dict)
    ended: BaseException | None = None
    try:  # not pytest.raises: a KeyboardInterrupt getting past it would end the session
        loop.run(_signalled_in_a_task)
    except BaseException as exc:
        ended = exc
    if isinstance(ended, BaseExceptionGroup):  # the signal, and nothing else, ended it
        assert ended.split(_Signal)[1] is None, repr(ended)
    else:
        assert isinstance(ended, _Signal), repr(ended)
    assert "unhandled exception" not in caplog.text
