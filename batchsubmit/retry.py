"""When to try a call again and how long to wait first: pure functions of the attempt and answer.

Exponential backoff with full jitter (AWS's "Exponential Backoff and Jitter"): the wait is
uniform in [0, min(cap, base * 2**(n-1))], so retrying workers spread out instead of
returning together. ``Retry-After`` replaces the computed wait, capped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .answers import Answer, Kind

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "backoff", "next_wait"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounds on retrying one job; throttles have their own budget (they are not failures)."""

    attempts: int = 10  # calls for one job that failed retryably (503, not sent, lost lookups)
    throttles: int = 60  # 429 answers one job may get before it fails
    base: float = 1.0
    cap: float = 4.0  # per job; a sustained outage is the pool's business (see throttle)
    throttle_base: float = 1.0
    throttle_cap: float = 5.0  # Huawei advises 2 to 5 s after a throttle
    retry_after_cap: float = 60.0


DEFAULT_RETRY = RetryPolicy()


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1 for the first)."""
    ceiling = min(cap, base * (2.0 ** min(attempt - 1, 60)))
    return rng.uniform(0.0, ceiling)


def next_wait(
    policy: RetryPolicy, answer: Answer, failures: int, throttles: int, rng: random.Random
) -> float | None:
    """Seconds to wait before the next try, or None when the job has had its chances.

    ``failures`` and ``throttles`` count what the job has seen so far, this answer included.
    """
    if answer.kind is Kind.THROTTLED:
        if throttles >= policy.throttles:
            return None
        wait = backoff(throttles, policy.throttle_base, policy.throttle_cap, rng)
    elif answer.kind in (Kind.UNAVAILABLE, Kind.NOT_SENT):
        if failures >= policy.attempts:
            return None
        wait = backoff(failures, policy.base, policy.cap, rng)
    else:
        return None
    if answer.retry_after is not None:
        wait = min(answer.retry_after, policy.retry_after_cap)
    return wait
