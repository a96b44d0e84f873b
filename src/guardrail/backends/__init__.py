"""Where token buckets live: in process (``memory://``) or in Redis (``redis…://``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardrail.backends.base import BucketCharge, BucketState, Outcome, Storage
from guardrail.backends.challenges import ChallengeStore, MemoryChallengeStore
from guardrail.backends.memory import MemoryStorage
from guardrail.backends.uri import SCHEMES, mask_uri
from guardrail.errors import StorageError

if TYPE_CHECKING:
    from guardrail.policy import Policy
    from guardrail.signals.engine import RiskEngine

__all__ = [
    "BucketCharge",
    "BucketState",
    "MemoryStorage",
    "Outcome",
    "Storage",
    "risk_engine",
    "storage_from_uri",
]


def storage_from_uri(uri: str, *, max_subjects: int = 1_000_000) -> Storage:
    """The storage a policy's ``storage:`` URI names; StorageError for anything else."""
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
        return RedisStorage(uri)
    raise StorageError(
        f"storage {mask_uri(uri)!r}: expected memory:// or one of "
        + ", ".join(f"{scheme}://" for scheme in SCHEMES)
    )


#: Risk state untouched for this many half-lives is forgotten: by then it weighs under 1/256.
TTL_HALF_LIVES = 8


def risk_engine(policy: Policy, storage: Storage, fallback: bool) -> RiskEngine:
    """The risk engine over the store that goes with ``storage``: in process next to memory
    buckets, in the same Redis (same client and prefix) next to Redis buckets. ``fallback``:
    also keep a local store for when Redis fails (on_storage_error: fail_open)."""
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
    from guardrail.backends.redis import QUEUE_TIMEOUTS, RedisStorage
    from guardrail.backends.risk_redis import RedisRiskStore

    assert isinstance(storage, RedisStorage)
    store = RedisRiskStore(
        storage.client,
        prefix=storage.prefix,
        uri=storage.uri,
        half_life=half_life,
        window=half_life,
        ttl=half_life * TTL_HALF_LIVES,
        gate=storage.gate,  # one pool, one gate: risk calls queue with bucket charges
        queue_timeout=storage.timeout * QUEUE_TIMEOUTS,
    )
    return RiskEngine(policy, store, memory() if fallback else None, remote=True)


def challenge_store(storage: Storage) -> ChallengeStore:
    """Issued challenges live where the buckets do: any worker can verify another's."""
    if isinstance(storage, MemoryStorage):
        return MemoryChallengeStore()
    from guardrail.backends.challenges_redis import RedisChallengeStore
    from guardrail.backends.redis import RedisStorage

    assert isinstance(storage, RedisStorage)
    return RedisChallengeStore(storage)
