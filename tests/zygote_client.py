"""``batchsubmit ARGS`` through the tests' fork server (:mod:`tests.zygote`); standard library only.

    python -I -S tests/zygote_client.py ARGS...

Started in ~10 ms instead of ~0.4 s: it hands its stdin, stdout and stderr, working directory,
environment and arguments to the server, forwards the signals it receives to the command, and
ends as the command ended (its exit code, or killed by the same signal). Without a server
(``BATCHSUBMIT_TEST_ZYGOTE`` unset or not answering), or when the server says the environment
differs where imports read it, it becomes the real ``python -m batchsubmit``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
command_pid = 0
pending: list[int] = []


def forward(signum: int, _frame: object) -> None:
    if command_pid:
        os.kill(command_pid, signum)
    else:
        pending.append(signum)


def real() -> None:
    os.execv(sys.executable, [sys.executable, "-m", "batchsubmit", *sys.argv[1:]])


def receive(conn: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes (the server reads its requests with it too)."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def main() -> None:
    global command_pid
    for forwarded in FORWARDED:
        signal.signal(forwarded, forward)
    path = os.environ.get("BATCHSUBMIT_TEST_ZYGOTE", "")
    if not path:
        real()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        real()
    request = json.dumps(
        {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    ).encode()
    conn.sendmsg(
        [struct.pack("!I", len(request))],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))],
    )
    conn.sendall(request)
    try:
        kind = receive(conn, 1)
    except (OSError, EOFError):
        kind = b"E"  # the server could not take it: nothing was started
    if kind == b"E":
        conn.close()
        real()
    (command_pid,) = struct.unpack("!q", receive(conn, 8))
    for early in pending:
        os.kill(command_pid, early)
    receive(conn, 1)
    (status,) = struct.unpack("!i", receive(conn, 4))
    if os.WIFSIGNALED(status):
        ended = os.WTERMSIG(status)
        signal.signal(ended, signal.SIG_DFL)
        os.kill(os.getpid(), ended)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
