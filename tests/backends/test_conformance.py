"""One suite, every storage: memory, Redis and Redis Cluster must decide identically."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.backends import BucketCharge, BucketState, Outcome, Storage, storage_from_uri
from guardrail.backends.base import EPSILON

NOW = 1_800_000_000.0


def seconds(value: float) -> object:
    """Epoch-second floats resolve ~0.24 µs: compare durations to the microsecond."""
    return pytest.approx(value, abs=1e-5)


def bucket(
    name: str = "b",
    *,
    subject: str = "ip:203.0.113.7",
    interval: float = 1.0,
    burst: int = 5,
    cost: int = 1,
) -> BucketCharge:
    return BucketCharge(subject, name, interval, burst, cost)


def with_cost(charge: BucketCharge, cost: int) -> BucketCharge:
    return BucketCharge(charge.subject, charge.name, charge.interval, charge.burst, cost)


async def remaining(storage: Storage, charge: BucketCharge, now: float) -> int:
    """Read a bucket without consuming (cost 0)."""
    outcome = await storage.charge([with_cost(charge, 0)], now)
    assert outcome.allowed
    return outcome.states[0].remaining


async def test_burst_admits_exactly_burst_then_refuses(storage: Storage) -> None:
    charge = bucket(interval=2.0, burst=5)
    results = [await storage.charge([charge], NOW) for _ in range(5)]
    assert all(outcome.allowed for outcome in results)
    assert [outcome.states[0].remaining for outcome in results] == [4, 3, 2, 1, 0]

    refused = await storage.charge([charge], NOW)
    assert not refused.allowed
    assert refused.retry_after == seconds(2.0)
    assert refused.states[0] == BucketState(remaining=0, reset_after=10.0, retry_after=2.0)


async def test_refill_returns_one_unit_per_interval(storage: Storage, clock) -> None:
    charge = bucket(interval=0.5, burst=4)
    for _ in range(4):
        assert (await storage.charge([charge], clock())).allowed
    assert not (await storage.charge([charge], clock())).allowed

    clock.advance(1.25)  # 2.5 intervals: two whole units back
    assert (await storage.charge([charge], clock())).allowed
    assert (await storage.charge([charge], clock())).allowed
    third = await storage.charge([charge], clock())
    assert not third.allowed
    assert third.retry_after == seconds(0.25)

    clock.advance(10)  # long idle: full again, never more than burst
    admitted = [(await storage.charge([charge], clock())).allowed for _ in range(6)]
    assert admitted == [True] * 4 + [False] * 2


async def test_cost_weighted_charges(storage: Storage) -> None:
    charge = bucket(interval=0.1, burst=10)
    first = await storage.charge([with_cost(charge, 4)], NOW)
    assert first.allowed and first.states[0].remaining == 6
    assert first.states[0].reset_after == seconds(0.4)
    second = await storage.charge([with_cost(charge, 4)], NOW)
    assert second.allowed and second.states[0].remaining == 2

    too_big = await storage.charge([with_cost(charge, 4)], NOW)
    assert not too_big.allowed
    assert too_big.states[0].remaining == 2
    assert too_big.retry_after == seconds(0.2)  # two more units must drain first

    fits = await storage.charge([with_cost(charge, 2)], NOW)
    assert fits.allowed and fits.states[0].remaining == 0


async def test_cost_beyond_burst_is_refused_without_consuming(storage: Storage) -> None:
    charge = bucket(interval=1.0, burst=3)
    refused = await storage.charge([with_cost(charge, 4)], NOW)
    assert not refused.allowed
    assert refused.states[0] == BucketState(remaining=3, reset_after=0.0, retry_after=1.0)
    assert await remaining(storage, charge, NOW) == 3


async def test_cost_zero_reads_without_consuming(storage: Storage) -> None:
    charge = bucket(interval=1.0, burst=3)
    fresh = await storage.charge([with_cost(charge, 0)], NOW)
    assert fresh == Outcome(True, (BucketState(remaining=3, reset_after=0.0, retry_after=0.0),))

    await storage.charge([with_cost(charge, 2)], NOW)
    reads = [await storage.charge([with_cost(charge, 0)], NOW + 0.5) for _ in range(5)]
    assert all(read == reads[0] for read in reads)
    assert reads[0].allowed
    assert reads[0].states[0].remaining == 1
    assert reads[0].states[0].reset_after == seconds(1.5)

    # reading a full bucket changes nothing either: it still holds its whole burst
    other = bucket("other", interval=1.0, burst=3)
    for _ in range(3):
        await storage.charge([with_cost(other, 0)], NOW)
    assert [(await storage.charge([other], NOW)).allowed for _ in range(4)] == [True] * 3 + [False]


async def test_all_or_nothing_over_three_buckets(storage: Storage) -> None:
    wide = bucket("wide", subject="api_key:k:" + "a" * 32, interval=1.0, burst=10)
    narrow = bucket("narrow", subject="subnet:203.0.113.0/24", interval=1.0, burst=2)
    shared = bucket("shared", subject="global", interval=0.1, burst=100)
    assert (await storage.charge([narrow], NOW)).allowed
    assert (await storage.charge([narrow], NOW)).allowed

    before = [await remaining(storage, c, NOW) for c in (wide, narrow, shared)]
    assert before == [10, 0, 100]
    for _ in range(3):
        refused = await storage.charge([wide, narrow, shared], NOW)
        assert not refused.allowed
    assert [await remaining(storage, c, NOW) for c in (wide, narrow, shared)] == before

    # the refused outcome reports each bucket as it stands, and who is in the way
    assert refused.states[0] == BucketState(remaining=10, reset_after=0.0, retry_after=0.0)
    assert refused.states[1] == BucketState(remaining=0, reset_after=2.0, retry_after=1.0)
    assert refused.states[2] == BucketState(remaining=100, reset_after=0.0, retry_after=0.0)
    assert refused.retry_after == 1.0

    admitted = await storage.charge([wide, narrow, shared], NOW + 1.0)
    assert admitted.allowed
    assert [s.remaining for s in admitted.states] == [9, 0, 99]


async def test_state_values(storage: Storage) -> None:
    charge = bucket(interval=3.0, burst=4)
    outcome = await storage.charge([with_cost(charge, 3)], NOW)
    assert outcome == Outcome(True, (BucketState(remaining=1, reset_after=9.0, retry_after=0.0),))

    later = await storage.charge([charge], NOW + 4.0)  # 4 s drained 1 1/3 units, 1 taken
    assert later.allowed
    assert later.states[0].remaining == 1  # 4 - 8/3, rounded down
    assert later.states[0].reset_after == seconds(8.0)

    refused = await storage.charge([with_cost(charge, 3)], NOW + 4.0)
    assert not refused.allowed
    assert refused.states[0].remaining == 1
    assert refused.states[0].reset_after == seconds(8.0)
    assert refused.states[0].retry_after == seconds(5.0)  # 8 + 9 - 12
    assert refused.retry_after == refused.states[0].retry_after


@pytest.mark.parametrize("interval", [1.0, 0.1, 1 / 3, 60 / 7])
async def test_retry_after_is_respected(storage: Storage, clock, interval: float) -> None:
    charge = bucket(interval=interval, burst=3, cost=2)
    assert (await storage.charge([charge], clock())).allowed
    for _ in range(4):
        refused = await storage.charge([charge], clock())
        assert not refused.allowed
        clock.advance(refused.retry_after)
        assert (await storage.charge([charge], clock())).allowed


async def test_empty_request_is_allowed(storage: Storage) -> None:
    assert await storage.charge([], NOW) == Outcome(True, ())


async def test_subjects_are_independent(storage: Storage) -> None:
    first = bucket(subject="ip:203.0.113.7", burst=1)
    second = bucket(subject="ip:203.0.113.8", burst=1)
    assert (await storage.charge([first], NOW)).allowed
    assert not (await storage.charge([first], NOW)).allowed
    assert (await storage.charge([second], NOW)).allowed
    # the same bucket name under another subject, and another name under the same subject
    assert (await storage.charge([bucket("other", subject="ip:203.0.113.7", burst=1)], NOW)).allowed


async def test_concurrent_requests_never_overspend(storage: Storage) -> None:
    # more requests at once than a Redis client has connections (100 by default)
    charges = [bucket("a", burst=70), bucket("b", subject="global", burst=500)]
    outcomes = await asyncio.gather(*(storage.charge(charges, NOW) for _ in range(250)))
    assert sum(outcome.allowed for outcome in outcomes) == 70
    assert await remaining(storage, charges[1], NOW) == 430


async def test_settle_gives_back_what_a_reservation_did_not_use(storage: Storage) -> None:
    budget = bucket("tokens", interval=0.01, burst=1000)
    assert (await storage.charge([with_cost(budget, 600)], NOW)).allowed  # reserved
    await storage.settle([with_cost(budget, 150 - 600)], NOW)  # used 150
    assert await remaining(storage, budget, NOW) == 850


async def test_settle_never_fills_a_bucket_past_full(storage: Storage) -> None:
    budget = bucket("tokens", interval=1.0, burst=10)
    assert (await storage.charge([with_cost(budget, 4)], NOW)).allowed
    await storage.settle([with_cost(budget, -9)], NOW)  # more than was taken
    assert await remaining(storage, budget, NOW) == 10
    await storage.settle([with_cost(budget, -3)], NOW)  # an empty (absent) bucket
    assert await remaining(storage, budget, NOW) == 10


async def test_settle_takes_past_the_burst_into_debt(storage: Storage, clock) -> None:
    budget = bucket("tokens", interval=1.0, burst=10)
    assert (await storage.charge([with_cost(budget, 8)], NOW)).allowed
    await storage.settle([with_cost(budget, 7)], NOW)  # used 15 of a reserved 8
    assert (await storage.charge([with_cost(budget, 0)], NOW)).states[0].remaining == 0
    refused = await storage.charge([with_cost(budget, 1)], NOW)
    assert not refused.allowed and refused.retry_after == seconds(6.0)  # 5 in debt, then 1
    assert (await storage.charge([with_cost(budget, 1)], NOW + 6.0)).allowed


async def test_settle_keeps_what_others_took_meanwhile(storage: Storage) -> None:
    budget = bucket("tokens", interval=1.0, burst=100)
    assert (await storage.charge([with_cost(budget, 50)], NOW)).allowed  # request A reserves
    assert (await storage.charge([with_cost(budget, 30)], NOW)).allowed  # request B reserves
    await storage.settle([with_cost(budget, -40)], NOW)  # A used 10
    assert await remaining(storage, budget, NOW) == 60  # B's 30 and A's 10 stay taken


async def test_settle_moves_buckets_of_several_subjects(storage: Storage) -> None:
    # on a cluster these hash to different slots: one call per slot
    charges = [
        bucket("t", subject=f"api_key:k{i}", interval=1.0, burst=100, cost=40) for i in range(4)
    ]
    assert (await storage.charge(charges, NOW)).allowed
    await storage.settle([with_cost(c, -25) for c in charges], NOW)
    assert [await remaining(storage, c, NOW) for c in charges] == [85] * 4


# -- the GCRA bound, for random traffic ------------------------------------------------------

steps = st.lists(
    st.tuples(st.floats(0.0, 3.0, allow_nan=False), st.integers(0, 6)), min_size=1, max_size=40
)
_subjects = itertools.count()


def test_admitted_cost_never_exceeds_burst_plus_rate(storage_uri: str, clock) -> None:
    """Over every interval [t_i, t_j] the admitted cost is <= burst + rate * (t_j - t_i)."""
    # every example opens a client to the server: fewer examples where that costs time
    profile = "backends-memory" if storage_uri == "memory://" else "backends-redis"

    @settings(settings.get_profile(profile))
    @given(interval=st.floats(0.001, 2.0, allow_nan=False), burst=st.integers(1, 8), steps=steps)
    def check(interval: float, burst: int, steps: list[tuple[float, int]]) -> None:
        subject = f"prop:{next(_subjects)}"  # the Redis database is shared between examples
        admitted = asyncio.run(run(storage_uri, subject, interval, burst, steps, clock()))
        for i, (start, _) in enumerate(admitted):
            total = 0
            for end, cost in admitted[i:]:
                total += cost
                # the storage's 1 µs tolerance (base.EPSILON) widens every window by as much
                assert total <= burst + (end - start + EPSILON) / interval + 1e-9

    check()


async def run(
    uri: str,
    subject: str,
    interval: float,
    burst: int,
    steps: list[tuple[float, int]],
    start: float,
) -> list[tuple[float, int]]:
    storage = storage_from_uri(uri)  # a fresh client on this example's own event loop
    now, admitted = start, []
    try:
        for step, cost in steps:
            now += step
            charge = BucketCharge(subject, "prop", interval, burst, cost)
            if (await storage.charge([charge], now)).allowed:
                admitted.append((now, cost))
    finally:
        await storage.close()
    return admitted
