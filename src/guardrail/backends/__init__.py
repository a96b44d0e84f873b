"""Where token buckets live: in process (``memory://``) or in Redis (``redis…://``)."""

from __future__ import annotations

from guardrail.backends.base import BucketCharge, BucketState, Outcome, Storage
from guardrail.backends.memory import MemoryStorage
from guardrail.backends.uri import SCHEMES, mask_uri
from guardrail.errors import StorageError

__all__ = [
    "BucketCharge",
    "BucketState",
    "MemoryStorage",
    "Outcome",
    "Storage",
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
