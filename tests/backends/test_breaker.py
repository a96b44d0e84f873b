"""The storage breaker (backends/breaker.py) on real Redis servers: a silent one (every call
times out), the session's redis-server paused with CLIENT PAUSE, and the probe's sleep
stepped by the test."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from guardrail.backends import challenge_store, storage_from_uri
from guardrail.backends.base import BucketCharge
from guardrail.backends.breaker import BreakerOpen, GuardedStorage
from guardrail.backends.memory import MemoryStorage
from guardrail.backends.redis import client_error
from guardrail.budgets import Settlements
from guardrail.errors import StorageError
from guardrail.policy import StorageBreaker

CHARGE = [BucketCharge("ip:203.0.113.7", "page:0", 1.0, 5, 1)]


class Steps:
    """The probe's sleep: each one waits until the test lets it go."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self._asleep: asyncio.Queue[None] = asyncio.Queue()
        self._go: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._asleep.put_nowait(None)
        await self._go.get()

    async def release(self) -> None:
        """Once the probing task waits for its turn, let it go."""
        await self._asleep.get()
        self._go.put_nowait(None)

    async def probe_once(self, storage: GuardedStorage) -> None:
        """Let one probe run, and wait until it is over: asleep again, or the breaker closed."""
        async with asyncio.timeout(5):
            await self.release()
            asleep = asyncio.ensure_future(self._asleep.get())
            closed = asyncio.ensure_future(storage.breaker.wait_closed())
            try:
                await asyncio.wait([asleep, closed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in (asleep, closed):
                    waiting.cancel()
            if asleep.done() and not asleep.cancelled():
                self._asleep.put_nowait(None)  # still probing: the next probe_once finds it


def guarded(uri: str, steps: Steps, failures: int = 3) -> GuardedStorage:
    storage = storage_from_uri(
        uri, breaker=StorageBreaker(failures=failures, probe_every=0.25), sleep=steps.sleep
    )
    assert isinstance(storage, GuardedStorage)
    return storage


PAUSE = 0.6  # seconds: long enough for the calls below to time out, short enough to wait


async def pause(url: str) -> float:
    """Pause every client of the server for PAUSE seconds (no command ends a pause early:
    CLIENT UNPAUSE waits too); returns when it ends, on the monotonic clock."""
    admin = aioredis.from_url(url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", int(PAUSE * 1000), "ALL")
    finally:
        await admin.aclose()
    return time.monotonic() + PAUSE


async def until(moment: float) -> None:
    """Wait, on the real clock, for a real server's pause to end."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()) + 0.05)


async def test_opens_after_consecutive_failures_then_skips_redis(silent_server: int) -> None:
    steps = Steps()
    storage = guarded(f"redis://127.0.0.1:{silent_server}/0?timeout=0.05", steps)
    for _ in range(3):
        with pytest.raises(StorageError):
            await storage.charge(CHARGE, 0.0)
    assert storage.breaker.open and storage.breaker.opened == 1
    started = time.monotonic()
    for _ in range(100):
        with pytest.raises(BreakerOpen):
            await storage.charge(CHARGE, 0.0)
        with pytest.raises(BreakerOpen):
            await storage.settle(CHARGE, 0.0)
    assert time.monotonic() - started < 0.05  # no timeout waited: Redis not called
    await asyncio.sleep(0.01)  # the probing task starts
    assert steps.slept == [0.25]  # one probe waits its turn, however many calls came
    await storage.close()


async def test_a_success_starts_the_count_again(redis_url: str) -> None:
    storage = guarded(redis_url, Steps())
    await storage.start()
    storage.breaker.failed()
    storage.breaker.failed()
    assert (await storage.charge(CHARGE, 0.0)).allowed
    storage.breaker.failed()
    storage.breaker.failed()
    assert not storage.breaker.open  # two in a row, not four
    storage.breaker.failed()
    assert storage.breaker.open
    await storage.close()


async def test_closes_on_the_first_probe_after_recovery_and_drops_the_fallback(
    redis_url: str,
) -> None:
    steps = Steps()
    storage = guarded(redis_url + "?timeout=0.05", steps)
    await storage.start()
    fallback = MemoryStorage()
    storage.breaker.on_close(fallback.clear)
    await fallback.charge(CHARGE, 0.0)
    resumes = await pause(redis_url)
    for _ in range(3):
        with pytest.raises(StorageError):
            await storage.charge(CHARGE, 0.0)
    assert storage.breaker.open
    await steps.probe_once(storage)  # still paused: the probe fails, and waits its turn
    assert storage.breaker.open and steps.slept == [0.25, 0.25]
    await until(resumes)
    await steps.probe_once(storage)
    assert not storage.breaker.open
    assert len(fallback) == 0  # Redis holds the counts again
    assert (await storage.charge(CHARGE, 0.0)).allowed
    await storage.close()


async def test_the_challenge_store_shares_the_breaker(silent_server: int) -> None:
    storage = guarded(f"redis://127.0.0.1:{silent_server}/0?timeout=0.05", Steps(), failures=2)
    challenges = challenge_store(storage)
    for _ in range(2):
        with pytest.raises(StorageError):
            await challenges.peek("owner", 0.0)
    assert storage.breaker.open
    with pytest.raises(BreakerOpen):
        await storage.charge(CHARGE, 0.0)
    await storage.close()


async def test_settlements_wait_for_the_breaker_instead_of_spending_attempts(
    redis_url: str, clock
) -> None:
    steps = Steps()
    storage = guarded(redis_url + "?timeout=0.05", steps)
    await storage.start()
    await storage.charge(CHARGE, clock())
    resumes = await pause(redis_url)
    for _ in range(3):
        with pytest.raises(StorageError):
            await storage.charge(CHARGE, clock())
    assert storage.breaker.open
    await until(resumes)
    settlements = Settlements(lambda exc: None, clock.sleep, clock)
    given_back = [CHARGE[0]._replace(cost=-1)]
    settlements.retry(storage, given_back)
    for _ in range(20):  # the settlement's own backoff runs on the fake clock: it would be
        await asyncio.sleep(0)  # given up by now if each open-breaker refusal were an attempt
    assert settlements.given_up == 0
    await steps.probe_once(storage)
    async with asyncio.timeout(5):
        await asyncio.gather(*settlements._retries)
    assert settlements.given_up == 0
    state = (await storage.charge([CHARGE[0]._replace(cost=0)], clock())).states[0]
    assert state.remaining == 5  # the one charged before the outage was given back
    await storage.close()


def test_an_exception_from_the_client_is_a_storage_failure() -> None:
    try:
        key_slot(None)  # type: ignore[arg-type]  # redis-py's own code raises AttributeError
    except AttributeError as exc:
        assert client_error(exc) is exc


def test_an_exception_from_guardrail_is_not() -> None:
    reply: object = None
    with pytest.raises(AttributeError):  # a bug of ours must surface, not fail open
        try:
            reply.decode()  # type: ignore[attr-defined]
        except AttributeError as exc:
            client_error(exc)


def test_no_breaker_when_failures_is_zero(redis_url: str) -> None:
    storage = storage_from_uri(redis_url, breaker=StorageBreaker(failures=0))
    assert not isinstance(storage, GuardedStorage)


async def test_shutdown_stops_a_probe_in_flight(silent_server: int) -> None:
    steps = Steps()
    storage = guarded(f"redis://127.0.0.1:{silent_server}/0?timeout=5", steps, failures=1)
    storage.breaker.failed()
    assert storage.breaker.open
    await steps.release()  # a probe goes out, to a server that never answers
    await asyncio.sleep(0.05)
    async with asyncio.timeout(2):  # not the probe's 5 s timeout
        await storage.close()
