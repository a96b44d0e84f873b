"""A circuit breaker in front of one Redis connection, shared by everything that uses it:
buckets, risk state, challenges (and so the token settlements, which go through the buckets).

Closed, each call goes to Redis; ``failures`` failures in a row (errors and timeouts alike)
open it. Open, every call fails at once with ``BreakerOpen``, a ``StorageError``, without
touching Redis: the middleware applies ``on_storage_error`` as it does for any storage failure
(``fail_open``: the local fallback decides and the audit record says ``degraded``;
``fail_closed``: 503). Meanwhile a single background task probes Redis every ``probe_every``;
the first probe that passes closes the breaker, and the next request is back on Redis.

A paused or slow Redis would otherwise cost every request its timeouts for as long as it lasts
(issue 12: ~0.5 s a request, two timeouts), and a cluster losing a master would cost every
request a slot-map refresh. Why a background probe rather than a half-open state that lets
one request through: no request waits on a Redis that is still down, requests never race to
be the trial one, and Redis is probed even when no traffic comes. When the probe passes,
traffic returns all at once; if Redis is still not well, ``failures`` failures open the
breaker again, each request in flight paying one timeout at most.

When it closes, the breaker calls its ``on_close`` callbacks: the middleware drops the local
fallback's counts there, since Redis holds the counts that every worker shares.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any, TypeVar

from guardrail.backends.base import BucketCharge, Outcome, Storage
from guardrail.backends.challenges import ChallengeStore
from guardrail.errors import StorageError
from guardrail.metrics import NO_METRICS, Metrics
from guardrail.signals.state import Keys, RiskStore, Snapshot, Update

logger = logging.getLogger("guardrail")

T = TypeVar("T")
Probe = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class BreakerOpen(StorageError):
    """Redis was not called: the breaker is open. ``breaker.wait_closed()`` waits for it."""

    def __init__(self, breaker: Breaker) -> None:
        super().__init__(f"{breaker.what}: not called, the breaker is open (Redis failed lately)")
        self.breaker = breaker


class Breaker:
    """Counts consecutive failures of the calls it guards; see the module's docstring.

    ``open`` is the one attribute the hot path reads. ``probe`` raises StorageError while
    Redis is not well; ``sleep`` is injected (tests step it)."""

    def __init__(
        self,
        probe: Probe,
        *,
        failures: int,
        probe_every: float,
        what: str,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if failures < 1 or probe_every <= 0:
            raise ValueError("failures must be at least 1 and probe_every above zero")
        self.open = False
        self.failures = 0  # consecutive, while closed
        self.threshold = failures
        self.probe_every = probe_every
        self.what = what
        self.opened = 0  # times it opened, for tests and operators
        self._probe = probe
        self._sleep = sleep
        self._probing: asyncio.Task[None] | None = None
        self._stopped = False  # shut down: no more probing
        self._closed: asyncio.Event | None = None  # set when it closes; made when first needed
        self._on_close: list[Callable[[], None]] = []
        self.metrics: Metrics = NO_METRICS  # the middleware's, when the policy turns them on

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold and not self.open:
            self._trip()

    async def wait_closed(self) -> None:
        """Return once the breaker is closed (at once when it is)."""
        while self.open:
            if self._closed is None:
                self._closed = asyncio.Event()
            await self._closed.wait()

    async def aclose(self) -> None:
        """Stop probing (at shutdown)."""
        self._stopped = True
        probing, self._probing = self._probing, None
        # Cancelled until done: redis-py can turn a cancellation into a connection error (on
        # Python 3.11, asyncio.wait_for may lose one), which the loop would take for a failed
        # probe; it also stops at its next turn, seeing _stopped.
        while probing is not None and not probing.done():
            probing.cancel()
            await asyncio.wait([probing], timeout=self.probe_every)

    def _trip(self) -> None:
        self.open = True
        self.opened += 1
        self.metrics.breaker(True)
        logger.warning(
            "guardrail: %s failed %d times in a row: not called until a probe passes "
            "(one every %gs); on_storage_error applies meanwhile",
            self.what,
            self.failures,
            self.probe_every,
        )
        if not self._stopped and (self._probing is None or self._probing.done()):
            self._probing = asyncio.ensure_future(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        opened_at = time.monotonic()
        while True:
            await self._sleep(self.probe_every)
            if self._stopped:
                return
            try:
                await self._probe()
            except StorageError:
                continue
            except Exception:
                # A bug of ours, not Redis being down: said loudly, and probing goes on, or
                # the breaker would stay open for good.
                logger.exception("guardrail: the storage probe failed unexpectedly")
                continue
            break
        self.failures = 0
        self.open = False
        self.metrics.breaker(False)
        for callback in self._on_close:
            callback()
        if self._closed is not None:
            self._closed.set()
            self._closed = None
        logger.warning(
            "guardrail: %s answers again after %.2fs: back on it",
            self.what,
            time.monotonic() - opened_at,
        )


async def _guard(breaker: Breaker, call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``call(*args)`` through ``breaker`` (the coroutine is made only when the call is made)."""
    if breaker.open:
        raise BreakerOpen(breaker)
    started = perf_counter()
    try:
        result = await call(*args)
    except StorageError:
        breaker.failed()
        raise
    breaker.failures = 0
    breaker.metrics.storage_call(call.__name__, perf_counter() - started)
    return result


class GuardedStorage:
    """A ``Storage`` (Redis buckets) behind a breaker. ``storage`` is the one it wraps."""

    def __init__(self, storage: Storage, breaker: Breaker) -> None:
        self.storage = storage
        self.breaker = breaker

    async def charge(self, charges: Sequence[BucketCharge], now: float) -> Outcome:
        # Written out rather than through _guard: this runs on every request.
        breaker = self.breaker
        if breaker.open:
            raise BreakerOpen(breaker)
        started = perf_counter()
        try:
            outcome = await self.storage.charge(charges, now)
        except StorageError:
            breaker.failed()
            raise
        breaker.failures = 0
        breaker.metrics.storage_call("charge", perf_counter() - started)
        return outcome

    async def settle(self, charges: Sequence[BucketCharge], now: float) -> None:
        await _guard(self.breaker, self.storage.settle, charges, now)

    async def start(self) -> None:
        await _guard(self.breaker, self.storage.start)

    async def close(self) -> None:
        await self.breaker.aclose()
        await self.storage.close()


class GuardedRiskStore:
    """A Redis risk store behind its storage's breaker."""

    def __init__(self, store: RiskStore, breaker: Breaker) -> None:
        self.store = store
        self.breaker = breaker

    async def load(self, keys: Keys, now: float) -> Snapshot:
        breaker = self.breaker
        if breaker.open:
            raise BreakerOpen(breaker)
        started = perf_counter()
        try:
            snapshot = await self.store.load(keys, now)
        except StorageError:
            breaker.failed()
            raise
        breaker.failures = 0
        breaker.metrics.storage_call("load", perf_counter() - started)
        return snapshot

    async def save(self, keys: Keys, update: Update) -> None:
        await _guard(self.breaker, self.store.save, keys, update)

    async def start(self) -> None:
        await _guard(self.breaker, self.store.start)

    async def close(self) -> None:
        await self.store.close()


class GuardedChallengeStore:
    """A Redis challenge store behind its storage's breaker."""

    def __init__(self, store: ChallengeStore, breaker: Breaker) -> None:
        self.store = store
        self.breaker = breaker

    async def put(self, owner: str, record: bytes, expires_at: float, now: float) -> bytes | None:
        return await _guard(self.breaker, self.store.put, owner, record, expires_at, now)

    async def peek(self, owner: str, now: float) -> bytes | None:
        return await _guard(self.breaker, self.store.peek, owner, now)

    async def take(self, owner: str, now: float) -> bytes | None:
        return await _guard(self.breaker, self.store.take, owner, now)

    async def use(self, clearance_id: str, expires_at: float, now: float) -> int:
        return await _guard(self.breaker, self.store.use, clearance_id, expires_at, now)

    async def grant(self, name: str, expires_at: float, now: float) -> None:
        await _guard(self.breaker, self.store.grant, name, expires_at, now)

    async def granted(self, name: str, now: float) -> float | None:
        return await _guard(self.breaker, self.store.granted, name, now)
