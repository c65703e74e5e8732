"""Retry decisions: capped full-jitter backoff, separate budgets, Retry-After replacing the wait."""

from __future__ import annotations

import random

import pytest

from batchsubmit.answers import Answer, Kind
from batchsubmit.retry import DEFAULT_RETRY, RetryPolicy, backoff, next_wait

POLICY = RetryPolicy(
    attempts=5, throttles=8, base=0.5, cap=6.0, throttle_base=1.0, throttle_cap=5.0
)


class Edge(random.Random):
    """A random source that always gives the lower or the upper end of uniform()."""

    def __init__(self, upper: bool) -> None:
        super().__init__(0)
        self.upper = upper

    def uniform(self, a: float, b: float) -> float:
        return b if self.upper else a


def answer(kind: Kind, retry_after: float | None = None) -> Answer:
    return Answer(kind=kind, retry_after=retry_after)


@pytest.mark.parametrize("attempt", range(1, 13))
def test_backoff_upper_bound(attempt: int) -> None:
    """The longest wait before retry n is min(cap, base * 2**(n-1))."""
    expected = min(6.0, 0.5 * 2 ** (attempt - 1))
    assert backoff(attempt, 0.5, 6.0, Edge(upper=True)) == expected
    assert backoff(attempt, 0.5, 6.0, Edge(upper=False)) == 0.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20])
def test_backoff_is_full_jitter(attempt: int) -> None:
    """Waits spread over the whole [0, ceiling] range (full jitter), never outside it."""
    rng = random.Random(attempt)
    ceiling = min(6.0, 0.5 * 2 ** (attempt - 1))
    waits = [backoff(attempt, 0.5, 6.0, rng) for _ in range(2000)]
    assert all(0.0 <= w <= ceiling for w in waits)
    assert min(waits) < 0.05 * ceiling
    assert max(waits) > 0.95 * ceiling
    assert sum(waits) / len(waits) == pytest.approx(ceiling / 2, rel=0.1)


def test_backoff_huge_attempt_does_not_overflow() -> None:
    """A very late attempt number still gives a wait within the cap, without overflow."""
    assert backoff(10_000, 1.0, 30.0, Edge(upper=True)) == 30.0


@pytest.mark.parametrize("kind", [Kind.UNAVAILABLE, Kind.NOT_SENT])
@pytest.mark.parametrize("failures", range(1, 5))
def test_failure_waits_follow_the_policy(kind: Kind, failures: int) -> None:
    """A retryable failure waits within [0, min(cap, base*2**(n-1))] while attempts remain."""
    top = next_wait(POLICY, answer(kind), failures, 0, Edge(upper=True))
    low = next_wait(POLICY, answer(kind), failures, 0, Edge(upper=False))
    assert top == min(POLICY.cap, POLICY.base * 2 ** (failures - 1))
    assert low == 0.0


@pytest.mark.parametrize("kind", [Kind.UNAVAILABLE, Kind.NOT_SENT])
@pytest.mark.parametrize("failures", [5, 6, 100])
def test_attempts_exhausted(kind: Kind, failures: int) -> None:
    """After `attempts` calls failed retryably, the job gets no further try."""
    assert next_wait(POLICY, answer(kind), failures, 0, random.Random(1)) is None


@pytest.mark.parametrize("throttles", range(1, 8))
def test_throttle_waits_use_their_own_curve(throttles: int) -> None:
    """A 429 waits within [0, min(throttle_cap, throttle_base*2**(n-1))] (Huawei: 2 to 5 s)."""
    top = next_wait(POLICY, answer(Kind.THROTTLED), 0, throttles, Edge(upper=True))
    assert top == min(POLICY.throttle_cap, POLICY.throttle_base * 2 ** (throttles - 1))


@pytest.mark.parametrize("throttles", [8, 9, 1000])
def test_throttles_exhausted(throttles: int) -> None:
    """After `throttles` 429s, the job gets no further try."""
    assert next_wait(POLICY, answer(Kind.THROTTLED), 0, throttles, random.Random(1)) is None


def test_throttles_do_not_use_up_attempts() -> None:
    """Throttles and failures have separate budgets: many 429s leave the failure budget whole."""
    rng = random.Random(2)
    assert next_wait(POLICY, answer(Kind.THROTTLED), 100, 1, rng) is not None
    assert next_wait(POLICY, answer(Kind.UNAVAILABLE), 1, 100, rng) is not None
    assert next_wait(POLICY, answer(Kind.UNAVAILABLE), 5, 1, rng) is None
    assert next_wait(POLICY, answer(Kind.THROTTLED), 1, 8, rng) is None


@pytest.mark.parametrize("kind", [Kind.THROTTLED, Kind.UNAVAILABLE, Kind.NOT_SENT])
@pytest.mark.parametrize(
    ("retry_after", "expected"), [(0.0, 0.0), (7.0, 7.0), (0.25, 0.25), (59.0, 59.0), (600.0, 60.0)]
)
def test_retry_after_replaces_the_backoff(kind: Kind, retry_after: float, expected: float) -> None:
    """Retry-After replaces the computed wait (even above the backoff cap) but is itself capped."""
    policy = RetryPolicy(retry_after_cap=60.0)
    for upper in (True, False):
        assert next_wait(policy, answer(kind, retry_after), 1, 1, Edge(upper)) == expected


def test_retry_after_does_not_extend_the_budget() -> None:
    """A Retry-After on an answer that used up the budget still ends the job's tries."""
    assert next_wait(POLICY, answer(Kind.THROTTLED, 1.0), 0, 8, random.Random(1)) is None
    assert next_wait(POLICY, answer(Kind.UNAVAILABLE, 1.0), 5, 0, random.Random(1)) is None


@pytest.mark.parametrize("kind", [Kind.CREATED, Kind.OK, Kind.AMBIGUOUS, Kind.FAILED, Kind.FATAL])
def test_other_kinds_are_not_retried(kind: Kind) -> None:
    """Only throttles, unavailability and unsent calls are retried blindly."""
    assert next_wait(POLICY, answer(kind, retry_after=1.0), 1, 1, random.Random(1)) is None


def test_default_policy_follows_huawei_advice() -> None:
    """The default throttle wait tops out at 2 to 5 s, and every budget is finite."""
    assert 2.0 <= DEFAULT_RETRY.throttle_cap <= 5.0
    assert DEFAULT_RETRY.attempts >= 1
    assert DEFAULT_RETRY.throttles >= DEFAULT_RETRY.attempts
    assert DEFAULT_RETRY.cap >= DEFAULT_RETRY.base > 0


def test_policy_is_keyword_only_and_frozen() -> None:
    """RetryPolicy is a frozen keyword-only value."""
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        DEFAULT_RETRY.attempts = 1  # type: ignore[misc]
