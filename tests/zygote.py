"""A fork server for the tests' ``batchsubmit`` processes: imports paid once, not per process.

    python -m tests.zygote SOCKET

Each ``batchsubmit`` process a test starts spent ~0.4 s of CPU importing (aiohttp, its TLS
contexts) before its first line of work: about half of the suite's CPU over ~190 processes.
This process imports batchsubmit once and, for each request from :mod:`tests.zygote_client`,
forks a supervisor, which forks the command: a real process with the client's stdin, stdout,
stderr, working directory, environment and arguments, running ``batchsubmit.__main__.main()``
and exiting through the interpreter's normal exit (atexit, threads, flushes).

The supervisor sends the client the command's pid (the client forwards the signals it gets)
and its wait status (the client ends the same way: an exit code, or killed by the same
signal); if the client dies first (SIGKILL, a test's timeout), the supervisor kills the
command. A request whose environment differs where imports read it (``PYTHON*``, the TLS
paths aiohttp reads at import, the locale) is answered "exec": the client then runs the real
``python -m batchsubmit``. Tests that need the real thing from its first line (a signal during
imports, SIGKILL of a process whose lock then must be free at once, the pid in the lock) use
:func:`tests.helpers.real_cli`.
"""

from __future__ import annotations

import array
import contextlib
import io
import json
import os
import pkgutil
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from typing import Any

from tests.zygote_client import receive

IMPORT_TIME_NAMES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "LANG", "LC_ALL", "LC_CTYPE")  # TZ: tzset()


def _import_time_view(env: dict[str, str]) -> dict[str, str]:
    """What of an environment was read at import (so must match the zygote's own)."""
    return {
        k: v
        for k, v in env.items()
        if (k.startswith("PYTHON") and k != "PYTHONUNBUFFERED")
        or k.startswith("AIOHTTP_")
        or k in IMPORT_TIME_NAMES
    }


def _preload() -> None:
    """Everything a command may import, imported now."""
    import batchsubmit
    import batchsubmit.__main__

    for module in pkgutil.walk_packages(batchsubmit.__path__, "batchsubmit."):
        __import__(module.name)
    for optional in ("uvloop", "tqdm"):
        with contextlib.suppress(ImportError):
            __import__(optional)


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request: a length-prefixed JSON document, and the client's fds 0, 1 and 2 (closed
    here if the request cannot be read)."""
    fds = array.array("i")
    head, ancillary, _flags, _addr = conn.recvmsg(4, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    try:
        return _read_request(conn, head), list(fds)
    except BaseException:
        for fd in fds:  # held here, a client's pipe would never reach its end
            os.close(fd)
        raise


def _read_request(conn: socket.socket, head: bytes) -> dict[str, Any]:
    (size,) = struct.unpack("!I", head)
    body = receive(conn, size)
    # stdlib json: arguments and environment may hold lone surrogates (bytes not UTF-8)
    request: dict[str, Any] = json.loads(body)
    return request


def _streams(unbuffered: bool) -> None:
    """sys.stdin/stdout/stderr anew on fds 0-2, as the interpreter makes them at start."""
    encoding = sys.stdout.encoding
    sys.stdin = sys.__stdin__ = open(0, encoding=encoding, closefd=False)  # type: ignore[misc]  # noqa: SIM115
    for fd, errors in ((1, "strict"), (2, "backslashreplace")):
        raw = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115
        stream = io.TextIOWrapper(
            raw,
            encoding=encoding,
            errors=errors,
            line_buffering=fd == 2 or os.isatty(fd),
            write_through=unbuffered,
        )
        if fd == 1:
            sys.stdout = sys.__stdout__ = stream  # type: ignore[misc]
        else:
            sys.stderr = sys.__stderr__ = stream  # type: ignore[misc]


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """In the command's process: the client's fds, directory, environment and arguments."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    tempfile.tempdir = None  # TMPDIR is read again
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _streams(bool(request["env"].get("PYTHONUNBUFFERED")))
    import batchsubmit.__main__ as entry

    sys.argv = [entry.__file__ or "batchsubmit", *request["argv"]]


def _supervise(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> bool:
    """In the supervisor: fork the command, tell the client its pid, then its wait status.
    Returns True in the command's process (which goes on to run batchsubmit)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become(request, fds)
        return True
    for fd in fds:
        os.close(fd)
    conn.sendall(b"P" + struct.pack("!q", pid))
    ended = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(ended, select.POLLIN)
    poller.register(conn, select.POLLIN | select.POLLHUP)
    while True:
        events = dict(poller.poll())
        if ended in events:
            break
        if conn.fileno() in events and not conn.recv(1):  # the client died: so does the command
            os.kill(pid, signal.SIGKILL)
            break
    _pid, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        conn.sendall(b"S" + struct.pack("!i", status))
    os._exit(0)


def serve(path: str) -> bool:
    """Answer requests until killed or orphaned; True only in a command's process."""
    _preload()
    own = _import_time_view(dict(os.environ))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(1.0)
    parent = os.getppid()
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test process is gone: so is its server
                return False
            continue
        conn.settimeout(None)
        try:
            request, fds = _receive(conn)
        except (OSError, EOFError, ValueError):
            conn.close()
            continue
        if len(fds) != 3 or _import_time_view(request["env"]) != own:
            for fd in fds:
                os.close(fd)
            conn.sendall(b"E")
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            return _supervise(conn, request, fds)
        for fd in fds:
            os.close(fd)
        conn.close()


if __name__ == "__main__":
    if serve(sys.argv[1]):
        from batchsubmit.__main__ import main

        raise SystemExit(main())
