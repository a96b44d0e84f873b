"""What only Redis has: round trips, script cache, key layout, expiry, failures."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from guardrail.backends import BucketCharge
from guardrail.backends.redis import RedisStorage
from guardrail.errors import StorageError

from redis_servers import Server, free_port

NOW = 1_800_000_000.0
THREE = [
    BucketCharge("api_key:k:" + "b" * 32, "inference:0", 1.0, 20, 1),
    BucketCharge("api_key:k:" + "b" * 32, "inference:2", 0.001, 200_000, 7),
    BucketCharge("subnet:203.0.113.0/24", "inference:1", 0.1, 100, 1),
]


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at what the storage left in Redis."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def storage(redis_url: str) -> AsyncIterator[RedisStorage]:
    store = RedisStorage(redis_url)
    await store.start()
    yield store
    await store.close()


async def commandstats(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


@pytest.fixture
async def alone(tmp_path: Path) -> AsyncIterator[tuple[RedisStorage, aioredis.Redis]]:
    """A storage and a plain client on a redis-server of their own: the session's server is
    also watched by a Sentinel, whose PINGs and hellos land in its command counts."""
    server = Server(tmp_path)
    store = RedisStorage(server.url)
    client = aioredis.from_url(server.url, decode_responses=True)
    try:
        await store.start()
        yield store, client
    finally:
        await client.aclose()
        await store.close()
        server.stop()


async def test_one_evalsha_per_charge(alone: tuple[RedisStorage, aioredis.Redis]) -> None:
    storage, raw = alone
    await storage.charge(THREE, NOW)  # whatever connecting costs is paid here
    await raw.config_resetstat()
    n = 25
    for i in range(n):
        assert (await storage.charge(THREE, NOW + i)).allowed
    calls = await commandstats(raw)
    assert calls.pop("evalsha") == n
    # GET and SET run inside the script (Redis counts them too); nothing else was sent
    assert calls.pop("get") == 3 * n
    assert calls.pop("set") == 3 * n
    assert set(calls) <= {"config|resetstat", "info"}


async def test_charges_beyond_the_pool_queue_for_a_connection(
    redis_url: str, raw: aioredis.Redis
) -> None:
    opened_before = (await raw.info("stats"))["total_connections_received"]
    store = RedisStorage(redis_url + "?max_connections=2")
    try:
        charge = BucketCharge("global", "b", 0.001, 1000, 1)
        outcomes = await asyncio.gather(*(store.charge([charge], NOW) for _ in range(60)))
    finally:
        await store.close()
    assert all(outcome.allowed for outcome in outcomes)
    assert sorted(outcome.states[0].remaining for outcome in outcomes) == list(range(940, 1000))
    opened = (await raw.info("stats"))["total_connections_received"] - opened_before
    assert 1 <= opened <= 2


async def test_script_flush_is_recovered(storage: RedisStorage, raw: aioredis.Redis) -> None:
    charge = BucketCharge("ip:203.0.113.7", "b", 1.0, 5, 1)
    assert (await storage.charge([charge], NOW)).states[0].remaining == 4
    await raw.script_flush()
    await raw.config_resetstat()

    after = await storage.charge([charge], NOW)
    assert after.allowed and after.states[0].remaining == 3  # the state survived the flush
    again = await storage.charge([charge], NOW)
    assert again.states[0].remaining == 2
    calls = await commandstats(raw)
    assert calls["evalsha"] == 2  # the NOSCRIPT one and the next, which hit the cache
    assert calls["eval"] == 1


async def test_charge_without_start_loads_the_script(redis_url: str, raw: aioredis.Redis) -> None:
    await raw.script_flush()
    store = RedisStorage(redis_url)
    try:
        assert (await store.charge(THREE, NOW)).allowed
    finally:
        await store.close()


async def test_key_layout_and_prefix(redis_url: str, raw: aioredis.Redis) -> None:
    store = RedisStorage(redis_url + "?prefix=t:")
    # Keys expire on the real clock: intervals long enough that none is gone before it is read,
    # however loaded the machine (7 ms TTLs made this flaky in CI).
    slow = [charge._replace(interval=10.0) for charge in THREE]
    try:
        await store.charge(slow, NOW)
    finally:
        await store.close()
    assert sorted(await raw.keys("*")) == [
        "t:{api_key:k:" + "b" * 32 + "}:inference:0",
        "t:{api_key:k:" + "b" * 32 + "}:inference:2",
        "t:{subnet:203.0.113.0/24}:inference:1",
    ]
    # the stored value is the bucket's TAT, to full precision
    assert float(await raw.get("t:{subnet:203.0.113.0/24}:inference:1")) == NOW + 10.0


async def test_default_prefix(storage: RedisStorage, raw: aioredis.Redis) -> None:
    await storage.charge([BucketCharge("global", "all:0", 1.0, 5, 1)], NOW)
    assert await raw.keys("*") == ["gr:{global}:all:0"]


async def test_keys_expire_when_the_bucket_is_full_again(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    # PTTL runs on the real clock: buckets that stay non-empty for seconds
    charges = [
        BucketCharge("ip:203.0.113.7", "a", 1.0, 5, 1),
        BucketCharge("ip:203.0.113.7", "b", 0.5, 5, 3),
        BucketCharge("global", "c", 60.0, 5, 2),
    ]
    outcome = await storage.charge(charges, NOW)
    assert [state.reset_after for state in outcome.states] == [1.0, 1.5, 120.0]
    for charge, state in zip(charges, outcome.states, strict=True):
        ttl_ms = await raw.pttl(f"gr:{{{charge.subject}}}:{charge.name}")
        # the bucket's time to full, plus the second of slack every key gets
        expected = state.reset_after * 1000 + 1000
        assert expected - 500 < ttl_ms <= expected


async def test_reads_and_refusals_store_nothing(storage: RedisStorage, raw: aioredis.Redis) -> None:
    read = BucketCharge("ip:203.0.113.9", "b", 1.0, 5, 0)
    too_big = BucketCharge("ip:203.0.113.9", "c", 1.0, 5, 6)
    assert (await storage.charge([read], NOW)).allowed
    assert not (await storage.charge([too_big], NOW)).allowed
    assert await raw.keys("*") == []


async def test_response_error_is_a_storage_error(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    await raw.hset("gr:{ip:203.0.113.7}:b", "not", "a bucket")  # GET in the script fails
    with pytest.raises(StorageError, match="WRONGTYPE") as caught:
        await storage.charge([BucketCharge("ip:203.0.113.7", "b", 1.0, 5, 1)], NOW)
    assert isinstance(caught.value.__cause__, ResponseError)


async def test_closed_port_fails_fast_with_storage_error() -> None:
    store = RedisStorage(f"redis://:hunter2@127.0.0.1:{free_port()}/0?timeout=0.2")
    try:
        started = time.monotonic()
        with pytest.raises(StorageError) as at_start:
            await store.start()
        with pytest.raises(StorageError) as at_charge:
            await store.charge(THREE, NOW)
        assert time.monotonic() - started < 1.0  # no retries, no backoff
    finally:
        await store.close()
    assert isinstance(at_charge.value.__cause__, RedisConnectionError)
    for caught in (at_start, at_charge):
        assert "hunter2" not in str(caught.value)
        assert ":***@127.0.0.1" in str(caught.value)


async def test_unresponsive_server_times_out(tmp_path: Path) -> None:
    server = Server(tmp_path / "frozen")
    store = RedisStorage(server.url + "?timeout=0.1")
    try:
        assert (await store.charge(THREE, NOW)).allowed
        os.kill(server.process.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            started = time.monotonic()
            with pytest.raises(StorageError) as caught:
                await store.charge(THREE, NOW)
            assert time.monotonic() - started < 1.0
            assert isinstance(caught.value.__cause__, RedisTimeoutError)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        # back to normal as soon as the server answers again; the timed-out call was left in
        # the server's socket buffer and may have run after all (at-most-once is not promised)
        recovered = await store.charge(THREE, NOW)
        assert recovered.allowed
        assert recovered.states[0].remaining in (17, 18)
    finally:
        await store.close()
        server.stop()


async def test_stopped_server_is_a_storage_error(tmp_path: Path) -> None:
    server = Server(tmp_path / "stopped")
    store = RedisStorage(server.url)
    try:
        assert (await store.charge(THREE, NOW)).allowed
        server.stop()
        with pytest.raises(StorageError, match="ConnectionError"):
            await store.charge(THREE, NOW)
    finally:
        await store.close()
