"""Progress: counts that add up to what the run's summary says."""

from __future__ import annotations

import io

from batchsubmit.pool import NOT_CREATED
from batchsubmit.progress import LineReporter, Log
from batchsubmit.results import Outcome


def _outcome(status: str, error_code: str = "") -> Outcome:
    return Outcome(
        source="obs://b/k.mp4",
        name="k",
        job_id="",
        status=status,
        http_status=0,
        error_code=error_code,
        error_msg="",
        attempts=0,
        request_id="",
        submitted_at="",
        service_url="",
    )


def test_a_lookup_that_found_no_job_is_not_a_failure_nor_done() -> None:
    """An earlier create found never made comes up again and is created: progress counts the
    video once (when created), and never as failed, so `done` cannot pass its total."""
    reporter = LineReporter(Log(io.StringIO()), total=1)
    reporter.outcome(_outcome("failed", NOT_CREATED))
    reporter.outcome(_outcome("submitted"))
    counts = reporter.counts
    assert (counts.done, counts.submitted, counts.failed) == (1, 1, 0)


def test_every_real_outcome_is_counted() -> None:
    """Submitted, failed and unknown outcomes each count once."""
    reporter = LineReporter(Log(io.StringIO()), total=3)
    for status in ("submitted", "failed", "unknown"):
        reporter.outcome(_outcome(status, "IVA.0004" if status == "failed" else ""))
    counts = reporter.counts
    assert (counts.done, counts.submitted, counts.failed, counts.unknown) == (3, 1, 1, 1)
