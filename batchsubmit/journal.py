"""Write-ahead journal of create intents, and the lock that keeps two runs off one results file.

Before a create call is sent, its intent (source, name) is in the journal, flushed and synced:
a run killed at any moment leaves behind exactly the intents whose outcome may be missing
from the results file, and the next run looks those jobs up by name before creating anything.
Intents come in batches (the pool journals the next ``concurrency`` jobs at once, ahead of
their calls), and each batch costs one write and one fdatasync. The file is compacted to the
still-open intents every ``CHECKPOINT`` intents, after the results file itself has been
synced, so it stays small on long runs. Read back, only a torn last line (a crash mid-write)
is set aside: any other damage stops the run, since an intent skipped is a video created twice.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import orjson

from .durable import JOINED_LINES, lines_joined, sync_dir
from .errors import LockedError, UsageError
from .results import epoch, utc_at

__all__ = ["CHECKPOINT", "Intent", "Journal", "RunLock", "journal_services", "read_intents"]

CHECKPOINT = 10_000
FRESH = 0.5  # seconds: an intent's time older than this at its create's send is moved on


@dataclass(frozen=True, slots=True)
class Intent:
    """One journalled create: the video, its job name, the service it was for, when it was
    journalled (``service_url`` and ``at`` are "" in journals of older versions) and ``after``:
    the results file's size then, in bytes (-1 in older journals). A row that ends past
    ``after`` was written after the intent, whatever the wall clock said: order in an
    append-only file answers the intent, not times that a clock stepped back can reorder."""

    source: str
    name: str
    service_url: str = ""
    at: str = ""
    after: int = -1
    anchor: str = ""  # what the file held just before ``after`` (ResultsWriter.mark)


@dataclass(frozen=True, slots=True)
class _Open:
    """An open intent as the journal keeps it: the job name, the time the next run's settle
    counts from (as text and epoch), and the results file's size then with its anchor."""

    name: str
    at: str
    epoch: float
    after: int = -1
    anchor: str = ""


def journal_services(path: Path) -> set[str]:
    """The services a journal's intents were made for (their ``service_url``); raises
    UsageError, as :func:`read_intents` does, for a damaged line before the last."""
    return {
        entry["service_url"]
        for entry in _entries(path, lambda _message: None)
        if entry.get("service_url")
    }


def read_intents(path: Path, warn: Callable[[str], None]) -> list[Intent]:
    """The intents a journal holds, in order. A torn last line (a crash mid-write) is skipped
    with a warning; any other unreadable line raises UsageError naming it."""
    return [
        Intent(
            e["source"],
            e["name"],
            e.get("service_url", ""),
            e.get("at", ""),
            e.get("after", -1),
            e.get("anchor", ""),
        )
        for e in _entries(path, warn)
    ]


_REPAIR = (
    "nothing was sent: a journal read in part forgets an intent whose job may exist, and "
    "the video would be created again. Repair that line (an intent is one JSON object a line, "
    '{"source": "obs://...", "name": "<job name>"}, as batchsubmit wrote it), or delete it '
    "once you have checked that VAS has no job of that name; deleting the line of a job that "
    "exists creates its video a second time"
)


def _damaged(path: Path, number: int, what: str) -> UsageError:
    return UsageError(f"{path}:{number}: {what}; {_REPAIR}")


def _entries(path: Path, warn: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """Each intent line as a dict of strings (``source``, ``name``, maybe ``service_url``).
    Only a last line without its newline can be a crash's doing: unreadable, it is skipped
    with a warning. Damage anywhere else means lost intents, and raises."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the journal: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            problem, entry = _intent(line)
            if entry is not None:
                yield entry
            elif problem and not line.endswith(b"\n") and not lines_joined(line):
                warn(f"{path}:{number}: the last line was cut short by a crash; skipped")
            elif problem:
                if not line.endswith(b"\n"):  # lines joined by CRs, not one torn
                    problem = f"{problem}; {JOINED_LINES}"
                raise _damaged(path, number, problem)


def _intent(line: bytes) -> tuple[str, dict[str, Any] | None]:
    """(what is wrong, "" for a blank line; the intent, or None) of one journal line."""
    if not line.strip():
        return "", None
    try:
        data: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not a JSON object ({exc})", None
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an intent", None
    for key in ("source", "name"):
        if not isinstance(data.get(key), str):
            return f"no {key!r} string", None
    for key in ("service_url", "at"):
        if not isinstance(data.get(key, ""), str):
            return f"{key!r} is not a string", None
    if data.get("at") and epoch(data["at"]) is None:
        # The time decides which rows answer the intent: "0" would let last night's row
        # answer it (the job a killed --resubmit made left without a row), "zzz" skip the
        # settle wait before its lookup. Only our writer writes it, always a time.
        return f"'at' {data['at'][:40]!r} is not a time", None
    after = data.get("after", -1)
    if not isinstance(after, int) or isinstance(after, bool) or after < -1:
        # The size decides which rows answer the intent, as the time did: only our writer
        # writes it, always a size in bytes.
        return f"'after' {str(after)[:40]!r} is not a size in bytes", None
    if not isinstance(data.get("anchor", ""), str):
        return f"'anchor' {str(data['anchor'])[:40]!r} is not text", None
    return "", data


class Journal:
    """Records intents before their create calls; ``settle`` when their row is written.

    ``inherited``: this service's intents an earlier run left open, kept with their times
    until settled. ``kept``: another service's, which this run neither resolves nor forgets:
    they stay in the file as they were, for that service's next run or ``reconcile``."""

    def __init__(
        self,
        path: Path,
        *,
        durable: bool = True,
        inherited: Iterable[Intent] = (),
        kept: Iterable[Intent] = (),
        service_url: str = "",
        before_checkpoint: Callable[[], None] | None = None,
        position: Callable[[], tuple[int, str]] | None = None,
    ) -> None:
        """``position``: the results file's size in bytes, its rows so far on the OS (the
        writer's :meth:`~batchsubmit.results.ResultsWriter.mark`, with what the file holds just
        before it), recorded in each intent."""
        self.path = path
        self._durable = durable
        self._position = position
        # The inherited are unanswered as of now: only a row from here on can answer them.
        start = position() if position is not None else (-1, "")
        self._open: dict[str, _Open] = {
            i.source: _Open(
                i.name, i.at, epoch(i.at) or 0.0, *(start if start[0] >= 0 else (i.after, i.anchor))
            )
            for i in inherited
        }
        self._kept = [
            _entry_line(i.source, i.name, i.service_url, i.at, i.after, i.anchor) for i in kept
        ]
        # Each line names its service, so `reconcile` can resolve intents without a manifest.
        self._service_url = service_url
        self._before_checkpoint = before_checkpoint
        self._syncing = False
        self._since_checkpoint = 0
        self._file: IO[bytes] = self._rewrite()

    def _rewrite(self) -> IO[bytes]:
        """Replace the journal with just the open intents, atomically."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as handle:
            handle.writelines(self._kept)
            handle.writelines(self._line(s, entry) for s, entry in self._open.items())
            handle.flush()
            if self._durable:
                os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        sync_dir(self.path.parent, self._durable)
        return self.path.open("ab")

    def intend(self, intents: list[tuple[str, str]]) -> None:
        """Write the intents to create ``name`` for ``source``; :meth:`commit` makes them
        durable, and no create may be sent before it returns."""
        open_ = self._open
        line = self._line
        now = time.time()
        at = utc_at(now)  # one time a batch: the earliest its creates may be sent
        # the rows written so far are on the OS (the pool flushes before each batch)
        after, anchor = self._position() if self._position is not None else (-1, "")
        lines = []
        for source, name in intents:
            open_[source] = entry = _Open(name, at, now, after, anchor)
            lines.append(line(source, entry))
        self._file.writelines(lines)
        self._file.flush()
        self._since_checkpoint += len(lines)

    def sending(self, source: str, name: str) -> None:
        """A create is about to go out: the next run's settle wait counts from its intent's
        time, so that time is moved to now when it is more than ``FRESH`` old. A create may
        wait long after its batch was journalled (its start under --rate, a Retry-After pause,
        the backoff before a retry). Written through to the OS, not synced: a SIGKILL keeps
        it; a power cut may leave the older time."""
        now = time.time()
        entry = self._open.get(source)
        if entry is not None and now - entry.epoch <= FRESH:
            return
        # answered by rows since the intent
        after, anchor = (entry.after, entry.anchor) if entry is not None else (-1, "")
        self._open[source] = moved = _Open(name, utc_at(now), now, after, anchor)
        self._file.write(self._line(source, moved))
        self._file.flush()
        self._since_checkpoint += 1

    async def commit(self) -> None:
        """Sync what :meth:`intend` wrote, in a thread: storage that stalls must not stall the
        calls in flight. (Syncing on the event loop while syncs are fast bought nothing
        measurable once one sync covered a batch of up to 256 jobs, so it went.)"""
        if not self._durable:
            return
        self._syncing = True  # no checkpoint may swap the file under the thread
        try:
            await anyio.to_thread.run_sync(os.fdatasync, self._file.fileno())
        finally:
            self._syncing = False

    def _line(self, source: str, entry: _Open) -> bytes:
        return _entry_line(
            source, entry.name, self._service_url, entry.at, entry.after, entry.anchor
        )

    def settle(self, source: str) -> None:
        """The row of ``source`` is written: its intent may go at the next checkpoint, which
        syncs the results file first."""
        self._open.pop(source, None)

    def checkpoint_due(self) -> bool:
        return self._since_checkpoint >= CHECKPOINT and not self._syncing

    def checkpoint(self) -> None:
        """Sync the results file (via the hook), then shrink the journal to the open intents."""
        if self._before_checkpoint is not None:
            self._before_checkpoint()
        self._file.close()
        self._file = self._rewrite()
        self._since_checkpoint = 0

    @property
    def open_intents(self) -> dict[str, str]:
        """This service's open intents, source to job name."""
        return {source: entry.name for source, entry in self._open.items()}

    def close(self) -> None:
        """At the end of a run: forget what is settled; remove the file if nothing is left."""
        self.checkpoint()
        self._file.close()
        if not self._open and not self._kept:
            self.path.unlink(missing_ok=True)


def _entry_line(
    source: str, name: str, service_url: str, at: str, after: int = -1, anchor: str = ""
) -> bytes:
    entry: dict[str, str | int] = {"source": source, "name": name}
    if service_url:
        entry["service_url"] = service_url
    if at:
        entry["at"] = at
    if after >= 0:
        entry["after"] = after
        if anchor:
            entry["anchor"] = anchor
    return orjson.dumps(entry) + b"\n"


class RunLock:
    """An flock on ``<results>.lock``: the kernel drops it with its holder, so never stale."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self, started: str) -> None:
        try:
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process (it has not written its name yet)"
            handle.close()
            raise LockedError(
                f"another batchsubmit run is using these results: {holder}; "
                f"this run stops without submitting anything (lock file {self.path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {started}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
