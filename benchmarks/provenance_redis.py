"""The provenance index in Redis: what a flush costs, what an entry takes, how long trace find
takes to read and search 1M entries, against the same index read from a file in the same run.

    redis-server --port 6390 --save '' --appendonly no &
    .venv/bin/python benchmarks/provenance_redis.py --redis redis://127.0.0.1:6390/0 \\
        [--entries 1000000] [--subjects 10000] [--flushes 50] [--keep]

The database is flushed first: give it a server of its own. Sketches are random bytes (the
cost of writing and reading them does not depend on what they hold; sketching itself is
``benchmarks/provenance.py``'s), spread over ``--subjects`` subjects and 30 days (720 hourly
buckets), as a fleet would write them. CPU times are this process's (``time.process_time``)
and the server's (INFO commandstats, microseconds): wall time on a shared machine is noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time

import redis.asyncio as aioredis

from guardrail.provenance.attribute import attribute
from guardrail.provenance.index import ProvenanceIndex
from guardrail.provenance.index_redis import (
    FLUSH_AT,
    NAME_SHARDS,
    RECORD,
    WEEK,
    Keys,
    RedisIndexWriter,
    header,
)
from guardrail.provenance.index_redis_read import read_index
from guardrail.provenance.sketch import BINS, Sketcher
from guardrail.simulate import leaks

DAYS = 30
EPOCH = 1_800_000_000.0


async def server_usec(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["usec"]) for k, v in stats.items() if "config" not in k and "info" not in k)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="a server of its own: it is flushed")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--flushes", type=int, default=50, help="flushes of FLUSH_AT timed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="leave the index for trace find")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    client = aioredis.from_url(args.redis)
    await client.flushall()
    now = EPOCH + DAYS * 86400
    sketcher = Sketcher()
    subjects = [f"a:account-{n:06d}" for n in range(args.subjects)]

    def writer(capacity: int) -> RedisIndexWriter:
        return RedisIndexWriter(
            client,
            prefix="gr:",
            uri=args.redis,
            sketcher=sketcher,
            capacity=capacity,
            retention=DAYS * 86400.0,
            clock=lambda: now,
            pending_max=args.entries + 1,
        )

    # -- a flush: FLUSH_AT entries of the current hour, one pipeline ------------------------
    w = writer(args.entries)
    await client.config_resetstat()
    cpu = wall = 0.0
    for flush in range(args.flushes):
        at = now + flush
        for _ in range(FLUSH_AT):
            sketch = rng.randbytes(BINS)
            w.add_sketch(rng.choice(subjects), sketch, at)
        c0, t0 = time.process_time(), time.perf_counter()
        assert await w.flush(at)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - t0
    sent = args.flushes * FLUSH_AT
    usec = await server_usec(client)
    print(
        f"flush: {sent} entries in {args.flushes} flushes of {FLUSH_AT}: client CPU "
        f"{cpu / args.flushes * 1e3:.2f} ms a flush ({sent / cpu:,.0f} entries/s of client CPU), "
        f"server CPU {usec / args.flushes / 1e3:.2f} ms a flush ({sent / (usec / 1e6):,.0f} "
        f"entries/s), wall {wall / args.flushes * 1e3:.2f} ms a flush ({sent / wall:,.0f}/s)"
    )

    # -- the whole index: --entries over 30 days --------------------------------------------
    await client.flushall()
    used_before = int((await client.info("memory"))["used_memory"])
    w = writer(args.entries)
    started = time.perf_counter()
    for n in range(args.entries):
        w.add_sketch(
            rng.choice(subjects), rng.randbytes(BINS), EPOCH + n * DAYS * 86400 / args.entries
        )
        if w.pending >= 50_000:
            assert await w.flush(now)
    assert await w.flush(now)
    print(f"filled: {args.entries} entries in {time.perf_counter() - started:.0f} s")
    used = int((await client.info("memory"))["used_memory"]) - used_before
    keys = Keys("gr:", header(sketcher.params))
    sizes = {int(h): int(c) for h, c in (await client.hgetall(keys.sizes)).items()}
    hour = sorted(sizes)[len(sizes) // 2]
    bucket = int(await client.memory_usage(keys.bucket(hour), samples=0) or 0)
    week = hour * 3600 // WEEK
    names = 0
    for shard in range(NAME_SHARDS):
        names += int(await client.memory_usage(keys.names(week, shard), samples=0) or 0)
    that_week = sum(count for h, count in sizes.items() if h * 3600 // WEEK == week)
    print(
        f"bytes/entry: a bucket {bucket / sizes[hour]:.1f} ({sizes[hour]} entries, {RECORD} by "
        f"layout), its week's names hashes {names / that_week:.1f} more a week's entry; the "
        "server's used_memory "
        f"{used / args.entries:.1f} per entry over {len(sizes)} buckets"
    )

    # -- trace find: read from Redis, against the same index read from a file -----------------
    suspects = list(leaks.never_served(args.seed + 7, 200))
    c0, t0 = time.process_time(), time.perf_counter()
    index = await read_index(args.redis)
    redis_load = (time.process_time() - c0, time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "index.grprov")
        index.save(path)
        c0, t0 = time.process_time(), time.perf_counter()
        ProvenanceIndex.load(path)
        file_load = (time.process_time() - c0, time.perf_counter() - t0)
    c0, t0 = time.process_time(), time.perf_counter()
    result = attribute(index, suspects)
    search = (time.process_time() - c0, time.perf_counter() - t0)
    print(
        f"trace find over {len(index)} entries, {len(index.names)} subjects: load from Redis "
        f"{redis_load[0]:.2f} s CPU ({redis_load[1]:.2f} s wall), from a file {file_load[0]:.2f} s "
        f"CPU ({file_load[1]:.2f} s wall): x{redis_load[0] / file_load[0]:.1f}; search of 200 "
        f"suspects {search[0]:.2f} s CPU ({search[1]:.2f} s wall), {len(result.ranked)} subjects "
        "matched"
    )
    if not args.keep:
        await client.flushall()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
