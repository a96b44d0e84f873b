"""In-process buckets: one event loop, one process, bounded by an LRU over subjects."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from guardrail.backends.base import BucketCharge, Outcome, gcra


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

    async def charge(self, charges: Sequence[BucketCharge], now: float) -> Outcome:
        subjects = self._subjects
        stored: list[float | None] = []
        for charge in charges:
            buckets = subjects.get(charge.subject)
            stored.append(None if buckets is None else buckets.get(charge.name))
        outcome, news = gcra(charges, stored, now)
        if news is None:
            return outcome
        for charge, new in zip(charges, news, strict=True):
            if new <= now:  # a cost-0 read of an empty bucket: nothing to keep
                continue
            buckets = subjects.get(charge.subject)
            if buckets is None:
                subjects[charge.subject] = {charge.name: new}
            else:
                buckets[charge.name] = new
                subjects.move_to_end(charge.subject)
        while len(subjects) > self.max_subjects:
            subjects.popitem(last=False)
        return outcome
