"""What a person (or cron) sees while a run goes: a tqdm bar on a terminal, a progress line every
few seconds otherwise, and log lines as text or JSON.

Two reporters behind one interface (``outcome`` and ``log``); ``-q`` keeps every line in memory
and shows them only if the run fails, so cron mails arrive only when something went wrong.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from .pool import NOT_CREATED
from .results import STATUSES, Outcome

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "LineReporter",
    "Log",
    "ProgressReporter",
    "Reporter",
    "TqdmReporter",
    "make_reporter",
    "printable",
]

PROGRESS_EVERY = 5.0
QUIET_KEEP = 10_000


class Log:
    """Log lines to a stream, as text or JSON; in quiet mode they wait in memory."""

    def __init__(self, stream: TextIO, *, json: bool = False, quiet: bool = False) -> None:
        self._stream = stream
        self._json = json
        self.quiet = quiet
        self._held: deque[str] = deque(maxlen=QUIET_KEEP)
        self._dropped = 0
        self._writer: tqdm[Any] | None = None

    def line(self, level: str, message: str, **fields: object) -> None:
        text = self._format(level, message, fields)
        if self.quiet:
            if len(self._held) == QUIET_KEEP:
                self._dropped += 1
            self._held.append(text)
            return
        self._emit(text)

    def _format(self, level: str, message: str, fields: dict[str, object]) -> str:
        stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if not self._json:
            return f"{stamp} {level}: {message}"
        record = {"ts": stamp, "level": level, "msg": message, **fields}
        try:
            return orjson.dumps(record).decode()
        except TypeError:  # a path that is not UTF-8 (surrogates): shown, never a crash
            return orjson.dumps(printable(record)).decode()

    def _emit(self, text: str) -> None:
        if self._writer is not None:
            self._writer.write(text, file=self._stream)
        else:
            self._stream.write(text + "\n")
            self._stream.flush()

    def attach(self, bar: tqdm[Any] | None) -> None:
        """Route lines through the bar while it is on screen, so they do not tear it."""
        self._writer = bar

    def release(self) -> None:
        """Show what quiet mode held back (the run failed)."""
        if self._dropped:  # a log line like the others: under json, one JSON object too
            self._emit(self._format("warning", f"{self._dropped} earlier lines dropped", {}))
        for text in self._held:
            self._emit(text)
        self._held.clear()


def printable(value: Any) -> Any:
    """``value`` with every string made valid UTF-8: the bytes a path smuggled in as
    surrogates (os.fsdecode's surrogateescape) become ``\\xff``, other lone surrogates
    ``\\udc80``, as a text log line shows them."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(item) for item in value]
    return value


@dataclass
class _Counts:
    done: int = 0
    submitted: int = 0
    failed: int = 0
    unknown: int = 0


class ProgressReporter:
    """Common part: counts outcomes and forwards log lines."""

    def __init__(self, log: Log, total: int | None, succeeded: str = "submitted") -> None:
        self.log_sink = log
        self.total = total
        self.succeeded = succeeded  # a success's word: "submitted" (submit), "succeeded" (status)
        self.counts = _Counts()
        self.started = time.monotonic()

    def outcome(self, outcome: Outcome) -> None:
        """Count a video once, when its outcome for this run is known. A lookup that found
        an earlier create never made is not that: the video comes up again and is created
        (so the progress line cannot pass its total, and "failed" agrees with the summary)."""
        if outcome.error_code == NOT_CREATED or outcome.status not in STATUSES:
            return
        counts = self.counts
        counts.done += 1
        status = outcome.status
        if status == "submitted":
            counts.submitted += 1
        elif status == "unknown":
            counts.unknown += 1
        elif status == "failed":
            counts.failed += 1
        self._tick()

    def log(self, level: str, message: str) -> None:
        self.log_sink.line(level, message)

    def _tick(self) -> None:
        """Called after every outcome; subclasses show progress."""

    def close(self) -> None:
        """Take the progress display down."""


class TqdmReporter(ProgressReporter):
    """A bar on a terminal: done/total, rate, ETA, and failures."""

    def __init__(self, log: Log, total: int | None, stream: TextIO) -> None:
        super().__init__(log, total)
        from tqdm import tqdm  # only on a terminal: cron runs never import it

        self._bar: tqdm[Any] = tqdm(
            total=total,
            unit="job",
            file=stream,
            dynamic_ncols=True,
            mininterval=0.2,
            smoothing=0.1,
        )
        self._shown = (0, 0)
        self._bar.set_postfix(failed=0, unknown=0, refresh=False)
        log.attach(self._bar)

    def _tick(self) -> None:
        self._bar.update(1)
        counts = self.counts
        bad = (counts.failed, counts.unknown)
        if bad != self._shown:
            self._shown = bad
            self._bar.set_postfix(failed=counts.failed, unknown=counts.unknown, refresh=False)

    def close(self) -> None:
        self.log_sink.attach(None)
        self._bar.close()


class LineReporter(ProgressReporter):
    """Not a terminal (cron, a pipe): one progress line every few seconds."""

    def __init__(
        self,
        log: Log,
        total: int | None,
        every: float | None = None,
        succeeded: str = "submitted",
    ) -> None:
        super().__init__(log, total, succeeded)
        self._every = PROGRESS_EVERY if every is None else every
        self._next = self.started + self._every

    def _tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        counts = self.counts
        elapsed = now - self.started
        rate = counts.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", about {max(0.0, (self.total - counts.done) / rate):.0f} s left"
        self.log_sink.line(
            "info",
            f"progress: {counts.done}{of} done ({counts.submitted} {self.succeeded}, "
            f"{counts.failed} failed, {counts.unknown} unknown), {rate:.1f} jobs/s{eta}",
        )


Reporter = ProgressReporter


def make_reporter(
    log: Log, total: int | None, stream: TextIO, *, bar: bool, succeeded: str = "submitted"
) -> ProgressReporter:
    if bar and not log.quiet:
        return TqdmReporter(log, total, stream)
    return LineReporter(log, total, succeeded=succeeded)
