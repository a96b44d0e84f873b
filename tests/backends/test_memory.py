"""What only the memory backend has: the LRU bound over subjects."""

from __future__ import annotations

import pytest

from guardrail.backends import BucketCharge, MemoryStorage, storage_from_uri

NOW = 1_800_000_000.0


def hit(subject: str, cost: int = 1) -> list[BucketCharge]:
    return [BucketCharge(subject, "b", 1.0, 3, cost)]


async def test_least_recently_charged_subject_is_evicted() -> None:
    storage = MemoryStorage(max_subjects=2)
    await storage.charge(hit("a"), NOW)
    await storage.charge(hit("b"), NOW)
    await storage.charge(hit("a"), NOW)  # a is now the most recent
    await storage.charge(hit("c"), NOW)
    assert len(storage) == 2
    assert "a" in storage and "c" in storage and "b" not in storage
    # an evicted subject starts again from a full bucket
    assert (await storage.charge(hit("b", 0), NOW)).states[0].remaining == 3
    assert (await storage.charge(hit("a", 0), NOW)).states[0].remaining == 1


async def test_refusals_and_empty_reads_track_no_subject() -> None:
    storage = MemoryStorage(max_subjects=10)
    assert (await storage.charge(hit("read", 0), NOW)).allowed
    assert not (await storage.charge(hit("greedy", 4), NOW)).allowed
    assert len(storage) == 0


async def test_subject_with_several_buckets_counts_once() -> None:
    storage = MemoryStorage(max_subjects=1)
    both = [BucketCharge("a", "x", 1.0, 3, 1), BucketCharge("a", "y", 1.0, 3, 2)]
    outcome = await storage.charge(both, NOW)
    assert [state.remaining for state in outcome.states] == [2, 1]
    assert len(storage) == 1


async def test_storage_from_uri_passes_max_subjects() -> None:
    storage = storage_from_uri("memory://", max_subjects=7)
    assert isinstance(storage, MemoryStorage)
    assert storage.max_subjects == 7
    await storage.start()
    await storage.charge(hit("a"), NOW)
    await storage.close()
    assert len(storage) == 0


def test_max_subjects_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_subjects"):
        MemoryStorage(max_subjects=0)
