"""Where token buckets live: in process (``memory://``) or in Redis (``redis…://``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from guardrail.backends.base import BucketCharge, BucketState, Outcome, Storage
from guardrail.backends.challenges import ChallengeStore, MemoryChallengeStore
from guardrail.backends.memory import MemoryStorage
from guardrail.backends.uri import SCHEMES, mask_uri
from guardrail.errors import StorageError

if TYPE_CHECKING:
    from guardrail.policy import Policy, StorageBreaker
    from guardrail.signals.engine import RiskEngine
    from guardrail.signals.state import RiskStore

__all__ = [
    "BucketCharge",
    "BucketState",
    "MemoryStorage",
    "Outcome",
    "Storage",
    "risk_engine",
    "storage_from_uri",
]


def storage_from_uri(
    uri: str,
    *,
    max_subjects: int = 1_000_000,
    breaker: StorageBreaker | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Storage:
    """The storage a policy's ``storage:`` URI names; StorageError for anything else. A Redis
    storage comes behind a ``breaker`` (``storage_breaker:``) unless it is None or its
    ``failures`` is 0; the risk and challenge stores made from it share that breaker."""
    scheme = uri.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryStorage(max_subjects)
    if scheme in SCHEMES:
        try:
            from guardrail.backends.redis import RedisStorage
        except ImportError as exc:  # redis is an optional dependency
            raise StorageError(
                f"storage {mask_uri(uri)!r} needs the redis client: pip install 'guardrail[redis]'"
            ) from exc
        redis = RedisStorage(uri)
        if breaker is None or not breaker.failures:
            return redis
        from guardrail.backends.breaker import Breaker, GuardedStorage

        return GuardedStorage(
            redis,
            Breaker(
                redis.probe,
                failures=breaker.failures,
                probe_every=breaker.probe_every,
                what=f"storage {redis.uri!r}",
                sleep=sleep,
            ),
        )
    raise StorageError(
        f"storage {mask_uri(uri)!r}: expected memory:// or one of "
        + ", ".join(f"{scheme}://" for scheme in SCHEMES)
    )


#: Risk state untouched for this many half-lives is forgotten: by then it weighs under 1/256.
TTL_HALF_LIVES = 8


def risk_engine(
    policy: Policy, storage: Storage, fallback: bool, clock: Callable[[], float] = time.time
) -> RiskEngine:
    """The risk engine over the store that goes with ``storage``: in process next to memory
    buckets; next to Redis buckets, in process too, shared through the same Redis (same
    client and prefix) every ``risk.share_every`` (read on ``clock``), or in Redis on every
    request (``share_every: request``; ``fallback``: also keep a local store for when Redis
    fails, on_storage_error: fail_open)."""
    from guardrail.backends.risk_memory import MemoryRiskStore
    from guardrail.signals.engine import RiskEngine

    half_life = policy.risk.half_life

    def memory() -> MemoryRiskStore:
        return MemoryRiskStore(
            half_life=half_life,
            window=half_life,
            ttl=half_life * TTL_HALF_LIVES,
            max_subjects=policy.max_subjects,
        )

    if isinstance(storage, MemoryStorage):
        return RiskEngine(policy, memory())
    from guardrail.backends.breaker import GuardedRiskStore, GuardedStorage
    from guardrail.backends.redis import QUEUE_TIMEOUTS, RedisStorage
    from guardrail.backends.risk_redis import RedisRiskStore

    guarded = storage if isinstance(storage, GuardedStorage) else None
    if guarded is not None:
        storage = guarded.storage
    assert isinstance(storage, RedisStorage)
    store: RiskStore = RedisRiskStore(
        storage.client,
        prefix=storage.prefix,
        uri=storage.uri,
        half_life=half_life,
        window=half_life,
        ttl=half_life * TTL_HALF_LIVES,
        gate=storage.gate,  # one pool, one gate: risk calls queue with bucket charges
        queue_timeout=storage.timeout * QUEUE_TIMEOUTS,
    )
    share_every = policy.risk.share_every
    if share_every != "request":
        from guardrail.backends.risk_shared import READ_EVERY_OTHERS, SharedRiskStore

        assert isinstance(store, RedisRiskStore)
        shared = SharedRiskStore(
            memory(),
            store,
            interval=share_every,
            # a flush every share_every, one that reads back every READ_EVERY_OTHERS
            read_every=READ_EVERY_OTHERS if share_every < READ_EVERY_OTHERS else 0.0,
            clock=clock,
            breaker=guarded.breaker if guarded is not None else None,
        )
        return RiskEngine(policy, shared)
    if guarded is not None:
        store = GuardedRiskStore(store, guarded.breaker)
    return RiskEngine(policy, store, memory() if fallback else None, remote=True)


def challenge_store(storage: Storage) -> ChallengeStore:
    """Issued challenges live where the buckets do: any worker can verify another's."""
    if isinstance(storage, MemoryStorage):
        return MemoryChallengeStore()
    from guardrail.backends.breaker import GuardedChallengeStore, GuardedStorage
    from guardrail.backends.challenges_redis import RedisChallengeStore
    from guardrail.backends.redis import RedisStorage

    if isinstance(storage, GuardedStorage):
        inner = storage.storage
        assert isinstance(inner, RedisStorage)
        return GuardedChallengeStore(RedisChallengeStore(inner), storage.breaker)
    assert isinstance(storage, RedisStorage)
    return RedisChallengeStore(storage)
