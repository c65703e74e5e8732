"""The ``batchsubmit`` command (and ``python -m batchsubmit``): signals caught from its first line.

cli.main() handles SIGINT and SIGTERM from its first line, but importing cli.py takes ~0.3 s
(aiohttp): a SIGTERM then ended the process without a word (-15), a Ctrl-C with a traceback.
Until cli.main() takes over, both are caught here: exit 143 or 130, said, nothing sent. Only
the standard library is imported before the handler is set.
"""

import signal
import sys


class _Stopped(BaseException):
    """SIGTERM while cli.py was imported (BaseException: no ``except Exception`` swallows it)."""


def _stop(_signum: int, _frame: object) -> None:
    raise _Stopped


def _ended(_signum: int, _frame: object) -> None:
    """SIGTERM once the command has ended (cli.main() puts back the handler it found when it
    returns): its rows, summary and last line are written, so its own exit code stands. With
    SIGTERM's default there, a signal in that moment ended the process with -15."""


def main() -> int:
    argv = sys.argv[1:]
    default = signal.signal(signal.SIGTERM, _stop)
    try:
        from .cli import main as run

        signal.signal(signal.SIGTERM, _ended)  # cli.main() sets its own, first thing
    except (_Stopped, KeyboardInterrupt) as exc:
        signal.signal(signal.SIGTERM, default)  # a second one ends it at once
        from .cli import stopped_starting

        return stopped_starting(argv, "SIGTERM" if isinstance(exc, _Stopped) else "SIGINT")
    try:
        return run(argv)
    finally:
        # The interpreter's exit puts SIGTERM's default back in place of a Python handler
        # before it tears the modules down: ignored, a late SIGTERM cannot end it with -15.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    raise SystemExit(main())
