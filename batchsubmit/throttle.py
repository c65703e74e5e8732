"""One pool-wide controller that decides when the next call may start. Pure: the caller passes
the time, so tests drive it with a fake clock.

Two limits hold at once:

* pacing by GCRA (the generic cell rate algorithm): starts are spaced ``1/rate`` apart, with a
  tolerance of one interval, so a run never bursts at its start or after a pause;
* a sliding-window log: never more than ``rate`` starts within ``WINDOW + GUARD`` seconds (one
  start per interval when the rate is below one a second), so the gateway, which counts calls
  per second as they arrive, never sees more than its limit even when network jitter bunches
  our calls up.

The rate adapts by AIMD (additive increase, multiplicative decrease, as TCP's congestion control):
a 429 multiplies it by ``decrease`` (at most once per ``cooldown``); after ``quiet`` seconds without
a throttle it grows by ``increase`` of the ceiling per second, back to ``--rate``, which is never
exceeded. A limit the gateway states (its 429 message or ``X-ratelimit`` headers) becomes the
ceiling at once and holds for ``hint_hold`` seconds after it was last seen, then probing resumes.

503s are a different signal: scattered ones leave the pool alone (each job backs off by itself);
only when more than ``slow_share`` of the calls in the last ``share_window`` seconds got 503 does
the rate drop by ``unavailable_decrease``, and above ``break_share`` new work is held for
``break_hold`` seconds, as a circuit breaker would.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["ControllerSettings", "RateController"]

WINDOW = 1.0
GUARD = 0.05


@dataclass(frozen=True, kw_only=True)
class ControllerSettings:
    decrease: float = 0.5
    increase: float = 0.05  # of the ceiling (or of the rate first throttled at), per second
    quiet: float = 2.0
    cooldown: float = 1.0
    hint_hold: float = 10.0
    floor: float = 1.0
    share_window: float = 10.0
    min_samples: int = 20
    slow_share: float = 0.5
    break_share: float = 0.8
    unavailable_decrease: float = 0.75
    break_hold: float = 2.0
    max_pause: float = 60.0


class RateController:
    """Decides when calls may start; ``ceiling`` 0 means no limit until the service sets one."""

    def __init__(self, ceiling: float, settings: ControllerSettings | None = None) -> None:
        self.settings = s = settings or ControllerSettings()
        self.ceiling = ceiling if ceiling > 0 else math.inf
        self.rate = self.ceiling
        self._floor = min(s.floor, self.ceiling)
        self._step = s.increase * ceiling if ceiling > 0 else 0.0
        self._tat = 0.0
        self._starts: deque[float] = deque()
        self._paused_until = 0.0
        self._last_throttle = -math.inf
        self._last_decrease = -math.inf
        self._last_update: float | None = None
        self._hint = math.inf
        self._hint_until = -math.inf
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._unavailable = 0
        self.throttles = 0
        self.pauses = 0
        self.lowest = self.rate

    @property
    def unlimited(self) -> bool:
        return self.rate == math.inf and self._paused_until == 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before a call may start at ``now`` (0 or less: start now)."""
        if now < self._paused_until:
            return self._paused_until - now
        self._paused_until = 0.0
        self._grow(now)
        if self.rate == math.inf:
            return 0.0
        wait = self._tat - 1.0 / self.rate - now
        allowed = max(1, int(self.rate))
        if len(self._starts) >= allowed:
            wait = max(wait, self._starts[-allowed] + self._span() + GUARD - now)
        return wait

    def _span(self) -> float:
        """The sliding window: a second, or one interval when the rate is below one a second
        (GCRA's tolerance alone would let a second call start at once: two in a second at
        ``--rate 0.01``)."""
        return WINDOW if self.rate >= 1 else 1.0 / self.rate

    def started(self, now: float) -> None:
        """Record a call that starts now."""
        starts = self._starts
        starts.append(now)
        horizon = now - self._span() - GUARD
        while starts[0] <= horizon:
            starts.popleft()
        if self.rate != math.inf:
            self._tat = max(self._tat, now) + 1.0 / self.rate

    def throttled(self, now: float, hint: float | None) -> None:
        """A 429: slow down, to the stated limit if the gateway gave one."""
        self.throttles += 1
        self._last_throttle = now
        if hint is not None and hint > 0:
            self._set_hint(now, hint)
            if self.rate > self._hint:
                self._set_rate(self._hint, now)
                return
        if now - self._last_decrease >= self.settings.cooldown:
            self._set_rate(self._current(now) * self.settings.decrease, now)

    def observed_limit(self, now: float, hint: float) -> None:
        """``X-ratelimit`` headers on an answer: the gateway's limit, in calls per second."""
        if hint > 0:
            self._set_hint(now, hint)
            if self.rate > self._hint:
                self._set_rate(self._hint, now)

    def answered(self, now: float, unavailable: bool) -> None:
        """Any answer: feeds the share of 503s over the recent window."""
        s = self.settings
        outcomes = self._outcomes
        outcomes.append((now, unavailable))
        self._unavailable += unavailable
        horizon = now - s.share_window
        while outcomes and outcomes[0][0] < horizon:
            self._unavailable -= outcomes.popleft()[1]
        if not unavailable or len(outcomes) < s.min_samples:
            return
        share = self._unavailable / len(outcomes)
        if share >= s.break_share:
            self.pause(now, s.break_hold)
            outcomes.clear()
            self._unavailable = 0
        if share >= s.slow_share and now - self._last_decrease >= s.cooldown:
            self._set_rate(self._current(now) * s.unavailable_decrease, now)

    def pause(self, now: float, seconds: float) -> float:
        """Hold every new call (Retry-After, circuit breaker); returns the pause actually set."""
        seconds = max(0.0, min(seconds, self.settings.max_pause))
        if now + seconds > self._paused_until:
            self._paused_until = now + seconds
            self.pauses += 1
        return seconds

    def _current(self, now: float) -> float:
        """The rate to decrease from: the achieved rate when there was no limit yet."""
        if self.rate != math.inf:
            return self.rate
        recent = sum(1 for t in self._starts if t > now - WINDOW)
        return max(float(recent), self._floor * 2)

    def _set_rate(self, rate: float, now: float) -> None:
        if self._step == 0.0:
            self._step = max(1.0, self.settings.increase * self._current(now))
        self.rate = max(self._floor, min(rate, self.ceiling))
        self.lowest = min(self.lowest, self.rate)
        self._last_decrease = now
        self._last_update = now
        self._tat = min(self._tat, now + 1.0 / self.rate)

    def _set_hint(self, now: float, hint: float) -> None:
        self._hint = max(self._floor, hint)
        self._hint_until = now + self.settings.hint_hold

    def _grow(self, now: float) -> None:
        """Additive increase, once the service has been quiet for a while."""
        if self._last_update is None or self.rate == math.inf:
            return
        elapsed = now - self._last_update
        self._last_update = now
        if now - self._last_throttle < self.settings.quiet:
            return
        limit = self.ceiling
        if now < self._hint_until:
            limit = min(limit, self._hint)
        if self.rate < limit:
            self.rate = min(limit, self.rate + self._step * elapsed)
