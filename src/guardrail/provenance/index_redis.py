"""The provenance index in Redis: every worker's entries in one place, next to the buckets.

With a Redis storage (and no ``provenance.path``), a fleet's index is not scattered over its
hosts' disks: each worker buffers its entries and appends them, in one pipeline per flush,
to hourly buckets that ``guardrail trace find --index redis://…`` reads back
(index_redis_read.py).

Keys, under the storage's prefix (``gr:`` by default)::

    prov:current              header of the index being written: "GRPROV\\r\\n", version u16,
                              bins u16, sketch parameters (16 bytes)
    prov:<tag>:<hour>         list of entries, RPUSHed: sketch (bins), the second in the hour
                              (u16), subject id (8 bytes)
    prov:<tag>:w<week>:n<k>   hash: subject id -> subject name, for that week's entries, one
                              of NAME_SHARDS by the id
    prov:<tag>:sizes          hash: hour -> entries appended (the registry: no SCAN)

``<tag>`` is derived from the header: a worker sketching under another key or version writes
an index of its own and points ``prov:current`` at it; the previous one is set aside (no
worker appends to it, it expires), as a file of another key is. A subject id is 8 bytes of
its name's hash: workers share no counter.

What an entry costs is Redis's memory, not the record's 58 bytes, and the layout is chosen
for it (measured, benchmarks/provenance_redis.py: 10,000 subjects, 1M entries over 30 days):

- a bucket is a list, not a string: Redis packs a list's elements in nodes of 8 KB that it
  reallocates to their size, 2 bytes over each record of 58 (60.7 an entry, the nodes' own
  headers included). A string grown by APPEND holds up to as much room again as it is long,
  and even rewritten to its length it is rounded up to the allocator's next size class
  (80 KB, 96 KB, 112 KB…: 70.8 an entry for hours of ~1,400 entries);
- a record holds the second within its hour (the key names the hour): 2 bytes, not 4;
- names are kept per week, not per hour or day (a subject that asks a few times a day would
  pay for its name again every hour or day), and a week's names are spread over NAME_SHARDS
  hashes by the id: a field costs ~85 bytes in a hash table, ~30 in a small hash, which Redis
  packs as a listpack (1.4 bytes an entry here, not 3.6). Past ``hash-max-listpack-entries``
  names in a shard (128 in the sample redis.conf: ~32,000 subjects a week; 512 built in) or
  a name over ``hash-max-listpack-value`` bytes (64), a shard grows into a hash table, each
  of its fields at the larger cost: bounded still. A name costs once a week whatever the
  subject asks: ~12 bytes an entry for 100,000 subjects asking twice a week.

A week's names are deleted with the last bucket of that week. Every command touches one
key, so on a Redis Cluster they spread over the nodes.

Bounds, enforced by each worker after its flush on what ``sizes`` says: buckets whose every
entry is older than ``retention`` (on guardrail's clock) are deleted, then the oldest until
at most ``capacity`` entries remain, the last of them trimmed from its front (a Lua script
on that one key: an RPUSH racing it lands before or after, never in the middle). Within
that hour, what goes first is what was written first: workers' flushes interleave, so it is
not strictly the oldest. Each key
also gets an EXPIRE of its hour plus retention plus an hour, a safety net for an index
nobody writes any more. ``sizes`` only moves by increments (an append adds what it wrote, a
trim takes off what it removed), so racing workers leave it exact once their pipelines are
done; two enforcing at once on different counts may trim deeper than needed, never less.

A failed flush (Redis down, a timeout) keeps the entries for the next one, up to
``pending_max``; beyond that the newest are dropped, counted and logged, never silently.
Nothing here runs on the request path: the recorder's task calls ``add`` and ``flush``.
A flush that failed after Redis applied part of it is sent again: an entry may then be in
the index twice, which ranks nobody higher (a subject's evidence counts distinct suspects).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Callable
from typing import Any

from guardrail.backends.base import Storage
from guardrail.backends.lua import Client, LuaScript, evalsha
from guardrail.backends.redis import client_error, gated
from guardrail.errors import ProvenanceError, StorageError
from guardrail.provenance.index import MAGIC, VERSION
from guardrail.provenance.sketch import BINS, PARAMS_SIZE, Sketcher

logger = logging.getLogger("guardrail")

#: Bytes a record takes: sketch, the second within its hour (u16), subject id.
RECORD = BINS + 2 + 8
#: Hashes a week's names are spread over (see above).
NAME_SHARDS = 256
#: Bumped when the keys' types or the records change: a new layout is an index of its own.
LAYOUT = b"lists-1"
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
#: Entries a flush sends at most: a pipeline of ~250 KB, well within a socket timeout.
FLUSH_AT = 4096
#: Entries kept for the next flush while Redis fails (100,000: 6 MB); past it, dropped.
PENDING_MAX = 100_000
#: Seconds between two warnings of a failing flush.
WARN_EVERY = 10.0
HEAD = struct.Struct(f"<8sHH{PARAMS_SIZE}s")
_ENTRY = struct.Struct(f"<{BINS}sH8s")

_TRIM_BODY = b"""
-- Keep the newest ARGV[1] entries of the list at KEYS[1]; how many it held.
local size = redis.call('LLEN', KEYS[1])
local keep = math.min(tonumber(ARGV[1]), size)
if keep == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('LTRIM', KEYS[1], size - keep, -1)
end
return size
"""
_TRIM = LuaScript(_TRIM_BODY, hashlib.sha1(_TRIM_BODY, usedforsecurity=False).hexdigest())


def header(params: bytes) -> bytes:
    return HEAD.pack(MAGIC, VERSION, BINS, params)


class Keys:
    """The key names of one index (one header) under one prefix."""

    def __init__(self, prefix: str, head: bytes) -> None:
        self.current = f"{prefix}prov:current"
        self.tag = hashlib.blake2b(LAYOUT + head, digest_size=6).hexdigest()
        self._base = f"{prefix}prov:{self.tag}:"
        self.sizes = self._base + "sizes"
        # the registry of an index in the earlier layout (strings, 60-byte records), under a
        # tag of the header alone: read by no trace find of this version
        earlier = hashlib.blake2b(head, digest_size=6).hexdigest()
        self.earlier_sizes = f"{prefix}prov:{earlier}:sizes"

    def bucket(self, hour: int) -> str:
        return f"{self._base}{hour}"

    def names(self, week: int, shard: int) -> str:
        return f"{self._base}w{week}:n{shard}"

    def names_of(self, week: int, subject: str) -> str:
        return self.names(week, shard(subject_id(subject)))


def subject_id(subject: str) -> bytes:
    return hashlib.blake2b(subject.encode(), digest_size=8).digest()


def shard(ident: bytes) -> int:
    """Which of a week's NAME_SHARDS hashes holds the name of the subject ``ident``."""
    return int.from_bytes(ident[:2], "little") % NAME_SHARDS


class RedisIndexWriter:
    """One worker's side of the Redis index: ``add`` buffers, ``flush`` appends and bounds.
    Used by one task only (the recorder's), like ``ProvenanceIndex``."""

    def __init__(
        self,
        client: Client,
        *,
        prefix: str,
        uri: str,
        sketcher: Sketcher,
        capacity: int,
        retention: float,
        clock: Callable[[], float],
        gate: asyncio.Semaphore | None = None,
        gate_wait: float = 1.0,
        is_open: Callable[[], bool] = lambda: False,
        pending_max: int = PENDING_MAX,
        flush_at: int = FLUSH_AT,
        blocking: Callable[[], tuple[Any, list[Any]]] | None = None,
    ) -> None:
        if capacity < 1 or retention <= 0:
            raise ProvenanceError("an index needs a capacity >= 1 and a retention > 0")
        self.client = client
        self.uri = uri
        self.sketcher = sketcher
        self.capacity = capacity
        self.retention = retention
        self.clock = clock
        self.head = header(sketcher.params)
        self.keys = Keys(prefix, self.head)
        self._gate = gate if gate is not None else asyncio.Semaphore(1)
        self._gate_wait = gate_wait
        self._is_open = is_open  # the storage's breaker: no flush tried while it is open
        self._blocking = blocking  # a blocking client and its extras, for the process's end
        self.pending_max = pending_max
        self.flush_at = flush_at
        self._pending: dict[int, list[bytes]] = {}  # hour -> records
        self._names: dict[tuple[int, int], dict[bytes, str]] = {}  # (week, shard) -> names
        self.pending = 0
        """Entries waiting for a flush."""
        self.flushed = 0
        """Entries appended to Redis."""
        self.dropped = 0
        """Entries dropped because too many were waiting (Redis failing)."""
        self.failures = 0
        """Flushes that failed."""
        self.trimmed = 0
        """Entries this worker deleted to keep the bounds (retention, capacity)."""
        self._announced = False  # prov:current names this worker's index
        # names hashes of the current week given their TTL by this worker, this hour
        self._expiring: set[tuple[int, int]] = set()
        self._expiring_hour = -1
        self._warned_at: dict[str, float] = {}
        self._unwarned = 0
        self._retry_at = float("-inf")

    # -- the recorder's task -------------------------------------------------------------

    def add(self, subject: str, text: str, ts: float) -> bool:
        """Sketch ``text`` and keep it for the next flush; False when it is too short to
        sketch, or dropped (too many waiting: counted and logged)."""
        sketch = self.sketcher.sketch(text)
        return sketch is not None and self.add_sketch(subject, sketch, ts)

    def add_sketch(self, subject: str, sketch: bytes, ts: float) -> bool:
        if self.pending >= self.pending_max:
            self.dropped += 1
            self._unwarned += 1
            if self._warn(
                "dropped",
                "guardrail: provenance: %d entries wait for Redis (%s), the most kept; %d "
                "dropped since the last warning, %d in all: they cannot be traced",
                self.pending,
                self.uri,
                self._unwarned,
                self.dropped,
            ):
                self._unwarned = 0
            return False
        ident = subject_id(subject)
        when = int(ts)
        hour, second = divmod(when, HOUR)
        entries = self._pending.get(hour)
        if entries is None:
            entries = self._pending[hour] = []
        entries.append(_ENTRY.pack(sketch, second, ident))
        where = (when // WEEK, shard(ident))
        names = self._names.get(where)
        if names is None:
            names = self._names[where] = {}
        names[ident] = subject
        self.pending += 1
        return True

    def due(self, now: float) -> bool:
        """Enough entries wait for a flush before its time (unless the last one failed
        lately: a Redis that is down is not asked again with every batch)."""
        return self.pending >= self.flush_at and now >= self._retry_at

    async def flush(self, now: float, *, last: bool = False) -> bool:
        """Append what waits, in one pipeline, then enforce the bounds; False when Redis
        failed (the entries wait for the next flush). Never raises a Redis error. Not tried
        while the storage's breaker is open, unless it is the ``last`` (at shutdown)."""
        if self._is_open() and not last:
            self._retry_at = now + WARN_EVERY
            return False
        try:
            async with gated(self._gate, self._gate_wait, f"storage {self.uri!r}"):
                sizes = await self._append(now)
                if sizes is not None:
                    await self._bound(sizes, now)
        except Exception as exc:
            self._expiring.clear()  # Redis may have restarted empty
            failure = exc if isinstance(exc, StorageError) else client_error(exc)
            self.failures += 1
            self._retry_at = now + WARN_EVERY
            self._warn(
                "failed",
                "guardrail: provenance: cannot write the index to Redis (%s): %s: %s; %d "
                "entries wait for the next flush",
                self.uri,
                type(failure).__name__,
                failure,
                self.pending,
            )
            return False
        return True

    async def _append(self, now: float) -> dict[int, int] | None:
        """Send the pending entries; the sizes after, or None when nothing was sent."""
        if not self._pending and self._announced:
            return None
        pipe = self.client.pipeline(transaction=False)
        self._queue_append(pipe, now)
        return self._appended(await pipe.execute())

    def _queue_append(self, pipe: Any, now: float) -> None:
        """The commands of an append, on a pipeline of either client (they queue alike)."""
        keys = self.keys
        hour = int(now) // HOUR
        if hour != self._expiring_hour:  # every hash of the week is given its TTL again
            self._expiring, self._expiring_hour = set(), hour
        # The first flush points prov:current at this index; later ones only restore it (a
        # Redis restarted empty): workers of two keys do not flip it to and fro.
        if self._announced:
            pipe.set(keys.current, self.head, nx=True)
        else:  # the header it replaces, to say so (SET … GET: Redis 6.2)
            pipe.set(keys.current, self.head, get=True)
            pipe.exists(keys.earlier_sizes)
        for (week, part), names in self._names.items():  # before the entries that need them
            pipe.hset(keys.names(week, part), mapping=names)
            # Not with every flush (256 EXPIREs where a flush of 4,096 entries takes ~5 ms of
            # CPU more), but once an hour a hash of the current week, and always one of
            # another week (what bounds delete: a late entry makes it anew): a hash lost with
            # a Redis restarted empty and made anew is without a TTL for an hour at most.
            if (week, part) not in self._expiring:
                pipe.expire(keys.names(week, part), self._ttl(week * WEEK + WEEK, now))
        for hour, entries in self._pending.items():
            pipe.rpush(keys.bucket(hour), *entries)
            pipe.expire(keys.bucket(hour), self._ttl(hour * HOUR + HOUR, now))
            pipe.hincrby(keys.sizes, str(hour), len(entries))
        pipe.expire(keys.sizes, int(self.retention) + 2 * HOUR)
        pipe.hgetall(keys.sizes)

    def _appended(self, replies: list[Any]) -> dict[int, int]:
        """What an append's ``replies`` say: said if another index was current; the sizes."""
        if not self._announced:
            self._announced = True
            before, earlier = replies[0], replies[1]
            if earlier:
                logger.warning(
                    "guardrail: provenance: an index in the earlier layout of guardrail's "
                    "development versions (hourly strings) is in Redis (%s, registry %s): trace "
                    "find does not read it; this one is written apart, and that one's keys "
                    "expire with its retention",
                    self.uri,
                    self.keys.earlier_sizes,
                )
            if before is not None and before != self.head:
                logger.warning(
                    "guardrail: provenance: the index in Redis (%s) was sketched under another "
                    "key or version (%s); this one is written apart, and the other is set "
                    "aside until it expires",
                    self.uri,
                    describe(before),
                )
        self.flushed += self.pending
        week = self._expiring_hour * HOUR // WEEK
        self._expiring.update(where for where in self._names if where[0] == week)
        self._pending.clear()
        self._names.clear()
        self.pending = 0
        return {int(hour): int(count) for hour, count in replies[-1].items()}

    def flush_blocking(self, now: float) -> bool:
        """The process is ending with no event loop to run ``flush`` (no lifespan): append
        what waits with a blocking client, once; the bounds are left to the next worker's
        flush. False when there was no client to make, or Redis failed (said)."""
        if not self.pending or self._blocking is None:
            return not self.pending
        client: Any = None
        extra: list[Any] = []
        try:
            client, extra = self._blocking()
            with client.pipeline(transaction=False) as pipe:
                self._queue_append(pipe, now)
                self._appended(pipe.execute())
        except Exception as exc:
            failure = exc if isinstance(exc, StorageError) else client_error(exc)
            logger.warning(
                "guardrail: provenance: the process ends and the index could not be written to "
                "Redis (%s): %s: %s; %d entries are lost",
                self.uri,
                type(failure).__name__,
                failure,
                self.pending,
            )
            return False
        finally:
            for opened in (client, *extra):
                if opened is not None:
                    opened.close()
        return True

    def _ttl(self, end: float, now: float) -> int:
        """Seconds until entries up to ``end`` are past retention, and an hour to spare."""
        return max(1, int(end + self.retention - now) + HOUR)

    async def _bound(self, sizes: dict[int, int], now: float) -> None:
        """Delete the buckets past retention, then the oldest beyond ``capacity``."""
        cutoff = now - self.retention
        hours = sorted(sizes)
        # a count below 1: an hour dropped while another trimmed it (see the trim below)
        drop = [hour for hour in hours if (hour + 1) * HOUR <= cutoff or sizes[hour] < 1]
        live = [hour for hour in hours if hour not in drop]
        total = sum(sizes[hour] for hour in live)
        trim: tuple[int, int] | None = None
        for hour in live:
            if total <= self.capacity:
                break
            if total - sizes[hour] >= self.capacity:
                drop.append(hour)
                total -= sizes[hour]
            else:
                trim = (hour, self.capacity - (total - sizes[hour]))
                break
        if not drop and trim is None:
            return
        keys, pipe = self.keys, self.client.pipeline(transaction=False)
        for hour in drop:
            pipe.delete(keys.bucket(hour))
            pipe.hdel(keys.sizes, str(hour))
        gone = set(drop)
        kept = {hour * HOUR // WEEK for hour in hours if hour not in gone}
        weeks = {hour * HOUR // WEEK for hour in gone} - kept
        for week in weeks:
            for part in range(NAME_SHARDS):
                pipe.delete(keys.names(week, part))
        await pipe.execute()
        self.trimmed += sum(max(0, sizes[hour]) for hour in drop)
        if trim is not None:
            hour, keep = trim
            size = await evalsha(self.client, _TRIM, [keys.bucket(hour)], [keep])
            removed = max(0, int(size) - keep)  # what this call took, however raced
            if await self.client.hincrby(keys.sizes, str(hour), -removed) <= 0:
                await self.client.hdel(keys.sizes, str(hour))  # another worker dropped it
            self.trimmed += removed

    def _warn(self, kind: str, message: str, *args: Any) -> bool:
        """Log at most once every WARN_EVERY per kind; whether it was logged."""
        now = self.clock()
        if now - self._warned_at.get(kind, float("-inf")) < WARN_EVERY:
            return False
        self._warned_at[kind] = now
        logger.warning(message, *args)
        return True


def writer_for(
    storage: Storage,
    sketcher: Sketcher,
    capacity: int,
    retention: float,
    clock: Callable[[], float],
) -> RedisIndexWriter:
    """The writer that goes with a Redis ``storage``: its client, prefix and connection gate
    (flushes queue with the charges for a connection), and its breaker, if any."""
    from guardrail.backends.breaker import GuardedStorage
    from guardrail.backends.redis import QUEUE_TIMEOUTS, RedisStorage

    breaker = storage.breaker if isinstance(storage, GuardedStorage) else None
    redis = storage.storage if isinstance(storage, GuardedStorage) else storage
    assert isinstance(redis, RedisStorage)
    return RedisIndexWriter(
        redis.client,
        prefix=redis.prefix,
        uri=redis.uri,
        sketcher=sketcher,
        capacity=capacity,
        retention=retention,
        clock=clock,
        gate=redis.gate,
        gate_wait=redis.timeout * QUEUE_TIMEOUTS,
        is_open=(lambda: breaker.open) if breaker is not None else (lambda: False),
        blocking=redis.blocking_client,
    )


def describe(head: bytes) -> str:
    """What an index header says, for messages."""
    if len(head) != HEAD.size or head[:8] != MAGIC:
        return "not a guardrail provenance index header"
    _, version, bins, params = HEAD.unpack(head)
    return f"version {version}, {bins} bins, sketch parameters {params.hex()}"
