"""Token buckets as GCRA: the data exchanged with a storage, and the reference arithmetic.

A bucket is stored as one number, its theoretical arrival time (TAT): the instant at which
it would be full again. ``gcra`` below is the single definition of the algorithm;
``gcra.lua`` is a line-for-line transcription of it, so the two backends agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import floor
from typing import NamedTuple, Protocol

#: Time slack (seconds) in the admission test and in ``remaining``. Epoch seconds as floats
#: resolve only ~0.24 µs (one ulp of 1.8e9), so ``now + 0.4`` may come back 0.1 µs late; a
#: tolerance below that resolution (the contract's first draft had 1e-9) turns every such
#: rounding into a refused request or a ``remaining`` one short. 1 µs is above it.
EPSILON = 1e-6


# NamedTuples, not frozen dataclasses: several are built on every request, and a frozen
# dataclass costs about three times as much to construct (measured: 0.54 µs against 0.19 µs).


class BucketCharge(NamedTuple):
    """What one request takes from one bucket."""

    subject: str  # e.g. "ip:203.0.113.7", "api_key:k:ab12...", "global"
    name: str  # bucket name within the subject, e.g. "inference:0"
    interval: float  # seconds per unit of cost (1 / rate per second); must be > 0
    burst: int  # capacity in cost units
    cost: int  # units this request takes; 0 reads the state without consuming


class BucketState(NamedTuple):
    """A bucket after the request: what the rate-limit headers report."""

    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until this request would be admitted (0 when it was)


class Outcome(NamedTuple):
    """The verdict over every bucket of one request: all admitted, or none charged."""

    allowed: bool
    states: tuple[BucketState, ...]  # one per charge, same order

    @property
    def retry_after(self) -> float:
        return max((state.retry_after for state in self.states), default=0.0)


class Storage(Protocol):
    async def charge(self, charges: Sequence[BucketCharge], now: float) -> Outcome:
        """Charge every bucket or none; ``now`` is seconds since the epoch.

        Each bucket (subject, name) appears at most once per request.
        """
        ...

    async def settle(self, charges: Sequence[BucketCharge], now: float) -> None:
        """Move each bucket by its charge's signed ``cost``, unconditionally (``settled``).

        Token budgets use it after the response: a negative cost gives back what a
        reservation did not use, a positive one takes what the response used beyond it.
        """
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


_new = tuple.__new__


def refused_state(tat_after: float, new_after: float, interval: float, tau: float) -> BucketState:
    """State of a bucket left untouched because the request was refused.

    ``tat_after`` = TAT - now, ``new_after`` = the TAT this request would have made - now.
    """
    remaining = max(floor((tau - tat_after + EPSILON) / interval), 0)
    return BucketState(remaining, tat_after, max(0.0, new_after - tau))


def settled(tat: float | None, charge: BucketCharge, now: float) -> float | None:
    """A bucket's TAT after ``settle`` (None: nothing to keep). Giving back never leaves a
    bucket fuller than full; taking may push it past its burst, into debt."""
    base = now if tat is None or tat < now else tat
    new = base + charge.cost * charge.interval
    return new if new > now else None


def gcra(
    charges: Sequence[BucketCharge], stored: Sequence[float | None], now: float
) -> tuple[Outcome, list[float] | None]:
    """Decide a request over its buckets.

    ``stored`` holds each bucket's TAT (None when absent). Returns the outcome and, when
    admitted, the TAT to store for each bucket (a value <= now means "store nothing").
    Per bucket: tau = burst*interval; tat = max(stored or now, now); new = tat + cost*interval;
    it admits when new - now <= tau + EPSILON, and the request passes when every bucket does.
    Runs on every request of the memory backend, hence the plain loops.
    """
    allowed = True
    news: list[float] = []
    for (_, _, interval, burst, cost), tat in zip(charges, stored, strict=False):  # equal lengths
        if tat is None or tat < now:
            tat = now
        new = tat + cost * interval
        news.append(new)
        if new - now > burst * interval + EPSILON:
            allowed = False
    if allowed:
        # tuple.__new__ skips NamedTuple's Python-level __new__: this runs on every request.
        states = [
            _new(
                BucketState,
                (floor((burst * interval - (new - now) + EPSILON) / interval), new - now, 0.0),
            )
            for (_, _, interval, burst, _), new in zip(charges, news, strict=False)
        ]
        return _new(Outcome, (True, tuple(states))), news
    refused: list[BucketState] = []
    for charge, tat, new in zip(charges, stored, news, strict=True):
        tat_after = 0.0 if tat is None or tat < now else tat - now
        refused.append(
            refused_state(tat_after, new - now, charge.interval, charge.burst * charge.interval)
        )
    return Outcome(False, tuple(refused)), None
