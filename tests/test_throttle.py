"""The pool-wide rate controller, driven by a fake clock: pacing, AIMD, hints, 503s, pauses."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from batchsubmit.throttle import ControllerSettings, RateController

T0 = 1000.0
# The tuning these tests were written against, pinned so that retuning the defaults (a product
# decision) does not silently change what the tests check; test_defaults_are_sane covers those.
SETTINGS = ControllerSettings(
    decrease=0.5,
    increase=0.05,
    quiet=2.0,
    cooldown=1.0,
    hint_hold=30.0,
    floor=1.0,
    share_window=10.0,
    min_samples=20,
    slow_share=0.5,
    break_share=0.8,
    unavailable_decrease=0.75,
    break_hold=2.0,
    max_pause=60.0,
)
OnStart = Callable[[RateController, float, int], None]


class Sim:
    """Always one call waiting: ask delay(), start when it allows, else sleep as told."""

    def __init__(self, controller: RateController, now: float = T0) -> None:
        self.controller = controller
        self.now = now
        self.starts: list[float] = []
        self.rates: list[float] = []

    def run(self, until: float, on_start: OnStart | None = None, gap: float = 0.0) -> list[float]:
        """Run to ``until``; ``gap`` is the least time between starts (demand), 0 for unlimited."""
        first = len(self.starts)
        controller = self.controller
        for _ in range(1_000_000):
            if self.now >= until:
                return self.starts[first:]
            wait = controller.delay(self.now)
            self.rates.append(controller.rate)
            if wait <= 0:
                controller.started(self.now)
                self.starts.append(self.now)
                if on_start is not None:
                    on_start(controller, self.now, len(self.starts) - 1)
                self.now += gap
            else:
                self.now = max(self.now + wait, math.nextafter(self.now, math.inf))
        raise AssertionError("the controller never let time advance")


def most_in_window(starts: list[float], window: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + window)."""
    ordered = sorted(starts)
    best = first = 0
    for index, moment in enumerate(ordered):
        while moment - ordered[first] >= window:
            first += 1
        best = max(best, index - first + 1)
    return best


# -- pacing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 2, 3, 5, 10, 37, 50, 200])
def test_never_more_than_rate_per_second_and_close_to_it(rate: int) -> None:
    """No 1-second window holds more than `rate` starts, and the average stays close to `rate`."""
    sim = Sim(RateController(rate, SETTINGS))
    starts = sim.run(T0 + 10.0)
    assert most_in_window(starts) <= rate
    assert 0.9 * rate <= len(starts) / 10.0 <= rate


@pytest.mark.parametrize("rate", [0.5, 1.5, 2.5, 7.75])
def test_fractional_rates_never_exceed_the_rate(rate: float) -> None:
    """A fractional rate is never exceeded: at most rate (or 1) per second, rate*T (+1) over T."""
    starts = Sim(RateController(rate, SETTINGS)).run(T0 + 20.0)
    assert most_in_window(starts) <= max(1, math.floor(rate))
    assert len(starts) <= rate * 20.0 + 1


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_a_rate_below_one_a_second_spaces_every_start_by_its_interval(rate: float) -> None:
    """`--rate 0.01` is one call per 100 s from the first: GCRA's tolerance of one interval
    let the second call start a second after the first (the window then was one second)."""
    starts = Sim(RateController(rate, SETTINGS)).run(T0 + 20.0 / rate)
    assert most_in_window(starts, 1.0 / rate) == 1
    assert len(starts) >= 19


@pytest.mark.parametrize("rate", [5, 10, 50, 200])
@pytest.mark.parametrize("clock", [0.0, 1e6 + 0.3])
def test_no_burst_at_start(rate: int, clock: float) -> None:
    """A fresh controller paces from the first call: no bucket of `rate` calls at once."""
    sim = Sim(RateController(rate, SETTINGS), now=clock)
    starts = sim.run(clock + 2.0)
    assert starts.count(clock) <= 2
    assert sum(1 for t in starts if t < clock + 0.5) <= 0.5 * rate + 2


def test_started_without_delay_still_counts() -> None:
    """Starts recorded back to back push the next allowed start out (the window log holds)."""
    controller = RateController(5, SETTINGS)
    for _ in range(5):
        controller.started(T0)
    assert controller.delay(T0) >= 1.0


# -- throttles (429) ----------------------------------------------------------------------------


def test_429_halves_once_per_cooldown() -> None:
    """A 429 halves the rate; more 429s within the cooldown do not halve it again."""
    controller = RateController(10, SETTINGS)
    controller.throttled(T0, None)
    assert controller.rate == 5
    controller.throttled(T0 + 0.3, None)
    controller.throttled(T0 + 0.9, None)
    assert controller.rate == 5
    controller.throttled(T0 + 1.0, None)
    assert controller.rate == 2.5
    assert controller.throttles == 4
    assert controller.lowest == 2.5


def test_429_slows_the_starts() -> None:
    """After a 429 the starts follow the halved rate."""
    controller = RateController(20, SETTINGS)
    sim = Sim(controller)
    sim.run(T0 + 2.0)
    controller.throttled(sim.now, None)
    assert controller.rate == 10
    starts = sim.run(sim.now + 1.9)  # before the quiet period lets it grow
    assert most_in_window(starts) <= 10


@pytest.mark.parametrize(("ceiling", "hint"), [(50, 2.0), (50, 17.5), (10, 9.0), (0, 7.0)])
def test_429_hint_becomes_the_rate_at_once(ceiling: float, hint: float) -> None:
    """A limit stated in the 429 becomes the rate immediately, not after repeated halvings."""
    controller = RateController(ceiling, SETTINGS)
    controller.throttled(T0, hint)
    assert controller.rate == hint
    sim = Sim(controller, now=T0)
    assert most_in_window(sim.run(T0 + 5.0)) <= hint


def test_429_hint_above_the_rate_still_slows_down() -> None:
    """A 429 whose stated limit is above the current rate still halves it (we were throttled)."""
    controller = RateController(10, SETTINGS)
    controller.throttled(T0, 100.0)
    assert controller.rate == 5


def test_observed_limit_lowers_and_later_lets_it_grow_back() -> None:
    """X-ratelimit lowers the rate at once, holds it while seen, then probing climbs to --rate."""
    settings = SETTINGS
    controller = RateController(50, SETTINGS)
    controller.observed_limit(T0, 5.0)
    assert controller.rate == 5.0
    for second in range(1, 21):
        controller.observed_limit(T0 + second, 5.0)
        controller.delay(T0 + second)
        assert controller.rate == 5.0
    last_seen = T0 + 20
    controller.delay(last_seen + settings.hint_hold - 0.1)
    assert controller.rate == 5.0
    controller.delay(last_seen + settings.hint_hold + 10.0)
    assert 5.0 < controller.rate < 50.0
    controller.delay(last_seen + settings.hint_hold + 40.0)
    assert controller.rate == 50.0


def test_higher_observed_limit_lets_the_rate_grow_to_it_only() -> None:
    """After a 429, a stated limit above the rate lets it grow back to that limit, not beyond."""
    controller = RateController(50, SETTINGS)
    controller.throttled(T0, None)
    assert controller.rate == 25
    controller.observed_limit(T0 + 0.5, 30.0)
    assert controller.rate == 25
    controller.delay(T0 + 1.0)
    assert controller.rate == 25  # not quiet yet
    for moment in [T0 + 5, T0 + 10, T0 + 20, T0 + 30]:
        controller.delay(moment)
        assert 25 < controller.rate <= 30
    assert controller.rate == 30
    controller.delay(T0 + 60)
    assert controller.rate == 50


def test_observed_limit_above_the_ceiling_is_ignored() -> None:
    """A stated limit above --rate never raises the rate above --rate."""
    controller = RateController(10, SETTINGS)
    controller.observed_limit(T0, 100.0)
    for second in range(1, 60):
        controller.delay(T0 + second)
        assert controller.rate == 10


def test_additive_increase_after_quiet() -> None:
    """After `quiet` seconds without a 429, the rate grows by `increase` of --rate per second."""
    settings = replace(SETTINGS, increase=0.05, quiet=2.0)
    controller = RateController(10, settings)
    controller.throttled(T0, None)
    assert controller.rate == 5
    controller.delay(T0 + 1.9)
    assert controller.rate == 5
    controller.delay(T0 + 6.0)
    assert controller.rate == pytest.approx(5 + 0.5 * 4, abs=0.1)
    controller.delay(T0 + 30.0)
    assert controller.rate == 10


def test_growth_stops_at_the_ceiling_in_a_run() -> None:
    """Driven by a simulated pool, the rate climbs back after a 429 and never passes --rate."""
    controller = RateController(12, SETTINGS)
    sim = Sim(controller)
    sim.run(T0 + 1.0)
    controller.throttled(sim.now, None)
    sim.rates.clear()
    starts = sim.run(sim.now + 30.0)
    assert max(sim.rates) == 12
    assert sim.rates[-1] == 12
    assert sim.rates == sorted(sim.rates)  # only grows while quiet
    assert most_in_window(starts) <= 12


def test_a_new_429_stops_the_growth() -> None:
    """A 429 during growth restarts the quiet period."""
    controller = RateController(10, SETTINGS)
    controller.throttled(T0, None)
    controller.delay(T0 + 6.0)
    grown = controller.rate
    assert grown > 5
    controller.throttled(T0 + 6.0, None)
    assert controller.rate == pytest.approx(grown / 2)
    controller.delay(T0 + 7.5)
    assert controller.rate == pytest.approx(grown / 2)


@pytest.mark.parametrize("floor", [1.0, 3.0])
def test_floor_is_respected(floor: float) -> None:
    """However many 429s (and however low a stated limit), the rate stays at or above the floor."""
    controller = RateController(20, replace(SETTINGS, floor=floor))
    for index in range(30):
        controller.throttled(T0 + 1.5 * index, None)
        assert controller.rate >= floor
    assert controller.rate == floor
    controller.throttled(T0 + 100, 0.1)
    assert controller.rate == floor
    controller.observed_limit(T0 + 101, 0.01)
    assert controller.rate == floor
    assert controller.lowest == floor


def test_floor_never_exceeds_the_ceiling() -> None:
    """With --rate below the floor, --rate wins: the controller never speeds up past it."""
    controller = RateController(0.5, SETTINGS)
    controller.throttled(T0, None)
    assert controller.rate == 0.5


# -- unavailability (503) -----------------------------------------------------------------------


def feed_unavailable(share: Callable[[int], bool]) -> OnStart:
    def on_start(controller: RateController, now: float, index: int) -> None:
        controller.answered(now, share(index))

    return on_start


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(lambda i: i % 10 in (0, 3, 6), id="every-third-of-ten"),
        pytest.param(lambda i: i % 10 in (7, 8, 9), id="clustered-three-of-ten"),
        pytest.param(lambda i: random.Random(i * 7919).random() < 0.3, id="random-30pct"),
    ],
)
def test_scattered_503s_leave_the_rate_alone(pattern: Callable[[int], bool]) -> None:
    """30% of 503s spread over the run neither lower the rate nor pause the pool."""
    controller = RateController(10, SETTINGS)
    sim = Sim(controller)
    starts = sim.run(T0 + 60.0, feed_unavailable(pattern))
    assert controller.rate == 10
    assert controller.lowest == 10
    assert controller.pauses == 0
    assert len(starts) >= 0.9 * 600


def test_sustained_503s_lower_the_rate_and_pause() -> None:
    """90% of 503s lower the rate and hold new work for break_hold seconds (circuit breaker)."""
    settings = SETTINGS
    controller = RateController(10, settings)
    pauses: list[float] = []

    def on_start(controller: RateController, now: float, index: int) -> None:
        before = controller.pauses
        controller.answered(now, index % 10 != 0)
        if controller.pauses > before:
            pauses.append(now)

    sim = Sim(controller)
    starts = sim.run(T0 + 30.0, on_start)
    assert controller.rate < 10
    assert pauses
    for moment in pauses:
        assert not [t for t in starts if moment < t < moment + settings.break_hold]
    assert controller.pauses == len(pauses)


def test_503_share_needs_enough_samples() -> None:
    """Fewer than min_samples answers never trip the breaker, even if all are 503s."""
    settings = replace(SETTINGS, min_samples=20)
    controller = RateController(10, settings)
    for index in range(19):
        controller.answered(T0 + index * 0.1, True)
    assert controller.pauses == 0
    assert controller.rate == 10
    controller.answered(T0 + 2.0, True)
    assert controller.pauses == 1
    assert controller.rate == 7.5


def test_503_share_is_over_a_sliding_window() -> None:
    """Old 503s fall out of the share window: successes later dilute nothing that has expired."""
    settings = replace(SETTINGS, share_window=10.0, min_samples=20)
    controller = RateController(10, settings)
    for index in range(10):
        controller.answered(T0 + index * 0.1, True)
    for index in range(15):
        controller.answered(T0 + 20 + index * 0.1, index % 2 == 0)
    assert controller.pauses == 0
    assert controller.rate == 10


def test_successes_alone_never_pause() -> None:
    """A run of successful answers changes nothing."""
    controller = RateController(10, SETTINGS)
    for index in range(1000):
        controller.answered(T0 + index * 0.01, False)
    assert controller.pauses == 0
    assert controller.rate == 10


# -- pause --------------------------------------------------------------------------------------


def test_pause_holds_every_start() -> None:
    """During a pause no call starts, and afterwards the pace resumes without a burst."""
    controller = RateController(10, SETTINGS)
    sim = Sim(controller)
    sim.run(T0 + 2.0)
    now = sim.now
    assert controller.pause(now, 3.0) == 3.0
    assert controller.delay(now + 1.0) == pytest.approx(2.0)
    starts = sim.run(now + 6.0)
    assert min(starts) >= now + 3.0
    assert sum(1 for t in starts if t < now + 3.5) <= 0.5 * 10 + 2
    assert most_in_window(starts) <= 10
    assert controller.pauses == 1


@pytest.mark.parametrize(("asked", "given"), [(-5.0, 0.0), (0.0, 0.0), (2.5, 2.5), (1000.0, 60.0)])
def test_pause_is_bounded(asked: float, given: float) -> None:
    """A pause is never negative and never longer than max_pause."""
    controller = RateController(10, replace(SETTINGS, max_pause=60.0))
    assert controller.pause(T0, asked) == given
    assert max(controller.delay(T0), 0.0) == pytest.approx(given)


def test_shorter_pause_does_not_shorten_a_longer_one() -> None:
    """A later, shorter pause leaves the longer one in force."""
    controller = RateController(10, SETTINGS)
    controller.pause(T0, 10.0)
    controller.pause(T0 + 1.0, 2.0)
    assert controller.delay(T0 + 5.0) == pytest.approx(5.0)
    assert controller.pauses == 1
    controller.pause(T0 + 8.0, 5.0)
    assert controller.delay(T0 + 12.0) == pytest.approx(1.0)
    assert controller.pauses == 2


def test_pause_holds_an_unlimited_controller() -> None:
    """Without a rate limit, a pause still holds starts and clears the fast path meanwhile."""
    controller = RateController(0, SETTINGS)
    assert controller.unlimited
    controller.pause(T0, 2.0)
    assert not controller.unlimited
    assert controller.delay(T0 + 0.5) == pytest.approx(1.5)
    assert controller.delay(T0 + 2.0) == 0.0
    assert controller.unlimited


# -- unlimited ----------------------------------------------------------------------------------


def test_unlimited_never_waits() -> None:
    """Rate 0 means no limit: every call may start at once."""
    controller = RateController(0, SETTINGS)
    for index in range(1000):
        assert controller.delay(T0) <= 0
        controller.started(T0 + index * 1e-4)
    assert controller.unlimited
    assert controller.rate == math.inf


def test_unlimited_then_429_limits_near_the_achieved_rate() -> None:
    """Unlimited, then a 429: the rate becomes half of what was achieved, and pacing begins."""
    controller = RateController(0, SETTINGS)
    sim = Sim(controller)
    starts = sim.run(T0 + 3.0, gap=0.025)  # the pool achieves 40 calls/s
    assert len(starts) == pytest.approx(120, abs=2)
    controller.throttled(sim.now, None)
    assert not controller.unlimited
    assert controller.rate == pytest.approx(20, abs=1)
    later = sim.run(sim.now + 1.9)
    assert most_in_window(later) <= controller.rate


def test_unlimited_then_429_with_few_calls_uses_the_floor() -> None:
    """A 429 after very few calls still gives a usable rate (twice the floor, halved)."""
    controller = RateController(0, SETTINGS)
    controller.started(T0)
    controller.throttled(T0 + 0.5, None)
    assert controller.rate == pytest.approx(1.0)


def test_unlimited_regrows_after_quiet() -> None:
    """After the first 429 of an unlimited run, the rate probes upward again once quiet."""
    controller = RateController(0, SETTINGS)
    sim = Sim(controller)
    sim.run(T0 + 2.0, gap=0.025)
    controller.throttled(sim.now, None)
    first = controller.rate
    controller.delay(sim.now + 10.0)
    assert controller.rate > first
    assert controller.rate < math.inf


# -- invariants under noise ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_chaos_never_exceeds_the_ceiling_or_floor(seed: int) -> None:
    """Under random 429s, hints and 503s, the rate stays within [floor, --rate] and so do starts."""
    rng = random.Random(seed)
    ceiling = 20.0

    def on_start(controller: RateController, now: float, index: int) -> None:
        roll = rng.random()
        if roll < 0.02:
            controller.throttled(now, rng.choice([None, 3.0, 50.0]))
        elif roll < 0.05:
            controller.observed_limit(now, rng.choice([8.0, 100.0]))
        controller.answered(now, rng.random() < 0.1)

    controller = RateController(ceiling, SETTINGS)
    sim = Sim(controller)
    starts = sim.run(T0 + 90.0, on_start)
    assert max(sim.rates) <= ceiling
    assert min(sim.rates) >= SETTINGS.floor
    assert most_in_window(starts) <= ceiling
    assert controller.lowest == min([*sim.rates, controller.rate])


def test_defaults_are_sane() -> None:
    """The default tuning keeps the properties the algorithm relies on."""
    defaults = ControllerSettings()
    assert 0 < defaults.decrease < 1
    assert 0 < defaults.unavailable_decrease < 1
    assert 0 < defaults.increase <= 1
    assert defaults.slow_share < defaults.break_share <= 1
    assert defaults.quiet >= defaults.cooldown > 0
    assert defaults.floor > 0
    assert defaults.min_samples >= 10
    assert 0 < defaults.break_hold <= defaults.max_pause


@pytest.mark.parametrize(
    ("pattern", "slows_down"),
    [
        pytest.param(lambda i: i % 10 in (0, 3, 6), False, id="scattered-30pct"),
        pytest.param(lambda i: i % 10 != 0, True, id="sustained-90pct"),
    ],
)
def test_default_tuning_tells_scattered_from_sustained_503s(
    pattern: Callable[[int], bool], slows_down: bool
) -> None:
    """With the shipped defaults too, 30% of 503s change nothing and 90% slow down and pause."""
    controller = RateController(10)
    Sim(controller).run(T0 + 30.0, feed_unavailable(pattern))
    assert (controller.pauses > 0) is slows_down
    assert (controller.rate < 10) is slows_down
