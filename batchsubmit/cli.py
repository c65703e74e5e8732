"""The command line: argparse, the environment, calling a command, rendering, exit codes.

The only module that reads the environment, prints or exits. Each command (commands/) takes
its frozen options (built from the parsed arguments by arguments.py, which holds the whole
grammar) and an ``Env`` and returns a result value; render.py turns it into the
summary, the metrics and the final lines. ``main()`` maps the error tree to the documented
exit codes; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from . import arguments, render
from .commands import check as check_command
from .commands import emulator as emulator_command
from .commands import expand as expand_command
from .commands import prune as prune_command
from .commands import reconcile as reconcile_command
from .commands import status as status_command
from .commands import submit as submit_command
from .commands.common import (
    Env,
    check_output_file,
    check_outputs_apart,
    default_results,
)
from .errors import BatchSubmitError, innermost
from .pool import RunStats
from .progress import Log
from .proxies import check_proxy_environment
from .prune import PruneStats
from .render import EXIT_NOT_FINAL, Outputs

__all__ = ["EXIT", "main", "stopped_starting"]

EXIT = {
    "ok": 0,
    "some_failed": 1,
    "usage": 2,
    "fatal": 3,
    "locked": 75,
    "SIGINT": 130,
    "SIGTERM": 143,
    "SIGPIPE": 141,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    before = _on_sigterm(_terminate)  # first: a signal while the arguments are parsed too
    try:
        args = _parse(argv)
    except KeyboardInterrupt as exc:
        _on_sigterm(before)
        return stopped_starting(argv, _signal_name(exc))
    except SystemExit:
        _on_sigterm(before)
        raise
    log = Log(
        sys.stderr,
        json=getattr(args, "log_format", "text") == "json",
        quiet=getattr(args, "quiet", False),
    )
    started = time.time()
    try:
        if args.name not in ("expand", "emulator"):  # those two send nothing out
            check_proxy_environment(os.environ)
        code = _COMMANDS[args.name](args, log, _environment())
    except BatchSubmitError as exc:
        log.line("error", str(exc))
        code = exc.exit_code
        _write_failure(args, code, str(exc), log, started)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # A signal raised inside a task group (between a pool's phases, where no watcher
        # listens) arrives wrapped in one: still the signal, not a traceback and exit 1.
        signalled = _signal_in(exc)
        if signalled is None:
            raise
        name = _signal_name(signalled)
        message = f"{name} received; stopped at once"
        log.line("error", message)
        code = EXIT[name]
        _write_failure(args, code, message, log, started)
    except BrokenPipeError:
        # stdout was closed early (`batchsubmit expand M | head`): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT["SIGPIPE"]
    finally:
        _on_sigterm(before)
    if code not in _QUIET_CODES and log.quiet:
        log.release()
    return code


def _parse(argv: list[str]) -> argparse.Namespace:
    """The parsed arguments. argparse says what is wrong with them (exit 2) as text; a run
    asked for JSON log lines says it as one, as it says every other error. Either way the
    failure summary and metrics are written where the arguments name them, if they do."""
    parser = arguments.parser()
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return parser.parse_args(argv)
    except SystemExit as exc:
        lines = said.getvalue().splitlines()
        json = arguments.json_logs(argv)
        if exc.code == 0 or not lines or not json:
            sys.stderr.write(said.getvalue())
        else:  # usage lines, then "batchsubmit submit: error: ...": the error is the line
            Log(sys.stderr, json=True).line("error", lines[-1])
        if exc.code != 0 and lines:
            _write_unparsed_failure(argv, EXIT["usage"], lines[-1], Log(sys.stderr, json=json))
        raise


def stopped_starting(argv: Sequence[str], name: str) -> int:
    """SIGINT or SIGTERM (``name``) before the arguments were parsed (the ``batchsubmit``
    command catches them from its first line: __main__.py): nothing was sent. Said, and
    written to the failure summary and metrics the arguments name, like any other stop."""
    message = f"{name} received while starting; stopped, nothing was sent"
    log = Log(sys.stderr, json=arguments.json_logs(argv))
    log.line("error", message)
    _write_unparsed_failure(list(argv), EXIT[name], message, log)
    return EXIT[name]


def _write_unparsed_failure(argv: list[str], code: int, message: str, log: Log) -> None:
    """The failure summary and metrics where arguments that were not parsed name them."""
    if (args := arguments.unparsed(arguments.parser(), argv)) is None:
        return
    for option in ("summary", "metrics"):
        if (path := getattr(args, option)) is not None and not _replaceable(path, option):
            setattr(args, option, None)
    _write_failure(args, code, message, log, time.time())


def _replaceable(path: Path, option: str) -> bool:
    """Whether a failure summary or metrics may go to ``path`` when the arguments did not
    parse, so that the results file and manifest they name are not known: only if nothing is
    there yet, or what is there is one this tool wrote (a summary's JSON object, metrics'
    gauges), never another file a typo named."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SUMMARY_MOST + 1)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if option == "metrics":
        return head.startswith(b"# HELP batchsubmit_")
    try:
        data = orjson.loads(head)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and "exit_code" in data and "command" in data


_SUMMARY_MOST = 16 << 20  # bytes: a summary lists its duplicates, still far less than this


class _Terminated(KeyboardInterrupt):
    """SIGTERM where no pool is listening for it (reading the sources, a pool's wind-down):
    handled as Python handles SIGINT there, so the run exits 143 and says so, instead of
    dying without a word. While a pool runs, its own watcher gets both (runner.py)."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


def _signal_in(exc: BaseException) -> KeyboardInterrupt | None:
    """The signal ``exc`` is: itself, or the first of a task group's errors when every one
    of them is a signal; None for anything else (a bug: its traceback is kept)."""
    if isinstance(exc, BaseExceptionGroup):
        signals, others = exc.split(KeyboardInterrupt)
        if others is not None or signals is None:
            return None
        exc = innermost(signals)
    return exc if isinstance(exc, KeyboardInterrupt) else None


def _signal_name(exc: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(exc, _Terminated) else "SIGINT"


_Handler = Callable[[int, Any], Any] | int | None


def _on_sigterm(handler: _Handler) -> _Handler:
    """Install ``handler`` for SIGTERM; the one there before. Not from a thread (tests call
    main() there), nor a handler Python did not set (None): left as it is."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    before: _Handler = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, handler)
    return before


def _manifest_of(args: argparse.Namespace) -> list[tuple[str, Path]]:
    manifest = getattr(args, "manifest", None)
    return [("the manifest", Path(manifest))] if manifest is not None else []


def _results_of(args: argparse.Namespace) -> list[Path]:
    """The results file a command was given, or every one ``submit`` may default to."""
    results = getattr(args, "results", None)
    if results is not None:
        return [Path(results)]
    manifest = getattr(args, "manifest", None)
    if manifest is None:
        return []
    return [
        default_results(Path(manifest), emulated, fmt)
        for emulated in (False, True)
        for fmt in ("csv", "jsonl")
    ]


def _write_failure(
    args: argparse.Namespace, code: int, message: str, log: Log, started: float
) -> None:
    """A run that ended with an error before its own summary and metrics were written (bad
    input, another run holding the lock, a full disk) still writes them, saying so: a nightly
    alert on the exit code must not read last night's 0. A path that cannot take them (the
    error may be about that very path), or that this run wrote already (its summary, then the
    metrics failed), is left alone."""
    # what these options add to a submit's summary: its failure summary has those keys too
    options = (("room", "make_room"), ("follow", "follow"))
    parts = [part for part, option in options if getattr(args, option, False)]
    for option, path, text in (
        ("--summary", getattr(args, "summary", None),
         render.failure_summary(args.name, code, message, parts)),
        ("--metrics", getattr(args, "metrics", None),
         render.failure_prometheus(args.name, code, message)),
    ):  # fmt: skip
        if path is None:
            continue
        try:
            check_output_file(path, option)
            # the error may have come before the command kept its outputs apart from the
            # results file and the manifest: a failure summary must not replace them either
            for results in _results_of(args):
                check_outputs_apart(results, [(option, path)], _manifest_of(args))
            # (a file's time lags the clock by a tick at most: 10 ms)
            if path.exists() and path.stat().st_mtime >= started - 0.01:
                continue  # this run's own, complete: not replaced by less
        except (BatchSubmitError, OSError):
            continue  # the error may be this very one: said once is enough
        try:
            render.write_atomically(path, text)
        except BatchSubmitError as exc:
            if str(exc) != message:  # the error was this very path's: said once is enough
                log.line("warning", str(exc))


# -q prints nothing for these: all went well, or (4) jobs not final yet, followed again next
# time: not a failed night, so cron mails nothing.
_QUIET_CODES = frozenset({0, 4})


def _environment() -> Env:
    """The process as the commands may see it: read here, and only here."""
    return Env(
        environ=os.environ,
        home=Path.home,
        stderr=sys.stderr,
        stdout=lambda: sys.stdout.buffer,
        print=lambda text: print(text, flush=True),
        proxy_for=_proxy_for,
    )


def _proxy_for(url: str) -> str | None:
    """The proxy the *_proxy variables choose for ``url`` (None: none, or no_proxy)."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    host = urlsplit(url).hostname or ""
    scheme = urlsplit(url).scheme
    return None if proxy_bypass(host) else getproxies().get(scheme)


# -- commands: call, render, map to an exit code ------------------------------------------------


def _expand(args: argparse.Namespace, log: Log, env: Env) -> int:
    stats = expand_command.run(arguments.expand_options(args), log, env)
    log.line("info", render.expand_line(stats))
    return EXIT["ok"]


def _submit(args: argparse.Namespace, log: Log, env: Env) -> int:
    outputs = _outputs(args)  # checked before any request: they are written at the end
    done = submit_command.run(arguments.submit_options(args), log, env)
    if isinstance(done, submit_command.DryRun):
        log.line("info", render.dry_run_line(done.summary))
        return EXIT["ok"]
    code = _report_run(outputs, log, done.run, done.stats)
    if done.room is not None:
        render.report_room(outputs, log, done.room)
    if done.followed is not None:
        from .follow import exit_code

        follow_code = _follow_exit(done.followed, exit_code(done.followed))
        combined = _combined_exit(code, follow_code)
        render.report_follow_after_submit(outputs, log, done.followed, code, follow_code, combined)
        code = combined
    elif args.follow:
        render.report_not_followed(outputs)
    if done.epilogue is not None:
        log.line("warning", done.epilogue)
    return code


def _reconcile(args: argparse.Namespace, log: Log, env: Env) -> int:
    outputs = _outputs(args)
    done = reconcile_command.run(arguments.reconcile_options(args), log, env)
    if done.stats is None:
        log.line("info", render.nothing_to_reconcile_line(done.results))
        return EXIT["ok"]
    return _report_run(outputs, log, done, done.stats)


def _report_run(
    outputs: Outputs, log: Log, done: reconcile_command.RunResult, stats: RunStats
) -> int:
    code = _exit_code(stats)
    if code == EXIT["ok"] and done.expanded is not None and done.expanded.expand.unsubmittable:
        # a video no job can name is a video not submitted: not a night where all went well
        code = EXIT["some_failed"]
    render.report_run(
        outputs, log, stats, code, done.started, done.results, done.expanded, done.credentials
    )
    return code


def _outputs(args: argparse.Namespace) -> Outputs:
    """--summary and --metrics, checked (exit 2) before the command sends anything: they are
    written only when it ends, too late to learn of a typo."""
    outputs = Outputs(getattr(args, "summary", None), getattr(args, "metrics", None))
    for option, path in (("--summary", outputs.summary), ("--metrics", outputs.metrics)):
        if path is not None:
            check_output_file(path, option)
    return outputs


def _prune(args: argparse.Namespace, log: Log, env: Env) -> int:
    outputs = _outputs(args)
    done = prune_command.run(arguments.prune_options(args), log, env)
    if done.dry_run:
        env.write(render.jsonl_lines(done.stats.jobs))
    code = _prune_exit_code(done.stats)
    render.report_prune(outputs, log, done.stats, code, done.started, done.results, done.dry_run)
    return code


def _status(args: argparse.Namespace, log: Log, env: Env) -> int:
    outputs = _outputs(args)
    done = status_command.run(arguments.status_options(args), log, env)
    code = _follow_exit(done.stats, done.judged)
    render.report_status(outputs, log, done.stats, code, done.started)
    return code


def _check(args: argparse.Namespace, log: Log, env: Env) -> int:
    """One line per check on stdout; exit 0 when all pass (warnings allowed), 3 when one fails."""
    done = check_command.run(arguments.check_options(args), log, env)
    for result in done.found:
        env.print(render.check_line(result))
    failed = done.failed
    if failed:
        log.line("error", render.check_final_line(list(done.found), failed))
        return EXIT["fatal"]
    log.line("info", render.check_final_line(list(done.found), failed))
    return EXIT["ok"]


def _emulator(args: argparse.Namespace, log: Log, env: Env) -> int:
    done = emulator_command.run(arguments.emulator_options(args), log, env)
    log.line("info", render.emulator_stopped_line(done))
    return EXIT["ok"]


_COMMANDS: dict[str, Callable[[argparse.Namespace, Log, Env], int]] = {
    "submit": _submit,
    "reconcile": _reconcile,
    "prune": _prune,
    "status": _status,
    "check": _check,
    "expand": _expand,
    "emulator": _emulator,
}


# -- exit codes ---------------------------------------------------------------------------------


def _signal_exit(signum: int) -> int:
    return EXIT["SIGINT"] if signum == signal.SIGINT else EXIT["SIGTERM"]


def _exit_code(stats: RunStats) -> int:
    if stats.signal is not None:
        return _signal_exit(stats.signal)
    if stats.fatal is not None:
        return EXIT["fatal"]
    if stats.failed or stats.unknown:
        return EXIT["some_failed"]
    return EXIT["ok"]


def _prune_exit_code(stats: PruneStats) -> int:
    if stats.signal is not None:
        return _signal_exit(stats.signal)
    if stats.fatal is not None:
        return EXIT["fatal"]
    if stats.failed:
        return EXIT["some_failed"]
    return EXIT["ok"]


def _follow_exit(stats: Any, judged: int) -> int:
    if stats.signal is not None:
        return _signal_exit(stats.signal)
    return judged


def _combined_exit(submit_code: int, follow_code: int) -> int:
    """submit --follow: the worse of the two parts wins, in the order 3, 1, 4, 0 (a signal or
    a usage error of the submit part first)."""
    if submit_code not in (0, 1, 3, EXIT_NOT_FINAL):
        return submit_code
    if follow_code not in (0, 1, 3, EXIT_NOT_FINAL):
        return follow_code
    for code in (3, 1, EXIT_NOT_FINAL):
        if code in (submit_code, follow_code):
            return code
    return 0
