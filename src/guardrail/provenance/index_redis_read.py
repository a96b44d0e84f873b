"""``trace find``'s side of the Redis index (index_redis.py): every bucket of the index that
``prov:current`` names, read back into a ``ProvenanceIndex``, which ``attribute`` searches as
it searches a file's."""

from __future__ import annotations

import asyncio
import operator
import struct
from array import array
from dataclasses import replace

from guardrail.backends.lua import Client
from guardrail.backends.redis import REDIS_FAILURES, connect
from guardrail.backends.uri import mask_uri, parse_uri
from guardrail.errors import ProvenanceError, StorageError
from guardrail.provenance.index import MAGIC, VERSION, ProvenanceIndex
from guardrail.provenance.index_redis import HEAD, HOUR, NAME_SHARDS, RECORD, WEEK, Keys
from guardrail.provenance.sketch import BINS, Sketcher

#: Timeout of a reader that its URI does not set: it reads megabytes.
READ_TIMEOUT = 30.0


def load(uri: str) -> ProvenanceIndex:
    """The index that ``prov:current`` names at ``uri`` (a storage URI: its ``prefix``, and
    ``timeout`` or 30 s), for ``trace find``; ProvenanceError naming what is wrong."""
    return asyncio.run(read_index(uri))


async def read_index(uri: str) -> ProvenanceIndex:
    """``load``, on a running event loop."""
    shown = mask_uri(uri)
    try:
        target = parse_uri(uri)
    except StorageError as exc:
        raise ProvenanceError(str(exc)) from exc
    if "timeout=" not in uri.partition("?")[2]:
        target = replace(target, timeout=READ_TIMEOUT)
    client, extra = connect(target)
    try:
        return await _read(client, target.prefix, shown)
    except REDIS_FAILURES as exc:
        raise ProvenanceError(f"cannot read the index: {type(exc).__name__}: {exc}", shown) from exc
    finally:
        await client.aclose()
        for other in extra:
            await other.aclose()


async def _read(client: Client, prefix: str, shown: str) -> ProvenanceIndex:
    head = await client.get(f"{prefix}prov:current")
    if not isinstance(head, bytes):  # None: nothing there (the client never decodes)
        raise ProvenanceError(f"no provenance index under the prefix {prefix!r}", shown)
    if len(head) != HEAD.size or head[:8] != MAGIC:
        raise ProvenanceError(f"{prefix}prov:current is not a provenance index header", shown)
    _, version, bins, params = HEAD.unpack(head)
    if version != VERSION or bins != BINS:
        raise ProvenanceError(
            f"index version {version} with {bins} bins; this guardrail reads version "
            f"{VERSION} with {BINS}",
            shown,
        )
    keys = Keys(prefix, head)
    hours = sorted(int(hour) for hour in await client.hgetall(keys.sizes))
    weeks = sorted({hour * HOUR // WEEK for hour in hours})
    pipe = client.pipeline(transaction=False)
    for hour in hours:
        pipe.lrange(keys.bucket(hour), 0, -1)
    for week in weeks:
        for shard in range(NAME_SHARDS):
            pipe.hgetall(keys.names(week, shard))
    replies = await pipe.execute() if hours else []
    names: dict[bytes, str] = {}
    for table in replies[len(hours) :]:
        names.update(zip(table.keys(), map(bytes.decode, table.values()), strict=True))
    del replies[len(hours) :]
    buckets: list[tuple[int, bytes]] = []
    for hour, records in zip(hours, replies, strict=True):  # empty: expired in between
        if records and set(map(len, records)) != {RECORD}:
            raise ProvenanceError(f"corrupt: {keys.bucket(hour)} holds other than entries", shown)
        buckets.append((hour, b"".join(records)))
        records.clear()  # 1M entries are not held three times
    buckets.reverse()  # oldest last: entries_index takes them off the end
    return entries_index(buckets, names, Sketcher.from_params(params))


def entries_index(
    buckets: list[tuple[int, bytes]], names: dict[bytes, str], sketcher: Sketcher
) -> ProvenanceIndex:
    """Hours and their records (``RECORD`` bytes each, end to end), newest first, as a
    ``ProvenanceIndex``; ``buckets`` is emptied as it is read, so that 1M entries are not held
    twice. Field by field in C (struct's iterator, ``bytes.join``, ``map``): a loop over 1M
    entries in Python would cost seconds."""
    first = operator.itemgetter(0)
    sketches, times, numbers = bytearray(), array("I"), array("Q")
    while buckets:
        hour, data = buckets.pop()
        sketches += b"".join(map(first, struct.iter_unpack(f"<{BINS}s10x", data)))
        seconds = array("H", b"".join(map(first, struct.iter_unpack(f"<{BINS}x2s8x", data))))
        times.extend(map((hour * HOUR).__add__, seconds))
        numbers.frombytes(b"".join(map(first, struct.iter_unpack(f"<{BINS + 2}x8s", data))))
    table = list(names.values())
    # array("Q") reads native order, as index files are read: little-endian
    order = {int.from_bytes(ident, "little"): n for n, ident in enumerate(names)}
    for number in sorted(set(numbers) - order.keys()):
        order[number] = len(table)  # a name that expired before its entries: shown by its id
        table.append(f"?{number.to_bytes(8, 'little').hex()}")
    subjects = array("I", map(order.__getitem__, numbers))
    return ProvenanceIndex.from_entries(
        table, subjects, times, sketches, sketcher, retention=float(2**31)
    )
