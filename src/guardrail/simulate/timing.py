"""When simulated clients send: daily cycles, human sessions, machine ticks, agent bursts.

Every generator here is lazy and draws only from the ``random.Random`` it is given, in an
order fixed by its own output: an account's stream is the same whatever other accounts are
merged with it. Times are seconds since the epoch (floats).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

DAY = 86400.0
HOUR = 3600.0

Weights = tuple[float, ...]  # 24 relative activity levels, by local hour

# People: asleep at night, busy late morning and afternoon, a second wind in the evening.
HUMAN_DAY: Weights = (
    0.25, 0.12, 0.07, 0.05, 0.05, 0.08, 0.2, 0.45, 0.7, 0.9, 1.0, 1.0,
    0.9, 0.95, 1.0, 1.0, 0.95, 0.85, 0.8, 0.9, 1.0, 0.95, 0.7, 0.45,
)  # fmt: skip
# Office hours, with lunch; a little late work.
WORK_DAY: Weights = (
    0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.05, 0.2, 0.7, 1.0, 1.0, 1.0,
    0.6, 0.9, 1.0, 1.0, 0.9, 0.6, 0.25, 0.15, 0.1, 0.08, 0.05, 0.03,
)  # fmt: skip
FLAT: Weights = (1.0,) * 24
# A scripted imitation of a person: flat while "awake", nothing for eight hours.
FAKE_DAY: Weights = (0.0,) * 8 + (1.0,) * 16


def local_hour(t: float, tz_hours: float) -> int:
    return int((t / HOUR + tz_hours) % 24)


def is_weekend(t: float, tz_hours: float) -> bool:
    # 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
    return int((t + tz_hours * HOUR) // DAY + 3) % 7 >= 5


def arrivals(
    rng: random.Random,
    start: float,
    end: float,
    per_day: float,
    weights: Weights = FLAT,
    tz_hours: float = 0.0,
    weekend: float = 1.0,
) -> Iterator[float]:
    """A Poisson process of ``per_day`` events a day on average, shaped by ``weights`` in local
    time (and scaled by ``weekend`` on Saturdays and Sundays): thinning of a constant rate."""
    if per_day <= 0 or end <= start:
        return
    peak = max(weights) * max(1.0, weekend)
    mean = sum(weights) / len(weights)
    rate = per_day / DAY * peak / mean
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return
        level = weights[local_hour(t, tz_hours)]
        if weekend != 1.0 and is_weekend(t, tz_hours):
            level *= weekend
        if rng.random() * peak < level:
            yield t


Episode = Callable[[random.Random, float], Iterator[float]]


def episodes(
    rng: random.Random,
    starts: Iterator[float],
    end: float,
    episode: Episode,
    rest: tuple[float, float] = (0.0, 0.0),
) -> Iterator[tuple[float, int]]:
    """``(time, index within its episode)`` for episodes (sessions, bursts, shifts) beginning
    at ``starts``; a start that falls inside the previous episode (or its ``rest``) is skipped,
    so one client never runs two at once."""
    free = -math.inf
    for begin in starts:
        if begin < free:
            continue
        t = begin
        for index, t in enumerate(episode(rng, begin)):
            if t >= end:
                return
            yield t, index
        free = t + rng.uniform(*rest)


def human_session(
    turns: tuple[int, int], think_median: float, sigma: float = 0.8, mean_extra: float = 6.0
) -> Episode:
    """A conversation: ``turns`` (min, max; mostly short) with lognormal think times."""
    low, high = turns
    mu = math.log(think_median)

    def run(rng: random.Random, begin: float) -> Iterator[float]:
        count = min(high, low + int(rng.expovariate(1.0 / mean_extra)))
        t = begin
        for _ in range(count):
            yield t
            t += rng.lognormvariate(mu, sigma)

    return run


def burst(size: tuple[int, int], gap: tuple[float, float]) -> Episode:
    """A coding agent at work: ``size`` requests, each ``gap`` seconds after the last answer."""

    def run(rng: random.Random, begin: float) -> Iterator[float]:
        t = begin
        for _ in range(rng.randint(*size)):
            yield t
            t += rng.uniform(*gap)

    return run


def ticks(period: float, jitter: float, duration: tuple[float, float]) -> Episode:
    """A script on a timer: every ``period`` seconds ± ``jitter`` (a fraction), for a while."""

    def run(rng: random.Random, begin: float) -> Iterator[float]:
        stop = begin + rng.uniform(*duration)
        t = begin
        while t < stop:
            yield t
            t += period * (1.0 + rng.uniform(-jitter, jitter))

    return run


def steady(
    rng: random.Random, start: float, end: float, period: float, jitter: float
) -> Iterator[float]:
    """A timer that never stops: one tick every ``period`` ± ``jitter`` (a fraction)."""
    t = start + rng.uniform(0.0, period)
    while t < end:
        yield t
        t += period * (1.0 + rng.uniform(-jitter, jitter))


def daily_at(
    rng: random.Random, start: float, end: float, hour_utc: float, jitter: float
) -> Iterator[float]:
    """Once a day at ``hour_utc`` (± ``jitter`` seconds): a cron job."""
    day = start - start % DAY
    while day < end:
        t = day + hour_utc * HOUR + rng.uniform(-jitter, jitter)
        if start <= t < end:
            yield t
        day += DAY
