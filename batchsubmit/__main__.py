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


def main() -> int:
    argv = sys.argv[1:]
    default = signal.signal(signal.SIGTERM, _stop)
    try:
        from .cli import main as run

        # cli.main() sets its own handler first thing and puts this one back when it returns.
        # Ignored then: the command's rows, summary and last line are written, so its exit
        # code stands (SIGTERM's default, or a Python handler, which the interpreter's exit
        # resets to the default, ended it with -15).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except (_Stopped, KeyboardInterrupt) as exc:
        signal.signal(signal.SIGTERM, default)  # a second one ends it at once
        from .cli import stopped_starting

        return stopped_starting(argv, "SIGTERM" if isinstance(exc, _Stopped) else "SIGINT")
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
