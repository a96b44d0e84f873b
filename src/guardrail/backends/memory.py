"""In-process buckets: one event loop, one process, bounded by an LRU over subjects."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from math import floor

from guardrail.backends.base import EPSILON, BucketCharge, BucketState, Outcome, gcra, settled


class MemoryStorage:
    """GCRA buckets in a dict, at most ``max_subjects`` subjects (least recently charged evicted).

    ``charge`` never awaits, so under asyncio it runs to completion before any other
    request is looked at: all-or-nothing without a lock. Expired TATs are not swept; ``gcra``
    treats a TAT in the past as absent and the LRU bounds what lingers.
    """

    def __init__(self, max_subjects: int = 1_000_000) -> None:
        if max_subjects < 1:
            raise ValueError("max_subjects must be at least 1")
        self.max_subjects = max_subjects
        self._subjects: OrderedDict[str, dict[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._subjects)

    def __contains__(self, subject: object) -> bool:
        return subject in self._subjects

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._subjects.clear()

    def clear(self) -> None:
        """Forget every bucket (the fallback's, when Redis is back: it holds the counts)."""
        self._subjects.clear()

    async def charge(self, charges: Sequence[BucketCharge], now: float) -> Outcome:
        return self.charge_now(charges, now)

    def charge_now(self, charges: Sequence[BucketCharge], now: float) -> Outcome:
        """``charge`` without a coroutine: the middleware calls this one directly."""
        # The admitted path is ``gcra`` fused with the dict lookups (one pass to decide, one to
        # store): it is the embedded default's hot path. A refusal takes the reference code.
        subjects = self._subjects
        news: list[float] = []
        for subject, name, interval, burst, cost in charges:
            buckets = subjects.get(subject)
            tat = None if buckets is None else buckets.get(name)
            new = (now if tat is None or tat < now else tat) + cost * interval
            if new - now > burst * interval + EPSILON:
                return gcra(charges, [self._tat(c) for c in charges], now)[0]
            news.append(new)
        states = []
        for (subject, name, interval, burst, _), new in zip(charges, news, strict=False):
            after = new - now
            states.append(
                _new(
                    BucketState,
                    (floor((burst * interval - after + EPSILON) / interval), after, 0.0),
                )
            )
            if after <= 0:  # a cost-0 read of an empty bucket: nothing to keep
                continue
            buckets = subjects.get(subject)
            if buckets is None:
                subjects[subject] = {name: new}
                if len(subjects) > self.max_subjects:
                    subjects.popitem(last=False)
            else:
                buckets[name] = new
                subjects.move_to_end(subject)
        return _new(Outcome, (True, tuple(states)))

    async def settle(self, charges: Sequence[BucketCharge], now: float) -> None:
        subjects = self._subjects
        for charge in charges:
            buckets = subjects.get(charge.subject)
            new = settled(None if buckets is None else buckets.get(charge.name), charge, now)
            if new is not None:
                if buckets is None:
                    subjects[charge.subject] = {charge.name: new}
                    if len(subjects) > self.max_subjects:
                        subjects.popitem(last=False)
                else:
                    buckets[charge.name] = new
            elif buckets is not None:
                buckets.pop(charge.name, None)

    def _tat(self, charge: BucketCharge) -> float | None:
        buckets = self._subjects.get(charge.subject)
        return None if buckets is None else buckets.get(charge.name)


_new = tuple.__new__
