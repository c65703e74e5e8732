"""The write-ahead journal of create intents, and the lock on a results file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from batchsubmit import journal as journal_module
from batchsubmit.errors import LockedError, UsageError
from batchsubmit.journal import Intent, Journal, RunLock, journal_services, read_intents


class Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def intents_in(path: Path) -> dict[str, str]:
    warn = Warnings()
    found = {intent.source: intent.name for intent in read_intents(path, warn)}
    assert warn.messages == []
    return found


# -- intents ------------------------------------------------------------------------------------


async def write(journal: Journal, *sources: str) -> None:
    """Intend and commit, as the pool's feeder does for a batch."""
    journal.intend([(source, source.rsplit("/", 1)[-1]) for source in sources])
    with anyio.fail_after(5):
        await journal.commit()


@pytest.mark.anyio
@pytest.mark.parametrize("durable", [True, False])
async def test_intents_are_in_the_file_once_committed(tmp_path: Path, durable: bool) -> None:
    """Once commit() returns, the intents are in the journal file, for any reader to find."""
    path = tmp_path / "r.csv.journal"
    journal = Journal(path, durable=durable)
    await write(journal, "obs://bkt/a.mp4")
    assert intents_in(path) == {"obs://bkt/a.mp4": "a.mp4"}
    await write(journal, "obs://bkt/视频 b.mp4", "obs://bkt/c d.mp4")
    assert intents_in(path) == {
        "obs://bkt/a.mp4": "a.mp4",
        "obs://bkt/视频 b.mp4": "视频 b.mp4",
        "obs://bkt/c d.mp4": "c d.mp4",
    }
    journal.close()


@pytest.mark.anyio
async def test_commit_waits_for_the_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """commit() does not return before the journal's fdatasync (in a thread) has finished,
    and the intents were written before it started."""
    gate = threading.Event()
    synced: list[bytes] = []
    real_sync = os.fdatasync

    in_thread: list[bool] = []

    def slow_sync(fd: int) -> None:
        synced.append((tmp_path / "j").read_bytes())
        in_thread.append(threading.current_thread() is not threading.main_thread())
        gate.wait(5)
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    journal = Journal(tmp_path / "j")
    returned = anyio.Event()

    async def commit() -> None:
        journal.intend([("obs://bkt/a.mp4", "a-name")])
        await journal.commit()
        returned.set()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(commit)
            await anyio.sleep(0.1)
            assert synced, "commit never synced"
            assert b"obs://bkt/a.mp4" in synced[0]
            assert not returned.is_set()
            assert not journal.checkpoint_due()  # never swap the file under the thread
            gate.set()
            with anyio.fail_after(5):
                await returned.wait()
    finally:
        gate.set()
    assert in_thread == [True]  # the event loop went on meanwhile
    journal.close()


@pytest.mark.anyio
async def test_a_batch_of_intents_costs_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool journals --concurrency jobs at once: one fdatasync for all of them."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fdatasync", calls.append)
    path = tmp_path / "j"
    journal = Journal(path)
    sources = [f"obs://bkt/{i}.mp4" for i in range(50)]
    await write(journal, *sources)
    assert intents_in(path) == {source: source.rsplit("/", 1)[-1] for source in sources}
    assert len(calls) == 1
    journal.close()


@pytest.mark.anyio
async def test_not_durable_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """durable=False (tests, emulator runs) writes intents but never calls fsync/fdatasync."""

    def forbidden(fd: int) -> None:
        raise AssertionError("synced although not durable")

    monkeypatch.setattr(os, "fdatasync", forbidden)
    monkeypatch.setattr(os, "fsync", forbidden)
    path = tmp_path / "j"
    journal = Journal(path, durable=False)
    await write(journal, "obs://bkt/a.mp4")
    journal.checkpoint()
    assert intents_in(path) == {"obs://bkt/a.mp4": "a.mp4"}
    journal.close()


# -- checkpoint and close -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_checkpoint_keeps_only_open_intents(tmp_path: Path) -> None:
    """After settle() and checkpoint(), the journal holds exactly the still-open intents."""
    path = tmp_path / "j"
    seen_by_hook: list[dict[str, str]] = []
    journal = Journal(path, before_checkpoint=lambda: seen_by_hook.append(intents_in(path)))
    await write(journal, "obs://b/1", "obs://b/2", "obs://b/3")
    journal.settle("obs://b/2")
    journal.settle("obs://b/never-intended")
    assert intents_in(path) == {"obs://b/1": "1", "obs://b/2": "2", "obs://b/3": "3"}
    journal.checkpoint()
    assert seen_by_hook == [{"obs://b/1": "1", "obs://b/2": "2", "obs://b/3": "3"}]
    assert intents_in(path) == {"obs://b/1": "1", "obs://b/3": "3"}
    assert journal.open_intents == {"obs://b/1": "1", "obs://b/3": "3"}
    assert not (tmp_path / "j.tmp").exists()
    journal.close()


@pytest.mark.anyio
async def test_checkpoint_due_after_checkpoint_intents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkpoint_due() turns true every CHECKPOINT intents and false again after a checkpoint."""
    monkeypatch.setattr(journal_module, "CHECKPOINT", 3)
    journal = Journal(tmp_path / "j", durable=False)
    await write(journal, "obs://b/1", "obs://b/2")
    assert not journal.checkpoint_due()
    await write(journal, "obs://b/3")
    assert journal.checkpoint_due()
    journal.checkpoint()
    assert not journal.checkpoint_due()
    journal.close()


@pytest.mark.anyio
async def test_close_removes_the_file_when_all_settled(tmp_path: Path) -> None:
    """A run whose every intent was settled leaves no journal behind."""
    path = tmp_path / "j"
    journal = Journal(path, durable=False)
    await write(journal, "obs://b/1", "obs://b/2")
    journal.settle("obs://b/1")
    journal.settle("obs://b/2")
    journal.close()
    assert not path.exists()
    assert not (tmp_path / "j.tmp").exists()


@pytest.mark.anyio
async def test_close_keeps_open_intents(tmp_path: Path) -> None:
    """A run that ends with open intents leaves exactly those for the next run to look up."""
    path = tmp_path / "j"
    journal = Journal(path, durable=False)
    await write(journal, "obs://b/1", "obs://b/2")
    journal.settle("obs://b/1")
    journal.close()
    assert intents_in(path) == {"obs://b/2": "2"}


def test_inherited_intents_are_written_at_once(tmp_path: Path) -> None:
    """Intents inherited from a crashed run are in the new journal before any call is made."""
    path = tmp_path / "j"
    path.write_bytes(b'{"source":"obs://b/old","name":"old"}\n{"source":"obs://b/torn"')
    warn = Warnings()
    inherited = read_intents(path, warn)
    assert inherited == [Intent("obs://b/old", "old")]
    journal = Journal(path, inherited=inherited)
    assert intents_in(path) == {"obs://b/old": "old"}
    assert journal.open_intents == {"obs://b/old": "old"}
    journal.settle("obs://b/old")
    journal.close()
    assert not path.exists()


def test_empty_journal_file_on_start(tmp_path: Path) -> None:
    """A new journal with nothing inherited is an empty file until the first intent."""
    path = tmp_path / "j"
    journal = Journal(path)
    assert path.read_bytes() == b""
    journal.close()
    assert not path.exists()


def test_open_intents_is_a_copy(tmp_path: Path) -> None:
    """Changing the returned open_intents dict does not change the journal."""
    journal = Journal(tmp_path / "j", durable=False, inherited=[Intent("s", "n")])
    journal.open_intents.clear()
    assert journal.open_intents == {"s": "n"}
    journal.close()


# -- read_intents -------------------------------------------------------------------------------


def test_read_intents_missing_file(tmp_path: Path) -> None:
    """No journal means no open intents."""
    assert read_intents(tmp_path / "none", Warnings()) == []


def test_intents_joined_by_cr_line_endings_are_damage_not_a_torn_line(tmp_path: Path) -> None:
    """A journal whose LFs became CRs is one line without a LF: it was skipped as a torn last
    line, every intent was forgotten, and the killed run's jobs were created a second time."""
    path = tmp_path / "j"
    path.write_bytes(b'{"source":"a","name":"1"}\r{"source":"b","name":"2"}\r')
    with pytest.raises(UsageError, match=r"j:1: .*carriage return"):
        read_intents(path, Warnings())


@pytest.mark.parametrize(
    ("content", "expected", "torn"),
    [
        (b'{"source":"a","name":"1"}\n{"source":"b","name":"2"}\n', {"a": "1", "b": "2"}, False),
        (b'{"source":"a","name":"1"}\n{"source":"b","na', {"a": "1"}, True),
        (b'{"source":"a","name":"1"}\n{"source":"b","name":"2"}', {"a": "1", "b": "2"}, False),
        (b'{"source":"a","name":"1"}\n{"source":"a","name":"2"}\n', {"a": "2"}, False),
        (b'{"source":"a","name":"1"}\n\n{"source":"b","name":"2"}\n', {"a": "1", "b": "2"}, False),
        (b'{"source":"a","name":"1"}\n\xff\xfe', {"a": "1"}, True),
        (b"", {}, False),
    ],
)
def test_read_intents_skips_only_a_torn_last_line(
    tmp_path: Path, content: bytes, expected: dict[str, str], torn: bool
) -> None:
    """A last line a crash cut short is skipped with a warning naming file:line; a complete
    last line without its newline is an intent all the same."""
    path = tmp_path / "j"
    path.write_bytes(content)
    warn = Warnings()
    assert {i.source: i.name for i in read_intents(path, warn)} == expected
    lines = content.count(b"\n") + 1
    assert warn.messages == (
        [f"{path}:{lines}: the last line was cut short by a crash; skipped"] if torn else []
    )


@pytest.mark.parametrize(
    ("content", "number", "what"),
    [
        (b'garbage\n{"source":"a","name":"1"}\n', 1, "not a JSON object"),
        (
            b'{"source":"a","name":"1"}\n{"source":"b","na\n{"source":"c","name":"3"}\n',
            2,
            "not a JSON",
        ),
        (b'{"source":"a"}\n{"source":"b","name":"2"}\n', 1, "no 'name' string"),
        (b'{"source":"b","name":"2"}\n[1]\n', 2, "a JSON list, not an intent"),
        (b'{"source":"b","name":"2"}\nnull\n', 2, "a JSON NoneType, not an intent"),
        (b'{"source":7,"name":"2"}\n', 1, "no 'source' string"),
        (b'{"source":"a","name":"1","service_url":5}\n', 1, "'service_url' is not a string"),
        (b'\xff\xfe\n{"source":"a","name":"1"}\n', 1, "not a JSON object"),
        # the time decides which rows answer an intent: "0" let any older row answer it
        (b'{"source":"a","name":"1","at":"0"}\n{"source":"b","name":"2"}\n', 1, "'at' '0'"),
        (b'{"source":"a","name":"1","at":"zzz"}\n', 1, "'at' 'zzz' is not a time"),
    ],
)
def test_a_damaged_journal_line_before_the_last_stops_the_run(
    tmp_path: Path, content: bytes, number: int, what: str
) -> None:
    """Damage anywhere but a torn last line is an intent lost: skipping it would create that
    video again without looking it up, so reading the journal raises UsageError (exit 2)
    naming file:line, what is wrong and what to do, before any request."""
    path = tmp_path / "j"
    path.write_bytes(content)
    for read in (lambda: read_intents(path, Warnings()), lambda: journal_services(path)):
        with pytest.raises(UsageError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"{path}:{number}: {what}")
        assert "nothing was sent" in message
        assert "Repair that line" in message
        assert caught.value.exit_code == 2


def test_journal_services_reads_every_intents_service(tmp_path: Path) -> None:
    """Each line's service_url, and none for a line made without one."""
    path = tmp_path / "j"
    path.write_bytes(
        b'{"source":"a","name":"1","service_url":"http://x/v2/p/services/s/tasks"}\n'
        b'{"source":"b","name":"2"}\n{"source":"c","na'
    )
    assert journal_services(path) == {"http://x/v2/p/services/s/tasks"}
    assert journal_services(tmp_path / "none") == set()


# -- RunLock ------------------------------------------------------------------------------------


def test_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """A second lock on the same results file raises LockedError naming the holder's pid."""
    path = tmp_path / "r.csv.lock"
    first = RunLock(path)
    first.acquire("2024-01-01T00:00:00Z")
    try:
        assert path.read_text() == f"pid {os.getpid()}, started 2024-01-01T00:00:00Z\n"
        with pytest.raises(LockedError) as info:
            RunLock(path).acquire("later")
        message = str(info.value)
        assert f"pid {os.getpid()}" in message
        assert "2024-01-01T00:00:00Z" in message
        assert str(path) in message
        assert info.value.exit_code == 75
        # The refused contender did not overwrite the holder's name.
        assert path.read_text().startswith(f"pid {os.getpid()}")
    finally:
        first.release()


def test_lock_is_free_after_release(tmp_path: Path) -> None:
    """release() frees the lock for the next run, which then records itself."""
    path = tmp_path / "r.csv.lock"
    first = RunLock(path)
    first.acquire("one")
    first.release()
    first.release()  # idempotent
    second = RunLock(path)
    second.acquire("two")
    assert path.read_text() == f"pid {os.getpid()}, started two\n"
    second.release()


def test_stale_lock_file_content_does_not_block(tmp_path: Path) -> None:
    """A lock file left by a dead run (no flock held) does not stop the next run."""
    path = tmp_path / "r.csv.lock"
    path.write_text("pid 999999, started long ago, with a much longer line than ours\n")
    lock = RunLock(path)
    lock.acquire("now")
    assert path.read_text() == f"pid {os.getpid()}, started now\n"
    lock.release()


_HOLDER = """
import sys
from pathlib import Path
from batchsubmit.journal import RunLock
lock = RunLock(Path(sys.argv[1]))
lock.acquire("in the child")
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    """A lock held by another process is refused with its pid, and freed when that process ends."""
    path = tmp_path / "r.csv.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {child.pid}, started in the child"):
            RunLock(path).acquire("parent")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()
    lock = RunLock(path)
    lock.acquire("parent")
    lock.release()


def test_lock_in_a_missing_directory(tmp_path: Path) -> None:
    """A lock file that cannot be created is a UsageError, not an OSError."""
    with pytest.raises(UsageError, match="cannot create the lock file"):
        RunLock(tmp_path / "missing" / "r.lock").acquire("x")


@pytest.mark.anyio
async def test_a_send_moves_a_stale_intent_time_on(tmp_path: Path) -> None:
    """sending() right after the batch leaves the intent as it is; once its time is more
    than FRESH old it appends the intent with the send's time. Read back, and after a
    checkpoint rewrote the file, the latest time is the one that stands."""
    path = tmp_path / "j"
    journal = Journal(path, durable=False, service_url="http://h/v2/p/services/s/tasks")
    await write(journal, "obs://b/a.mp4")
    [first] = read_intents(path, Warnings())
    journal.sending("obs://b/a.mp4", "a.mp4")
    assert len(read_intents(path, Warnings())) == 1  # fresh: nothing written
    await anyio.sleep(journal_module.FRESH + 0.05)
    journal.sending("obs://b/a.mp4", "a.mp4")
    latest = {i.source: i.at for i in read_intents(path, Warnings())}["obs://b/a.mp4"]
    assert latest > first.at
    journal.checkpoint()
    assert [(i.source, i.at) for i in read_intents(path, Warnings())] == [("obs://b/a.mp4", latest)]
    journal.settle("obs://b/a.mp4")
    journal.close()
