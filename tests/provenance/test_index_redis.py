"""The provenance index in Redis: every worker feeds one index there, bounded by retention (on
guardrail's clock) and max_entries, kept across a Redis outage within a bound, and read back
by ``trace find --index redis://…`` exactly as files are."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from guardrail.cli import main
from guardrail.provenance.index import VERSION, ProvenanceIndex
from guardrail.provenance.index_redis import (
    HOUR,
    NAME_SHARDS,
    RECORD,
    WEEK,
    Keys,
    RedisIndexWriter,
    header,
)
from guardrail.provenance.index_redis_read import read_index
from guardrail.provenance.sketch import Sketcher
from guardrail.simulate import leaks

from .conftest import ACCOUNTS, leaked
from .test_middleware import ALICE, OTHERS, POLICY, model_app, serve_all
from helpers import build, client, lifespan
from redis_servers import Cluster, Server, free_port

#: The provenance policy of test_middleware with no path: the index goes to the storage.
REDIS_POLICY = "\n".join(line for line in POLICY.splitlines() if "PATH" not in line)
TEXTS = [text for account in ACCOUNTS for text in leaks.outputs(3, account)]


def writer(uri: str, clock, *, key: bytes = b"", **options) -> RedisIndexWriter:
    settings = {"capacity": 100_000, "retention": 86400.0} | options
    return RedisIndexWriter(
        aioredis.from_url(uri),
        prefix="gr:",
        uri=uri,
        sketcher=Sketcher(key),
        clock=clock,
        **settings,
    )


async def find(argv: list[str]) -> int:
    """``guardrail``'s command line, in a thread: it runs an event loop of its own."""
    return await asyncio.to_thread(main, argv)


def jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


async def fill(w: RedisIndexWriter, clock, spread: float = 0.0) -> None:
    """Every account's outputs, at times from now to now + spread."""
    rng = random.Random(1)
    for account in ACCOUNTS:
        for text in leaks.outputs(3, account):
            assert w.add(account.subject, text, clock() + rng.uniform(0, spread))
    assert await w.flush(clock())


async def test_served_responses_land_in_redis_and_trace_find_names_the_subject(
    tmp_path: Path, clock, redis_url: str, capsys
):
    app = build(tmp_path, clock, REDIS_POLICY, storage=redis_url, app=model_app())
    accounts = [("alice", ALICE), *((f"user{i}", a) for i, a in enumerate(OTHERS))]
    async with lifespan(app), client(app) as http:
        await serve_all(http, accounts)
    files = await asyncio.to_thread(lambda: list(tmp_path.glob("prov-*")))
    assert files == []  # the index is in Redis
    index = await read_index(redis_url)
    assert index.subjects_entries() == {f"a:{name}": a.responses for name, a in accounts}

    rng = random.Random(4)
    sample = rng.sample(list(leaks.outputs(9, ALICE)), 20)
    leak = jsonl(tmp_path / "leak.jsonl", [leaks.perturb(t, rng) for t in sample])
    assert await find(["trace", "find", str(leak), "--index", redis_url, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["named"] == ["a:alice"]
    assert result["index"]["redis"] == [redis_url] and result["index"]["files"] == []


async def test_two_workers_feed_one_index(tmp_path: Path, clock, redis_url: str):
    first = build(tmp_path / "1", clock, REDIS_POLICY, storage=redis_url, app=model_app())
    second = build(tmp_path / "2", clock, REDIS_POLICY, storage=redis_url, app=model_app())
    async with lifespan(first), lifespan(second), client(first) as a, client(second) as b:
        await serve_all(a, [("alice", ALICE)])
        await serve_all(b, [("bob", OTHERS[0])])
    assert (await read_index(redis_url)).subjects_entries() == {
        "a:alice": ALICE.responses,
        "a:bob": OTHERS[0].responses,
    }


async def test_an_explicit_path_keeps_the_files(tmp_path: Path, clock, redis_url: str):
    text = POLICY.replace("PATH", str(tmp_path))
    app = build(tmp_path, clock, text, storage=redis_url, app=model_app())
    async with lifespan(app), client(app) as http:
        await serve_all(http, [("alice", OTHERS[1])])
    saved = ProvenanceIndex.load(tmp_path / "prov-0.grprov")
    assert saved.subjects_entries() == {"a:alice": OTHERS[1].responses}
    redis = aioredis.from_url(redis_url)
    assert await redis.keys("gr:prov:*") == []
    await redis.aclose()


async def test_entries_are_records_of_58_bytes_in_hourly_lists_with_a_ttl(clock, redis_url: str):
    w = writer(redis_url, clock)
    await fill(w, clock, spread=3 * HOUR)
    keys = Keys("gr:", header(w.sketcher.params))
    redis = aioredis.from_url(redis_url)
    sizes = {int(h): int(n) for h, n in (await redis.hgetall(keys.sizes)).items()}
    assert len(sizes) in (3, 4) and sum(sizes.values()) == len(TEXTS) == w.flushed
    for hour, count in sizes.items():
        records = await redis.lrange(keys.bucket(hour), 0, -1)
        assert len(records) == count and {len(r) for r in records} == {RECORD}
        # the hour's end, retention and an hour to spare, on guardrail's clock
        assert await redis.ttl(keys.bucket(hour)) == (hour + 2) * HOUR + 86400 - int(clock())
    assert await redis.get(keys.current) == header(w.sketcher.params)
    await redis.aclose()
    await w.client.aclose()


async def test_times_come_back_to_the_second_from_the_hour_and_the_record(clock, redis_url: str):
    w = writer(redis_url, clock)
    start = int(clock()) // HOUR * HOUR
    served = [start + 0.0, start + 1.9, start + HOUR - 1, start + HOUR, start + 5 * HOUR + 3599.5]
    for n, ts in enumerate(served):
        assert w.add(f"a:{n}", TEXTS[n], ts)
    assert await w.flush(clock())
    index = await read_index(redis_url)
    assert [index.entry(slot)[:2] for slot in range(len(served))] == [
        (f"a:{n}", float(int(ts))) for n, ts in enumerate(served)
    ]
    await w.client.aclose()


async def test_a_bucket_grown_one_entry_a_flush_holds_no_spare_room(clock, redis_url: str):
    """A list of records packs them in 8 KB nodes that realloc to size: what APPEND left in a
    string (up to as much room again as it held) is not there to compact."""
    w = writer(redis_url, clock)
    keys = Keys("gr:", header(w.sketcher.params))
    hour = int(clock()) // HOUR
    for n in range(400):
        w.add("a:alice", TEXTS[n % len(TEXTS)], clock())
        assert await w.flush(clock())
    redis = aioredis.from_url(redis_url)
    assert await redis.llen(keys.bucket(hour)) == 400
    assert await redis.memory_usage(keys.bucket(hour), samples=0) < 400 * 64
    await redis.aclose()
    await w.client.aclose()


async def test_names_are_kept_in_small_hashes_that_redis_packs(clock, redis_url: str):
    """A field of a hash table costs ~85 bytes, as much as an entry: a week's names are spread
    over NAME_SHARDS hashes, each small enough to stay a listpack (~30 bytes a name), up to
    ~32,000 subjects a week with redis.conf's hash-max-listpack-entries of 128."""
    w = writer(redis_url, clock)
    subjects = [f"a:account-{n:06d}" for n in range(5000)]
    for n, subject in enumerate(subjects):
        assert w.add_sketch(subject, bytes(48), clock() + n % 60)
    assert await w.flush(clock())
    keys = Keys("gr:", header(w.sketcher.params))
    week = int(clock()) // WEEK
    redis = aioredis.from_url(redis_url)
    used = 0
    for shard in range(NAME_SHARDS):
        assert await redis.object("encoding", keys.names(week, shard)) == b"listpack"
        assert await redis.ttl(keys.names(week, shard)) > 0
        used += await redis.memory_usage(keys.names(week, shard), samples=0)
    assert used / len(subjects) < 50
    assert set((await read_index(redis_url)).subjects_entries()) == set(subjects)
    await redis.aclose()
    await w.client.aclose()


async def test_retention_drops_old_buckets_on_the_injected_clock(clock, redis_url: str):
    w = writer(redis_url, clock, retention=2 * HOUR)
    w.add("a:old", TEXTS[0], clock())
    assert await w.flush(clock())
    clock.advance(8 * 24 * HOUR)  # the first hour (and its week) is now wholly past retention
    w.add("a:new", TEXTS[1], clock())
    assert await w.flush(clock())
    assert (await read_index(redis_url)).subjects_entries() == {"a:new": 1}
    assert w.trimmed == 1
    redis = aioredis.from_url(redis_url)
    hour = int(clock()) // HOUR
    keys = Keys("gr:", header(w.sketcher.params))
    week = hour * HOUR // WEEK
    assert sorted(await redis.keys("gr:prov:*")) == sorted(  # the old week's names gone too
        k.encode()
        for k in (keys.current, keys.sizes, keys.bucket(hour), keys.names_of(week, "a:new"))
    )
    await redis.aclose()
    await w.client.aclose()


async def test_max_entries_holds_the_newest(clock, redis_url: str):
    w = writer(redis_url, clock, capacity=100)
    for n, text in enumerate(TEXTS[:250]):
        w.add(f"a:{n}", text, clock() + n * 60)  # ~4 hours of entries
        if n % 50 == 49:
            assert await w.flush(clock() + n * 60)
    index = await read_index(redis_url)
    assert len(index) == 100
    assert set(index.subjects_entries()) == {f"a:{n}" for n in range(150, 250)}
    assert w.trimmed == 150
    await w.client.aclose()


async def test_a_redis_that_goes_away_loses_nothing_within_the_bound(tmp_path: Path, clock, caplog):
    port = free_port()
    server = Server(tmp_path / "r1", port=port)
    uri = server.url
    w = writer(uri, clock, pending_max=30)
    for text in TEXTS[:10]:
        w.add("a:alice", text, clock())
    assert await w.flush(clock())
    server.stop()
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        for text in TEXTS[10:50]:  # 30 kept for the next flush, 10 dropped
            w.add("a:alice", text, clock())
        assert not await w.flush(clock())
        assert not await w.flush(clock())
    assert (w.pending, w.dropped, w.failures) == (30, 10, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot write the index to Redis" in m and "30 entries wait" in m for m in messages)
    assert sum("10 in all" in m for m in messages) <= 1  # one warning an interval
    assert any("dropped since the last warning" in m for m in messages)
    server = Server(tmp_path / "r2", port=port)  # back, empty (no persistence)
    try:
        assert await w.flush(clock())
        assert (await read_index(uri)).subjects_entries() == {"a:alice": 30}
        assert w.pending == 0 and w.flushed == 40
    finally:
        await w.client.aclose()
        server.stop()


async def test_another_key_writes_apart_and_the_reader_reads_the_current(
    clock, redis_url: str, caplog
):
    old, new = writer(redis_url, clock), writer(redis_url, clock, key=b"rotated")
    old.add("a:before", TEXTS[0], clock())
    assert await old.flush(clock())
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        new.add("a:after", TEXTS[1], clock())
        assert await new.flush(clock())
    assert any("another key or version" in r.getMessage() for r in caplog.records)
    index = await read_index(redis_url)
    assert index.subjects_entries() == {"a:after": 1}
    assert index.sketcher.params == new.sketcher.params
    old.add("a:before", TEXTS[2], clock())  # a worker not yet restarted: apart, not mixed
    assert await old.flush(clock())
    assert (await read_index(redis_url)).subjects_entries() == {"a:after": 1}
    for w in (old, new):
        await w.client.aclose()


async def test_a_names_hash_made_anew_gets_its_ttl_again(clock, redis_url: str):
    """A hash another worker's bounds deleted, or lost with a Redis restarted empty, is made
    anew by the next entry: of another week, with its TTL at once; of the current week, within
    the hour (its TTL is not sent with every flush)."""
    w = writer(redis_url, clock, retention=30 * 86400.0)
    keys = Keys("gr:", header(w.sketcher.params))
    week = int(clock()) // WEEK
    now_key = keys.names_of(week, "a:alice")
    past_key = keys.names_of(week - 1, "a:alice")
    redis = aioredis.from_url(redis_url)
    w.add("a:alice", TEXTS[0], clock())
    assert await w.flush(clock())
    assert await redis.ttl(now_key) > 0
    await redis.delete(now_key)
    w.add("a:alice", TEXTS[1], clock())
    w.add("a:alice", TEXTS[2], clock() - WEEK)  # a late entry of the week before
    assert await w.flush(clock())
    assert await redis.ttl(past_key) > 0
    assert await redis.ttl(now_key) == -1  # for now: no TTL
    clock.advance(HOUR)
    w.add("a:alice", TEXTS[3], clock())
    assert await w.flush(clock())
    assert await redis.ttl(keys.names_of(int(clock()) // WEEK, "a:alice")) > 0
    await redis.aclose()
    await w.client.aclose()


async def test_an_index_in_the_earlier_layout_is_said_to_be_set_aside(
    clock, redis_url: str, caplog
):
    """Before 0.2's lists, hours were strings under a tag of the header alone: trace find no
    longer reads them, and the first flush says so rather than let history vanish quietly."""
    import hashlib

    w = writer(redis_url, clock)
    head = header(w.sketcher.params)
    earlier = f"gr:prov:{hashlib.blake2b(head, digest_size=6).hexdigest()}:sizes"
    await w.client.hset(earlier, "500000", "1389")
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        w.add("a:alice", TEXTS[0], clock())
        assert await w.flush(clock())
        w.add("a:alice", TEXTS[1], clock())
        assert await w.flush(clock())
    said = [r.getMessage() for r in caplog.records if "earlier layout" in r.getMessage()]
    assert len(said) == 1 and earlier in said[0] and "expire" in said[0]
    await w.client.aclose()


async def test_trace_find_exit_codes_and_refusals(
    index_file: Path, tmp_path: Path, clock, redis_url: str, capsys, monkeypatch
):
    w = writer(redis_url, clock)
    await fill(w, clock)
    await w.client.aclose()
    leak = jsonl(tmp_path / "leak.jsonl", leaked(ACCOUNTS[1], 40))
    clean = jsonl(tmp_path / "clean.jsonl", list(leaks.never_served(77, 40)))
    assert await find(["trace", "find", str(leak), "--index", redis_url]) == 0
    out = capsys.readouterr().out
    assert f"index {redis_url}: {len(TEXTS)} entries" in out
    assert f"named (*, >= 9 texts matching at >= 8/48 bins): {ACCOUNTS[1].subject}" in out
    assert await find(["trace", "find", str(clean), "--index", redis_url]) == 1
    assert "attributed to nobody" in capsys.readouterr().out
    # a file and Redis at once, sketched alike: searched as one
    argv = ["trace", "find", str(leak), "--index", str(index_file), "--index", redis_url, "--json"]
    assert await find(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["index"]["entries"] == 2 * len(TEXTS)
    assert data["index"]["files"] == [str(index_file)] and data["index"]["redis"] == [redis_url]

    async def refused(index: str, message: str) -> None:
        assert await find(["trace", "find", str(leak), "--index", index]) == 2
        assert message in capsys.readouterr().err

    monkeypatch.setenv("PROVENANCE_INDEX", redis_url)  # a URI's password kept out of ps
    assert await find(["trace", "find", str(leak), "--index", "env:PROVENANCE_INDEX"]) == 0
    assert f"index {redis_url}: {len(TEXTS)} entries" in capsys.readouterr().out
    await refused(f"{redis_url}?prefix=other:", "no provenance index under the prefix 'other:'")
    await refused(f"redis://127.0.0.1:{free_port()}/0?timeout=0.5", "cannot read the index")
    await refused("redis://:secret@127.0.0.1:1/0?timeout=0.5", "redis://:***@127.0.0.1:1/0")
    redis = aioredis.from_url(redis_url)
    head = await redis.get("gr:prov:current")
    await redis.set("gr:prov:current", head[:8] + b"\x09\x00" + head[10:])
    expected = f"index version 9 with 48 bins; this guardrail reads version {VERSION}"
    await refused(redis_url, expected)
    await redis.set("gr:prov:current", head)
    keyed = ProvenanceIndex(sketcher=Sketcher(b"another key"))
    keyed.save(tmp_path / "keyed.grprov")
    argv = ["trace", "find", str(leak), "--index", str(tmp_path / "keyed.grprov")]
    assert await find([*argv, "--index", redis_url]) == 2
    assert "different keys" in capsys.readouterr().err
    await redis.aclose()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


async def test_a_cluster_holds_the_index_one_key_a_command(
    tmp_path: Path, clock, redis_cluster: Cluster, capsys
):
    from guardrail.backends.redis import RedisStorage
    from guardrail.provenance.index_redis import writer_for

    redis_cluster.reset()
    storage = RedisStorage(redis_cluster.url + "?timeout=5")
    w = writer_for(storage, Sketcher(), 300, 86400.0, clock)
    await fill(w, clock, spread=5 * HOUR)  # several buckets: keys on several masters
    # bounded (the oldest trimmed) across masters
    assert len(await read_index(redis_cluster.url)) == 300
    leak = jsonl(tmp_path / "leak.jsonl", leaked(ACCOUNTS[0], 40))
    assert await find(["trace", "find", str(leak), "--index", redis_cluster.url]) in (0, 1)
    assert f"index {redis_cluster.url}: 300 entries" in capsys.readouterr().out
    await storage.close()


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
async def test_the_process_end_writes_through_a_cluster_or_a_sentinel(
    tmp_path: Path, clock, kind: str, redis_cluster: Cluster, redis_server: Server
):
    """The blocking client at the process's end is built from the storage's own URI: a
    cluster's (keys on several masters) or a sentinel's master."""
    from guardrail.backends.redis import RedisStorage
    from guardrail.provenance.index_redis import writer_for

    from redis_servers import SentinelServer

    sentinel = None
    if kind == "sentinel":
        sentinel = SentinelServer(tmp_path / "sentinel", redis_server.port)
    uri = sentinel.url if sentinel is not None else redis_cluster.url
    redis_cluster.reset()
    scratch = aioredis.from_url(redis_server.url)
    await scratch.flushall()
    await scratch.aclose()
    storage = RedisStorage(uri + "?timeout=5")
    try:
        w = writer_for(storage, Sketcher(), 1000, 86400.0, clock)
        for n, text in enumerate(TEXTS[:30]):  # 30 hours: keys on every master of the cluster
            assert w.add(f"a:{n % 3}", text, clock() + n * HOUR)
        assert w.flush_blocking(clock())
        assert (await read_index(uri)).subjects_entries() == {"a:0": 10, "a:1": 10, "a:2": 10}
    finally:
        await storage.close()
        if sentinel is not None:
            sentinel.stop()


def completion(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}}]}).encode()


async def test_the_recorder_flushes_once_enough_wait_and_at_shutdown(
    tmp_path: Path, clock, redis_url: str
):
    store = writer(redis_url, clock, flush_at=10)
    rec = recorder(store, clock, save_every=3600.0)
    await rec.start()
    for text in TEXTS[:12]:
        rec.offer("a:alice", completion(text), clock())
    await rec.settled()
    assert store.flushed >= 10 and rec.saves >= 1  # before save_every: 10 were waiting
    rec.offer("a:bob", completion(TEXTS[12]), clock())
    await rec.close()
    assert store.flushed == 13 and store.pending == 0
    assert (await read_index(redis_url)).subjects_entries() == {"a:alice": 12, "a:bob": 1}
    files = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    assert files == []
    await store.client.aclose()


async def test_the_recorder_stops_when_redis_py_turns_its_cancellation_into_an_error(
    clock, redis_url: str, monkeypatch: pytest.MonkeyPatch
):
    """A loop's shutdown cancels each task once; redis-py can raise a connection error where
    it was cancelled, which the index's flush takes for a failed write: the recorder's task
    must stop all the same, or the shutdown waits for it forever."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    store = writer(redis_url, clock, flush_at=1)
    never = asyncio.Event()
    entered = asyncio.Event()

    async def hung(now: float) -> Any:
        entered.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    rec = recorder(store, clock, save_every=3600.0)
    await rec.start()
    monkeypatch.setattr(store, "_append", hung)
    rec.offer("a:alice", completion(TEXTS[0]), clock())
    settling = asyncio.ensure_future(rec.settled())  # taken in now, not a batch later
    await entered.wait()
    task = rec._task
    assert task is not None
    task.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    assert task.cancelled()
    await settling
    await store.client.aclose()


async def test_an_open_breaker_is_not_asked_but_the_process_end_writes_what_waits(
    clock, redis_url: str
):
    """Without lifespan nothing closes the recorder: the process's end (guardrail.audit.at_exit)
    sketches the queue and appends everything with a blocking client, the breaker's say
    notwithstanding (it is the last chance, as the shutdown's flush is)."""
    from guardrail.backends.redis import connect_sync
    from guardrail.backends.uri import parse_uri

    store = writer(
        redis_url, clock, is_open=lambda: True, blocking=lambda: connect_sync(parse_uri(redis_url))
    )
    store.add("a:alice", TEXTS[0], clock())
    assert not await store.flush(clock())
    assert (store.pending, store.failures) == (1, 0)  # kept, and Redis never asked
    redis = aioredis.from_url(redis_url)
    assert await redis.keys("*") == []
    await redis.aclose()
    rec = recorder(store, clock)
    rec.offer("a:bob", completion(TEXTS[1]), clock())
    rec.exit_sync()
    rec.exit_sync()  # once
    assert store.pending == 0 and store.flushed == 2
    index = await read_index(redis_url)
    assert index.subjects_entries() == {"a:alice": 1, "a:bob": 1}
    assert index.entry(1)[2] == store.sketcher.sketch(TEXTS[1])
    await store.client.aclose()


async def test_a_redis_down_at_the_process_end_says_what_is_lost(clock, caplog):
    from guardrail.backends.redis import connect_sync
    from guardrail.backends.uri import mask_uri, parse_uri

    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0?timeout=0.2"
    # as writer_for makes it: shown by the storage's masked URI
    store = writer(mask_uri(dead), clock, blocking=lambda: connect_sync(parse_uri(dead)))
    rec = recorder(store, clock)
    for text in TEXTS[:3]:
        rec.offer("a:carol", completion(text), clock())
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        rec.exit_sync()
    (message,) = [r.getMessage() for r in caplog.records]
    assert "could not be written to Redis" in message and "3 entries are lost" in message
    assert "ConnectionError" in message and "hunter2" not in message
    await store.client.aclose()


async def test_without_lifespan_served_outputs_reach_redis_as_the_process_ends(
    tmp_path: Path, clock, redis_url: str
):
    app = build(tmp_path, clock, REDIS_POLICY, storage=redis_url, app=model_app())
    async with client(app) as http:  # no lifespan: started by the first request
        await serve_all(http, [("alice", OTHERS[0])])
    await app.recorder.settled()
    assert app.recorder.store.pending == OTHERS[0].responses  # sketched, not yet in Redis
    app.audit.exit_sync()  # what the process's end does (guardrail.audit.at_exit)
    index = await read_index(redis_url)
    assert index.subjects_entries() == {"a:alice": OTHERS[0].responses}
    await app.shutdown()  # the test's: its Redis connections are closed, not left to the GC


def recorder(store: RedisIndexWriter, clock, save_every: float = 60.0):
    from guardrail.provenance.recorder import Recorder

    return Recorder(
        "unused",
        capacity=1,
        retention=1.0,
        save_every=save_every,
        sketcher=store.sketcher,
        clock=clock,
        store=store,
    )


async def test_through_a_redis_outage_requests_are_served_and_entries_wait(
    tmp_path: Path, clock, caplog
):
    port = free_port()
    server = Server(tmp_path / "r1", port=port)
    app = build(tmp_path, clock, REDIS_POLICY, storage=server.url, app=model_app())
    try:
        with caplog.at_level(logging.WARNING, logger="guardrail"):
            async with lifespan(app), client(app) as http:
                await serve_all(http, [("alice", OTHERS[0])])
                server.stop()  # the storage fails open; the breaker opens
                clock.advance(61)  # a flush is due: it fails, or the open breaker skips it
                await serve_all(http, [("bob", OTHERS[1])])
                await app.recorder.settled()
                assert app.recorder.store.pending == OTHERS[0].responses + OTHERS[1].responses
                server = Server(tmp_path / "r2", port=port)  # back, empty
            # shutdown: the last flush is tried whatever the breaker says
        index = await read_index(server.url)
        assert index.subjects_entries() == {
            "a:alice": OTHERS[0].responses,
            "a:bob": OTHERS[1].responses,
        }
        assert app.recorder.store.dropped == 0
        assert not [r for r in caplog.records if "they are lost" in r.getMessage()]
    finally:
        server.stop()


async def test_trace_find_reads_through_a_sentinel(
    tmp_path: Path, clock, redis_url: str, redis_server: Server, capsys
):
    from redis_servers import SentinelServer

    w = writer(redis_url, clock)
    await fill(w, clock)
    await w.client.aclose()
    sentinel = SentinelServer(tmp_path / "sentinel", redis_server.port)
    try:
        leak = jsonl(tmp_path / "leak.jsonl", leaked(ACCOUNTS[2], 40))
        assert await find(["trace", "find", str(leak), "--index", sentinel.url]) == 0
        assert f"named (*, >= 9 texts matching at >= 8/48 bins): {ACCOUNTS[2].subject}" in (
            capsys.readouterr().out
        )
    finally:
        sentinel.stop()


async def test_two_workers_bounding_at_once_keep_the_newest_within_the_bound(clock, redis_url: str):
    first, second = writer(redis_url, clock, capacity=100), writer(redis_url, clock, capacity=100)
    for n, text in enumerate(TEXTS[:240]):
        (first if n % 2 else second).add(f"a:{n}", text, clock() + n * 60)
    assert all(await asyncio.gather(first.flush(clock()), second.flush(clock())))
    kept = (await read_index(redis_url)).subjects_entries()
    # never over; under when one trimmed on a count the other's append had not reached yet
    assert 60 <= len(kept) <= 100
    redis = aioredis.from_url(redis_url)
    sizes = await redis.hgetall(Keys("gr:", header(first.sketcher.params)).sizes)
    assert sum(map(int, sizes.values())) == len(kept)  # the counts exact after the race
    await redis.aclose()
    # whole hours go oldest first; within the hour trimmed, the first written (workers'
    # flushes interleave, so not strictly the oldest): at most the hour before the newest 100
    assert set(kept) <= {f"a:{n}" for n in range(120, 240)}
    for w in (first, second):
        await w.client.aclose()
