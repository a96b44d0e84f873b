"""Issued challenges and clearance uses: one conformance suite, in memory, in Redis and in
Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from guardrail.backends.challenges import ChallengeStore, MemoryChallengeStore
from guardrail.backends.challenges_redis import RedisChallengeStore
from guardrail.backends.redis import RedisStorage

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_uri(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    # this machine is slow when the suite runs: a late connect (twenty at once here) is not
    # a failure of the store (CI once timed one out at the default 0.5s)
    return str(request.getfixturevalue(f"{request.param}_url")) + "?timeout=5"


@pytest.fixture
async def store(store_uri: str) -> AsyncIterator[ChallengeStore]:
    if store_uri == "memory://":
        yield MemoryChallengeStore()
        return
    storage = RedisStorage(store_uri)
    await storage.start()
    yield RedisChallengeStore(storage)
    await storage.close()


async def test_an_owner_has_one_live_challenge(store: ChallengeStore) -> None:
    assert await store.put("i:192.0.2.1", b"first", NOW + 300, NOW) == b"first"
    assert await store.put("i:192.0.2.1", b"second", NOW + 300, NOW + 1) == b"first"
    assert await store.put("i:192.0.2.2", b"other", NOW + 300, NOW + 1) == b"other"
    assert await store.take("i:192.0.2.1", NOW + 2) == b"first"
    assert await store.put("i:192.0.2.1", b"third", NOW + 300, NOW + 3) == b"third"
    assert await store.peek("i:192.0.2.2", NOW + 3) == b"other"


async def test_concurrent_puts_agree_on_one_challenge(store: ChallengeStore) -> None:
    offered = [f"record-{n}".encode() for n in range(20)]
    live = await asyncio.gather(*(store.put("k:x", r, NOW + 300, NOW) for r in offered))
    assert len(set(live)) == 1 and live[0] in offered
    assert await store.take("k:x", NOW + 1) == live[0]


async def test_a_challenge_is_taken_once(store: ChallengeStore) -> None:
    await store.put("c1", b"record", NOW + 300, NOW)
    assert await store.take("c1", NOW + 1) == b"record"
    assert await store.take("c1", NOW + 2) is None  # reused: refused
    assert await store.take("never-issued", NOW) is None


async def test_a_peek_reads_without_spending(store: ChallengeStore) -> None:
    await store.put("p1", b"record", NOW + 300, NOW)
    assert await store.peek("p1", NOW + 1) == b"record"
    assert await store.peek("p1", NOW + 2) == b"record"  # still there
    assert await store.take("p1", NOW + 3) == b"record"
    assert await store.peek("p1", NOW + 4) is None  # taken
    assert await store.peek("never-issued", NOW) is None


async def test_peeks_racing_a_take_never_see_a_second_record(store: ChallengeStore) -> None:
    """Whatever the interleaving, the record is taken once; a peek sees it or nothing."""
    await store.put("p2", b"record", NOW + 300, NOW)
    calls = [
        store.take("p2", NOW + 1) if i % 4 == 0 else store.peek("p2", NOW + 1) for i in range(20)
    ]
    seen = await asyncio.gather(*calls)
    taken = seen[::4]
    assert taken.count(b"record") == 1 and set(seen) <= {b"record", None}
    assert await store.peek("p2", NOW + 2) is None


async def test_concurrent_takes_get_it_once(store: ChallengeStore) -> None:
    await store.put("c2", b"record", NOW + 300, NOW)
    taken = await asyncio.gather(*(store.take("c2", NOW + 1) for _ in range(20)))
    assert taken.count(b"record") == 1 and taken.count(None) == 19


async def test_a_challenge_expires(store: ChallengeStore) -> None:
    await store.put("c3", b"record", NOW + 300, NOW)
    if isinstance(store, RedisChallengeStore):
        # Redis expires keys by its own clock: the key carries the challenge's lifetime
        ttl_ms = await store.storage.client.pttl(store._key("ch", "c3"))
        assert 299_000 < ttl_ms <= 300_000
    else:
        assert await store.peek("c3", NOW + 300) is None
        assert await store.put("c3", b"next", NOW + 600, NOW + 300) == b"next"  # replaced
        assert await store.take("c3", NOW + 300) == b"next"


async def test_clearance_uses_are_counted(store: ChallengeStore) -> None:
    counts = [await store.use("k1", NOW + 600, NOW + i) for i in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    assert await store.use("k2", NOW + 600, NOW) == 1


async def test_a_challenge_issued_by_one_instance_is_verified_by_another(redis_url: str) -> None:
    first, second = RedisStorage(redis_url), RedisStorage(redis_url)
    for storage in (first, second):
        await storage.start()
    try:
        await RedisChallengeStore(first).put("shared", b"record", NOW + 300, NOW)
        assert await RedisChallengeStore(second).peek("shared", NOW) == b"record"
        assert await RedisChallengeStore(second).take("shared", NOW) == b"record"
        assert await RedisChallengeStore(first).take("shared", NOW) is None
        assert await RedisChallengeStore(first).use("k", NOW + 600, NOW) == 1
        assert await RedisChallengeStore(second).use("k", NOW + 600, NOW) == 2
    finally:
        await first.close()
        await second.close()
