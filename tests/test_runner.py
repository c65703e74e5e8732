"""The run's own settings around the pool."""

from __future__ import annotations

import gc

from batchsubmit.runner import GC_THRESHOLD, fewer_collections


def test_a_run_collects_garbage_less_often_and_restores_the_collector() -> None:
    """During a run the collector runs every GC_THRESHOLD allocations and skips what existed
    before it; afterwards the process's own settings are back."""
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with fewer_collections():
        assert gc.get_threshold()[0] == GC_THRESHOLD
        assert gc.get_freeze_count() > frozen
        assert gc.isenabled()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
