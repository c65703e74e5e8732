"""A job's row, what it adds to the run's counts, and the stop rules those counts drive.

Every row of a run is written here (:meth:`Rows.write`): the results file (the sink) gets it,
the journal lets the job's intent go, the progress display is told, and the counts move. The
run stops on --max-failures, on the first ``same_failures`` jobs failing alike (the manifest
is wrong for every job), on a refusal every call would repeat, and creates nothing more once
the account's job quota is full (:meth:`Rows.refused`, the gate's hook). --max-jobs counts
the jobs that may cost money (:class:`JobLimit`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .answers import QUOTA, Answer, Kind, manifest_key_for, shorten
from .engine.gate import Gate, Stopped
from .errors import ApiError, FatalApiError
from .results import Outcome, utc_now

__all__ = [
    "DUPLICATE",
    "INTERRUPTED",
    "NOT_CREATED",
    "QUOTA_FULL",
    "JobLimit",
    "Journal",
    "Reporter",
    "Rows",
    "Sink",
    "describe",
]

QUOTA_FULL = "the account's job quota is full"  # the stop reason of an IVA.0012 mid-run

NOT_CREATED = "BATCHSUBMIT.NOT_CREATED"
INTERRUPTED = "BATCHSUBMIT.INTERRUPTED"
DUPLICATE = "BATCHSUBMIT.DUPLICATE"


class Sink(Protocol):
    def write(self, outcome: Outcome) -> None: ...
    def flush(self) -> None: ...


class Journal(Protocol):
    def intend(self, intents: list[tuple[str, str]]) -> None: ...
    def sending(self, source: str, name: str) -> None: ...
    async def commit(self) -> None: ...
    def settle(self, source: str) -> None: ...
    def checkpoint_due(self) -> bool: ...
    def checkpoint(self) -> None: ...


class Reporter(Protocol):
    def outcome(self, outcome: Outcome) -> None: ...
    def log(self, level: str, message: str) -> None: ...


class Rows:
    """Writes rows and keeps the counts; stops the run when a count says every job would fail."""

    def __init__(
        self,
        sink: Sink,
        reporter: Reporter,
        journal: Journal | None,
        gate: Gate,
        *,
        service_url: str,
        max_failures: int | None,
        same_failures: int,
        quota_defers: bool,
    ) -> None:
        self.sink = sink
        self._reporter = reporter
        self._journal = journal
        self._gate = gate
        self._stats = gate.stats
        self._service_url = service_url
        self._max_failures = max_failures
        self._same_failures = same_failures
        self._quota_defers = quota_defers
        self._alike: tuple[str, int] | None = ("", 0)  # the first failures' code, how many

    def write(
        self,
        source: str,
        name: str,
        status: str,
        answer: Answer,
        attempts: int,
        *,
        reconciled: bool = False,
    ) -> None:
        outcome = Outcome(
            source=source,
            name=name,
            job_id=answer.job_id,
            status=status,
            http_status=answer.status,
            error_code=answer.error_code,
            error_msg=shorten(answer.error_msg),
            attempts=attempts,
            request_id=answer.request_id,
            submitted_at=utc_now(),
            service_url=self._service_url,
            reconciled=reconciled,
        )
        self.sink.write(outcome)
        stats = self._stats
        if status == "duplicate":
            # Not the video's outcome (its own row is written just before): no journal, no tick.
            stats.duplicates.append(answer.job_id)
            return
        if self._journal is not None:
            self._journal.settle(source)
        if status == "submitted":
            stats.submitted += 1
            stats.reconciled += reconciled
            self._alike = None
        elif status == "unknown":
            stats.unknown += 1
            stats.first_errors.setdefault(answer.error_code or "unknown", describe(answer))
        elif answer.error_code != NOT_CREATED:
            stats.failed += 1
            stats.first_errors.setdefault(
                answer.error_code or str(answer.status), f"{source}: {describe(answer)}"
            )
            limit = self._max_failures
            if limit is not None and stats.failed >= limit:
                self._gate.refuse(
                    answer,
                    f"{stats.failed} jobs failed (--max-failures {limit})",
                    f"--max-failures {limit} reached",
                )
            self._count_alike(answer)
        self._reporter.outcome(outcome)

    def _count_alike(self, answer: Answer) -> None:
        """The first ``same_failures`` jobs all failed with one 4xx code and none succeeded:
        the manifest is wrong for every job, so stop and name the key it most likely is."""
        needed, alike = self._same_failures, self._alike
        if not needed or alike is None:
            return
        code = answer.error_code or f"HTTP {answer.status}"
        if (
            answer.kind is not Kind.FAILED
            or not 400 <= answer.status < 500
            or answer.status in (408, 429)
            or (alike[1] and alike[0] != code)
        ):
            self._alike = None  # not a job's own fault, or not all alike: the rule is off
            return
        self._alike = alike = (code, alike[1] + 1)
        if alike[1] >= needed:
            key = manifest_key_for(answer.error_code, answer.error_msg)
            self._gate.refuse(
                answer,
                f"the first {needed} jobs all failed with {describe(answer)}, and none "
                f"succeeded: it most likely comes from {key} in the manifest; fix it and run "
                "again (the failed videos are submitted again then)",
                f"the first {needed} jobs failed alike",
                f"fix {key} in the manifest",
            )

    def refused(self, answer: Answer) -> None:
        """The gate's hook for a FATAL answer. IVA.0012 mid-run (other tools share the quota):
        create nothing more, let the calls in flight finish, defer the rest, say what to do;
        fatal unless ``quota_defers``. Any other refusal is fatal."""
        if answer.error_code != QUOTA:
            self._gate.refuse(
                answer,
                f"{describe(answer)}; {answer.advice}",
                "the service refused in a way every job would repeat",
            )
            return
        stats = self._stats
        if stats.deferred_reason is None:
            stats.deferred_reason = (
                f"the account's job quota is full ({describe(answer)}): the videos not yet "
                "created are deferred to the next run; make room with `batchsubmit prune "
                "RESULTS` (or `submit --make-room`)"
            )
            if not self._quota_defers:
                error = ApiError(answer.status, answer.error_code, answer.error_msg)
                stats.fail(FatalApiError(error, "make room"), stats.deferred_reason)
        self._gate.stop(QUOTA_FULL)


class JobLimit:
    """--max-jobs counts what costs money: jobs created, or maybe created (unknown). A job
    under way holds a place; one that fails gives it back, so the limit is reached exactly."""

    def __init__(self, gate: Gate, limit: int | None) -> None:
        self._gate = gate
        self.limit = limit
        self._taken = 0
        self._created = 0
        self._changed = asyncio.Event()

    def admit(self) -> bool:
        """False once the limit is reached by jobs created (the rest is deferred)."""
        if self.limit is None or self._created < self.limit:
            return True
        self._gate.stats.stop_reason = f"--max-jobs {self.limit} reached"
        return False

    async def take(self) -> None:
        """Wait while the jobs under way could still reach the limit; Stopped once it is."""
        limit = self.limit
        if limit is None:
            return
        while self._taken >= limit:
            if self._created >= limit or self._gate.stopping:
                stats = self._gate.stats
                stats.stop_reason = stats.stop_reason or f"--max-jobs {limit} reached"
                raise Stopped
            changed = self._changed
            if changed.is_set():
                changed = self._changed = asyncio.Event()
            await changed.wait()
        self._taken += 1

    def give(self, row: str) -> None:
        """The job's row is written (or it is deferred, ``row`` empty): a job created, or maybe
        created, keeps its place."""
        if self.limit is None:
            return
        if row in ("submitted", "unknown"):
            self._created += 1
        else:
            self._taken -= 1
        self._changed.set()

    def wake(self) -> None:
        """The run stops: jobs waiting for a place are deferred."""
        self._changed.set()


def describe(answer: Answer) -> str:
    parts = [f"HTTP {answer.status}" if answer.status else "", answer.error_code, answer.error_msg]
    text = shorten(" ".join(p for p in parts if p))
    if answer.request_id:
        text += f" (request id {answer.request_id})"
    return text or answer.kind.value
