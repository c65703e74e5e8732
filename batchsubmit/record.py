"""The follow record: what batchsubmit last saw of each job it created, beside the results file.

Form: append-only JSONL, ``<results>.follow.jsonl``, one line per job each time something about
it changes (state, error, hosting result), written by ``status`` and read back by ``status``
and ``prune``; the latest line of a job wins. Why JSONL and not SQLite: it is the results
file's own crash model (a SIGKILL loses at most the line being written, and a torn last line
is cut off and named), it can be read with ``grep`` and ``jq`` the morning after, and the two
queries the tools need (the jobs still to follow; the latest state of one job for the report)
stream in one pass with memory for the non-final jobs only, plus 16 bytes a job for the
report's offset index (:class:`OffsetIndex`). :func:`compact` rewrites the file to one line a
job when superseded lines outnumber the live ones, so it grows with the jobs, not the passes.

Every writer holds the results file's lock (``<results>.lock``), so there is one writer at a
time, and a reader under that lock never sees a line being written.
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

import orjson

from .durable import drop_torn_tail, lines_joined, sync_dir
from .errors import UsageError

__all__ = [
    "FINAL_STATES",
    "HOSTING_PENDING",
    "JobRecord",
    "OffsetIndex",
    "RecordWriter",
    "collectable",
    "compact",
    "is_final",
    "iter_latest",
    "iter_lines",
    "iter_raw",
    "read_record",
    "record_path",
]

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CREATE_FAILED", "START_FAILED", "LOST", "PRUNED"})
HOSTING_PENDING = frozenset({"", "NOT_GENERATED"})  # "": not seen yet (only show returns it)
WRITE_BUFFER = 1 << 20


def record_path(results: Path) -> Path:
    """``<results>.follow.jsonl`` beside the resolved results file (a symlinked ledger and its
    record stay together)."""
    resolved = results.resolve()
    return resolved.with_name(resolved.name + ".follow.jsonl")


def is_final(state: str, hosting: bool, hosting_status: str) -> bool:
    """A job is final when nothing more will happen to it on its own: SUCCEEDED, FAILED, the
    two that never ran, LOST and PRUNED. A SUCCEEDED job with a hosting output is final only
    once its hosting result is no longer NOT_GENERATED (Huawei's demo polls until then);
    unknown state names are not final."""
    if state not in FINAL_STATES:
        return False
    return not (state == "SUCCEEDED" and hosting and hosting_status in HOSTING_PENDING)


def collectable(state: str, hosting_status: str, overdue: float | None, now: float) -> bool:
    """A hosting result still to be had: AVAILABLE, its job still on the service (not PRUNED
    or LOST: the result went with it) and not past its overdue time (epoch seconds)."""
    if hosting_status != "AVAILABLE" or state in ("PRUNED", "LOST"):
        return False
    return overdue is None or overdue > now


@dataclass(frozen=True, kw_only=True, slots=True)
class JobRecord:
    """The latest known state of one job. ``state`` is VAS's verbatim, or LOST / PRUNED."""

    job_id: str
    source: str
    name: str
    state: str
    final: bool
    error_code: str = ""
    error_msg: str = ""
    created_at: str = ""
    updated_at: str = ""
    hosting: bool = False
    hosting_status: str = ""
    hosting_overdue_at: str = ""
    checked_at: str = ""
    final_at: str = ""


_FIELDS = tuple((f.name, f.type) for f in fields(JobRecord))
_BOOLS = frozenset(name for name, kind in _FIELDS if kind in ("bool", bool))
_REQUIRED = ("job_id", "source", "name", "state", "final")


def to_line(record: JobRecord) -> bytes:
    """One record as one JSONL line (orjson escapes line breaks, so a line is a record)."""
    return orjson.dumps(record) + b"\n"


def from_json(data: Any) -> JobRecord:
    """A record from a parsed line; raises ValueError when it is not one. Unknown keys are
    ignored (a newer version may add some); missing optional ones take their defaults."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    values: dict[str, Any] = {}
    for name, _kind in _FIELDS:
        if name not in data:
            if name in _REQUIRED:
                raise ValueError(f"no {name!r}")
            continue
        value = data[name]
        if name in _BOOLS:
            if not isinstance(value, bool):
                raise ValueError(f"{name!r} is not a boolean")
        elif not isinstance(value, str):
            raise ValueError(f"{name!r} is not a string")
        values[name] = value
    if not values["job_id"]:
        raise ValueError("empty 'job_id'")
    record = JobRecord(**values)
    # ``final`` is the rule's word on the other fields, and status writes it so: a line that
    # says otherwise was edited, and believed, a job not final could be pruned (its result
    # not generated yet) or never followed again.
    if record.final != is_final(record.state, record.hosting, record.hosting_status):
        raise ValueError(
            f"'final' is {str(record.final).lower()} for state {record.state!r} "
            f"(hosting {str(record.hosting).lower()}, hosting_status "
            f"{record.hosting_status!r}), which the rules call "
            f"{'not final' if record.final else 'final'}"
        )
    return record


def iter_lines(path: Path, warn: Callable[[str], None]) -> Iterator[tuple[int, JobRecord]]:
    """Every record line, in order, as (byte offset, record). A missing file has none. A torn
    last line (no newline at the end: a crash mid-write) is skipped with a warning; any other
    unreadable line is damage: UsageError naming ``file:line``, before anything is sent."""
    for at, number, data in iter_raw(path, warn):
        try:
            record = from_json(data)
        except ValueError as exc:
            raise _damaged(path, number, exc) from None
        yield at, record


def iter_raw(path: Path, warn: Callable[[str], None]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Every record line as (byte offset, line number, parsed object) with a string
    ``job_id`` and a boolean ``final`` (the rest is checked by :func:`from_json`): for readers
    that need only those two of most lines."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the follow record: {exc.strerror}") from None
    with handle:
        offset = 0
        for number, line in enumerate(handle, 1):
            at = offset
            offset += len(line)
            try:
                data = orjson.loads(line)
                if (
                    type(data) is not dict
                    or type(data.get("job_id")) is not str
                    or not data["job_id"]
                    or type(data.get("final")) is not bool
                ):
                    raise ValueError("not a record (job_id and final are required)")
            except (orjson.JSONDecodeError, ValueError) as exc:
                if not line.endswith(b"\n") and not lines_joined(line):
                    warn(
                        f"{path}:{number}: the last line was cut short by an earlier crash; "
                        "ignored (it is rewritten when that job is next seen)"
                    )
                    return
                raise _damaged(path, number, exc) from None
            yield at, number, data


def _damaged(path: Path, number: int, exc: Exception) -> UsageError:
    return UsageError(
        f"{path}:{number}: not a follow record line ({exc}); the file is damaged: "
        "move it aside to rebuild it from the service with `batchsubmit status`"
    )


def read_record(path: Path, warn: Callable[[str], None]) -> dict[str, JobRecord]:
    """The latest record of every job, by job id. Holds them all: fine for thousands of
    jobs; for a ledger of millions stream with :func:`iter_latest` instead."""
    latest: dict[str, JobRecord] = {}
    for _at, record in iter_lines(path, warn):
        latest[record.job_id] = record
    return latest


class OffsetIndex:
    """Where the latest line of each job starts in the record file: 16 bytes a job (two sorted
    arrays of hash and offset, sorted bucket by bucket as in :mod:`hashes`), where a dict of
    job ids would take about 150. Look-ups confirm the job id on the line read, so a hash
    collision costs a scan, never a wrong row."""

    def __init__(self) -> None:
        self._hashes = [array("q") for _ in range(256)]
        self._offsets = [array("q") for _ in range(256)]
        self.lines = 0

    def add(self, job_id: str, offset: int) -> None:
        key = hash(job_id)
        bucket = (key >> 56) + 128
        self._hashes[bucket].append(key)
        self._offsets[bucket].append(offset)
        self.lines += 1

    def freeze(self, *, largest: bool = False) -> None:
        """Sort each bucket and keep, for each hash, the value added last (the latest line),
        or with ``largest`` the largest value added."""
        for index in range(256):
            keys, values = self._hashes[index], self._offsets[index]
            if largest:  # sorted by (key, value): the last of a key is its largest
                pairs = sorted(zip(keys, values, strict=True))
            else:  # sorted by (key, position): the last of a key was added last
                pairs = [
                    (key, values[at])
                    for key, at in sorted(zip(keys, range(len(keys)), strict=True))
                ]
            hashes, offsets = array("q"), array("q")
            for key, value in pairs:
                if hashes and hashes[-1] == key:
                    offsets[-1] = value
                else:
                    hashes.append(key)
                    offsets.append(value)
            self._hashes[index], self._offsets[index] = hashes, offsets

    def __len__(self) -> int:
        return sum(map(len, self._hashes))

    def offset(self, job_id: str) -> int | None:
        key = hash(job_id)
        bucket = (key >> 56) + 128
        hashes = self._hashes[bucket]
        at = bisect_left(hashes, key)
        if at < len(hashes) and hashes[at] == key:
            return self._offsets[bucket][at]
        return None

    @classmethod
    def build(cls, path: Path, warn: Callable[[str], None]) -> OffsetIndex:
        index = cls()
        for at, record in iter_lines(path, warn):
            index.add(record.job_id, at)
        index.freeze()
        return index


class RecordReader:
    """Random access to the latest record of a job, through an :class:`OffsetIndex`."""

    def __init__(self, path: Path, index: OffsetIndex) -> None:
        self._path = path
        self._index = index
        self._handle: IO[bytes] | None = None

    def get(self, job_id: str) -> JobRecord | None:
        offset = self._index.offset(job_id)
        if offset is None:
            return None
        if offset < 0:  # an index may mark some lines by storing ~offset
            offset = ~offset
        if self._handle is None:
            self._handle = self._path.open("rb")
        self._handle.seek(offset)
        try:
            record = from_json(orjson.loads(self._handle.readline()))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise UsageError(
                f"{self._path}: not a follow record line at byte {offset} ({exc})"
            ) from None
        if record.job_id == job_id:
            return record
        return self._scan(job_id)  # two job ids share a hash: rare enough to read it all

    def _scan(self, job_id: str) -> JobRecord | None:
        found = None
        for _at, record in iter_lines(self._path, lambda _m: None):
            if record.job_id == job_id:
                found = record
        return found

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def iter_latest(path: Path, warn: Callable[[str], None]) -> Iterator[JobRecord]:
    """The latest record of every job, streamed in the order of their latest lines, in two
    passes over the file: memory is the offset index (16 bytes a job), not the records."""
    index = OffsetIndex.build(path, warn)
    for at, record in iter_lines(path, lambda _m: None):
        if index.offset(record.job_id) == at:
            yield record


def compact(path: Path, warn: Callable[[str], None], *, durable: bool = True) -> int:
    """Rewrite the record to one line a job (the latest), atomically, when superseded lines
    outnumber the live ones; returns the lines dropped (0 when it was not worth it). Call it
    only under the results file's lock."""
    index = OffsetIndex.build(path, warn)
    live = len(index)
    if index.lines - live <= live:
        return 0
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb", buffering=WRITE_BUFFER) as out:
        for at, record in iter_lines(path, lambda _m: None):
            if index.offset(record.job_id) == at:
                out.write(to_line(record))
        out.flush()
        if durable:
            os.fsync(out.fileno())
    os.replace(temporary, path)
    sync_dir(path.parent, durable)
    return index.lines - live


def _whole_line(line: bytes) -> bool:
    """A last line that lost only its newline (an editor re-saved the file) is a whole
    record: cutting it would forget what it says (a result collected, a job pruned)."""
    try:
        from_json(orjson.loads(line))
    except (orjson.JSONDecodeError, ValueError):
        return False
    return True


class RecordWriter:
    """Appends records. :meth:`append` buffers; :meth:`sync` makes everything appended so far
    durable (flush + fsync); :meth:`close` syncs too. A torn last line left by a crash is cut
    off (with a warning) before the first append, so it cannot glue onto a new line."""

    def __init__(
        self,
        path: Path,
        warn: Callable[[str], None] | None = None,
        *,
        durable: bool = True,
    ) -> None:
        self.path = path
        self.appended = 0
        self._durable = durable
        created = not path.exists()
        try:
            self._file: IO[bytes] = path.open("a+b", buffering=WRITE_BUFFER)
        except OSError as exc:
            raise UsageError(f"{path}: cannot open the follow record: {exc.strerror}") from None
        drop_torn_tail(
            self._file, path, warn or (lambda _m: None), begins=b'{"job_id":', whole=_whole_line
        )
        self._file.seek(0, os.SEEK_END)
        if created:
            sync_dir(path.parent, durable)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def append(self, record: JobRecord) -> None:
        self._file.write(to_line(record))
        self.appended += 1

    def flush(self) -> None:
        self._file.flush()

    def sync(self) -> None:
        self._file.flush()
        if self._durable:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self.sync()
        finally:
            self._file.close()
