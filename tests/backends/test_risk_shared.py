"""Risk state shared through Redis at memory speed: workers (each a SharedRiskStore) write their
own copy, and each flush brings in what the others wrote. The reference is one memory store
that saw every write: a principal served by several workers must end where it would through
one."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail.backends import risk_shared
from guardrail.backends.redis import RedisStorage
from guardrail.backends.risk_memory import MemoryRiskStore
from guardrail.backends.risk_redis import SYNC_STATES, RedisRiskStore
from guardrail.backends.risk_shared import READ_EVERY, SharedRiskStore
from guardrail.errors import StorageError
from guardrail.signals.state import C_REQ, REQ, RING_SIZE, Band, Update

from .test_risk_store import (
    HALF_LIFE,
    KEYS,
    NOW,
    TTL,
    WINDOW,
    assert_same,
    counters,
    near,
    redis_risk_store,
    update,
    url_of,
)
from redis_servers import free_port

Worker = Callable[[], Awaitable[SharedRiskStore]]
PREFIXES = itertools.count()


def memory() -> MemoryRiskStore:
    return MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=1000)


@pytest.fixture(params=["redis", "sentinel", "cluster"])
def remote_url(request: pytest.FixtureRequest) -> str:
    return str(url_of(request.param, request))


@pytest.fixture
async def worker(remote_url: str) -> AsyncIterator[Worker]:
    """Builds workers sharing one Redis (or cluster); flushed by hand (never started)."""
    storages: list[RedisStorage] = []

    async def make() -> SharedRiskStore:
        storage = RedisStorage(remote_url)
        storages.append(storage)
        remote = redis_risk_store(storage)
        await remote.start()
        return SharedRiskStore(memory(), remote, interval=0.05, clock=lambda: NOW)

    yield make
    for storage in storages:
        await storage.close()


def request(n: int, now: float = NOW, **fields: object) -> Update:
    """The n-th request of the principal: counted, a ring entry of its own, its member bits."""
    return update(
        now,
        principal=counters(req=1, prm=1, h3=1),
        ring=b"ring-%03d" % n,
        spread_bit=n % 3,
        subnet=[1.0, 0.5, 0.0],
        subnet_bit=7,
        fingerprint=[1.0, 0.5, 0.0],
        fingerprint_bit=7,
        template=b"tmpl-%03d" % n,
        **fields,  # type: ignore[arg-type]
    )


async def test_a_principal_through_two_workers_ends_where_one_would_take_it(
    worker: Worker,
) -> None:
    a, b = await worker(), await worker()
    one = memory()
    order = [(a, 0), (a, 1), (a, 2), (b, 3), (b, 4), (a, 5), (b, 6)]
    for store, n in order:
        await store.save(KEYS, request(n))
        await one.save(KEYS, request(n))
        if n in (2, 4, 5, 6):  # each flushes now and then
            await store.flush()
    assert_same(await b.load(KEYS, NOW), await one.load(KEYS, NOW))
    # a has not flushed since b's last request: it holds all but that one
    seen_by_a = await a.load(KEYS, NOW)
    assert seen_by_a.principal[REQ] == near(6.0)
    await a.save(KEYS, request(7))
    await one.save(KEYS, request(7))
    await a.flush()
    assert_same(await a.load(KEYS, NOW), await one.load(KEYS, NOW))


async def test_another_workers_band_and_members_arrive(worker: Worker) -> None:
    a, b = await worker(), await worker()
    await a.save(KEYS, request(0, band=Band(2, NOW)))
    await a.flush()
    other = KEYS._replace(principal="k:" + "c" * 32)
    await b.save(KEYS, request(1))
    await b.save(other, update(principal=counters(req=1), subnet=[1.0, 0.0, 0.0], subnet_bit=9))
    await b.flush()
    seen = await b.load(KEYS, NOW)
    assert seen.band == Band(2, NOW)
    assert seen.subnet_members == 1 << 7 | 1 << 9
    assert seen.subnet[C_REQ] == near(3.0)
    assert b.standing(KEYS.principal, NOW) is not None


async def test_a_template_filled_in_on_another_worker_is_a_neighbour(worker: Worker) -> None:
    """Cross-account templates across workers: what another worker pushed on a bucket reaches
    this one when it pushes on that bucket itself."""
    a, b = await worker(), await worker()
    await a.save(KEYS, request(0))
    await a.flush()
    stranger = KEYS._replace(principal="k:" + "d" * 32)
    await b.save(stranger, request(1))
    await b.flush()
    _, neighbours = b.comparables(stranger, NOW)
    assert neighbours == [b"tmpl-001", b"tmpl-000"]


async def test_a_folded_request_is_shared(worker: Worker) -> None:
    a, b = await worker(), await worker()
    await a.save(KEYS, request(0))
    a.fold(KEYS, NOW + 1, 1.0, 3, -1, -1.0, 0, 7, [1.0, 0.5, 0.0], True, b"ring-fold")
    a.push_template(KEYS, b"tmpl-fold", NOW + 1)
    await a.flush()
    await b.save(KEYS, request(1, now=NOW + 2))
    await b.flush()
    seen = await b.load(KEYS, NOW + 2)
    reference = memory()
    await reference.save(KEYS, request(0))
    reference.fold(KEYS, NOW + 1, 1.0, 3, -1, -1.0, 0, 7, [1.0, 0.5, 0.0], True, b"ring-fold")
    reference.push_template(KEYS, b"tmpl-fold", NOW + 1)
    await reference.save(KEYS, request(1, now=NOW + 2))
    assert_same(seen, await reference.load(KEYS, NOW + 2))


async def test_what_is_written_during_the_round_trip_is_kept(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await worker(), await worker()
    await b.save(KEYS, request(0))
    await b.flush()
    await a.save(KEYS, request(1))
    sync = a.remote.sync

    async def meanwhile(*args: Any, **kwargs: Any) -> Any:
        replies = await sync(*args, **kwargs)
        if not a._journal:  # the journal has left: a request served before the reply
            await a.save(KEYS, request(2))
        return replies

    monkeypatch.setattr(a.remote, "sync", meanwhile)
    await a.flush()
    monkeypatch.setattr(a.remote, "sync", sync)
    seen = await a.load(KEYS, NOW)
    assert seen.principal[REQ] == near(3.0)
    assert seen.ring == [b"ring-002", b"ring-001", b"ring-000"]
    await a.flush()
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(4.0)


async def test_a_redis_that_does_not_answer_keeps_the_evidence_for_later() -> None:
    storage = RedisStorage(f"redis://127.0.0.1:{free_port()}?timeout=0.2")
    try:
        shared = SharedRiskStore(
            memory(), redis_risk_store(storage), interval=0.05, clock=lambda: NOW
        )
        await shared.save(KEYS, request(0))
        with pytest.raises(StorageError):
            await shared.flush()
        with pytest.raises(StorageError):
            await shared.flush()
        assert shared.pending == 1
        assert (await shared.load(KEYS, NOW)).principal[REQ] == near(1.0)
    finally:
        await storage.close()


# Any interleaving of requests and flushes over three workers: once the last worker to write
# has flushed, it holds what one store that saw every write holds. Rings and buckets hold the
# same entries, in the order Redis received them (flush by flush), which may not be the order
# of the requests: fewer requests than a ring holds, so that the same ones are kept.
STEPS = st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=RING_SIZE - 1)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
async def test_any_interleaving_ends_where_one_store_would(
    redis_url: str, steps: list[tuple[int, bool]]
) -> None:
    await interleaved(redis_url, [(index, flush, 0.0) for index, flush in steps], 0.0)


# The same with flushes that read back only every 0.2 s (the default under share_every: 50ms),
# the clock moving on between requests: whatever flushes read back or only wrote, the last
# writer's flush that reads back (0.2 s on) holds what the one store holds.
TIMED_STEPS = st.lists(
    st.tuples(st.integers(0, 2), st.booleans(), st.sampled_from([0.0, 0.05, 0.1])),
    min_size=1,
    max_size=RING_SIZE - 1,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=TIMED_STEPS)
async def test_any_interleaving_ends_where_one_store_would_reading_back_now_and_then(
    redis_url: str, steps: list[tuple[int, bool, float]]
) -> None:
    await interleaved(redis_url, steps, 0.2)


async def interleaved(
    redis_url: str, steps: list[tuple[int, bool, float]], read_every: float
) -> None:
    storage = RedisStorage(redis_url + "?timeout=5")
    prefix = f"gr-shared-{next(PREFIXES)}:"
    now = [NOW]
    try:
        workers = []
        for _ in range(3):
            remote = RedisRiskStore(
                storage.client, prefix=prefix, uri=storage.uri, half_life=HALF_LIFE,
                window=WINDOW, ttl=TTL,
            )  # fmt: skip
            workers.append(
                SharedRiskStore(
                    memory(), remote, interval=0.05, read_every=read_every, clock=lambda: now[0]
                )
            )
        await workers[0].remote.start()
        one = memory()
        for n, (index, flush, later) in enumerate(steps):
            now[0] += later
            await workers[index].save(KEYS, request(n, now[0]))
            await one.save(KEYS, request(n, now[0]))
            if flush:
                await workers[index].flush()
        now[0] += read_every
        for worker in workers:
            await worker.flush()
        last = workers[steps[-1][0]]
        now[0] += read_every
        await last.save(KEYS, request(len(steps), now[0]))
        await one.save(KEYS, request(len(steps), now[0]))
        await last.flush()
        shared, alone = await last.load(KEYS, now[0]), await one.load(KEYS, now[0])
        assert sorted(shared.ring) == sorted(alone.ring)
        assert sorted(shared.neighbours) == sorted(alone.neighbours)
        shared.ring, shared.neighbours = alone.ring, alone.neighbours
        assert_same(shared, alone)
    finally:
        await storage.close()


async def test_a_state_another_worker_changed_is_read_again_at_the_next_flush(
    worker: Worker,
) -> None:
    """A load balancer spreads one principal's requests over the workers: a worker that holds
    it takes what the others saw since at its next flush (they logged the names they wrote),
    with nothing of its own to send."""
    a, b = await worker(), await worker()
    await a.save(KEYS, request(0))
    await a.flush()
    for n in (1, 2, 3):
        await b.save(KEYS, request(n))
    await b.flush()
    await a.flush()  # nothing written here since
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(4.0)


async def test_a_flush_between_reads_writes_and_reads_back_nothing(remote_url: str) -> None:
    """read_every 0.2 s, a flush every 0.05: the flushes between write what this worker saw
    (the others read it) and take in nothing; the next that reads back takes what the others
    wrote meanwhile. A flush that only wrote must not stamp the state this worker's: a's copy
    holds none of b's request when a writes over it, and a stamp of a's would have spared it
    the read that brings that request in."""
    now = [NOW]
    storages = [RedisStorage(remote_url) for _ in range(2)]
    try:
        remotes = [redis_risk_store(storage) for storage in storages]
        a, b = [
            SharedRiskStore(memory(), remote, interval=0.05, read_every=0.2, clock=lambda: now[0])
            for remote in remotes
        ]
        await a.remote.start()
        one = memory()  # saw every write
        about = functools.partial(pytest.approx, rel=0.01)  # counts, decayed over 0.2 s

        async def send(store: SharedRiskStore, n: int) -> None:
            await store.save(KEYS, request(n, now[0]))
            await one.save(KEYS, request(n, now[0]))

        await send(a, 0)
        await a.flush()  # the first flush reads back: a's copy is Redis's, stamped a's
        now[0] += 0.05
        await send(b, 1)
        await b.flush()  # b's first: reads back a's request
        assert (await b.load(KEYS, now[0])).principal[REQ] == about(2.0)
        now[0] += 0.05
        await send(a, 2)
        await a.flush()  # 0.1 s after its last read: written, nothing read back
        assert (await a.load(KEYS, now[0])).principal[REQ] == about(2.0)  # 0 and 2, not b's
        assert a.flushes == 2
        now[0] += 0.15
        await b.flush()  # 0.2 s after its read: a's request 2 comes in
        assert (await b.load(KEYS, now[0])).principal[REQ] == about(3.0)
        await send(a, 3)
        await a.flush()  # 0.25 s after its read, writing: reads back, the stamp still b's
        assert_same(await a.load(KEYS, now[0]), await one.load(KEYS, now[0]))
    finally:
        for storage in storages:
            await storage.close()


@contextlib.asynccontextmanager
async def timed_pair(
    remote_url: str, now: list[float]
) -> AsyncIterator[tuple[SharedRiskStore, SharedRiskStore]]:
    """Two workers on ``now``, flushing every 0.05 s and reading back every 0.2 s."""
    storages = [RedisStorage(remote_url) for _ in range(2)]
    try:
        remotes = [redis_risk_store(storage) for storage in storages]
        a, b = [
            SharedRiskStore(memory(), remote, interval=0.05, read_every=0.2, clock=lambda: now[0])
            for remote in remotes
        ]
        await a.remote.start()
        yield a, b
    finally:
        for storage in storages:
            await storage.close()


async def test_another_workers_flush_between_reads_is_not_hidden_by_a_stamp(
    remote_url: str,
) -> None:
    """Review: a's reading flush skips a state stamped a's (nobody else wrote it since a took
    Redis's copy). b's flush that only writes must not leave a's stamp there, or a never reads
    b's request, nor its band (it drops b's log entry too: the state was "read")."""
    now = [NOW]
    one = memory()
    async with timed_pair(remote_url, now) as (a, b):
        await b.save(KEYS, request(0, now[0]))
        await b.flush()  # reads back: stamped b's
        now[0] += 0.01
        await a.save(KEYS, request(1, now[0]))
        await a.flush()  # a's first flush reads back: stamped a's, a's copy Redis's
        now[0] += 0.04
        banded = update(now[0], principal=counters(req=1), band=Band(3, now[0]))
        await b.save(KEYS, banded)
        await b.flush()  # 0.05 s after b's read: only writes
        now[0] += 0.2
        await a.save(KEYS, request(2, now[0]))
        await a.flush()  # reads back: the stamp must not spare it
        for store, n in ((one, 0), (one, 1)):
            await store.save(KEYS, request(n, NOW + 0.01 * n))
        await one.save(KEYS, banded)
        await one.save(KEYS, request(2, now[0]))
        seen = await a.load(KEYS, now[0])
        assert seen.band == Band(3, NOW + 0.05)
        assert seen.principal[REQ] == near((await one.load(KEYS, now[0])).principal[REQ])


async def test_a_clock_stepped_back_does_not_stop_the_reads(remote_url: str) -> None:
    """Review: the clock is the wall clock; stepped back (NTP, a VM resumed), "0.2 s since the
    last read" would not come again until it caught up, and no flush would read back."""
    now = [NOW]
    async with timed_pair(remote_url, now) as (a, b):
        await a.save(KEYS, request(0, now[0]))
        await a.flush()
        now[0] -= 60.0
        await b.save(KEYS, request(1, now[0]))
        await b.flush()
        now[0] += 0.05
        await a.flush()
        mine = a.local.held_principal(KEYS.principal, now[0])
        theirs = b.local.held_principal(KEYS.principal, now[0])
        assert mine is not None and theirs is not None
        assert mine[REQ] == near(theirs[REQ])


async def b_changed_what_a_holds(a: SharedRiskStore, b: SharedRiskStore) -> None:
    """a holds KEYS (one request, flushed); b then sent one of its own: the log names KEYS
    for a to read again."""
    await a.save(KEYS, request(0))
    await a.flush()
    await b.save(KEYS, request(1))
    await b.flush()


async def test_a_template_pushed_during_a_flush_does_not_hide_another_workers_change(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a state this worker writes during a flush's round trip is read back with that
    write at the next flush, not now. A template pushed after the fact writes the template
    buckets only: the principal and subnet it names must still be read now, or b's change to
    them is missed until a writes them again."""
    a, b = await worker(), await worker()
    await b_changed_what_a_holds(a, b)
    sync = a.remote.sync

    async def with_a_request_admitted_meanwhile(*args: Any, **kwargs: Any) -> Any:
        replies = await sync(*args, **kwargs)
        if not a._journal:
            a.push_template(KEYS, b"tmpl-late", NOW)
        return replies

    monkeypatch.setattr(a.remote, "sync", with_a_request_admitted_meanwhile)
    await a.flush()
    monkeypatch.setattr(a.remote, "sync", sync)
    await a.flush()
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(2.0)


async def test_a_write_landing_between_the_states_read_and_the_log_read_is_not_lost(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a's flush reads the states it wrote, and the log; b's write of one of them and
    b's log entry land in between (a pipeline past one socket read; on a cluster, the log's
    node answering after the state's). a must not take b's entry for a change it has just
    read: the log is read before the states, so any entry a sees was applied before them."""
    a, b = await worker(), await worker()
    await b_changed_what_a_holds(a, b)
    await a.save(KEYS, request(2))
    await a.flush()
    execute = a.remote._execute
    landed = []

    async def b_in_between(commands: list[tuple[Any, ...]]) -> list[Any]:
        scripts = [c for c in commands if c[0] == "EVALSHA"]
        if landed or not scripts:
            return await execute(commands)
        landed.append(True)
        first = await execute(scripts)  # a's states read...
        await b.save(KEYS, update(NOW, principal=counters(req=1), band=Band(3, NOW)))
        await b.flush()  # ...b's write and its entry land...
        rest = [c for c in commands if c[0] != "EVALSHA"]
        return [*first, *(await execute(rest))]  # ...then the rest of a's round trip

    monkeypatch.setattr(a.remote, "_execute", b_in_between)
    await a.save(KEYS, request(3))
    await a.flush()
    assert landed
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.flush()
    assert (await a.load(KEYS, NOW)).band == Band(3, NOW)


async def test_what_the_log_named_is_read_after_a_flush_that_failed_past_it(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is read in a round trip of its own: a flush that read it and then failed to
    send (Redis went away) has used its entries up, and must read their states next time."""
    a, b = await worker(), await worker()
    await b_changed_what_a_holds(a, b)  # logged: a is to read KEYS again
    execute = a.remote._execute

    async def down_after_the_log(commands: list[tuple[Any, ...]]) -> list[Any]:
        if any(c[0] == "EVALSHA" for c in commands):
            raise StorageError("connection lost")
        return await execute(commands)

    other = KEYS._replace(principal="k:" + "9" * 32)
    await a.save(other, update(principal=counters(req=1)))
    monkeypatch.setattr(a.remote, "_execute", down_after_the_log)
    with pytest.raises(StorageError):
        await a.flush()
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.flush()
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(2.0)


async def test_a_script_run_again_after_noscript_is_logged_after_its_write(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a server that lost its script cache (restarted, failed over, SCRIPT FLUSH)
    refuses b's EVALSHA and applies b's XADD of the same pipeline; the write lands one round
    trip later, as EVAL. a flushing in between sees b's entry before b's write: the entry goes
    again after the write."""
    a, b = await worker(), await worker()
    await b_changed_what_a_holds(a, b)
    await a.save(KEYS, request(2))
    await a.flush()
    await b.remote.client.script_flush()
    execute = b.remote._execute
    fired = []

    async def a_in_between(commands: list[tuple[Any, ...]]) -> list[Any]:
        if commands and commands[0][0] == "EVAL":  # b's retry
            fired.append(True)
            await a.save(KEYS, request(3))
            await a.flush()
        return await execute(commands)

    monkeypatch.setattr(b.remote, "_execute", a_in_between)
    await b.save(KEYS, update(NOW, principal=counters(req=1), band=Band(3, NOW)))
    await b.flush()
    monkeypatch.setattr(b.remote, "_execute", execute)
    assert fired
    await a.flush()
    assert (await a.load(KEYS, NOW)).band == Band(3, NOW)


async def test_a_first_log_read_that_fails_fails_the_flush(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: the first read finds the log's end; a flush that did not find it and read its
    states back anyway would take the entries after those reads for ones before them."""
    a, b = await worker(), await worker()
    await b.save(KEYS, request(0))
    await b.flush()
    execute = a.remote._execute

    async def log_down(commands: list[tuple[Any, ...]]) -> list[Any]:
        if all(c[0] in ("XRANGE", "XREVRANGE") for c in commands):
            raise StorageError("the log's round trip was lost")
        return await execute(commands)

    monkeypatch.setattr(a.remote, "_execute", log_down)
    await a.save(KEYS, request(1))
    with pytest.raises(StorageError):
        await a.flush()
    monkeypatch.setattr(a.remote, "_execute", execute)
    assert a.pending == 1  # nothing sent: the request goes with the next flush
    await b.save(KEYS, update(NOW, principal=counters(req=1), band=Band(3, NOW)))
    await b.flush()
    await a.flush()
    await a.flush()
    assert (await a.load(KEYS, NOW)).band == Band(3, NOW)


async def test_what_the_log_named_waits_once_each_while_the_writes_fail(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: the log answers and the states do not (a cluster's master down, full coverage
    off): what the log names waits to be read, each state once, not once a flush."""
    a, b = await worker(), await worker()
    await a.save(KEYS, request(0))
    await a.flush()
    execute = a.remote._execute

    async def states_down(commands: list[tuple[Any, ...]]) -> list[Any]:
        if any(c[0] == "EVALSHA" for c in commands):
            raise StorageError("down")
        return await execute(commands)

    monkeypatch.setattr(a.remote, "_execute", states_down)
    await a.save(KEYS, request(1))
    for n in range(20):
        await b.save(KEYS, request(n))
        await b.flush()
        with pytest.raises(StorageError):
            await a.flush()
    assert len(a._stale) <= 4  # KEYS's principal, subnet, fingerprint, template bucket
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.flush()
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(22.0)


async def test_on_a_cluster_the_log_entry_follows_the_writes(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a cluster's nodes answer a pipeline independently, so an entry sent with the
    writes could be read before the writes are applied: it goes once they have answered."""
    storage = RedisStorage(cluster_url + "?timeout=5")
    try:
        remote = redis_risk_store(storage)
        await remote.start()
        a = SharedRiskStore(memory(), remote, interval=0.05, clock=lambda: NOW)
        calls: list[list[str]] = []
        execute = remote._execute

        async def recorded(commands: list[tuple[Any, ...]]) -> list[Any]:
            calls.append([str(c[0]) for c in commands])
            return await execute(commands)

        monkeypatch.setattr(remote, "_execute", recorded)
        await a.flush()  # finds the log's end
        calls.clear()
        await a.save(KEYS, request(0))
        await a.flush()
        writes = next(i for i, call in enumerate(calls) if "EVALSHA" in call)
        appends = next(i for i, call in enumerate(calls) if "XADD" in call)
        assert appends > writes and "EVALSHA" not in calls[appends]
    finally:
        await storage.close()


async def test_a_worker_reads_only_what_it_holds_and_others_changed(worker: Worker) -> None:
    a, b = await worker(), await worker()
    await a.flush()  # finds the log's end
    stranger = KEYS._replace(principal="k:" + "e" * 32)
    await b.save(stranger, request(0))
    await b.flush()
    await a.flush()
    # a holds none of b's states but the subnet, fingerprint and buckets they share: never
    # the stranger
    assert a.local.held_principal(stranger.principal, NOW) is None
    assert a.flushes == 2


async def test_writes_that_landed_are_not_sent_again_when_the_log_fails(worker: Worker) -> None:
    """Review of issue 14: the log's commands run after the writes in the same round trip; a
    failing log (here a key of the wrong type where the stream is) must not make the flush
    send its writes a second time."""
    a = await worker()
    await a.flush()
    await a.remote.client.set(a.remote.key("~log"), "not a stream")
    await a.save(KEYS, request(0))
    await a.flush()  # writes land, the log's XADD fails: said, not raised
    await a.remote.client.delete(a.remote.key("~log"))
    await a.flush()
    reference = memory()
    await reference.save(KEYS, request(0))
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(1.0)
    b = await worker()
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(2.0)  # Redis counted it once


@pytest.mark.parametrize("read_every", [0.0, 10.0], ids=["reading", "writing only"])
async def test_names_a_failed_log_entry_held_go_with_the_next_that_lands(
    worker: Worker, read_every: float
) -> None:
    """The writes land and their log entry does not (the stream's node down on a cluster, a
    full or misconfigured server): the names go with the next entry that lands, or the
    other workers would not read those states again until they write them. With flushes
    that read back (each, here) and flushes that only write (all but a's first)."""
    a, b = await worker(), await worker()
    a.read_every = read_every
    await b.save(KEYS, request(0))
    await b.flush()
    await a.flush()  # finds the log's end
    await a.remote.client.set(a.remote.key("~log"), "not a stream")
    await a.save(KEYS, request(1))
    await a.flush()  # writes land, the entry fails: said, not raised
    await a.remote.client.delete(a.remote.key("~log"))
    await a.flush()  # nothing new written: the names held are logged alone
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(2.0)
    assert not a._unlogged
    # and once logged, not again
    calls: list[tuple[Any, ...]] = []
    log = a.remote.log

    async def recorded(commands: list[tuple[Any, ...]]) -> list[Any]:
        calls.extend(commands)
        return await log(commands)

    a.remote.log = recorded  # type: ignore[method-assign]
    await a.flush()
    assert not [c for c in calls if c[0] == "XADD"]


async def test_names_waiting_for_a_log_that_never_comes_back_are_bounded(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(risk_shared, "UNLOGGED_MAX", 3)
    a = await worker()
    await a.flush()
    await a.remote.client.set(a.remote.key("~log"), "not a stream")
    for n in range(3):
        await a.save(KEYS._replace(principal=f"k:{n:032x}"), request(n))
        await a.flush()
    # at most three, those that failed last (the last entry's last names: what every request
    # wrote, after its principal)
    assert len(a._unlogged) == 3
    assert KEYS.subnet in a._unlogged and KEYS.fingerprint in a._unlogged
    assert a.unlogged_dropped > 0
    appends: list[int] = []
    execute = a.remote._execute

    async def measured(commands: list[tuple[Any, ...]]) -> list[Any]:
        appends.extend(
            len(b"\n".join(map(str.encode, map(str, c)))) for c in commands if c[0] == "XADD"
        )
        return await execute(commands)

    a.remote._execute = measured  # type: ignore[method-assign]
    for _ in range(3):  # idle, the log still broken: the same few names, not a growing list
        await a.flush()
    assert appends and max(appends) < 1000


async def test_the_flushing_task_stops_when_a_client_turns_its_cancellation_into_an_error(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py can raise a connection error where it was cancelled (the breaker's probe
    says so too): the task flushing every interval takes that for a failed flush and would
    go on, forever, past a loop's shutdown that cancels each task once."""
    a = await worker()
    never = asyncio.Event()

    async def hung(commands: list[tuple[Any, ...]]) -> list[Any]:
        try:
            await never.wait()
        except asyncio.CancelledError:
            raise StorageError("Connection closed by server.") from None
        return []

    async def turn(seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(a.remote, "_execute", hung)
    a._sleep = turn
    await a.start()
    task = a._task
    assert task is not None
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # waiting on Redis
    task.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    stopped = task.cancelled()
    a._task = None
    if not stopped:  # failing: end it (each cancel is turned into an error; unblocked, it ends)
        never.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert stopped


async def test_the_flushing_task_stops_when_a_cancellation_is_swallowed_and_the_flush_succeeds(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: Python 3.11's asyncio.wait_for (in redis-py's socket send) returns the result
    and drops a cancellation that lands as what it waits for completes; the flush then
    returns as usual, and the loop must still stop."""
    a = await worker()
    never = asyncio.Event()
    execute = a.remote._execute

    swallowed = []

    async def swallowing(commands: list[tuple[Any, ...]]) -> list[Any]:
        if never.is_set():
            raise asyncio.CancelledError  # only to end the test
        if not swallowed:  # the first call waits for the cancellation, and drops it
            with contextlib.suppress(asyncio.CancelledError):  # as wait_for does then
                await never.wait()
            swallowed.append(True)
        return await execute(commands)

    async def turn(seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(a.remote, "_execute", swallowing)
    a._sleep = turn
    task = asyncio.ensure_future(a._run())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()  # a loop's shutdown: once
    # the flush's round trips to the real Redis go on: a bound, not a sleep (done at once)
    await asyncio.wait([task], timeout=10)
    stopped = task.done()
    never.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert stopped, "the flush loop went on after its one cancellation (a shutdown would hang)"


async def test_a_principal_redis_lost_is_put_back_not_wiped_here(worker: Worker) -> None:
    """Evicted or failed over: Redis no longer has a principal this worker holds. A request
    decided from its standing writes it there again; the copy here is not reset to Redis's
    nothing."""
    a = await worker()
    for n in range(3):
        await a.save(KEYS, request(n))
    await a.flush()
    await a.remote.client.delete(a.remote.key(KEYS.principal))
    a.fold(KEYS, NOW, 1.0, 3, -1, -1.0, 0, 7, [1.0, 0.5, 0.0], True, b"ring-fold")
    await a.flush()
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(4.0)
    b = await worker()
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(2.0)  # the fold, and b's
    await a.flush()  # sends what Redis lost (3), takes b's
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(5.0)
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(6.0)


async def test_what_redis_lost_is_put_back_once_however_many_workers_held_it(
    worker: Worker,
) -> None:
    """Redis restarted empty (or failed over to a replica behind): every worker holding the
    principal and its subnet finds Redis short at its next read, before any other's repair has
    landed. Each puts back what it held, not what it finds missing: added up, four workers'
    repairs made the counts four times the truth (a principal's refusals so scored it 100)."""
    workers = [await worker() for _ in range(4)]
    one = memory()
    sent = itertools.count()

    async def each_sends(requests: int, flushes: int) -> None:
        for _ in range(requests):
            for store in workers:
                n = next(sent)
                await store.save(KEYS, request(n))
                await one.save(KEYS, request(n))
        for _ in range(flushes):
            for store in workers:
                await store.flush()

    await each_sends(3, 2)
    for store in workers:
        assert (await store.load(KEYS, NOW)).principal[REQ] == near(12.0)
    await workers[0].remote.client.flushall()
    await each_sends(1, 3)  # each worker's next request, then each one's flush
    truth = await one.load(KEYS, NOW)
    for store in workers:
        # the first to read after the loss found only its own new request there: its repair
        # is the loss exactly, and the others' add nothing to it
        seen = await store.load(KEYS, NOW)
        assert seen.principal[REQ] == near(truth.principal[REQ])
        assert seen.subnet[C_REQ] == near(truth.subnet[C_REQ])
        assert seen.fingerprint[C_REQ] == near(truth.fingerprint[C_REQ])
    # then a failover to a replica behind: the restored part there, two requests short
    remote = workers[0].remote
    await remote.client.hincrbyfloat(remote.key(KEYS.principal), "req", -2.0)
    await each_sends(1, 3)
    truth = await one.load(KEYS, NOW)
    for store in workers:
        assert (await store.load(KEYS, NOW)).principal[REQ] == near(truth.principal[REQ])


async def test_a_flushed_template_bucket_expires_as_its_entries_stop_counting(
    worker: Worker,
) -> None:
    """A template bucket's entries count for a window of their time: in Redis it lives two
    windows after its last push, as a bitmap does, not the state's TTL."""
    a = await worker()
    await a.save(KEYS, request(0))
    await a.flush()
    (bucket,) = KEYS.templates
    ttl = await a.remote.client.pttl(a.remote.key(bucket))
    assert (2 * WINDOW - 10) * 1000 < ttl <= (2 * WINDOW + 1) * 1000
    ttl = await a.remote.client.pttl(a.remote.key(KEYS.principal))
    assert ttl > (TTL - 10) * 1000


@pytest.mark.parametrize("seed", range(12))
async def test_losses_at_random_never_leave_more_than_was_sent(remote_url: str, seed: int) -> None:
    """Four workers (each reading back every flush, or every 5 or 30 s), one principal's
    requests at random times through any of them, flushes at random, Redis emptied twice and
    once failed over to a replica a count behind: every worker ends at or under the truth
    (a repair never counts what was not sent) and near it."""
    rng = random.Random(seed)
    now = [NOW]
    storages = [RedisStorage(remote_url) for _ in range(4)]
    workers = []
    for storage in storages:
        remote = redis_risk_store(storage)
        await remote.start()
        read_every = rng.choice([0.0, 5.0, 30.0])
        workers.append(
            SharedRiskStore(
                memory(), remote, interval=0.05, read_every=read_every, clock=lambda: now[0]
            )
        )
    one = memory()
    try:
        for step in range(120):
            now[0] += rng.uniform(0, 20)
            sent = request(step, now[0])
            await rng.choice(workers).save(KEYS, sent)
            await one.save(KEYS, sent)
            if rng.random() < 0.5:
                await rng.choice(workers).flush()
            remote = workers[0].remote
            if step in (40, 80):
                await remote.client.flushall()
            if step == 60:
                await remote.client.hincrbyfloat(remote.key(KEYS.principal), "req", -1.0)
        for _ in range(3):
            now[0] += 31
            for store in workers:
                await store.flush()
        truth = await one.load(KEYS, now[0])
        for store in workers:
            seen = await store.load(KEYS, now[0])
            for kind, index in (("principal", REQ), ("subnet", C_REQ)):
                got, want = getattr(seen, kind)[index], getattr(truth, kind)[index]
                assert got <= want * 1.0001
                assert got == pytest.approx(want, rel=0.2)
    finally:
        for storage in storages:
            await storage.close()


async def test_a_worker_whose_clock_ran_ahead_does_not_blind_the_others_timing(
    worker: Worker,
) -> None:
    """A worker whose clock stepped an hour ahead writes a last-seen time in the future; Redis
    keeps the latest. Taken as it is, every other worker's next request of that principal came
    "before" its last one, and counted no gap: the timing signal blind for the hour, after the
    clock was set right too. What is further ahead of a worker's clock than a skew is left."""
    a, b = await worker(), await worker()
    await b.save(KEYS, update(NOW, principal=counters(req=1)))
    await b.flush()
    await a.save(KEYS, update(NOW + 3600, principal=counters(req=1)))  # a's clock ahead
    await a.flush()
    await b.save(KEYS, update(NOW + 1, principal=counters(req=1)))
    await b.flush()
    seen = await b.load(KEYS, NOW + 1)
    assert seen.last_seen == NOW + 1


async def test_a_state_redis_refuses_costs_that_state_alone(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """A key of the wrong type under guardrail's prefix (another program's) makes Redis refuse
    one state's write. The script stopped there: the states after it in the call were never
    written, the batch, sent again, found its marker and wrote nothing, and every flush after
    failed on reading it back. Now that state alone is refused, and said; the rest is shared."""
    a, b = await worker(), await worker()
    other = KEYS._replace(principal="k:" + "c" * 32)
    await a.remote.client.hset(a.remote.key(KEYS.principal) + ":ring", "not", "a list")
    await a.save(KEYS, request(0))
    await a.save(other, update(principal=counters(req=1)))
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        await a.flush()
    assert "WRONGTYPE" in caplog.text and KEYS.principal in caplog.text
    await b.save(other, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(other, NOW)).principal[REQ] == near(2.0)
    await a.save(other, update(principal=counters(req=1)))
    await a.flush()  # and the flushes after it go on
    assert (await a.load(other, NOW)).principal[REQ] == near(3.0)


async def test_a_refused_states_stamp_does_not_spare_its_next_read(worker: Worker) -> None:
    """A state refused part way (its hash written and stamped this worker's, its ring not):
    the stamp says this copy holds what Redis does, which it does not (another's write was
    there). The copy is marked unsynced, so the next flush reads it back all the same; and the
    hash so written still expires with the state."""
    a, b = await worker(), await worker()
    await a.save(KEYS, request(0))
    await a.flush()  # a's copy took Redis's: synced, stamped a's
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()  # stamped b's; Redis: 2
    ring = a.remote.key(KEYS.principal) + ":ring"
    await a.remote.client.delete(ring)
    await a.remote.client.hset(ring, "not", "a list")
    await a.save(KEYS, request(1))
    await a.flush()  # the hash written (stamped a's, Redis 3), the ring refused
    assert a.remote.refused == 1
    await a.remote.client.delete(ring)  # put right
    await a.save(KEYS, update(principal=counters(req=1)))
    await a.flush()
    assert (await a.remote.load(KEYS, NOW)).principal[REQ] == near(4.0)
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(4.0)
    fresh = KEYS._replace(principal="k:" + "d" * 32)
    await a.remote.client.hset(a.remote.key(fresh.principal) + ":ring", "not", "a list")
    await a.save(fresh, request(2))
    await a.flush()
    assert await a.remote.client.pttl(a.remote.key(fresh.principal)) > 0


HOLD = 900.0  # the policy's cooldown, as the engine writes a band with it


async def test_a_band_set_elsewhere_is_not_undone_by_a_stale_copys_renewal(
    worker: Worker,
) -> None:
    """a blocks a principal; b, whose copy still has it throttled (it read before a's block),
    renews the throttle at its next full assessment and flushes after a. The block stands,
    in Redis and in both copies: a lower band replaces a higher one only once the higher's
    hold (the policy's cooldown) has run out by the lower's time, as a step down does."""
    a, b = await worker(), await worker()
    await b.save(KEYS, update(NOW, principal=counters(req=1), band=Band(1, NOW), hold=HOLD))
    await b.flush()
    await a.save(KEYS, update(NOW + 1, principal=counters(req=1)))
    await a.flush()
    assert (await a.load(KEYS, NOW + 1)).band == Band(1, NOW)
    await a.save(KEYS, update(NOW + 2, principal=counters(req=1), band=Band(3, NOW + 2), hold=HOLD))
    await a.flush()
    await b.save(KEYS, update(NOW + 3, principal=counters(req=1), band=Band(1, NOW + 3), hold=HOLD))
    await b.flush()
    await a.flush()
    assert (await b.load(KEYS, NOW + 3)).band == Band(3, NOW + 2)
    assert (await a.load(KEYS, NOW + 3)).band == Band(3, NOW + 2)
    # the block's hold run out: b's step down to a challenge is everyone's
    step_down = Band(2, NOW + 2 + HOLD)
    await b.save(KEYS, update(step_down.held, principal=counters(req=1), band=step_down, hold=HOLD))
    await b.flush()
    await a.flush()
    assert (await a.load(KEYS, step_down.held)).band == step_down


def counting_reads(store: SharedRiskStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The principals whose copy in Redis a flush reads back and takes."""
    read: list[str] = []
    parse = store.remote.parse_principal

    def counted(reply: object, now: float) -> object:
        read.append("principal")
        return parse(reply, now)

    monkeypatch.setattr(store.remote, "parse_principal", counted)
    return read


async def test_a_worker_alone_does_not_read_back_what_it_wrote(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis stamps each state with the worker that wrote it last: a copy that took Redis's,
    whose state nobody else wrote since, is Redis's plus what this worker wrote, so the flush
    does not read it back (one worker, or principals that stick to one worker)."""
    a = await worker()
    one = memory()
    await a.save(KEYS, request(0))
    await one.save(KEYS, request(0))
    await a.flush()  # the first flush reads back: the copy takes Redis's
    read = counting_reads(a, monkeypatch)
    for n in range(1, 6):
        await a.save(KEYS, request(n))
        await one.save(KEYS, request(n))
        await a.flush()
    assert read == []
    assert_same(await a.load(KEYS, NOW), await one.load(KEYS, NOW))
    b = await worker()  # and Redis holds the same
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(7.0)
    await a.save(KEYS, request(6))
    await a.flush()  # b wrote it since: read back
    assert read == ["principal"]
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(8.0)


async def test_a_copy_made_afresh_here_takes_redis_s_whatever_the_stamp(
    remote_url: str,
) -> None:
    """Evicted here (the store's bound) and seen again: the new copy holds only what this
    worker saw since, though Redis's stamp is still this worker's."""
    storage = RedisStorage(remote_url)
    try:
        remote = redis_risk_store(storage)
        await remote.start()
        small = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=1)
        a = SharedRiskStore(small, remote, interval=0.05, clock=lambda: NOW)
        for n in range(3):
            await a.save(KEYS, request(n))
        await a.flush()
        await a.save(KEYS, request(3))
        await a.flush()  # stamped a's, not read back
        other = KEYS._replace(principal="k:" + "f" * 32)
        await a.save(other, update(principal=counters(req=1)))  # evicts KEYS.principal here
        assert a.local.held_principal(KEYS.principal, NOW) is None
        await a.save(KEYS, request(4))
        await a.flush()
        assert (await a.load(KEYS, NOW)).principal[REQ] == near(5.0)
    finally:
        await storage.close()


async def test_a_write_without_a_stamp_arrives_within_read_every(remote_url: str) -> None:
    """A worker that writes on every request (``share_every: request``, in a rolling deploy)
    neither stamps nor logs: a state written here is read back at least every READ_EVERY."""
    storage = RedisStorage(remote_url)
    now = [NOW]
    try:
        remote = redis_risk_store(storage)
        await remote.start()
        a = SharedRiskStore(memory(), remote, interval=0.05, clock=lambda: now[0])
        one = memory()  # saw every write
        for store in (a, one):
            await store.save(KEYS, request(0))
        await a.flush()
        for store in (a.remote, one):  # behind a's back
            await store.save(KEYS, update(principal=counters(req=1)))
        for n in range(1, int(READ_EVERY / 0.05) + 2):
            now[0] += 0.05
            for store in (a, one):
                await store.save(KEYS, request(n, now=now[0]))
            await a.flush()
        seen, all_of_it = await a.load(KEYS, now[0]), await one.load(KEYS, now[0])
        assert seen.principal[REQ] == near(all_of_it.principal[REQ])
    finally:
        await storage.close()


async def test_a_clock_stepped_back_does_not_stretch_read_every(remote_url: str) -> None:
    """Review: a copy stays "synced" (its stamp spares the read) for READ_EVERY; with the clock
    stepped back, for READ_EVERY plus the step, unless a negative age counts as not synced."""
    storage = RedisStorage(remote_url)
    now = [NOW]
    try:
        remote = redis_risk_store(storage)
        await remote.start()
        a = SharedRiskStore(memory(), remote, interval=0.05, clock=lambda: now[0])
        await a.save(KEYS, request(0))
        await a.flush()  # stamped a's, synced at NOW
        now[0] -= 60.0
        await a.remote.save(KEYS, update(now[0], principal=counters(req=1)))  # behind a's back
        for n in range(1, int(READ_EVERY / 0.05) + 3):
            now[0] += 0.05
            await a.save(KEYS, request(n, now=now[0]))
            await a.flush()
        redis_copy = await a.remote.load(KEYS, now[0])
        assert (await a.load(KEYS, now[0])).principal[REQ] == near(redis_copy.principal[REQ])
    finally:
        await storage.close()


async def test_a_flush_whose_reply_was_lost_reads_back_what_it_stamped(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue 14: the script ran, its reply did not arrive (a timeout, a reset):
    Redis stamped the states this worker's, yet this copy never took what others wrote."""
    a, b = await worker(), await worker()
    await a.save(KEYS, request(0))
    await a.flush()
    await b.save(KEYS, update(principal=counters(req=1), band=Band(3, NOW)))
    await b.flush()
    execute = a.remote._execute

    async def lost(commands: list[tuple[object, ...]]) -> list[object]:
        await execute(commands)
        raise StorageError("the reply was lost after the script ran")

    monkeypatch.setattr(a.remote, "_execute", lost)
    await a.save(KEYS, update(principal=counters(req=1)))
    with pytest.raises(StorageError):
        await a.flush()
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.save(KEYS, update(principal=counters(req=1)))
    await a.flush()
    assert (await a.load(KEYS, NOW)).band == Band(3, NOW)


async def test_a_worker_forked_after_the_build_takes_a_name_of_its_own(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn --preload builds the app, then forks: each worker must stamp and log under a
    name of its own, or each would skip what its siblings wrote."""
    a = await worker()
    parent = a.worker
    assert a.worker == parent
    monkeypatch.setattr("os.getpid", lambda: -1)
    assert a.worker != parent


async def test_a_flush_replayed_after_a_lost_reply_counts_once(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue 14: a flush whose script ran but whose reply never came (a timeout, a
    reset; on a cluster, some slots answered and one did not) is sent again: what it wrote must
    not be counted twice."""
    monkeypatch.setattr("guardrail.backends.risk_redis.SYNC_STATES", 3)  # calls of 3 states
    a, b = await worker(), await worker()
    await a.flush()  # finds the log's end (a flush that cannot, waits)
    execute = a.remote._execute
    others = [KEYS._replace(principal=f"a:other-{n}") for n in range(4)]

    async def lost(commands: list[tuple[object, ...]]) -> list[object]:
        await execute(commands)
        raise StorageError("the reply was lost after the script ran")

    monkeypatch.setattr(a.remote, "_execute", lost)
    await a.save(KEYS, request(0))
    for keys in others:
        await a.save(keys, update(principal=counters(req=1)))
    with pytest.raises(StorageError):
        await a.flush()
    await a.save(KEYS, request(1))  # written while Redis was away: a batch of its own
    with pytest.raises(StorageError):
        await a.flush()  # the first batch sent again, now without the reads
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.flush()
    assert a.pending == 0
    await b.save(KEYS, update(principal=counters(req=1)))
    for keys in others:
        await b.save(keys, update(principal=counters(req=1)))
    await b.flush()
    seen = await b.load(KEYS, NOW)
    assert seen.principal[REQ] == near(3.0)
    assert seen.ring == [b"ring-001", b"ring-000"]
    for keys in others:
        assert (await b.load(keys, NOW)).principal[REQ] == near(2.0)
    assert (await a.load(KEYS, NOW)).principal[REQ] == near(2.0)  # b's not flushed to a yet


async def test_a_large_journal_goes_in_bounded_scripts(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue 14: one script for a whole journal of 6,000 principals (a backlog after
    Redis was away) ran ~0.3 s: past a 0.25 s timeout it was sent again and counted twice, and
    meanwhile it stalled every other client of that Redis (the limits). The journal goes in
    calls of at most SYNC_STATES states, pipelined; each principal is counted once."""
    storage = RedisStorage(redis_url + "?timeout=5")
    try:
        remote = redis_risk_store(storage)
        await remote.start()
        sent: list[tuple[object, ...]] = []
        execute = remote._execute

        async def recorded(commands: list[tuple[object, ...]]) -> list[object]:
            sent.extend(commands)
            return await execute(commands)

        monkeypatch.setattr(remote, "_execute", recorded)
        shared = SharedRiskStore(memory_of(7000), remote, interval=0.05, clock=lambda: NOW)
        names = [f"k:{n:032x}" for n in range(6000)]
        for name in names:
            await shared.save(KEYS._replace(principal=name), request(0))
        await shared.flush()
        scripts = [command for command in sent if command[0] == "EVALSHA"]
        assert len(scripts) >= 6000 // SYNC_STATES
        assert max(int(str(command[2])) for command in scripts) <= SYNC_STATES + 1  # + marker
        reader = SharedRiskStore(memory_of(7000), remote, interval=0.05, clock=lambda: NOW)
        for name in (names[0], names[2999], names[-1]):
            keys = KEYS._replace(principal=name)
            await reader.save(keys, update(principal=counters(req=1)))
        await reader.flush()
        for name in (names[0], names[2999], names[-1]):
            seen = await reader.load(KEYS._replace(principal=name), NOW)
            assert seen.principal[REQ] == near(2.0)
    finally:
        await storage.close()


def memory_of(subjects: int) -> MemoryRiskStore:
    return MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=subjects)


async def test_a_write_during_a_replay_is_not_taken_for_a_loss(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of the replays: a request served while an older batch is being sent again is
    here and not yet in Redis; read back then, its state looked like one Redis lost, and the
    repair sent it a second time."""
    a, b = await worker(), await worker()
    await a.flush()  # finds the log's end
    execute = a.remote._execute

    async def lost(commands: list[tuple[object, ...]]) -> list[object]:
        await execute(commands)
        raise StorageError("the reply was lost after the script ran")

    monkeypatch.setattr(a.remote, "_execute", lost)
    await a.save(KEYS, request(0))
    with pytest.raises(StorageError):
        await a.flush()  # batch 1: ran, its reply lost
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.save(KEYS, request(1))  # batch 2
    calls = 0

    async def slow(commands: list[tuple[object, ...]]) -> list[object]:
        nonlocal calls
        replies = await execute(commands)
        if any(c[0] == "EVALSHA" for c in commands):  # not the log's round trip
            calls += 1
            if calls == 1:  # a request served while batch 1's replay is on the wire
                await a.save(KEYS, request(2))
        return replies

    monkeypatch.setattr(a.remote, "_execute", slow)
    await a.flush()  # batch 1 again, then batch 2 with the read back
    assert calls == 2
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.flush()
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(4.0)  # 3 of a's, 1 of b's


async def test_a_journal_over_journal_max_is_sent_not_dropped_whole(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis healthy: a flush of JOURNAL_MAX + 1 writes (a busy interval, or the first flush
    after the breaker closed) loses the oldest one, not all of them."""
    monkeypatch.setattr("guardrail.backends.risk_shared.JOURNAL_MAX", 10)
    a, b = await worker(), await worker()
    for _ in range(11):
        await a.save(KEYS, update(principal=counters(req=1)))
    await a.flush()
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert a.dropped == 1
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(11.0)  # 10 of a's, 1 of b's


async def test_a_batch_replayed_past_its_marker_s_first_ttl_counts_once(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: one part of a batch keeps failing (a cluster master down, full coverage off;
    here the last call of each flush errors) while the others answer at every replay: their
    markers must outlive the replays, not expire 120 s after the first run."""
    monkeypatch.setattr("guardrail.backends.risk_redis.SYNC_STATES", 1)
    monkeypatch.setattr("guardrail.backends.risk_redis.MARKER_MS", 400)  # 120 s, scaled down
    a, b = await worker(), await worker()
    execute = a.remote._execute

    async def one_part_down(commands: list[tuple[object, ...]]) -> list[object]:
        commands = list(commands)
        scripts = [i for i, command in enumerate(commands) if command[0] == "EVALSHA"]
        if not scripts:  # the log's own round trip
            return await execute(commands)
        commands[scripts[-1]] = ("HGET",)  # an error reply: that part is not written
        return await execute(commands)

    monkeypatch.setattr(a.remote, "_execute", one_part_down)
    await a.save(KEYS, update(principal=counters(req=1)))
    await a.save(KEYS._replace(principal="k:" + "b" * 32), update(principal=counters(req=1)))
    for _ in range(8):  # replays every 0.1 s for 0.8 s, each reaching Redis (real time: TTL)
        with pytest.raises(StorageError):
            await a.flush()
        await asyncio.sleep(0.1)
    monkeypatch.setattr(a.remote, "_execute", execute)
    await a.flush()
    await b.save(KEYS, update(principal=counters(req=1)))
    await b.flush()
    assert (await b.load(KEYS, NOW)).principal[REQ] == near(2.0)  # 1 of a's, 1 of b's


async def test_a_flush_sets_each_bit_once(worker: Worker) -> None:
    """Forty requests of one principal on one network, in one flush: each bitmap's bit goes to
    Redis once (SETBIT is idempotent), and the bits are all there."""
    a, b = await worker(), await worker()
    batched = a.remote.batched([(KEYS, request(0)) for _ in range(40)], NOW)
    # the principal's network bit, its member bit in the subnet's and the fingerprint's cohort
    assert sum(state.ops.count("B") for state in batched.values()) == 3
    for _ in range(40):
        await a.save(KEYS, request(0))
    await a.flush()
    await b.save(KEYS, request(1))
    await b.flush()
    seen = await b.load(KEYS, NOW)
    assert seen.spread == 1 << 0 | 1 << 1  # request(n) sets bit n % 3
    assert seen.subnet_members == 1 << 7
    assert seen.principal[REQ] == near(41.0)
