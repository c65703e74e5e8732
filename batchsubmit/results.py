"""The results file: one row per job outcome, appended and flushed as each job finishes, and read
back as the ledger that tells the next run what is already done.

The columns are a contract (README "Results"); a test pins them. A row never spans lines (line
breaks in messages become spaces), so a torn last line can only ever be the last one, and the
writer cuts it off before appending (the journal still holds that job's intent).
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from .errors import UsageError
from .hashes import HashBuckets

__all__ = [
    "COLUMNS",
    "STATUSES",
    "Ledger",
    "Outcome",
    "ResultsWriter",
    "SourceHashes",
    "format_for",
    "iter_rows",
    "read_ledger",
    "utc_now",
]

Format = Literal["csv", "jsonl"]
STATUSES = ("submitted", "failed", "unknown", "duplicate")  # duplicate: never done
COLUMNS = (
    "source",
    "name",
    "job_id",
    "status",
    "http_status",
    "error_code",
    "error_msg",
    "attempts",
    "request_id",
    "submitted_at",
    "service_url",
    "reconciled",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One results row. ``submitted_at`` is when the outcome was known, UTC ISO 8601."""

    source: str
    name: str
    job_id: str
    status: str
    http_status: int
    error_code: str
    error_msg: str
    attempts: int
    request_id: str
    submitted_at: str
    service_url: str
    reconciled: bool = False


_second: list[tuple[int, str]] = [(-1, "")]


def utc_now() -> str:
    """Now, as ``2026-11-28T02:30:00.123Z`` (the seconds part is formatted once a second)."""
    now = time.time()
    second = int(now)
    cached, text = _second[0]
    if second != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second[0] = (second, text)
    return f"{text}.{int((now - second) * 1000):03d}Z"


def format_for(path: Path, explicit: str | None) -> Format:
    """The results format: ``--format`` if given, else from the file's extension."""
    if explicit is not None:
        if explicit not in ("csv", "jsonl"):
            raise UsageError(f"--format must be csv or jsonl, not {explicit!r}")
        return "jsonl" if explicit == "jsonl" else "csv"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise UsageError(
        f"{path}: cannot tell the results format from {suffix or 'no extension'!r};"
        " name it .csv or .jsonl, or pass --format"
    )


_SEPARATORS = len(COLUMNS) - 1
ROW_BUFFER = 1 << 20  # bytes: room for many times the rows that come between two flushes
_NEEDS_QUOTES = re.compile(r'["\r\n]')


class ResultsWriter:
    """Appends rows to the results file. Rows reach the OS in batches (:meth:`flush`): the
    pool flushes before it journals its next batch of jobs, and the runner once a second. A
    row still in the buffer when the process is killed has its intent in the journal, which
    the next run resolves by lookup."""

    def __init__(self, path: Path, fmt: Format, warn: Callable[[str], None]) -> None:
        self.path = path
        self.format = fmt
        self.rows = 0
        try:
            self._file: IO[bytes] = path.open("a+b", buffering=ROW_BUFFER)
        except OSError as exc:
            raise UsageError(f"{path}: cannot open the results file: {exc.strerror}") from None
        self._drop_torn_tail(warn)
        self._file.seek(0, os.SEEK_END)
        if fmt == "csv" and self._file.tell() == 0:
            self._file.write((",".join(COLUMNS) + "\r\n").encode())
            self._file.flush()
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer)

    def _drop_torn_tail(self, warn: Callable[[str], None]) -> None:
        handle = self._file
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        # Look back in 64 KiB steps for the last newline: a torn line longer than one step
        # must not take the complete rows before it along.
        keep = 0
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            cut = handle.read(end - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        handle.seek(keep)
        torn = handle.read(120)
        warn(
            f"{self.path}: the last line was cut short by an earlier crash; set aside "
            f"({size - keep} bytes): {torn!r}"
        )
        handle.truncate(keep)

    def write(self, outcome: Outcome) -> None:
        if self.format == "jsonl":
            line = orjson.dumps(outcome) + b"\n"
        else:
            o = outcome
            fields = (
                o.source,
                o.name,
                o.job_id,
                o.status,
                str(o.http_status),
                o.error_code,
                o.error_msg,
                str(o.attempts),
                o.request_id,
                o.submitted_at,
                o.service_url,
                "True" if o.reconciled else "False",
            )
            text = ",".join(fields)
            if text.count(",") == _SEPARATORS and not _NEEDS_QUOTES.search(text):
                line = (text + "\r\n").encode()
            else:  # a field with a comma, quote or line break: the csv module quotes it
                buffer = self._buffer
                buffer.seek(0)
                buffer.truncate()
                self._csv.writerow(fields)
                line = buffer.getvalue().encode()
        self._file.write(line)
        self.rows += 1

    def flush(self) -> None:
        self._file.flush()

    def sync(self) -> None:
        """Make every row written so far durable (before the journal forgets their intents)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class SourceHashes:
    """The hashes of submitted sources: a sorted array of 8 bytes each (a set would take about
    60 bytes a row, and ledgers grow every night), plus the few added during the run."""

    def __init__(self, hashes: Iterable[int] = ()) -> None:
        self._sorted = HashBuckets(hashes).sorted()
        self._added: set[int] = set()

    @classmethod
    def from_buckets(cls, buckets: HashBuckets) -> SourceHashes:
        found = cls()
        found._sorted = buckets.sorted()
        return found

    def __contains__(self, value: object) -> bool:
        if value in self._added:
            return True
        found = self._sorted
        at = bisect_left(found, value)  # type: ignore[call-overload]
        return bool(at < len(found) and found[at] == value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceHashes):
            return NotImplemented
        return self._sorted == other._sorted and self._added == other._added

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._sorted) + len(self._added)

    def add(self, value: int) -> None:
        self._added.add(value)


@dataclass
class Ledger:
    """What earlier runs did for one service: the hashes of submitted sources and the unknowns."""

    done: SourceHashes = field(default_factory=SourceHashes)
    unknown: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    other_services: int = 0
    bad_lines: int = 0

    def is_done(self, source: str) -> bool:
        return hash(source) in self.done


def iter_rows(path: Path, fmt: Format) -> Iterator[Row]:
    """The readable rows of a results file as (source, name, status, service_url)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the results file: {exc.strerror}") from None
    with handle:
        rows = _csv_rows(handle, path) if fmt == "csv" else _jsonl_rows(handle)
        for _number, row in rows:
            if row is not None:
                yield row


def read_ledger(path: Path, fmt: Format, service_url: str, warn: Callable[[str], None]) -> Ledger:
    """Read a results file back, streaming: memory grows by 8 bytes per submitted row.

    A source is done once any row says ``submitted``; an ``unknown`` row counts until a later
    ``failed`` row (a lookup that found no job) resolves it.
    """
    ledger = Ledger()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return ledger
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the results file: {exc.strerror}") from None
    submitted = HashBuckets()
    unknown = ledger.unknown
    with handle:
        rows = _csv_rows(handle, path) if fmt == "csv" else _jsonl_rows(handle)
        for number, row in rows:
            if row is None:
                ledger.bad_lines += 1
                warn(f"{path}:{number}: unreadable results line skipped (cut short by a crash?)")
                continue
            source, name, status, row_service = row
            ledger.rows += 1
            if row_service != service_url:
                ledger.other_services += 1
            elif status == "submitted":
                submitted.add(hash(source))
            elif status == "unknown":
                unknown[source] = name
            elif status == "failed":
                unknown.pop(source, None)
    ledger.done = SourceHashes.from_buckets(submitted)
    del submitted
    ledger.unknown = {s: n for s, n in unknown.items() if not ledger.is_done(s)}
    return ledger


Row = tuple[str, str, str, str]


def _csv_rows(handle: IO[bytes], path: Path) -> Iterator[tuple[int, Row | None]]:
    with io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="") as text:
        yield from _csv_text_rows(text, path)


def _csv_text_rows(text: IO[str], path: Path) -> Iterator[tuple[int, Row | None]]:
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return
    if tuple(header[: len(COLUMNS)]) != COLUMNS:
        raise UsageError(
            f"{path}: not a batchsubmit results file (its header is {header[:4]}...);"
            " pass another --results"
        )
    width = len(COLUMNS)
    source_at, name_at = COLUMNS.index("source"), COLUMNS.index("name")
    status_at, service_at = COLUMNS.index("status"), COLUMNS.index("service_url")
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield reader.line_num, None
            continue
        if len(fields) < width or fields[status_at] not in STATUSES:
            yield reader.line_num, None
            continue
        yield (
            reader.line_num,
            (fields[source_at], fields[name_at], fields[status_at], fields[service_at]),
        )


def _jsonl_rows(handle: IO[bytes]) -> Iterator[tuple[int, Row | None]]:
    for number, line in enumerate(handle, 1):
        try:
            data: Any = orjson.loads(line)
            row = (data["source"], data["name"], data["status"], data["service_url"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            yield number, None
            continue
        yield number, row if row[2] in STATUSES else None
