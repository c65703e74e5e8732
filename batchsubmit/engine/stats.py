"""What a run did: counts the engine and the exactly-once rules keep, rendered by the CLI."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import BatchSubmitError

__all__ = ["RunStats"]


@dataclass
class RunStats:
    """What a run did; the CLI renders it as the summary, the JSON summary and the metrics."""

    submitted: int = 0
    reconciled: int = 0
    failed: int = 0
    unknown: int = 0
    not_created: int = 0
    deferred: int = 0
    skipped: int = 0
    calls: int = 0
    opening_calls: int = 0  # before the first VAS call: credentials, project id, OBS listing
    retries: int = 0
    throttles: int = 0
    unavailable: int = 0
    ambiguous: int = 0
    lookups: int = 0
    first_errors: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None
    # Why the run stopped as fatal: ``fatal`` is the line the CLI prints, ``fatal_error`` the
    # typed reason (a FatalApiError for the service's refusals, the error that stopped reading
    # the sources otherwise). Set together by :meth:`fail`; the first reason wins.
    fatal: str | None = None
    fatal_error: BatchSubmitError | None = None
    learned_rate: float | None = None  # inf: no limit; None: no pass ran
    lowest_rate: float | None = None
    pauses: int = 0
    deferred_reason: str | None = None  # why jobs were deferred, and what to do, when it matters
    duplicates: list[str] = field(default_factory=list)  # ids of extra jobs found for a video
    signal: int | None = None
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Jobs submitted per second of the run."""
        return self.submitted / self.elapsed if self.elapsed > 0 else 0.0

    def fail(self, error: BatchSubmitError, text: str | None = None) -> None:
        """Record why the run stops as fatal (exit 3), unless a reason is recorded already."""
        if self.fatal is None:
            self.fatal = text if text is not None else str(error)
            self.fatal_error = error
