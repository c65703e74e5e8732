"""The results file: a pinned CSV/JSONL contract, torn tails cut, and the ledger read back."""

from __future__ import annotations

import csv
import dataclasses
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsubmit.errors import UsageError
from batchsubmit.results import (
    BASE_COLUMNS,
    COLUMNS,
    ERROR_MSG_MAX,
    SCHEMA,
    STATUSES,
    Format,
    Ledger,
    Outcome,
    ResultsWriter,
    SourceHashes,
    format_for,
    read_ledger,
    utc_now,
)

from .helpers import run_cli

PROJECT = "0123456789abcdef0123456789abcdef"
SERVICE = f"https://iva.cn-north-4.myhuaweicloud.com/v2/{PROJECT}/services/c-video-analysis/tasks"
OTHER = f"https://iva.cn-north-4.myhuaweicloud.com/v2/{'f' * 32}/services/c-video-analysis/tasks"
FORMATS: list[Format] = ["csv", "jsonl"]


class Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def outcome(source: str = "obs://bkt/a.mp4", status: str = "submitted", **changes: Any) -> Outcome:
    values: dict[str, Any] = {
        "source": source,
        "name": "a-hign7sh4gwhp",
        "job_id": "f18320e61e4c4dc685aa2dfc22a28dc5" if status == "submitted" else "",
        "status": status,
        "http_status": 201 if status == "submitted" else 400,
        "error_code": "" if status == "submitted" else "IVA.0004",
        "error_msg": "" if status == "submitted" else "invalid parameter",
        "attempts": 1,
        "request_id": "req-1",
        "submitted_at": "2024-01-01T00:00:00.000Z",
        "service_url": SERVICE,
    }
    values.update(changes)
    return Outcome(**values)


def write_rows(path: Path, fmt: Format, rows: list[Outcome]) -> Warnings:
    warn = Warnings()
    writer = ResultsWriter(path, fmt, warn)
    for row in rows:
        writer.write(row)
    writer.sync()
    writer.close()
    return warn


def ledger_of(path: Path, fmt: Format, service: str = SERVICE) -> tuple[Ledger, list[str]]:
    warn = Warnings()
    return read_ledger(path, fmt, service, warn), warn.messages


# -- the contract -------------------------------------------------------------------------------


def test_columns_are_pinned() -> None:
    """The results columns, in order, are a documented contract: they only ever grow at the end
    (schema 1: the base columns; schema 2 adds ``schema``)."""
    assert (*BASE_COLUMNS, "schema") == COLUMNS
    assert SCHEMA == 2
    assert BASE_COLUMNS == (
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
    assert STATUSES == ("submitted", "failed", "unknown", "duplicate")


def test_outcome_fields_follow_the_columns() -> None:
    """Outcome's fields are the columns in the same order (rows are written field by field)."""
    assert tuple(f.name for f in dataclasses.fields(Outcome)) == BASE_COLUMNS


def test_csv_header_and_row(tmp_path: Path) -> None:
    """A new CSV file starts with the header, then one CRLF-terminated row per outcome."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome(), outcome("obs://bkt/b.mp4", "failed", reconciled=True)])
    lines = path.read_bytes().split(b"\r\n")
    assert lines[0] == ",".join(COLUMNS).encode()
    assert lines[-1] == b""
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == list(COLUMNS)
    assert rows[1] == [
        "obs://bkt/a.mp4",
        "a-hign7sh4gwhp",
        "f18320e61e4c4dc685aa2dfc22a28dc5",
        "submitted",
        "201",
        "",
        "",
        "1",
        "req-1",
        "2024-01-01T00:00:00.000Z",
        SERVICE,
        "False",
        "2",
    ]
    assert rows[2][COLUMNS.index("status")] == "failed"
    assert rows[2][COLUMNS.index("reconciled")] == "True"
    assert len(rows) == 3


def test_jsonl_rows(tmp_path: Path) -> None:
    """Each JSONL line is one object whose keys are exactly COLUMNS, in order, with JSON types."""
    path = tmp_path / "r.jsonl"
    write_rows(path, "jsonl", [outcome(), outcome("obs://bkt/视频 b.mp4", "unknown")])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    first = orjson.loads(lines[0])
    assert tuple(first) == COLUMNS
    assert first["schema"] == SCHEMA
    assert first["http_status"] == 201
    assert first["attempts"] == 1
    assert first["reconciled"] is False
    assert orjson.loads(lines[1])["source"] == "obs://bkt/视频 b.mp4"


def test_header_written_once(tmp_path: Path) -> None:
    """Reopening an existing CSV appends rows without a second header."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome("obs://bkt/a.mp4")])
    write_rows(path, "csv", [outcome("obs://bkt/b.mp4")])
    text = path.read_text(encoding="utf-8")
    assert text.count("source,name,job_id") == 1
    assert len(text.splitlines()) == 3


def test_rows_reach_the_file_on_flush(tmp_path: Path) -> None:
    """Rows wait in the buffer until flush() (the pool flushes before each journalled batch),
    then reach the file whole."""
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path, "jsonl", Warnings())
    try:
        writer.write(outcome())
        writer.write(outcome("obs://bkt/b.mp4"))
        assert path.read_bytes() == b""
        writer.flush()
        assert path.read_bytes().count(b"\n") == 2
        assert writer.rows == 2
    finally:
        writer.close()


@pytest.mark.parametrize(
    "message",
    ["line one\nline two", "cr\rhere", "crlf\r\nthere", 'quote " and comma , and \u2028 sep'],
)
def test_jsonl_row_is_one_line_whatever_the_message(tmp_path: Path, message: str) -> None:
    """In JSONL a row is always one physical line: line breaks in messages are escaped."""
    path = tmp_path / "r.jsonl"
    write_rows(path, "jsonl", [outcome(status="failed", error_msg=message)])
    data = path.read_bytes()
    assert data.count(b"\n") == 1
    assert b"\r" not in data
    assert orjson.loads(data)["error_msg"] == message


@pytest.mark.parametrize(
    ("message", "written"),
    [
        ("line one\nline two", "line one line two"),
        ("cr\rhere", "cr here"),
        ('quote " and comma , here', 'quote " and comma , here'),
        ("trailing\n", "trailing "),
        ("nul\x00tab\t", "nul tab "),
    ],
)
def test_csv_keeps_awkward_messages_on_one_line(tmp_path: Path, message: str, written: str) -> None:
    """In CSV, quotes and commas are quoted, control characters become spaces: a row is always
    one physical line, so the reader can name the line a damage starts on."""
    path = tmp_path / "r.csv"
    write_rows(
        path, "csv", [outcome(status="failed", error_msg=message), outcome("obs://bkt/z.mp4")]
    )
    assert path.read_bytes().count(b"\n") == 3
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][COLUMNS.index("error_msg")] == written
    assert rows[2][0] == "obs://bkt/z.mp4"
    ledger, warnings = ledger_of(path, "csv")
    assert ledger.rows == 2
    assert ledger.bad_lines == 0
    assert warnings == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_unicode_round_trips(tmp_path: Path, fmt: Format) -> None:
    """Unicode sources and messages are written as UTF-8 and read back equal."""
    path = tmp_path / f"r.{fmt}"
    source = "obs://bkt/视频/é ü 🎬.mp4"
    write_rows(path, fmt, [outcome(source)])
    ledger, _ = ledger_of(path, fmt)
    assert ledger.is_done(source)


# -- torn tails ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_torn_last_line_is_cut_on_reopen(tmp_path: Path, fmt: Format) -> None:
    """A last line cut short by a crash is removed with a warning; the rows before it are kept."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome("obs://bkt/a.mp4"), outcome("obs://bkt/b.mp4")])
    intact = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b"obs://bkt/c.mp4,c-name,,subm" if fmt == "csv" else b'{"source":"obs://bk')
    warn = write_rows(path, fmt, [outcome("obs://bkt/d.mp4")])
    assert len(warn.messages) == 1
    assert str(path) in warn.messages[0]
    assert "cut short" in warn.messages[0]
    data = path.read_bytes()
    assert data.startswith(intact)
    assert b"obs://bkt/c.mp4" not in data
    assert b"obs://bk'" not in data
    ledger, warnings = ledger_of(path, fmt)
    assert warnings == []
    assert ledger.bad_lines == 0
    assert [ledger.is_done(f"obs://bkt/{x}.mp4") for x in "abcd"] == [True, True, False, True]


@pytest.mark.parametrize("fmt", FORMATS)
def test_intact_file_is_not_touched(tmp_path: Path, fmt: Format) -> None:
    """A file ending in a newline is reopened without warnings or changes."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome()])
    before = path.read_bytes()
    warn = Warnings()
    ResultsWriter(path, fmt, warn).close()
    assert warn.messages == []
    assert path.read_bytes() == before


def test_torn_header_is_replaced(tmp_path: Path) -> None:
    """A CSV whose only line (the header) was torn gets a whole header again."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"source,na")
    warn = write_rows(path, "csv", [outcome()])
    assert len(warn.messages) == 1
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == list(COLUMNS)
    assert len(rows) == 2


def test_torn_line_longer_than_the_scan_window(tmp_path: Path) -> None:
    """A torn last line longer than 64 KiB is cut alone: the complete rows before it survive."""
    path = tmp_path / "r.jsonl"
    write_rows(path, "jsonl", [outcome("obs://bkt/a.mp4"), outcome("obs://bkt/b.mp4")])
    intact = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"source":"obs://bkt/' + b"x" * 100_000)
    warn = write_rows(path, "jsonl", [outcome("obs://bkt/c.mp4")])
    assert len(warn.messages) == 1
    assert "100021 bytes" in warn.messages[0]
    data = path.read_bytes()
    assert data.startswith(intact)
    ledger, _ = ledger_of(path, "jsonl")
    assert ledger.rows == 3


def test_file_without_any_newline_is_set_aside_whole(tmp_path: Path) -> None:
    """A file whose only line, torn, is the start of a row is emptied (with a warning) and
    restarted."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"source":"obs://bkt/' + b"x" * 70_000)
    warn = write_rows(path, "jsonl", [outcome()])
    assert len(warn.messages) == 1
    assert path.read_bytes().count(b"\n") == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_of_one_line_batchsubmit_never_wrote_is_refused_untouched(
    tmp_path: Path, fmt: Format
) -> None:
    """`--results notes.csv` by mistake, the notes one line without a newline: it reads as
    a torn last line, but it cannot be the start of anything batchsubmit writes, so it is
    refused and left as it was (it used to be cut to nothing)."""
    path = tmp_path / f"notes.{fmt}"
    path.write_bytes(b"my precious notes, no newline")
    with pytest.raises(UsageError, match="not a file batchsubmit wrote"):
        ResultsWriter(path, fmt, Warnings())
    assert path.read_bytes() == b"my precious notes, no newline"


def test_unwritable_results_file(tmp_path: Path) -> None:
    """A results path that cannot be opened is a UsageError naming it."""
    path = tmp_path / "missing-dir" / "r.csv"
    with pytest.raises(UsageError, match="cannot open the results file"):
        ResultsWriter(path, "csv", Warnings())


# -- the ledger ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_ledger_states(tmp_path: Path, fmt: Format) -> None:
    """submitted is done; unknown is remembered until a later submitted or failed row settles
    it. An earlier submitted row does not: that unknown is a --resubmit's create, whose job
    may exist without a row (it was dropped, and never followed or pruned)."""
    path = tmp_path / f"r.{fmt}"
    write_rows(
        path,
        fmt,
        [
            outcome("obs://bkt/done.mp4", "submitted"),
            outcome("obs://bkt/failed.mp4", "failed"),
            outcome("obs://bkt/unknown.mp4", "unknown", name="unknown-name"),
            outcome("obs://bkt/later.mp4", "unknown", name="later-name"),
            outcome("obs://bkt/later.mp4", "submitted", name="later-name"),
            outcome("obs://bkt/retried.mp4", "unknown", name="retried-name"),
            outcome("obs://bkt/retried.mp4", "failed", name="retried-name"),
            outcome("obs://bkt/done.mp4", "unknown", name="done-again"),
        ],
    )
    ledger, warnings = ledger_of(path, fmt)
    assert warnings == []
    assert ledger.rows == 8
    assert ledger.is_done("obs://bkt/done.mp4")
    assert ledger.is_done("obs://bkt/later.mp4")
    assert not ledger.is_done("obs://bkt/failed.mp4")
    assert not ledger.is_done("obs://bkt/unknown.mp4")
    assert ledger.unknown == {
        "obs://bkt/unknown.mp4": "unknown-name",
        "obs://bkt/done.mp4": "done-again",
    }
    assert ledger.other_services == 0
    assert ledger.bad_lines == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_ledger_ignores_other_services(tmp_path: Path, fmt: Format) -> None:
    """Rows for another project's service count as other_services and mark nothing done."""
    path = tmp_path / f"r.{fmt}"
    write_rows(
        path,
        fmt,
        [
            outcome("obs://bkt/a.mp4", service_url=OTHER),
            outcome("obs://bkt/b.mp4", "unknown", service_url=OTHER),
            outcome("obs://bkt/c.mp4"),
        ],
    )
    ledger, _ = ledger_of(path, fmt)
    assert ledger.other_services == 2
    assert not ledger.is_done("obs://bkt/a.mp4")
    assert ledger.unknown == {}
    assert ledger.is_done("obs://bkt/c.mp4")
    other, _ = ledger_of(path, fmt, OTHER)
    assert other.is_done("obs://bkt/a.mp4")
    assert other.unknown == {"obs://bkt/b.mp4": "a-hign7sh4gwhp"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_results_file_is_an_empty_ledger(tmp_path: Path, fmt: Format) -> None:
    """No results file yet means nothing is done."""
    ledger, warnings = ledger_of(tmp_path / f"none.{fmt}", fmt)
    assert ledger == Ledger()
    assert warnings == []


CSV_DAMAGE = [
    (b"obs://bkt/x.mp4,name,,subm", "columns"),
    (b"just some text", "columns"),
    (b'"unterminated,quote', "stray"),
    (b'obs://bkt/x.mp4,"na"me,,submitted,201,,,1,r,t,' + SERVICE.encode() + b",False", "stray"),
    (b"obs://bkt/x.mp4,n,,weird-status,201,,,1,r,t," + SERVICE.encode() + b",False", "status"),
    (b"\xff\xfe\x00\x01", "not UTF-8"),
    (b"obs://bkt/\xe8\xa7.mp4,n,,submitted,201,,,1,r,t," + SERVICE.encode() + b",False", "UTF-8"),
    (b",,,,,,,,,,,", "status"),
    # the writer never writes a control character: a NUL in a source is damage, not a video
    (b"obs://bkt/x\x00.mp4,n,,submitted,201,,,1,r,t," + SERVICE.encode() + b",False", "control"),
    # C1 (NEL) too: the listings refuse it, so no row holds one
    (
        "obs://bkt/x\x85.mp4,n,,submitted,201,,,1,r,t,".encode() + SERVICE.encode() + b",False",
        "control",
    ),
]


@pytest.mark.parametrize(("garbage", "said"), CSV_DAMAGE)
def test_csv_damage_in_the_middle_stops_the_read(tmp_path: Path, garbage: bytes, said: str) -> None:
    """Any unreadable CSV line other than a torn last one is a UsageError naming the file and
    that line and how to repair it: a ledger read in part would submit its videos again."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome("obs://bkt/a.mp4")])
    with path.open("ab") as handle:
        handle.write(garbage + b"\r\n")
    write_rows(path, "csv", [outcome("obs://bkt/b.mp4")])
    with pytest.raises(UsageError) as raised:
        ledger_of(path, "csv")
    message = str(raised.value)
    assert message.startswith(f"{path}:3: ")
    assert said in message
    assert "nothing was sent" in message
    assert "Repair" in message


@pytest.mark.parametrize(
    ("before", "after"),
    [(b"201,,,", b"201,,,,"), (b"201,,,", b"201,,"), (b",False,", b",False,,")],
)
def test_a_comma_added_or_lost_is_damage_not_a_row_of_another_service(
    tmp_path: Path, before: bytes, after: bytes
) -> None:
    """A row with more or fewer columns than the header: read by position, a submitted row's
    service_url was another column ("False", a time), so it counted for no service and its
    video was created again. Every row the writer writes has the header's columns."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome(f"obs://bkt/{i}.mp4") for i in range(3)])
    lines = path.read_bytes().split(b"\r\n")
    lines[2] = lines[2].replace(before, after, 1)
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(UsageError, match=rf"^{re.escape(str(path))}:3: .* the header has 13"):
        ledger_of(path, "csv")


def test_stray_quote_never_swallows_the_rows_after_it(tmp_path: Path) -> None:
    """The issue's case: one hand-edited line with a stray '"' among 301 rows. The csv module
    read every later row into one field (249 videos lost, re-created); now the run stops at
    that line."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome(f"obs://bkt/{i}.mp4") for i in range(301)])
    lines = path.read_bytes().split(b"\r\n")
    lines[50] = lines[50].replace(b",submitted,", b',"submitted,', 1)
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(UsageError, match=rf"^{re.escape(str(path))}:51: .*stray"):
        ledger_of(path, "csv")


JSONL_DAMAGE = [
    (b'{"source":"obs://bk', "not a JSON object"),
    (b"not json", "not a JSON object"),
    (b"[1, 2, 3]", "list"),
    (b'"a string"', "str"),
    (b"null", "NoneType"),
    (b"42", "int"),
    (b'{"source": "obs://bkt/x.mp4"}', "'name'"),
    (b'{"source": "s", "name": "n", "status": "weird", "service_url": "u"}', "status"),
    (b'{"source": 1, "name": "n", "status": "submitted", "service_url": "u"}', "strings"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"source": "s\\u0000", "name": "n", "status": "submitted", "service_url": "u"}', "control"),
]


@pytest.mark.parametrize(("garbage", "said"), JSONL_DAMAGE)
def test_jsonl_damage_in_the_middle_stops_the_read(
    tmp_path: Path, garbage: bytes, said: str
) -> None:
    """A torn or garbage JSONL line before the last one is a UsageError naming its line."""
    path = tmp_path / "r.jsonl"
    write_rows(path, "jsonl", [outcome("obs://bkt/a.mp4")])
    with path.open("ab") as handle:
        handle.write(garbage + b"\n")
    write_rows(path, "jsonl", [outcome("obs://bkt/b.mp4")])
    with pytest.raises(UsageError) as raised:
        ledger_of(path, "jsonl")
    assert str(raised.value).startswith(f"{path}:2: ")
    assert said in str(raised.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_blank_lines_hold_no_row_and_are_skipped(tmp_path: Path, fmt: Format) -> None:
    """An empty line (a hand edit) loses nothing: it is skipped, the rows around it count."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome("obs://bkt/a.mp4")])
    with path.open("ab") as handle:
        handle.write(b"\r\n\n")
    write_rows(path, fmt, [outcome("obs://bkt/b.mp4")])
    ledger, warnings = ledger_of(path, fmt)
    assert warnings == []
    assert ledger.is_done("obs://bkt/a.mp4")
    assert ledger.is_done("obs://bkt/b.mp4")


def test_row_longer_than_the_csv_field_limit_is_read(tmp_path: Path) -> None:
    """An old version wrote a 200 KiB error message (over csv.field_size_limit, 128 KiB): the
    row is still read, and the rows after it; the module's limit is left as it was."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome("obs://bkt/a.mp4")])
    huge = '"' + "x, " * 70_000 + '"'
    with path.open("ab") as handle:
        handle.write(
            f"obs://bkt/u.mp4,u-name,,unknown,0,TIMEOUT,{huge},1,,t,{SERVICE},False,2\r\n".encode()
        )
    write_rows(path, "csv", [outcome("obs://bkt/b.mp4")])
    limit = csv.field_size_limit()
    ledger, warnings = ledger_of(path, "csv")
    assert csv.field_size_limit() == limit
    assert warnings == []
    assert ledger.rows == 3
    assert ledger.unknown == {"obs://bkt/u.mp4": "u-name"}
    assert ledger.is_done("obs://bkt/b.mp4")


@pytest.mark.parametrize("fmt", FORMATS)
def test_long_error_messages_are_capped_when_written(tmp_path: Path, fmt: Format) -> None:
    """The writer never writes a field the reader could not take back: error_msg is cut to
    ERROR_MSG_MAX characters (the pool shortens messages too; this is the backstop)."""
    path = tmp_path / f"r.{fmt}"
    write_rows(
        path, fmt, [outcome(status="unknown", error_msg="e" * 300_000), outcome("obs://x/b")]
    )
    assert path.stat().st_size < 3 * ERROR_MSG_MAX
    if fmt == "jsonl":
        message = orjson.loads(path.read_bytes().splitlines()[0])["error_msg"]
    else:
        message = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))[1][6]
    assert len(message) == ERROR_MSG_MAX
    assert message.endswith("…")
    ledger, _ = ledger_of(path, fmt)
    assert ledger.rows == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bom_is_named_with_the_fix(tmp_path: Path, fmt: Format) -> None:
    """A results file saved by a spreadsheet starts with a UTF-8 BOM: refused (the file was
    edited outside batchsubmit; a person should look), saying "BOM" and how to remove it."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome()])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with pytest.raises(UsageError, match=r"BOM.*sed -i"):
        ledger_of(path, fmt)
    with pytest.raises(UsageError, match="BOM"):
        ResultsWriter(path, "csv", Warnings())


@pytest.mark.parametrize("fmt", FORMATS)
def test_ledger_tolerates_a_torn_tail(tmp_path: Path, fmt: Format) -> None:
    """Reading (before any writer cut it), a torn last line is one bad line, not a crash."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome("obs://bkt/a.mp4")])
    with path.open("ab") as handle:
        handle.write(
            b'"obs://bkt/b.mp4","b-na' if fmt == "csv" else b'{"source":"obs://bkt/b.mp4","na'
        )
    ledger, warnings = ledger_of(path, fmt)
    assert ledger.is_done("obs://bkt/a.mp4")
    assert not ledger.is_done("obs://bkt/b.mp4")
    assert ledger.bad_lines == 1
    assert len(warnings) == 1
    assert "cut short" in warnings[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_joined_by_cr_line_endings_are_not_a_torn_tail(tmp_path: Path, fmt: Format) -> None:
    """A file whose line endings became CRs (unix2mac, an editor) is one line without a LF: it
    was read as a torn last line, the ledger came back empty and the writer truncated the file
    to nothing, so every submitted video was created again. It is damage: refused, untouched."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome("obs://bkt/a.mp4"), outcome("obs://bkt/b.mp4")])
    eol = b"\r\n" if fmt == "csv" else b"\n"
    path.write_bytes(path.read_bytes().replace(eol, b"\r"))
    before = path.read_bytes()
    with pytest.raises(UsageError, match=r"r\.\w+:1: a carriage return"):
        ledger_of(path, fmt)
    with pytest.raises(UsageError, match="carriage return"):
        ResultsWriter(path, fmt, Warnings())
    assert path.read_bytes() == before


def test_a_tear_between_cr_and_lf_is_still_a_whole_row(tmp_path: Path) -> None:
    """The CR check leaves the one CR a crash can leave last: between a row's CR and its LF."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome("obs://bkt/a.mp4"), outcome("obs://bkt/b.mp4")])
    path.write_bytes(path.read_bytes()[:-1])
    ledger, _ = ledger_of(path, "csv")
    assert ledger.is_done("obs://bkt/a.mp4")
    assert ledger.is_done("obs://bkt/b.mp4")
    write_rows(path, "csv", [outcome("obs://bkt/c.mp4")])
    ledger, _ = ledger_of(path, "csv")
    assert all(ledger.is_done(f"obs://bkt/{x}.mp4") for x in "abc")


def test_csv_with_another_header_is_refused(tmp_path: Path) -> None:
    """A CSV that is not a batchsubmit results file is a UsageError, not silently 'nothing done'."""
    path = tmp_path / "r.csv"
    path.write_text("name,size\nobs://bkt/a.mp4,10\n")
    with pytest.raises(UsageError, match="not a batchsubmit results file"):
        ledger_of(path, "csv")


def test_csv_with_extra_columns_is_read(tmp_path: Path) -> None:
    """A CSV whose header starts with COLUMNS (a later version added columns) is still read."""
    path = tmp_path / "r.csv"
    row = [str(v) for v in dataclasses.astuple(outcome())]
    path.write_text(",".join([*COLUMNS, "future"]) + "\r\n" + ",".join([*row, "2", "x"]) + "\r\n")
    ledger, _ = ledger_of(path, "csv")
    assert ledger.is_done("obs://bkt/a.mp4")


def test_empty_csv_is_an_empty_ledger(tmp_path: Path) -> None:
    """An empty CSV (created, nothing written yet) reads as nothing done."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"")
    ledger, _ = ledger_of(path, "csv")
    assert ledger == Ledger()


# -- format_for ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [
        ("r.csv", None, "csv"),
        ("R.CSV", None, "csv"),
        ("r.jsonl", None, "jsonl"),
        ("r.JSONL", None, "jsonl"),
        ("r.ndjson", None, "jsonl"),
        ("r.txt", "csv", "csv"),
        ("r.csv", "jsonl", "jsonl"),
        ("results", "jsonl", "jsonl"),
    ],
)
def test_format_for(name: str, explicit: str | None, expected: str) -> None:
    """--format wins; otherwise the extension decides, case-insensitively."""
    assert format_for(Path(name), explicit) == expected


@pytest.mark.parametrize(
    ("name", "explicit"),
    [("r.txt", None), ("results", None), ("r.json", None), ("r.csv", "xml"), ("r.csv", "CSV")],
)
def test_format_for_refuses(name: str, explicit: str | None) -> None:
    """An unknown extension without --format, or an unknown --format, is a UsageError."""
    with pytest.raises(UsageError):
        format_for(Path(name), explicit)


def test_utc_now_format() -> None:
    """Timestamps are UTC ISO 8601 with milliseconds and a Z."""
    value = utc_now()
    assert len(value) == len("2024-01-01T00:00:00.000Z")
    assert value.endswith("Z")
    assert value[10] == "T"


AWKWARD = ["", " ", "plain", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "视频 01.mp4", "'", ";"]


@pytest.mark.parametrize("text", AWKWARD)
@pytest.mark.parametrize("field", ["source", "name", "error_code", "error_msg", "request_id"])
def test_csv_rows_are_byte_for_byte_what_the_csv_module_writes(
    tmp_path: Path, field: str, text: str
) -> None:
    """Rows without anything to quote skip the csv module; every row is still exactly the
    bytes csv.writer would write."""
    row = outcome(status="failed", reconciled=True, **{field: text})
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [row, outcome()])
    expected = tmp_path / "expected.csv"
    with expected.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for item in (row, outcome()):
            fields = [*dataclasses.astuple(item), SCHEMA]
            writer.writerow([re.sub(r"[\x00-\x1f\x7f]", " ", str(v)) for v in fields])
    assert path.read_bytes() == expected.read_bytes()


def test_source_hashes_hold_every_hash_whatever_its_bucket() -> None:
    """The ledger's hashes are sorted bucket by bucket (by top byte); membership must hold for
    the extremes, for both signs and for hashes sharing a bucket."""
    rng = random.Random(7)
    values = [rng.randrange(-(2**63), 2**63) for _ in range(20_000)]
    values += [-(2**63), 2**63 - 1, 0, -1, 1, 2**56, -(2**56)]
    found = SourceHashes(values)
    assert len(found) == len(values)
    assert all(value in found for value in values)
    present = set(values)
    others = (rng.randrange(-(2**63), 2**63) for _ in range(20_000))
    assert not any(value in found for value in others if value not in present)
    assert found == SourceHashes(reversed(values))


# -- a schema that grows ------------------------------------------------------------------------


def test_jsonl_rows_with_extra_keys_are_read(tmp_path: Path) -> None:
    """A JSONL row from a later version (more keys) is still a row."""
    path = tmp_path / "r.jsonl"
    row = {**dataclasses.asdict(outcome()), "schema": 9, "future": {"x": 1}}
    path.write_bytes(orjson.dumps(row) + b"\n")
    ledger, _ = ledger_of(path, "jsonl")
    assert ledger.is_done("obs://bkt/a.mp4")


def test_appending_to_a_schema_1_file_keeps_its_columns(tmp_path: Path) -> None:
    """An old results file (the 12 base columns, no ``schema``) gets rows in its own columns,
    and reads back whole: old ledgers need no migration."""
    path = tmp_path / "r.csv"
    old_row = ",".join(str(v) for v in dataclasses.astuple(outcome()))
    path.write_text(",".join(BASE_COLUMNS) + "\r\n" + old_row + "\r\n", newline="")
    write_rows(path, "csv", [outcome("obs://bkt/b.mp4")])
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    assert [len(r) for r in rows] == [len(BASE_COLUMNS)] * 3
    ledger, warnings = ledger_of(path, "csv")
    assert warnings == []
    assert ledger.is_done("obs://bkt/a.mp4")
    assert ledger.is_done("obs://bkt/b.mp4")


def test_appending_to_a_file_with_unknown_columns_leaves_them_empty(tmp_path: Path) -> None:
    """A header written by a later version (columns this one does not know, anywhere after
    the base ones) gets rows that fill the known columns and leave the others empty."""
    path = tmp_path / "r.csv"
    header = [*BASE_COLUMNS, "future", "schema", "later"]
    path.write_text(",".join(header) + "\r\n", newline="")
    write_rows(path, "csv", [outcome()])
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    assert rows[1][: len(BASE_COLUMNS)] == [str(v) for v in dataclasses.astuple(outcome())]
    assert rows[1][len(BASE_COLUMNS) :] == ["", str(SCHEMA), ""]
    assert ledger_of(path, "csv")[0].is_done("obs://bkt/a.mp4")


# -- the ledger's identity ----------------------------------------------------------------------

TASKS = f"/v2/{PROJECT}/services/c-video-analysis/tasks"


@pytest.mark.parametrize(
    "spelling",
    [
        f"https://iva.cn-north-4.myhuaweicloud.com:443{TASKS}",
        f"HTTPS://IVA.CN-NORTH-4.MyHuaweiCloud.com{TASKS}",
        f"https://iva.cn-north-4.myhuaweicloud.com{TASKS}/",
        f"https://other-gateway.cn-north-4.myhuaweicloud.com{TASKS}",
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_ledger_does_not_depend_on_how_the_endpoint_is_spelled(
    tmp_path: Path, fmt: Format, spelling: str
) -> None:
    """Rows written under another spelling of the same regional endpoint are this service's
    (scheme and host case, default port, trailing slash, the region's name in the host)."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome(service_url=spelling), outcome("obs://bkt/u.mp4", "unknown")])
    ledger, _ = ledger_of(path, fmt)
    assert ledger.is_done("obs://bkt/a.mp4")
    assert (ledger.other_endpoint, ledger.other_services) == (0, 0)


@pytest.mark.parametrize(
    ("then", "now"),
    [
        ("http://localhost:40001", "http://127.0.0.1:40001"),  # another host name
        ("http://127.0.0.1:40001", "http://127.0.0.1:40002"),  # the emulator's random port
        ("https://iva.cn-north-4.myhuaweicloud.com", "https://vas-proxy.example.com"),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_same_service_under_another_endpoint_is_done_and_counted(
    tmp_path: Path, fmt: Format, then: str, now: str
) -> None:
    """Rows for the same project and service reached through another endpoint count as done
    (and their unknowns are resolved here), and ``other_endpoint`` says so for the CLI."""
    path = tmp_path / f"r.{fmt}"
    write_rows(
        path,
        fmt,
        [
            outcome(service_url=then + TASKS),
            outcome("obs://bkt/u.mp4", "unknown", name="u-name", service_url=then + TASKS),
        ],
    )
    ledger, _ = ledger_of(path, fmt, now + TASKS)
    assert ledger.is_done("obs://bkt/a.mp4")
    assert ledger.unknown == {"obs://bkt/u.mp4": "u-name"}
    assert ledger.other_endpoint == 2
    assert ledger.other_endpoint_url == then + TASKS
    assert ledger.other_services == 0


def test_failed_rows_under_another_endpoint_are_not_said_to_count_as_done(
    tmp_path: Path,
) -> None:
    """A night of failed creates under one endpoint, then a run under another: the log said
    "5 rows name this project and service under another endpoint ...; they count as done
    here" beside "0 already submitted", and submitted all five again. Only the submitted
    rows count as done, and the line says how many they are."""
    import io

    from batchsubmit.commands.common import log_ledger_services
    from batchsubmit.progress import Log

    then, now = "http://127.0.0.1:40001", "http://127.0.0.1:40002"
    path = tmp_path / "r.csv"
    write_rows(
        path,
        "csv",
        [
            outcome(service_url=then + TASKS),
            outcome("obs://bkt/f.mp4", "failed", service_url=then + TASKS),
        ],
    )
    ledger, _ = ledger_of(path, "csv", now + TASKS)
    assert (ledger.other_endpoint, ledger.other_endpoint_done) == (2, 1)
    stream = io.StringIO()
    log_ledger_services(Log(stream), ledger, path)
    assert "2 rows name this project and service under another endpoint" in stream.getvalue()
    assert "(1 submitted, so done)" in stream.getvalue()


@pytest.mark.parametrize(
    "service_url",
    [
        OTHER,
        f"https://iva.cn-north-4.myhuaweicloud.com/v2/{PROJECT}/services/other-service/tasks",
        "",
        "not a url",
    ],
)
def test_rows_of_another_project_or_service_are_counted_never_done(
    tmp_path: Path, service_url: str
) -> None:
    """Rows of another project or service (or with no readable service) mark nothing done and
    are counted in ``other_services``, with an example for the message."""
    path = tmp_path / "r.jsonl"
    write_rows(path, "jsonl", [outcome(service_url=service_url), outcome("obs://bkt/c.mp4")])
    ledger, _ = ledger_of(path, "jsonl")
    assert not ledger.is_done("obs://bkt/a.mp4")
    assert ledger.is_done("obs://bkt/c.mp4")
    assert ledger.other_services == 1
    assert ledger.other_service_url == service_url
    assert ledger.other_endpoint == 0


def test_ledger_keys_sources_by_a_hash_stable_across_processes(tmp_path: Path) -> None:
    """The ledger's hash of a source is the same in every process (not Python's salted
    ``hash()``): another interpreter with another hash seed computes the same value."""
    source = "obs://bkt/视频/a.mp4"
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome(source)])
    ledger, _ = ledger_of(path, "csv")
    code = f"from batchsubmit.hashes import stable_hash; print(stable_hash({source!r}))"
    values = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(values) == 1
    assert int(values.pop()) in ledger.done
    assert ledger.is_done(source)


def test_mark_done_marks_a_source_done() -> None:
    """A job found by lookup during the run is recorded with mark_done."""
    ledger = Ledger()
    ledger.mark_done("obs://bkt/a.mp4")
    assert ledger.is_done("obs://bkt/a.mp4")
    assert not ledger.is_done("obs://bkt/b.mp4")


def test_quick_start_twice_submits_nothing_the_second_time(tmp_path: Path) -> None:
    """Issue 12, as a new user sees it: the README's quick start run twice. The in-process
    emulator listens on a new random port each run; the ledger's identity (project and
    service) does not depend on it, so the second run submits nothing."""
    samples = Path(__file__).resolve().parents[1] / "samples"
    for name in ("nightly.toml", "listing.txt"):
        shutil.copy(samples / name, tmp_path / name)
    manifest = tmp_path / "nightly.toml"
    first = run_cli("submit", str(manifest), "--emulator")
    assert first.returncode == 0, first.stderr
    second = run_cli("submit", str(manifest), "--emulator")
    assert second.returncode == 0, second.stderr
    assert "0 to submit, 6 already submitted" in second.stderr
    assert "done: 0 submitted" in second.stderr
    rows = (tmp_path / "nightly.emulator.results.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 6


def test_a_results_file_resaved_without_its_last_newline_submits_nothing_again(
    tmp_path: Path,
) -> None:
    """The operator's report, end to end: the results file re-saved without its final
    newline. The next night read the last row as torn, cut it and submitted its video again
    (a second job, the first one's id in no row). It submits nothing now."""
    samples = Path(__file__).resolve().parents[1] / "samples"
    for name in ("nightly.toml", "listing.txt"):
        shutil.copy(samples / name, tmp_path / name)
    manifest = tmp_path / "nightly.toml"
    assert run_cli("submit", str(manifest), "--emulator").returncode == 0
    results = tmp_path / "nightly.emulator.results.csv"
    rows = results.read_bytes()
    results.write_bytes(rows.rstrip(b"\r\n"))
    again = run_cli("submit", str(manifest), "--emulator")
    assert again.returncode == 0, again.stderr
    assert "0 to submit, 6 already submitted" in again.stderr
    assert results.read_bytes() == rows


def test_results_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    """A --results that names a directory is a UsageError that says so."""
    with pytest.raises(UsageError, match="is a directory"):
        ledger_of(tmp_path, "csv")


@pytest.mark.parametrize("command", ["status", "prune", "reconcile"])
def test_every_command_reads_the_results_file_as_strictly_as_submit(
    tmp_path: Path, command: str
) -> None:
    """status, prune and reconcile read the results file through the same reader as the
    ledger: a damaged line in the middle stops them (exit 2, file:line), never skipped."""
    results = tmp_path / "r.csv"
    good = "obs://in-bucket/a.mp4,a,0123,submitted,201,,,1,,2026-01-01T00:00:00Z,u,False,2\r\n"
    results.write_text(
        ",".join(COLUMNS) + "\r\n" + good + 'obs://in-bucket/b.mp4,"b,broken\r\n' + good,
        encoding="utf-8",
    )
    done = run_cli(command, str(results))
    assert done.returncode == 2, done.stderr
    assert f"{results}:3:" in done.stderr
    assert "Traceback" not in done.stderr


def test_prune_refuses_a_file_that_is_not_a_results_file(tmp_path: Path) -> None:
    """`prune listing.txt --format csv` is a usage error, not "nothing to prune"."""
    listing = tmp_path / "listing.txt"
    listing.write_text("obs://in-bucket/a.mp4\n", encoding="utf-8")
    done = run_cli("prune", str(listing), "--format", "csv")
    assert done.returncode == 2, done.stderr
    assert "not a batchsubmit results file" in done.stderr


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet='ab,"\r\n é'), min_size=3, max_size=3))
def test_a_csv_row_is_what_the_csv_module_writes(texts: list[str]) -> None:
    """The writer joins rows that need no quoting itself (a benchmark-backed shortcut): every
    row, quoted or not, reads back with the csv module as the fields it was given (control
    characters as spaces: a row is one line)."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "r.csv"
        writer = ResultsWriter(path, "csv", lambda _m: None)
        outcome = Outcome(
            source=f"obs://in-bucket/{texts[0]}",
            name=texts[1],
            job_id="",
            status="failed",
            http_status=400,
            error_code="IVA.0004",
            error_msg=texts[2],
            attempts=1,
            request_id="",
            submitted_at="2026-01-01T00:00:00.000Z",
            service_url=SERVICE,
        )
        writer.write(outcome)
        writer.close()
        lines = path.read_bytes().split(b"\r\n")
        assert len(lines) == 3  # the header, one row, and nothing after its line end
        assert lines[2] == b""
        row = next(csv.reader([lines[1].decode()]))
        clean = [t.replace("\r", " ").replace("\n", " ") for t in texts]
        assert (row[0], row[1], row[6]) == (f"obs://in-bucket/{clean[0]}", clean[1], clean[2])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_whole_last_row_that_lost_its_newline_is_kept(tmp_path: Path, fmt: Format) -> None:
    """A file re-saved without its final newline (an editor, a tool): the last row is whole,
    not torn. It was cut as torn, its job forgotten, and the video submitted a second time.
    Now the reader counts it and the writer gives it its newline back."""
    path = tmp_path / f"r.{fmt}"
    write_rows(path, fmt, [outcome("obs://bkt/a.mp4"), outcome("obs://bkt/b.mp4")])
    whole = path.read_bytes()
    path.write_bytes(whole.rstrip(b"\r\n"))
    ledger, warnings = ledger_of(path, fmt)
    assert (ledger.is_done("obs://bkt/b.mp4"), ledger.bad_lines, warnings) == (True, 0, [])
    warn = write_rows(path, fmt, [outcome("obs://bkt/c.mp4")])
    assert len(warn.messages) == 1
    assert "no newline" in warn.messages[0]
    assert path.read_bytes().startswith(whole)
    ledger, warnings = ledger_of(path, fmt)
    assert [ledger.is_done(f"obs://bkt/{x}.mp4") for x in "abc"] == [True, True, True]
    assert (ledger.rows, ledger.bad_lines, warnings) == (3, 0, [])


def test_a_csv_row_cut_inside_its_last_columns_is_still_torn(tmp_path: Path) -> None:
    """The whole-row rule takes no row cut short for a whole one: cut before its schema
    column, inside ``reconciled``, or inside a quoted message, it is torn and set aside."""
    path = tmp_path / "r.csv"
    write_rows(path, "csv", [outcome("obs://bkt/a.mp4")])
    intact = path.read_bytes()
    row = intact.splitlines()[-1].replace(b"obs://bkt/a.mp4", b"obs://bkt/z.mp4")
    assert row.endswith(b",False,2")
    cuts = [
        row[: -len(b"2")],  # ",False," : the schema column empty
        row[: -len(b"se,2")],  # ",Fal" : fewer columns
        b",".join(row.split(b",")[:5]) + b',"a message, with a comma',  # inside quotes
        row[: row.index(b",201,") + len(b",201")],  # after http_status: a number too
    ]
    for torn in cuts:
        path.write_bytes(intact + torn)
        ledger, _warnings = ledger_of(path, "csv")
        assert (ledger.is_done("obs://bkt/z.mp4"), ledger.bad_lines) == (False, 1), torn
        write_rows(path, "csv", [outcome("obs://bkt/c.mp4")])
        assert b"obs://bkt/z.mp4" not in path.read_bytes(), torn
        path.write_bytes(intact)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_order_in_the_file_answers_an_intent_not_the_clock(tmp_path: Path, fmt: Format) -> None:
    """An intent journalled with the results file's size: a row after it answers it even when
    a clock stepped back timed it earlier, and a row before it does not even when a clock
    ahead timed it later (last night's row, from a machine whose clock was ahead)."""
    path = tmp_path / f"r.{fmt}"
    writer = ResultsWriter(path, fmt, lambda _m: None)
    writer.write(outcome("obs://bkt/old.mp4", submitted_at="2999-01-01T00:00:00.000Z"))
    size = writer.tell()
    writer.write(outcome("obs://bkt/new.mp4", submitted_at="2000-01-01T00:00:00.000Z"))
    writer.close()
    intent_at = "2026-12-01T00:00:00.000Z"
    sources = ("obs://bkt/old.mp4", "obs://bkt/new.mp4")
    ledger = read_ledger(
        path,
        fmt,
        SERVICE,
        lambda _m: None,
        intents=dict.fromkeys(sources, intent_at),
        after=dict.fromkeys(sources, (size, "")),
    )
    assert ledger.answered == {"obs://bkt/new.mp4"}
    # without the size (an older journal), the times decide, as before
    ledger = read_ledger(
        path, fmt, SERVICE, lambda _m: None, intents=dict.fromkeys(sources, intent_at)
    )
    assert ledger.answered == {"obs://bkt/old.mp4"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_row_deleted_before_an_intent_leaves_its_answer_answered(
    tmp_path: Path, fmt: Format
) -> None:
    """A damaged line, deleted as the refusal says (a killed run's intents still open): every
    row after it moved back by its length. The row of an intent, written after it, then ended
    before the size the intent recorded; the intent was taken for unanswered, its lookup found
    the job as one a row names already, and wrote failed NOT_CREATED for a job that exists.
    The intent's place is checked: if the file no longer holds there what it held, the time
    decides, as for an older journal."""
    path = tmp_path / f"r.{fmt}"
    writer = ResultsWriter(path, fmt, lambda _m: None)
    writer.write(outcome("obs://bkt/damaged.mp4", error_msg="x" * 300))
    writer.write(outcome("obs://bkt/b.mp4"))
    mark = writer.mark()
    writer.write(outcome("obs://bkt/new.mp4", submitted_at="2026-12-01T00:00:01.000Z"))
    writer.close()
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = 1 if fmt == "csv" else 0
    path.write_bytes(b"".join(lines[:damaged] + lines[damaged + 1 :]))
    source = "obs://bkt/new.mp4"
    ledger = read_ledger(
        path,
        fmt,
        SERVICE,
        lambda _m: None,
        intents={source: "2026-12-01T00:00:00.000Z"},
        after={source: mark},
    )
    assert ledger.answered == {source}
