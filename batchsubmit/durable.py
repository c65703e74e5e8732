"""Files that survive a crash: the append-only ones (the results file, the follow record and
the journals) share the torn-line rules, and files written whole (a collected result, the
report) one way to replace them. Plain file I/O, nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from .errors import UsageError

__all__ = ["JOINED_LINES", "drop_torn_tail", "lines_joined", "replaced", "sync_dir"]

_STEP = 65536  # bytes looked back at a time for the last complete line
JOINED_LINES = (
    "a carriage return (CR) inside what would be a torn last line: a crash cuts one line "
    "short, it never joins lines; the line endings were turned into CRs (an editor, unix2mac?). "
    "Convert them back to LF (e.g. tr '\\r' '\\n', then check the file)"
)


def lines_joined(tail: bytes) -> bool:
    """Whether a last line without its newline holds more than one line's start: our writers
    write a CR only right before a LF (CSV's CRLF; JSON escapes its CRs), so a CR anywhere but
    at its very end (a tear between CR and LF) means lines whose LFs became CRs."""
    return b"\r" in tail[:-1]


def drop_torn_tail(
    handle: IO[bytes],
    path: Path,
    warn: Callable[[str], None],
    *,
    begins: bytes,
    whole: Callable[[bytes], bool] = lambda _line: False,
    newline: bytes = b"\n",
) -> None:
    """Cut a last line that a crash left without its newline (the only damage an append-only
    file of whole lines can take), saying so. Looks back in 64 KiB steps, so a torn line
    longer than one step does not take the complete lines before it along.

    A last line that ``whole`` says is complete lost only its newline (an editor, a tool that
    re-saved the file): ``newline`` is added instead, and nothing is cut.

    A file that is one line without a newline is cut only if that line could be the start of
    one this file's writer writes (``begins``: the header, or how every line begins): anything
    else is another file given by mistake, and is refused (UsageError), never truncated."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return
    keep, end = 0, size
    joined = False  # a CR before the tail's last byte: lines joined, not one torn
    while end > 0:
        start = max(0, end - _STEP)
        handle.seek(start)
        chunk = handle.read(end - start)
        cut = chunk.rfind(b"\n")
        tail = chunk[cut + 1 :] if cut >= 0 else chunk
        joined = joined or (lines_joined(tail) if end == size else b"\r" in tail)
        if cut >= 0:
            keep = start + cut + 1
            break
        end = start
    if joined:
        handle.seek(keep)
        raise UsageError(f"{path}: {JOINED_LINES}; nothing was changed ({handle.read(60)!r}...)")
    handle.seek(keep)
    if size - keep <= _STEP and whole(handle.read(size - keep)):
        handle.seek(size)
        handle.write(newline)
        handle.flush()
        warn(f"{path}: the last line had no newline at its end; added one (the row is kept)")
        return
    handle.seek(keep)
    torn = handle.read(120)
    if keep == 0 and torn[: len(begins)] != begins[: len(torn)]:
        raise UsageError(
            f"{path}: not a file batchsubmit wrote (one line without a newline: {torn[:40]!r}); "
            "nothing was changed; pass another path"
        )
    warn(
        f"{path}: the last line was cut short by an earlier crash; set aside "
        f"({size - keep} bytes): {torn!r}"
    )
    handle.truncate(keep)


def sync_dir(directory: Path, durable: bool = True) -> None:
    """Make a rename or a new file in ``directory`` durable (fsync the directory itself)."""
    if not durable:
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replaced(path: Path, durable: bool = True) -> Iterator[IO[bytes]]:
    """A file to write ``path``'s new content into, renamed over it once the block ends
    without an error: a reader or a crash sees the old file or the new one, never half of
    one. ``durable``: the file is synced before the rename and the directory after it, so
    what the caller records next (a result COLLECTED) cannot outlive the file in a power cut.
    On an error the temporary file is removed and the error raised."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):  # never made (its folder is gone), or a directory: not ours
            temporary.unlink(missing_ok=True)
        raise
    sync_dir(path.parent, durable)
