"""The results file: one row per job outcome, appended and flushed as each job finishes, and read
back as the ledger that tells the next run what is already done.

The columns are a contract (README "Results"); a test pins them. The schema only grows: new
columns go after the old ones, and a reader keys on the first ``BASE_COLUMNS`` and ignores
columns it does not know, so old files stay readable and old versions read new files. Each
row carries its schema version in the ``schema`` column (rows without one are schema 1). To
add a column: append it to COLUMNS (never insert), add it to Outcome and to
``ResultsWriter.write``, and bump SCHEMA; files with the old header keep their columns.

A row is always one physical line (the writer turns control characters into spaces and caps
long messages), so the reader can tell exactly which line is damaged. The only damage it
tolerates is a torn last line (power loss), which the writer cuts before appending (the
journal still holds that job's intent); any other unreadable line stops the run before any
request: a ledger read in part would submit again every video it failed to read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from .durable import JOINED_LINES, drop_torn_tail, lines_joined
from .errors import UsageError
from .hashes import HashBuckets, stable_hash
from .vas import CONTROL, ServiceIdentity, service_identity

__all__ = [
    "BASE_COLUMNS",
    "COLUMNS",
    "ERROR_MSG_MAX",
    "SCHEMA",
    "STATUSES",
    "Ledger",
    "Outcome",
    "ResultRow",
    "ResultsWriter",
    "SourceHashes",
    "format_for",
    "iter_results",
    "iter_rows",
    "read_ledger",
    "utc_now",
]

Format = Literal["csv", "jsonl"]
STATUSES = ("submitted", "failed", "unknown", "duplicate")  # duplicate: never done
# Schema 1: what every results file starts with, in this order (the reader needs no more).
BASE_COLUMNS = (
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
SCHEMA = 2  # schema 2 = schema 1 + the ``schema`` column
COLUMNS = (*BASE_COLUMNS, "schema")
ERROR_MSG_MAX = 2000  # characters: far below what the reader takes back (csv's field limit)
BOM = b"\xef\xbb\xbf"
ANCHOR = 64  # bytes: what an intent records of the file just before its place


def anchor_of(data: bytes) -> str:
    """What an intent records of the ``ANCHOR`` bytes before its place in the results file."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _anchor_at(fileno: int, size: int) -> str:
    start = max(0, size - ANCHOR)
    return anchor_of(os.pread(fileno, size - start, start))


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


def epoch(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 UTC time (:func:`utc_now`'s, or VAS's
    "2018-06-12T13:00:01Z"), or None; a time without a zone is read as UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def utc_now() -> str:
    """Now, as ``2026-11-28T02:30:00.123Z``."""
    return utc_at(time.time())


def utc_at(moment: float) -> str:
    """``moment`` (epoch seconds) as :func:`utc_now` writes times."""
    second = int(moment)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{text}.{int((moment - second) * 1000):03d}Z"


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


ROW_BUFFER = 1 << 20  # bytes: room for many times the rows that come between two flushes
_SCHEMA_TAIL = b',"schema":' + str(SCHEMA).encode() + b"}\n"


class ResultsWriter:
    """Appends rows to the results file. Rows reach the OS in batches (:meth:`flush`): the
    pool flushes before it journals its next batch of jobs, and the runner once a second. A
    row still in the buffer when the process is killed has its intent in the journal, which
    the next run resolves by lookup.

    A CSV file that already has a header gets rows in that header's columns (an older file
    keeps its columns; columns this version does not know are left empty)."""

    def __init__(self, path: Path, fmt: Format, warn: Callable[[str], None]) -> None:
        self.path = path
        self.format = fmt
        self.rows = 0
        try:
            self._file: IO[bytes] = path.open("a+b", buffering=ROW_BUFFER)
        except OSError as exc:
            raise UsageError(f"{path}: cannot open the results file: {exc.strerror}") from None
        try:
            first = (",".join(COLUMNS) + "\r\n").encode() if fmt == "csv" else b'{"source":'
            whole, newline = _whole_row_rule(self._file, fmt)
            drop_torn_tail(self._file, path, warn, begins=first, whole=whole, newline=newline)
            self._columns = self._header_columns() if fmt == "csv" else None
        except BaseException:
            self._file.close()
            raise
        self._file.seek(0, os.SEEK_END)
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer)

    def _header_columns(self) -> list[int] | None:
        """Write the header of a new CSV file; for an existing one, where each of its columns
        is in COLUMNS (-1: a column this version does not know), or None if they are COLUMNS."""
        self._file.seek(0)
        first = self._file.readline()
        if not first:
            self._file.write((",".join(COLUMNS) + "\r\n").encode())
            self._file.flush()
            return None
        header = _csv_header(first, self.path)
        if tuple(header) == COLUMNS:
            return None
        return [COLUMNS.index(name) if name in COLUMNS else -1 for name in header]

    def write(self, outcome: Outcome) -> None:
        if len(outcome.error_msg) > ERROR_MSG_MAX:
            outcome = replace(outcome, error_msg=outcome.error_msg[: ERROR_MSG_MAX - 1] + "…")
        if self.format == "jsonl":
            line = orjson.dumps(outcome)[:-1] + _SCHEMA_TAIL
        else:
            o = outcome
            fields: tuple[str, ...] | list[str] = (
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
                str(SCHEMA),
            )
            if self._columns is not None:
                fields = [fields[i] if i >= 0 else "" for i in self._columns]
            text = ",".join(fields)
            if CONTROL.search(text):  # a row is one line, whatever a message holds
                fields = [CONTROL.sub(" ", f) for f in fields]
                text = ",".join(fields)
            # Nothing to quote: the csv module's output without the csv module. Kept on the
            # benchmark's word (issue 13, 0 ms, pinned): 3% of the CPU of a create.
            if '"' not in text and text.count(",") == len(fields) - 1:
                line = (text + "\r\n").encode()
            else:  # a field with a comma or a quote: the csv module quotes it
                buffer = self._buffer
                buffer.seek(0)
                buffer.truncate()
                self._csv.writerow(fields)
                line = buffer.getvalue().encode()
        self._file.write(line)
        self.rows += 1

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        """The file's size once the rows written so far are on the OS (flushed): a row written
        from now on ends past it (the journal records it in each intent)."""
        self._file.flush()
        return self._file.tell()

    def mark(self) -> tuple[int, str]:
        """:meth:`tell`, and what the file holds just before it (:func:`anchor_of`): a line
        deleted or edited before it since (a damaged line, as a refusal asks) moves every row
        after it back, and the size alone would take a row written since for one from before."""
        size = self.tell()
        return size, _anchor_at(self._file.fileno(), size)

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
    """What earlier runs did for one service: the hashes of submitted sources and the unknowns.

    ``rows`` counts every row read. Rows for the same project and service reached through
    another endpoint (another host, port or spelling) count as this service's, and also in
    ``other_endpoint``; rows of another project or service mark nothing done and are counted
    in ``other_services``. One example URL of each is kept for the message.
    """

    done: SourceHashes = field(default_factory=SourceHashes)
    unknown: dict[str, str] = field(default_factory=dict)
    # the hashes of every job id this service's rows name: a lookup never takes one of them
    # for the job of a create made since (a --resubmit finds last night's job by name too)
    jobs: SourceHashes = field(default_factory=SourceHashes)
    # sources of the intents asked about (read_ledger's ``intents``) with a row written since
    answered: set[str] = field(default_factory=set)
    rows: int = 0
    other_services: int = 0
    other_endpoint: int = 0
    other_endpoint_done: int = 0  # of those, the submitted ones: what counts as done
    other_service_url: str = ""
    other_endpoint_url: str = ""
    bad_lines: int = 0

    def is_done(self, source: str) -> bool:
        return stable_hash(source) in self.done

    def mark_done(self, source: str) -> None:
        """Record a source as submitted during this run (a job found by lookup, say)."""
        self.done.add(stable_hash(source))

    def recorded(self, job_id: str) -> bool:
        """Whether a row of this service names the job (it was recorded before this run).
        Python's own ``hash``: these hashes never leave the process, and it costs a tenth of
        :func:`stable_hash` (a million-row ledger read 1.5 s slower with that)."""
        return hash(job_id) in self.jobs


Row = tuple[str, str, str, str]  # source, name, status, service_url: what the ledger needs


@dataclass(frozen=True, slots=True)
class ResultRow:
    """The columns of a results row that follow and prune read (all text, as written)."""

    source: str
    name: str
    job_id: str
    status: str
    error_code: str
    error_msg: str
    submitted_at: str
    service_url: str


_LEDGER_FIELDS = ("source", "name", "status", "service_url")
_READ_FIELDS = (*_LEDGER_FIELDS, "job_id", "submitted_at")  # what read_ledger needs
_RESULT_FIELDS = tuple(f.name for f in fields(ResultRow))


def iter_rows(path: Path, fmt: Format) -> Iterator[Row]:
    """The rows of a results file as (source, name, status, service_url); a damaged line
    (other than a torn last one) raises UsageError naming it."""
    for values in _iter_fields(path, fmt, _LEDGER_FIELDS):
        yield values[0], values[1], values[2], values[3]


def iter_results(path: Path, fmt: Format) -> Iterator[ResultRow]:
    """Every row of a results file, with its job id and error (for follow and prune), read as
    strictly as the ledger: a damaged line (other than a torn last one) raises UsageError
    naming it, and a missing file says so."""
    for values in _iter_fields(path, fmt, _RESULT_FIELDS):
        yield ResultRow(*values)


def _iter_fields(path: Path, fmt: Format, names: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such results file") from None
    except OSError as exc:
        if os.path.isdir(path):
            raise UsageError(f"{path}: the results path is a directory; name a file") from None
        raise UsageError(f"{path}: cannot read the results file: {exc.strerror}") from None
    with handle:
        for _number, row in _rows(handle, path, fmt, names):
            if row is not None:
                yield row


_SAME, _OTHER_ENDPOINT, _OTHER_SERVICE = 0, 1, 2
_KINDS_CACHED = 1000


def read_ledger(
    path: Path,
    fmt: Format,
    service_url: str,
    warn: Callable[[str], None],
    intents: Mapping[str, str] | None = None,
    after: Mapping[str, tuple[int, str]] | None = None,
) -> Ledger:
    """Read a results file back, streaming: memory grows by 8 bytes per submitted row, and 8
    per job id.

    A source is done once any row says ``submitted``; an ``unknown`` row counts until a later
    row resolves it: ``submitted`` (its job found) or ``failed`` (no job found). A row from
    before does not: after a ``--resubmit``, last night's row says nothing of tonight's job.
    Rows count for this service when their ``service_url`` names the same project and service
    (:func:`vas.service_identity`), however the endpoint was spelled. ``after`` (source to the
    file's size when its intent was journalled): those with a row that ends past that size,
    written after the intent in this append-only file, are in ``Ledger.answered``; no wall
    clock decides it (one stepped back between an intent and its row timed the row before
    it). An ``after`` with an anchor (:meth:`ResultsWriter.mark`) that the file no longer
    holds just before that size (a line before it deleted or edited) falls back to the time.
    ``intents`` (source to the time it was journalled), for intents of older journals,
    without their size: those with a row written at that time or later. Raises UsageError for
    a damaged line.
    """
    ledger = Ledger()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return ledger
    except OSError as exc:
        if os.path.isdir(path):
            raise UsageError(f"{path}: the results path is a directory; name a file") from None
        raise UsageError(f"{path}: cannot read the results file: {exc.strerror}") from None
    kind_of = _Kinds(service_url)
    submitted = HashBuckets()
    jobs = HashBuckets()
    unknown = ledger.unknown
    asked = intents or {}
    with handle:
        ordered = _still_in_place(handle, after or {})
        for number, row in _rows(handle, path, fmt, _READ_FIELDS):
            if row is None:
                ledger.bad_lines += 1
                warn(f"{path}:{number}: the last line was cut short by a crash; skipped")
                continue
            source, name, status, row_service, job_id, at = row
            ledger.rows += 1
            kind = kind_of(row_service)
            if kind == _OTHER_SERVICE:
                ledger.other_services += 1
                ledger.other_service_url = ledger.other_service_url or row_service
                continue
            if kind == _OTHER_ENDPOINT:
                ledger.other_endpoint += 1
                ledger.other_endpoint_url = ledger.other_endpoint_url or row_service
            if job_id:
                jobs.add(hash(job_id))
            if source in ordered:
                # Where the row ends: the handle is read a line at a time, no further ahead.
                if handle.tell() > ordered[source]:
                    ledger.answered.add(source)
            elif source in asked and at >= asked[source]:
                ledger.answered.add(source)
            if status == "submitted":
                submitted.add(stable_hash(source))
                if kind == _OTHER_ENDPOINT:
                    ledger.other_endpoint_done += 1
                unknown.pop(source, None)  # a lookup found it (or a create made since)
            elif status == "unknown":
                unknown[source] = name
            elif status == "failed":
                unknown.pop(source, None)
    ledger.done = SourceHashes.from_buckets(submitted)
    ledger.jobs = SourceHashes.from_buckets(jobs)
    del submitted, jobs
    return ledger


def _still_in_place(handle: IO[bytes], after: Mapping[str, tuple[int, str]]) -> dict[str, int]:
    """source -> size of the ``after`` whose place the file still holds as it was (no anchor:
    an intent that recorded none is taken at its size)."""
    held: dict[tuple[int, str], bool] = {}
    fileno = handle.fileno()
    ordered = {}
    for source, (size, anchor) in after.items():
        place = (size, anchor)
        if place not in held:
            held[place] = not anchor or _anchor_at(fileno, size) == anchor
        if held[place]:
            ordered[source] = size
    return ordered


class _Kinds:
    """How a row's ``service_url`` relates to this run's: same, other endpoint, other service
    (cached: a ledger holds few distinct URLs)."""

    def __init__(self, service_url: str) -> None:
        self._url = service_url
        self._mine: ServiceIdentity | None
        try:
            self._mine = service_identity(service_url)
        except ValueError:
            self._mine = None
        self._cache: dict[str, int] = {service_url: _SAME}

    def __call__(self, url: str) -> int:
        kind = self._cache.get(url)
        if kind is None:
            kind = self._classify(url)
            if len(self._cache) < _KINDS_CACHED:
                self._cache[url] = kind
        return kind

    def _classify(self, url: str) -> int:
        if self._mine is None:
            return _SAME if url == self._url else _OTHER_SERVICE
        try:
            theirs = service_identity(url)
        except ValueError:
            return _OTHER_SERVICE
        if not self._mine.same_service(theirs):
            return _OTHER_SERVICE
        return _SAME if theirs.key == self._mine.key else _OTHER_ENDPOINT


# -- reading, line by line ----------------------------------------------------------------------

_REPAIR = (
    "nothing was sent: a ledger read in part would submit its unreadable videos again. "
    "Repair that line (a row is one line holding the header's columns, as batchsubmit wrote "
    "it) or delete it if it is not a row; deleting a submitted row submits its video again"
)


def _damaged(path: Path, number: int, what: str) -> UsageError:
    return UsageError(f"{path}:{number}: {what}; {_REPAIR}")


def _bom(path: Path) -> UsageError:
    return UsageError(
        f"{path}: the results file starts with a UTF-8 byte order mark (BOM): it was saved by "
        "a spreadsheet or an editor, not by batchsubmit. Check that it still holds the rows "
        "batchsubmit wrote (spreadsheets change quoting and numbers), then remove the BOM, "
        f"e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' {path}; nothing was sent"
    )


def _lines(
    handle: IO[bytes], path: Path, whole: Callable[[bytes], bool] = lambda _line: False
) -> Iterator[tuple[int, bytes]]:
    """(number, line) of every complete line; a torn last line comes as (number, b""). A last
    line without its newline that ``whole`` says is a whole row is one (see
    :func:`_whole_row_rule`)."""
    number = 0
    for number, raw in enumerate(handle, 1):
        if number == 1 and raw.startswith(BOM):
            raise _bom(path)
        if not raw.endswith(b"\n") and not whole(raw):
            if lines_joined(raw):
                raise _damaged(path, number, JOINED_LINES)
            yield number, b""
            return
        yield number, raw


def _whole_row_rule(handle: IO[bytes], fmt: Format) -> tuple[Callable[[bytes], bool], bytes]:
    """How to tell a last row that lost only its newline (an editor re-saved the file) from
    one a crash cut short, and the newline to give it back. Cutting a whole row forgot its
    job, and the video was submitted again. JSONL: the line is a JSON object. CSV: the line
    has every column of the file's header, the last one whole too."""
    if fmt == "jsonl":
        return _whole_json_row, b"\n"
    handle.seek(0)
    first = handle.readline()
    header = _csv_fields(first) if first.endswith(b"\n") else None
    return (lambda line: header is not None and _whole_csv_row(line, header)), b"\r\n"


def _whole_json_row(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _csv_fields(line: bytes) -> list[str] | None:
    try:
        return next(csv.reader([line.decode("utf-8").rstrip("\r\n")], strict=True))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


def _whole_csv_row(line: bytes, header: list[str]) -> bool:
    """Every column there, and the last not cut short: the schema version and ``reconciled``
    are checked; a later version's last column is not read, so any value will do."""
    fields = _csv_fields(line)
    if fields is None or len(fields) != len(header) or not fields[-1]:
        return False
    if header[-1] == "schema":
        return fields[-1].isdigit()
    if header[-1] == "reconciled":
        return fields[-1] in ("True", "False")
    return True


def _rows(
    handle: IO[bytes], path: Path, fmt: Format, names: tuple[str, ...] = _LEDGER_FIELDS
) -> Iterator[tuple[int, tuple[str, ...] | None]]:
    """(line number, the ``names`` columns) of each row; None for a torn last line."""
    if fmt == "csv":
        return _csv_rows(handle, path, names)
    return _jsonl_rows(handle, path, names)


def _text(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _damaged(path, number, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _csv_header(raw: bytes, path: Path) -> list[str]:
    if raw.startswith(BOM):
        raise _bom(path)
    text = _text(raw, path, 1)
    try:
        header = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration):
        header = []
    if tuple(header[: len(BASE_COLUMNS)]) != BASE_COLUMNS:
        raise UsageError(
            f"{path}: not a batchsubmit results file, or its columns were reordered or renamed "
            f"(a spreadsheet?): its header is {header[:4]}..., one starts with "
            f"{','.join(BASE_COLUMNS[:4])},...; restore the columns batchsubmit wrote, or name "
            "another results file"
        )
    return header


_STATUS_AT = BASE_COLUMNS.index("status")


def _csv_rows(
    handle: IO[bytes], path: Path, names: tuple[str, ...]
) -> Iterator[tuple[int, tuple[str, ...] | None]]:
    header: list[str] = []
    lines = _lines(handle, path, lambda line: bool(header) and _whole_csv_row(line, header))
    for _number, raw in lines:
        if raw:
            header = _csv_header(raw, path)
        break
    width = len(BASE_COLUMNS)
    columns = len(header)  # every row has the header's columns: the writer pads to them
    status_at = _STATUS_AT
    at = [BASE_COLUMNS.index(name) for name in names]
    for number, raw in lines:
        if not raw:
            yield number, None
            return
        text = _text(raw, path, number).rstrip("\r\n")
        if CONTROL.search(text):  # the writer never writes one: a NUL is damage, not a video
            raise _damaged(path, number, "a control character (NUL, ESC...) inside the row")
        # A line without quotes splits at its commas; one with quotes is parsed alone.
        fields = _csv_line(text, path, number) if '"' in text else text.split(",")
        if len(fields) < width:
            if not text.strip():
                continue  # a blank line holds no row
            raise _damaged(path, number, f"{len(fields)} columns where a row has {width} or more")
        status = fields[status_at]
        if status not in STATUSES:
            raise _damaged(path, number, f"status {status[:40]!r} is none of {', '.join(STATUSES)}")
        if len(fields) != columns:
            # A comma added or lost shifts the columns after it: a submitted row read with
            # another column as its service_url would count for no service, and be created again.
            raise _damaged(path, number, f"{len(fields)} columns where the header has {columns}")
        yield number, tuple(fields[i] for i in at)


def _csv_line(text: str, path: Path, number: int) -> list[str]:
    """One CSV line with quotes, parsed alone: a stray quote cannot swallow the lines after it."""
    limit = csv.field_size_limit()
    try:
        if len(text) >= limit:  # the csv module refuses longer fields; a row is one line
            csv.field_size_limit(len(text) + 1)
        fields = list(csv.reader([text.rstrip("\r\n")], strict=True))
    except csv.Error as exc:
        raise _damaged(path, number, f"not a CSV row ({exc}; a stray '\"'?)") from None
    finally:
        csv.field_size_limit(limit)
    return fields[0] if fields else []


def _jsonl_rows(
    handle: IO[bytes], path: Path, names: tuple[str, ...]
) -> Iterator[tuple[int, tuple[str, ...] | None]]:
    for number, raw in _lines(handle, path, _whole_json_row):
        if not raw:
            yield number, None
            return
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if not raw.strip():
                continue  # a blank line holds no row
            _text(raw, path, number)  # not UTF-8 says so
            raise _damaged(path, number, f"not a JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise _damaged(path, number, f"a JSON {type(data).__name__}, not an object")
        try:
            # The ledger's four keys must be there; the others read as empty when absent.
            row = tuple(data[n] if n in _LEDGER_FIELDS else data.get(n, "") for n in names)
            status = data["status"]
        except KeyError as exc:
            raise _damaged(path, number, f"no {exc.args[0]!r} key") from None
        if not all(isinstance(value, str) for value in row):
            raise _damaged(path, number, f"{', '.join(names)} must be strings")
        if any(CONTROL.search(value) for value in row):  # the writer never writes one
            raise _damaged(path, number, "a control character (NUL, ESC...) in a field")
        if status not in STATUSES:
            raise _damaged(path, number, f"status {status!s:.40} is none of {', '.join(STATUSES)}")
        yield number, row
