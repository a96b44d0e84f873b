"""One suite, every risk store: memory, Redis (plain, through Sentinel) and Redis Cluster must
read back the same state."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.backends.redis import RedisStorage
from guardrail.backends.risk_memory import (
    LRU_SLACK,
    OVERFLOW,
    MemoryRiskStore,
    network_share,
)
from guardrail.backends.risk_redis import RedisRiskStore
from guardrail.errors import StorageError
from guardrail.signals.state import (
    BUCKET_SIZE,
    C_REQ,
    C_WAN,
    COHORT,
    COHORT_BITS,
    GQ,
    GS,
    HOUR0,
    PRINCIPAL,
    REQ,
    RING_SIZE,
    SPREAD_BITS,
    Band,
    Keys,
    RiskStore,
    Snapshot,
    Update,
)

from redis_servers import Server, free_port

NOW = 1_800_000_000.0  # a window boundary for every WINDOW below
HALF_LIFE = 60.0
WINDOW = 60.0
TTL = 200 * HALF_LIFE  # beyond the 64 half-lives of a renormalisation
# A request with a sketch (a template bucket to look up): a store may leave the ring out of
# the snapshot of one without.
KEYS = Keys("k:" + "a" * 32, "s:203.0.113.0/24", "f:" + "b" * 16, ("t:ffffffff",))

Make = Callable[..., Awaitable[RiskStore]]


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
def risk_url(request: pytest.FixtureRequest) -> str | None:
    """None for memory; a clean server (or cluster) for the Redis kinds."""
    return url_of(request.param, request)


@pytest.fixture(params=["redis", "cluster"])
def remote_url(request: pytest.FixtureRequest) -> str:
    return str(url_of(request.param, request))


def url_of(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "memory":
        return None
    url = str(request.getfixturevalue(f"{kind}_url"))
    return url + "?timeout=5"  # this machine is slow: a late reply is not a failure here


@pytest.fixture
async def make(risk_url: str | None) -> AsyncIterator[Make]:
    """Builds started stores of this kind (several per test if need be), closed at the end."""
    storages: list[RedisStorage] = []

    async def make(
        *, ttl: float = TTL, max_subjects: int = 1000, half_life: float = HALF_LIFE
    ) -> RiskStore:
        store: RiskStore
        if risk_url is None:
            store = MemoryRiskStore(
                half_life=half_life, window=WINDOW, ttl=ttl, max_subjects=max_subjects
            )
        else:
            storage = RedisStorage(risk_url)
            storages.append(storage)
            store = redis_risk_store(storage, ttl=ttl, half_life=half_life)
        await store.start()
        return store

    yield make
    for storage in storages:
        await storage.close()


@pytest.fixture
async def store(make: Make) -> RiskStore:
    return await make()


@pytest.fixture
async def remote(remote_url: str) -> AsyncIterator[RedisRiskStore]:
    storage = RedisStorage(remote_url)
    store = redis_risk_store(storage)
    await store.start()
    yield store
    await storage.close()


def redis_risk_store(
    storage: RedisStorage, *, ttl: float = TTL, half_life: float = HALF_LIFE, **options: Any
) -> RedisRiskStore:
    return RedisRiskStore(
        storage.client,
        prefix=storage.prefix,
        uri=storage.uri,
        half_life=half_life,
        window=WINDOW,
        ttl=ttl,
        **options,
    )


def counters(**values: float) -> list[float]:
    """Principal increments by field name (``h3`` for hour 3)."""
    increments = [0.0] * len(PRINCIPAL)
    for name, value in values.items():
        increments[PRINCIPAL.index(name)] = value
    return increments


def update(now: float = NOW, **fields: Any) -> Update:
    return Update(now, fields.pop("principal", [0.0] * len(PRINCIPAL)), **fields)


def near(value: float | list[float]) -> Any:
    """Memory keeps float32 counters, Redis doubles: equal to a few parts in a million."""
    return pytest.approx(value, rel=1e-5, abs=1e-12)


EMPTY = Snapshot(
    principal=[0.0] * len(PRINCIPAL),
    last_seen=None,
    last_max_tokens=-1,
    last_temperature=-1.0,
    ring=[],
    spread=0,
    band=None,
    subnet=[0.0] * len(COHORT),
    subnet_members=0,
    fingerprint=[0.0] * len(COHORT),
    fingerprint_members=0,
    neighbours=[],
    known=False,
)


def assert_same(actual: Snapshot, expected: Snapshot, known: bool = True) -> None:
    """Equal snapshots, counters within float tolerance (``known`` too, if ``known``)."""
    for name in Snapshot.__slots__:
        if name == "known" and not known:
            continue
        got, want = getattr(actual, name), getattr(expected, name)
        if name in ("principal", "subnet", "fingerprint"):
            assert got == near(want), name
        else:
            assert got == want, name


# -- reading and decay -----------------------------------------------------------------------


async def test_empty_load(store: RiskStore) -> None:
    keys = Keys("i:198.51.100.7", "s:198.51.100.0/24", "f:00", ("t:01", "t:02"))
    assert_same(await store.load(keys, NOW), EMPTY)
    assert_same(await store.load(keys._replace(fingerprint=None, templates=()), NOW), EMPTY)


async def test_increments_read_back_at_the_same_time(store: RiskStore) -> None:
    increments = counters(req=1, prm=1, gn=1, gs=2.5, gq=6.25, trs=0.3, h7=1)
    await store.save(
        KEYS,
        update(principal=increments, subnet=[1.0, 0.4, 0.3], fingerprint=[1.0, 0.4, 0.0]),
    )
    await store.save(
        KEYS,
        update(principal=increments, subnet=[1.0, 0.2, 0.1], fingerprint=[1.0, 0.2, 0.0]),
    )
    snap = await store.load(KEYS, NOW)
    assert snap.principal == near([2 * x for x in increments])
    assert snap.subnet == near([2.0, 0.6, 0.4])
    assert snap.fingerprint == near([2.0, 0.6, 0.0])


async def test_counters_halve_every_half_life(store: RiskStore) -> None:
    await store.save(KEYS, update(principal=counters(req=8, h0=4), subnet=[8.0, 4.0, 2.0]))
    one = await store.load(KEYS, NOW + HALF_LIFE)
    assert one.principal[REQ] == near(4.0)
    assert one.principal[HOUR0] == near(2.0)
    assert one.subnet == near([4.0, 2.0, 1.0])
    three = await store.load(KEYS, NOW + 3 * HALF_LIFE)
    assert three.principal[REQ] == near(1.0)
    assert three.subnet == near([1.0, 0.5, 0.25])
    # an increment later adds at full weight to what has decayed by then
    await store.save(KEYS, update(NOW + HALF_LIFE, principal=counters(req=1)))
    assert (await store.load(KEYS, NOW + HALF_LIFE)).principal[REQ] == near(5.0)
    assert (await store.load(KEYS, NOW + 2 * HALF_LIFE)).principal[REQ] == near(2.5)


async def test_renormalisation_keeps_values(store: RiskStore) -> None:
    # A landmark 70 half-lives old weighs increments 2^70: past float32's comfort, so stores
    # rescale on the way. What they read must not show it.
    await store.save(KEYS, update(principal=counters(req=3, gs=1000), subnet=[3.0, 1.0, 1.0]))
    later = NOW + 70 * HALF_LIFE
    await store.save(KEYS, update(later, principal=counters(req=2, gs=10), subnet=[2.0, 1, 1]))
    snap = await store.load(KEYS, later)
    assert snap.principal[REQ] == near(2.0 + 3.0 * 2.0**-70)
    assert snap.principal[GS] == near(10.0 + 1000 * 2.0**-70)
    assert snap.subnet == near([2.0, 1.0, 1.0])
    # and after another stretch, increments keep decaying from the new landmark
    last = later + 65 * HALF_LIFE
    for step in range(3):
        now = last + step * HALF_LIFE
        await store.save(KEYS, update(now, principal=counters(req=1), subnet=[1.0, 0.0, 0.0]))
    snap = await store.load(KEYS, last + 2 * HALF_LIFE)
    assert snap.principal[REQ] == near(1.75 + 2.0 * 2.0**-67)
    assert snap.subnet[C_REQ] == near(1.75 + 2.0 * 2.0**-67)
    assert snap.subnet[C_WAN] == near(2.0**-67)


async def test_large_increments_survive_a_long_stretch(make: Make) -> None:
    # squared gaps in seconds are large numbers; weights up to 2^64 must not overflow float32
    store = await make(half_life=1.0, ttl=10_000.0)
    for step in range(0, 200, 3):
        await store.save(KEYS, update(NOW + step, principal=counters(gq=1e12)))
    snap = await store.load(KEYS, NOW + 198)
    expected = sum(1e12 * 2.0 ** -(198 - step) for step in range(0, 200, 3))
    assert math.isfinite(snap.principal[GQ])
    assert snap.principal[GQ] == near(expected)


# -- the principal's other state -------------------------------------------------------------


async def test_last_seen_and_request_parameters(store: RiskStore) -> None:
    await store.save(KEYS, update(max_tokens=512, temperature=0.7))
    snap = await store.load(KEYS, NOW)
    assert (snap.last_seen, snap.last_max_tokens, snap.last_temperature) == (NOW, 512, 0.7)

    # an after-the-fact update (a refusal) leaves last_seen, and -1 leaves the parameters
    await store.save(KEYS, update(NOW + 5, principal=counters(ref=1), seen=False))
    snap = await store.load(KEYS, NOW + 5)
    assert (snap.last_seen, snap.last_max_tokens, snap.last_temperature) == (NOW, 512, 0.7)

    # requests landing out of order: last_seen is the latest, parameters the last written
    await store.save(KEYS, update(NOW + 3, max_tokens=0, temperature=0.0))
    await store.save(KEYS, update(NOW + 1, temperature=1.25))
    snap = await store.load(KEYS, NOW + 5)
    assert (snap.last_seen, snap.last_max_tokens, snap.last_temperature) == (NOW + 3, 0, 1.25)


async def test_ring_is_newest_first_and_capped(store: RiskStore) -> None:
    entries = [bytes([n]) * 52 for n in range(RING_SIZE + 3)]
    for n, entry in enumerate(entries):
        await store.save(KEYS, update(NOW + n, ring=entry))
    snap = await store.load(KEYS, NOW + 20)
    assert snap.ring == entries[::-1][:RING_SIZE]


async def test_ring_entries_are_opaque(store: RiskStore) -> None:
    entries = [b"x" * 52, b"", b"y" * 3, b"z" * 52, b"\x00\xff" * 40]
    for entry in entries:
        await store.save(KEYS, update(ring=entry))
        snap = await store.load(KEYS, NOW)
    assert snap.ring == entries[::-1]
    for n in range(RING_SIZE):
        await store.save(KEYS, update(ring=bytes([n]) * 52))
    assert (await store.load(KEYS, NOW)).ring == [bytes([n]) * 52 for n in range(7, -1, -1)]


async def test_band_round_trip(store: RiskStore) -> None:
    held = NOW + 0.123456789
    await store.save(KEYS, update(band=Band(2, held)))
    assert (await store.load(KEYS, NOW)).band == Band(2, held)
    await store.save(KEYS, update(NOW + 1))  # None: the band stays
    assert (await store.load(KEYS, NOW + 1)).band == Band(2, held)
    await store.save(KEYS, update(NOW + 2, band=Band(0, NOW + 2)))
    assert (await store.load(KEYS, NOW + 2)).band == Band(0, NOW + 2)


# -- distinct-count bitmaps ------------------------------------------------------------------


async def test_spread_bitmap_over_current_and_previous_window(store: RiskStore) -> None:
    last = SPREAD_BITS - 1
    await store.save(KEYS, update(spread_bit=3))
    await store.save(KEYS, update(NOW + 10, spread_bit=last))
    await store.save(KEYS, update(NOW + 11, spread_bit=3))
    assert (await store.load(KEYS, NOW + 11)).spread == (1 << 3) | (1 << last)

    await store.save(KEYS, update(NOW + WINDOW, spread_bit=0))  # the next window
    assert (await store.load(KEYS, NOW + WINDOW)).spread == 1 | (1 << 3) | (1 << last)
    assert (await store.load(KEYS, NOW + 2 * WINDOW)).spread == 1  # only the previous window
    assert (await store.load(KEYS, NOW + 3 * WINDOW)).spread == 0  # both too old

    # a window skipped: the one before it is no longer "previous"
    await store.save(KEYS, update(NOW + 3 * WINDOW, spread_bit=9))
    assert (await store.load(KEYS, NOW + 3 * WINDOW)).spread == 1 << 9


async def test_member_bitmaps(store: RiskStore) -> None:
    last = COHORT_BITS - 1
    for bit in (0, 7, 8, 100, last):
        await store.save(KEYS, update(subnet_bit=bit, fingerprint_bit=last - bit))
    snap = await store.load(KEYS, NOW)
    assert snap.subnet_members == sum(1 << bit for bit in (0, 7, 8, 100, last))
    assert snap.fingerprint_members == sum(1 << (last - bit) for bit in (0, 7, 8, 100, last))
    assert snap.spread == 0

    await store.save(KEYS, update(NOW + WINDOW + 1, subnet_bit=5))
    snap = await store.load(KEYS, NOW + 2 * WINDOW)
    assert (snap.subnet_members, snap.fingerprint_members) == (1 << 5, 0)

    # another principal of the same subnet sets its own bit in the same bitmap
    other = KEYS._replace(principal="a:someone", fingerprint=None)
    await store.save(other, update(NOW + 2 * WINDOW, subnet_bit=6))
    assert (await store.load(KEYS, NOW + 2 * WINDOW)).subnet_members == (1 << 5) | (1 << 6)


# -- template buckets, fingerprints ----------------------------------------------------------


async def test_template_buckets_capped_and_concatenated(store: RiskStore) -> None:
    first = KEYS._replace(templates=("t:01", "t:02"))
    for n in range(BUCKET_SIZE + 4):
        await store.save(first, update(NOW + n, template=b"A%03d" % n))
    second = KEYS._replace(principal="i:192.0.2.1", templates=("t:03", "t:01"))
    for n in range(3):
        await store.save(second, update(NOW + 30 + n, template=b"B%03d" % n))
    await store.save(first, update(NOW + 40))  # no template: no push

    newest_a = [b"A%03d" % n for n in range(BUCKET_SIZE + 3, 3, -1)]
    newest_b = [b"B002", b"B001", b"B000"]
    keys = KEYS._replace(templates=("t:02", "t:03", "t:01", "t:04"))
    snap = await store.load(keys, NOW + 40)
    assert snap.neighbours == newest_a + newest_b + (newest_b + newest_a)[:BUCKET_SIZE]


async def test_template_entries_are_opaque(store: RiskStore) -> None:
    keys = KEYS._replace(templates=("t:01",))
    entries = [b"e" * 60, b"f" * 9, b"", b"g" * 60]
    for entry in entries:
        await store.save(keys, update(template=entry))
    assert (await store.load(keys, NOW)).neighbours == entries[::-1]


async def test_no_fingerprint(store: RiskStore) -> None:
    keys = KEYS._replace(fingerprint=None)
    await store.save(keys, update(fingerprint=[1.0, 1.0, 1.0], fingerprint_bit=3))
    snap = await store.load(keys, NOW)
    assert (snap.fingerprint, snap.fingerprint_members) == ([0.0] * len(COHORT), 0)
    # nothing was written under any fingerprint
    assert_same(await store.load(KEYS._replace(principal="i:x"), NOW), EMPTY)


async def test_states_are_independent(store: RiskStore) -> None:
    await store.save(KEYS, update(principal=counters(req=1), ring=b"r", band=Band(1, NOW)))
    for other in (
        KEYS._replace(principal="a:" + KEYS.principal),
        KEYS._replace(principal="i:203.0.113.9", subnet="s:203.0.113.9/32"),
    ):
        snap = await store.load(other._replace(fingerprint="f:ff"), NOW)
        assert snap.principal == [0.0] * len(PRINCIPAL)
        assert (snap.ring, snap.band, snap.last_seen) == ([], None, None)


# -- forgetting ------------------------------------------------------------------------------


async def test_memory_state_expires_after_ttl() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=100.0, max_subjects=10)
    keys = KEYS._replace(templates=("t:01",))
    everything = update(
        principal=counters(req=1),
        max_tokens=9,
        ring=b"r",
        spread_bit=1,
        band=Band(1, NOW),
        subnet=[1.0, 0, 0],
        subnet_bit=2,
        fingerprint=[1.0, 0, 0],
        fingerprint_bit=3,
        template=b"t",
    )
    await store.save(keys, everything)
    kept = await store.load(keys, NOW + 100)  # untouched for exactly ttl: still there
    assert kept.ring == [b"r"] and kept.neighbours == [b"t"] and kept.last_max_tokens == 9
    assert_same(await store.load(keys, NOW + 100.5), EMPTY)

    # written again after expiry, it starts over: nothing of the old state comes back
    await store.save(keys, update(NOW + 101, principal=counters(req=1), seen=False))
    snap = await store.load(keys, NOW + 101)
    assert snap.principal[REQ] == near(1.0)
    assert (snap.ring, snap.band, snap.last_max_tokens, snap.neighbours) == ([], None, -1, [])

    # any write keeps a state: a refusal 90 s later carries it past the first deadline
    await store.save(keys, update(NOW + 191, seen=False))
    assert (await store.load(keys, NOW + 250)).principal[REQ] == near(2.0 ** (-149 / 60))


async def test_memory_lru_keeps_at_most_max_subjects() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=3)
    keys = [Keys(f"i:10.0.0.{n}", f"s:10.0.{n}.0/24", None, (f"t:{n}",)) for n in range(5)]
    for k in keys[:3]:
        await store.save(k, update(principal=counters(req=1), subnet=[1, 0, 0], template=b"x"))
    later = NOW + LRU_SLACK  # the order is kept to within LRU_SLACK
    await store.save(keys[0], update(later, principal=counters(req=1)))  # 0: the most recent
    for k in keys[3:]:
        await store.save(
            k, update(later, principal=counters(req=1), subnet=[1, 0, 0], template=b"x")
        )
    assert len(store) == 9
    decay = 2.0 ** (-LRU_SLACK / HALF_LIFE)
    reqs = [(await store.load(k, later)).principal[REQ] for k in keys]
    assert reqs == near([1.0 + decay, 0.0, 0.0, 1.0, 1.0])
    # cohorts and template buckets have an LRU each; subnet 0 was not written again
    subnets = [(await store.load(k, later)).subnet[C_REQ] for k in keys]
    assert subnets == near([0.0, 0.0, decay, 1.0, 1.0])
    assert [(await store.load(k, later)).neighbours for k in keys] == [[]] * 2 + [[b"x"]] * 3


# -- refused requests, bands and networks ----------------------------------------------------


async def test_a_write_that_may_not_create_leaves_absent_state_absent(store: RiskStore) -> None:
    """A request the limits refused: its subnet (one per network) counts it; the principal,
    the fingerprint cohort and template buckets it names are written only if there."""
    everything: dict[str, Any] = {
        "principal": counters(req=1, ref=1),
        "ring": b"r",
        "band": Band(1, NOW),
        "spread_bit": 1,
        "subnet": [1.0, 0.5, 0],
        "subnet_bit": 2,
        "fingerprint": [1.0, 0, 0],
        "fingerprint_bit": 3,
        "template": b"t",
    }
    await store.save(KEYS, update(**everything, create=False))
    snap = await store.load(KEYS, NOW)
    assert not snap.known
    assert (snap.principal, snap.ring, snap.band) == ([0.0] * len(PRINCIPAL), [], None)
    assert (snap.fingerprint, snap.fingerprint_members, snap.neighbours) == (
        [0.0] * len(COHORT),
        0,
        [],
    )
    assert snap.subnet == near([1.0, 0.5, 0.0]) and snap.subnet_members == 1 << 2

    await store.save(KEYS, update(**everything))  # admitted: all of it created
    await store.save(KEYS, update(**everything, create=False))  # there now: written
    snap = await store.load(KEYS, NOW)
    assert snap.known and snap.band == Band(1, NOW)
    assert (snap.principal[REQ], snap.fingerprint[C_REQ], snap.subnet[C_REQ]) == near(
        [2.0, 2.0, 3.0]
    )
    assert snap.neighbours == [b"t", b"t"]


def test_a_network_share_is_a_sixteenth_of_the_store_with_a_floor() -> None:
    assert network_share(1_000_000) == 62_500
    assert network_share(2000) == 125
    assert network_share(1000) == 64  # the floor
    assert network_share(64) == 0  # no share when it would be the whole store


async def test_memory_a_banded_principal_outlives_a_flood_of_new_ones() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=100)
    blocked = Keys("k:blocked", "s:192.0.2.0/24", None, ())
    await store.save(blocked, update(principal=counters(req=1), band=Band(3, NOW)))
    for n in range(1000):  # ten times the store, from as many networks
        keys = Keys(f"k:{n}", f"s:10.{n // 250}.{n % 250}.0/24", None, ())
        await store.save(keys, update(NOW + 1, principal=counters(req=1)))
    assert store.sizes()["principals"] == 100
    assert (await store.load(blocked, NOW + 2)).band == Band(3, NOW)

    # once out of its band, it is one of the crowd again
    await store.save(blocked, update(NOW + 3, principal=counters(req=1), band=Band(0, NOW + 3)))
    assert store.sizes()["banded principals"] == 0
    for n in range(100):
        keys = Keys(f"k:again{n}", f"s:10.9.{n}.0/24", None, ())
        await store.save(keys, update(NOW + 4, principal=counters(req=1)))
    assert not (await store.load(blocked, NOW + 5)).known


async def test_memory_only_banded_principals_evict_banded_ones() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=10)
    banded = [Keys(f"k:b{n}", f"s:10.0.{n}.0/24", None, ()) for n in range(6)]
    for n, keys in enumerate(banded):  # half the store at most: the sixth evicts the first
        await store.save(keys, update(NOW + n, principal=counters(req=1), band=Band(1, NOW)))
    assert store.sizes()["banded principals"] == 5
    assert [(await store.load(k, NOW + 9)).known for k in banded] == [False] + [True] * 5


async def test_memory_an_expired_banded_principal_starts_over_out_of_its_band() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=100.0, max_subjects=10)
    keys = Keys("k:gone", "s:10.0.0.0/24", None, ())
    await store.save(keys, update(principal=counters(req=1), band=Band(2, NOW)))
    await store.save(keys, update(NOW + 101, principal=counters(req=1)))
    assert store.sizes()["banded principals"] == 0
    assert (await store.load(keys, NOW + 101)).band is None


async def test_memory_a_network_beyond_its_share_shares_one_overflow_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=2000)
    share = network_share(2000)
    others = [Keys(f"k:other{n}", f"s:10.1.{n}.0/24", None, ()) for n in range(200)]
    for keys in others:
        await store.save(keys, update(principal=counters(req=1)))
    flood = "s:198.51.100.0/24"
    for n in range(5000):  # more than the whole store, from one network
        await store.save(Keys(f"k:flood{n}", flood, None, ()), update(principal=counters(req=1)))
    assert store.held(flood) == share
    assert store.sizes()["principals"] == len(others) + share
    # said once (a proxy's subnet would look like this)
    warnings = [r.getMessage() for r in caplog.records if "holds its share" in r.getMessage()]
    assert len(warnings) == 1 and "198.51.100.0/24" in warnings[0]
    assert all([(await store.load(k, NOW)).known for k in others])
    # the keys beyond the share were counted together, but a new one is assessed as new
    overflow = store._principals[OVERFLOW + flood]
    assert overflow.counters[REQ] == near(5000.0 - (share - 1))
    assert_same(await store.load(Keys("k:newcomer", flood, None, ()), NOW), EMPTY)
    assert (await store.load(Keys("k:newcomer", "s:10.1.0.0/24", None, ()), NOW)).known is False


async def test_memory_the_overflow_state_takes_no_band_nor_standing() -> None:
    """A flood that would band the overflow state must not band the network's newcomers: a
    principal sent there is assessed from empty state, its band and score are its own."""
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=1000)
    flood = "s:198.51.100.0/24"
    for n in range(network_share(1000) - 1):
        await store.save(Keys(f"k:minted{n}", flood, None, ()), update(principal=counters(req=1)))
    for n in range(20):  # new keys, each assessed into the top band
        keys = Keys(f"k:flood{n}", flood, None, ())
        await store.save(
            keys, update(principal=counters(req=1), band=Band(3, NOW), score=100.0, manner=1.0)
        )
        assert store.standing(keys.principal, NOW) is None
    assert store.held(flood) == network_share(1000)
    overflow = store._principals[OVERFLOW + flood]
    assert overflow.band is None and overflow.counters[REQ] == near(20.0)
    assert store.sizes()["banded principals"] == 0
    neighbour = await store.load(Keys("k:neighbour", flood, None, ()), NOW + 1)
    assert_same(neighbour, EMPTY)


async def test_memory_a_network_regains_its_share_as_its_principals_expire() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=100.0, max_subjects=1000)
    share = network_share(1000)
    net = "s:198.51.100.0/24"
    for n in range(share + 10):
        await store.save(Keys(f"k:a{n}", net, None, ()), update(principal=counters(req=1)))
    assert store.held(net) == share
    # a store below max_subjects evicts nothing: expiry alone gives the share back
    await store.save(Keys("k:later", net, None, ()), update(NOW + 101, principal=counters(req=1)))
    assert store.held(net) == 1
    assert OVERFLOW + net not in store._principals
    assert (await store.load(Keys("k:later", net, None, ()), NOW + 101)).known
    assert store.sizes()["principals"] == 1  # the expired ones are gone, not just uncounted


async def test_memory_a_principal_starting_over_counts_for_its_new_network() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=100.0, max_subjects=1000)
    await store.save(Keys("k:moved", "s:10.0.0.0/24", None, ()), update(principal=counters(req=1)))
    moved = Keys("k:moved", "s:10.0.1.0/24", None, ())
    await store.save(moved, update(NOW + 101, principal=counters(req=1)))  # expired: reset
    assert (store.held("s:10.0.0.0/24"), store.held("s:10.0.1.0/24")) == (0, 1)
    # and one first seen where no network was known (a unix socket) counts once it is
    await store.save(Keys("k:socket", "s:unknown", None, ()), update(principal=counters(req=1)))
    await store.save(
        Keys("k:socket", "s:10.0.1.0/24", None, ()), update(NOW + 101, principal=counters(req=1))
    )
    assert store.held("s:10.0.1.0/24") == 2


@pytest.mark.parametrize("subnet", ["s:unknown", "s:/run/app.sock", "s:"])
async def test_memory_a_subnet_that_is_no_network_has_no_share(subnet: str) -> None:
    """Behind a proxy on a unix socket every client's subnet is ``unknown``: they are no
    neighbours, and a share would send every new customer to one state."""
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=1000)
    everyone = [Keys(f"k:customer{n}", subnet, None, ()) for n in range(300)]
    for keys in everyone:
        await store.save(keys, update(principal=counters(req=1)))
    assert store.held(subnet) == 0
    assert store.sizes()["principals"] == 300
    assert all([(await store.load(keys, NOW)).known for keys in everyone])


async def test_memory_a_network_regains_its_share_as_its_principals_are_evicted() -> None:
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=128)
    share = network_share(128)  # 64
    for n in range(share + 10):
        keys = Keys(f"k:a{n}", "s:10.0.0.0/24", None, ())
        await store.save(keys, update(principal=counters(req=1)))
    assert store.held("s:10.0.0.0/24") == share
    for n in range(128):  # the rest of the world pushes them all out
        keys = Keys(f"k:b{n}", f"s:10.1.{n}.0/24", None, ())
        await store.save(keys, update(NOW + 1, principal=counters(req=1)))
    assert store.held("s:10.0.0.0/24") == 0
    assert store.sizes()["principals"] == 128
    # and a new key of that network has a state of its own again
    await store.save(
        Keys("k:c", "s:10.0.0.0/24", None, ()), update(NOW + 2, principal=counters(req=1))
    )
    assert OVERFLOW + "s:10.0.0.0/24" not in store._principals
    assert (await store.load(Keys("k:c", "s:10.0.0.0/24", None, ()), NOW + 2)).known


async def test_memory_lru_order_is_kept_to_within_a_slack() -> None:
    """A state written again within LRU_SLACK keeps its place: a busy principal is not moved
    on every request. Past the slack it moves."""
    store = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=TTL, max_subjects=2)
    first, second, third = (Keys(f"i:10.0.1.{n}", "s:10.0.1.0/24", None, ()) for n in range(3))
    await store.save(first, update(NOW, principal=counters(req=1)))
    await store.save(second, update(NOW, principal=counters(req=1)))
    await store.save(first, update(NOW + LRU_SLACK / 2, principal=counters(req=1)))  # stays
    await store.save(third, update(NOW + LRU_SLACK / 2, principal=counters(req=1)))
    assert (await store.load(first, NOW + 1)).last_seen is None  # evicted: oldest in order
    assert (await store.load(second, NOW + 1)).last_seen == NOW


async def test_memory_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        MemoryRiskStore(half_life=0, window=1, ttl=1, max_subjects=1)
    with pytest.raises(ValueError):
        MemoryRiskStore(half_life=1, window=1, ttl=1, max_subjects=0)


# -- Redis specifics -------------------------------------------------------------------------


def redis_risk_store_on(store: RedisRiskStore, *, ttl: float) -> RedisRiskStore:
    return RedisRiskStore(
        store.client,
        prefix=store.prefix,
        uri=store.uri,
        half_life=store.half_life,
        window=store.window,
        ttl=ttl,
    )


async def test_redis_bands_from_several_writers_merge_as_hysteresis_would(
    remote: RedisRiskStore,
) -> None:
    """Workers decide from copies that may be behind: Redis keeps a band against a lower one
    written within its hold (``Update.hold``, the cooldown, after its ``held``), which only a
    stale copy writes; a higher band replaces a lower at once (a rise), unless the lower was
    written after the higher's hold had run out (a step down that a late write must not
    undo); within a level, the later ``held``."""
    store = remote

    async def written(band: Band) -> Band | None:
        await store.save(KEYS, update(band.held, band=band, hold=900.0))
        return (await store.load(KEYS, band.held)).band

    assert await written(Band(1, NOW)) == Band(1, NOW)
    assert await written(Band(3, NOW + 1)) == Band(3, NOW + 1)  # a rise
    assert await written(Band(1, NOW + 2)) == Band(3, NOW + 1)  # a stale renewal
    assert await written(Band(0, NOW + 3)) == Band(3, NOW + 1)  # a stale exit
    assert await written(Band(3, NOW + 5)) == Band(3, NOW + 5)  # renewed
    assert await written(Band(3, NOW + 4)) == Band(3, NOW + 5)  # a renewal arriving late
    assert await written(Band(2, NOW + 905)) == Band(2, NOW + 905)  # the hold ran out
    assert await written(Band(3, NOW + 4.5)) == Band(2, NOW + 905)  # older than the step down
    assert await written(Band(3, NOW + 906)) == Band(3, NOW + 906)  # a rise again


async def key_ttls(store: RedisRiskStore, *names: str) -> list[int]:
    return [int(await store.client.pttl(name)) for name in names]


async def test_redis_keys_expire_with_their_state(remote: RedisRiskStore) -> None:
    store = remote
    keys = KEYS._replace(templates=("t:01",))
    await store.save(
        keys,
        update(
            principal=counters(req=1),
            ring=b"r",
            band=Band(1, NOW),
            spread_bit=1,
            subnet=[1.0, 0, 0],
            subnet_bit=2,
            fingerprint=[1.0, 0, 0],
            fingerprint_bit=3,
            template=b"t",
        ),
    )
    principal, subnet, fingerprint = (store.key(k) for k in keys[:3])
    epoch = int(NOW // WINDOW)
    state = [principal, principal + ":ring", principal + ":band", subnet, fingerprint]
    ttl_ms = TTL * 1000
    for ttl in await key_ttls(store, *state):
        assert ttl_ms - 10_000 < ttl <= ttl_ms
    bitmaps = [f"{principal}:sp:{epoch}", f"{subnet}:m:{epoch}", f"{fingerprint}:m:{epoch}"]
    # a template bucket's entries are read within a window of their time: kept as long as a
    # bitmap, not the state's TTL (8 half-lives by default: a bucket for each prompt analysed
    # made the store grow with the traffic, not with the principals)
    bitmaps.append(store.key("t:01"))
    for ttl in await key_ttls(store, *bitmaps):
        # read in its own window and the next: two windows, and a second of slack
        assert (2 * WINDOW - 10) * 1000 < ttl <= (2 * WINDOW + 1) * 1000

    # any write to the principal renews its whole state, ring and band included
    for name in state[:3]:
        await store.client.pexpire(name, 50_000)
    await store.save(keys._replace(templates=()), update(NOW + 1, seen=False))
    for ttl in await key_ttls(store, *state[:3]):
        assert ttl_ms - 10_000 < ttl <= ttl_ms


async def test_redis_state_really_expires(remote: RedisRiskStore) -> None:
    # the one test on Redis's own clock: a 50 ms ttl, a 150 ms wait
    store = redis_risk_store_on(remote, ttl=0.05)
    await store.save(KEYS, update(principal=counters(req=1), ring=b"r", band=Band(1, NOW)))
    assert (await store.load(KEYS, NOW)).ring == [b"r"]
    await asyncio.sleep(0.15)
    snap = await store.load(KEYS, NOW)
    assert (snap.principal[REQ], snap.ring, snap.band) == (0.0, [], None)


async def test_redis_renormalisation_moves_the_landmark(remote: RedisRiskStore) -> None:
    store = remote
    hash_key = store.key(KEYS.principal)
    await store.save(KEYS, update(principal=counters(req=1)))
    await store.save(KEYS, update(NOW + 64 * HALF_LIFE, principal=counters(req=1)))
    assert float(await store.client.hget(hash_key, "_L")) == NOW  # exactly 64: not yet
    await store.save(KEYS, update(NOW + 65 * HALF_LIFE, principal=counters(req=1)))
    assert float(await store.client.hget(hash_key, "_L")) == NOW + 65 * HALF_LIFE
    stored = float(await store.client.hget(hash_key, "req"))
    assert stored == near(1.0 + 0.5 + 2.0**-65)


async def test_redis_a_restore_raises_what_was_put_back_and_never_adds(
    remote: RedisRiskStore,
) -> None:
    """``Update.restore`` (a shared worker's repair of a state Redis lost): the counters'
    restored part is raised to the value, so repairs of one loss by several workers count it
    once; added requests still add; both decay alike, across a renormalisation too."""
    store = remote

    def restore(now: float, req: float, subnet: float) -> Update:
        return Update(now, counters(req=req), seen=False, subnet=[subnet, 0, 0], restore=True)

    await store.save(KEYS, update(principal=counters(req=3), subnet=[3.0, 0.0, 0.0]))
    await store.save(KEYS, restore(NOW, 5, 6))
    await store.save(KEYS, restore(NOW, 4, 2))  # another worker's, smaller: nothing
    snap = await store.load(KEYS, NOW)
    assert (snap.principal[REQ], snap.subnet[C_REQ]) == (near(8.0), near(9.0))
    await store.save(KEYS, restore(NOW, 7, 6))  # larger: raised to it
    await store.save(KEYS, update(principal=counters(req=1), subnet=[1.0, 0.0, 0.0]))
    snap = await store.load(KEYS, NOW)
    assert (snap.principal[REQ], snap.subnet[C_REQ]) == (near(11.0), near(10.0))
    # the counter field holds the whole count (the restored part is beside it): a worker of an
    # earlier release, which knows nothing of "^" fields, reads the same, and sees no loss
    hash_key = store.key(KEYS.principal)
    assert float(await store.client.hget(hash_key, "req")) == near(11.0)
    assert float(await store.client.hget(hash_key, "^req")) == near(7.0)
    # a half-life on, 5.5 of it is there: a restore to 3.5 (what a copy holds less Redis's
    # counts added) adds nothing, its restored part having decayed to 3.5 too
    await store.save(KEYS, restore(NOW + HALF_LIFE, 3.5, 3))
    assert (await store.load(KEYS, NOW + HALF_LIFE)).principal[REQ] == near(5.5)
    later = NOW + 70 * HALF_LIFE  # renormalised on the way: the restored part with the rest
    await store.save(KEYS, restore(later, 2, 2))
    snap = await store.load(KEYS, later)
    assert snap.principal[REQ] == near(2.0 + 4.0 * 2.0**-70)


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[tuple[RedisStorage, Server]]:
    # A server of its own, so that its command counts are this test's alone.
    server = Server(tmp_path)
    storage = RedisStorage(server.url + "?timeout=5")
    try:
        yield storage, server
    finally:
        await storage.close()
        server.stop()


async def commandstats(url: str) -> dict[str, int]:
    client = aioredis.from_url(url)
    info = await client.info("commandstats")
    await client.aclose()
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


def count_round_trips(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts pipeline executions; any command sent outside a pipeline fails the test."""
    executed: list[int] = []
    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counting(*args: Any, **kwargs: Any) -> Any:
            executed.append(len(pipe))
            return await execute(*args, **kwargs)

        pipe.execute = counting
        return pipe

    async def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a command outside the pipeline: {args}")

    monkeypatch.setattr(client, "pipeline", pipeline)
    monkeypatch.setattr(client, "execute_command", forbidden)
    return executed


FULL_KEYS = KEYS._replace(templates=("t:01", "t:02", "t:03"))
FULL_UPDATE = update(
    principal=counters(req=1, prm=1, gn=1, gs=2.0, gq=4.0, h5=1),
    max_tokens=100,
    temperature=0.5,
    ring=b"r" * 52,
    spread_bit=4,
    band=Band(1, NOW),
    subnet=[1.0, 0.5, 0.25],
    subnet_bit=9,
    fingerprint=[1.0, 0.5, 0.0],
    fingerprint_bit=9,
    template=b"t" * 60,
)


async def test_redis_load_and_save_are_one_round_trip_each(
    counted: tuple[RedisStorage, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, server = counted
    store = redis_risk_store(storage)
    await store.start()
    await store.save(FULL_KEYS, FULL_UPDATE)  # connects
    before = await commandstats(server.url)
    executed = count_round_trips(storage.client, monkeypatch)
    await store.save(FULL_KEYS, FULL_UPDATE)
    snap = await store.load(FULL_KEYS, NOW)
    assert len(executed) == 2
    after = await commandstats(server.url)
    delta = {cmd: after.get(cmd, 0) - before.get(cmd, 0) for cmd in after}
    delta = {cmd: n for cmd, n in delta.items() if n and cmd not in ("info", "hello")}
    # One script call per state: the save's principal, subnet, fingerprint and three template
    # buckets, the load's principal, subnet and fingerprint (the load reads the buckets with
    # LRANGE). Redis 7 counts the commands the scripts run too (HGETALL, LPUSH … PEXPIRE).
    assert delta.pop("evalsha") == 9
    assert "script|exists" not in delta and "eval" not in delta
    assert (delta["hgetall"], delta["mget"], delta["lrange"]) == (3, 3, 4)
    assert (delta["lpush"], delta["ltrim"], delta["bitfield"], delta["set"]) == (4, 4, 3, 1)
    # a hash's counters and fields read in one HMGET and written in one HSET, whatever their
    # number (the principal, the subnet, the fingerprint)
    assert (delta["hmget"], delta["hset"]) == (3, 3) and "hincrbyfloat" not in delta
    assert snap.principal[REQ] == 2.0 and snap.neighbours == [b"t" * 60] * 6


async def test_cluster_load_and_save_are_one_round_trip_each(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = RedisStorage(cluster_url + "?timeout=5")
    try:
        store = redis_risk_store(storage)
        await store.start()
        # the keys of one request live on several nodes
        slots = {storage.client.keyslot(store.key(name)) for name in (*FULL_KEYS[:3], "t:01")}
        assert len(slots) > 1
        await store.save(FULL_KEYS, FULL_UPDATE)
        executed = count_round_trips(storage.client, monkeypatch)
        await store.save(FULL_KEYS, FULL_UPDATE)
        snap = await store.load(FULL_KEYS, NOW)
        assert len(executed) == 2
        assert snap.principal[REQ] == 2.0 and snap.ring == [b"r" * 52] * 2
        assert snap.subnet_members == snap.fingerprint_members == 1 << 9
    finally:
        await storage.close()


async def test_redis_lost_script_is_reloaded(
    remote: RedisRiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = remote
    await store.save(FULL_KEYS, FULL_UPDATE)
    await store.client.script_flush()  # as after a restart or a failover (every primary)
    executed = count_round_trips(store.client, monkeypatch)
    await store.save(FULL_KEYS, FULL_UPDATE)
    assert len(executed) == 2  # the save, then its scripts again with EVAL
    snap = await store.load(FULL_KEYS, NOW)
    assert snap.principal[REQ] == 2.0
    assert snap.subnet == near([2.0, 1.0, 0.5])
    assert snap.ring == [b"r" * 52] * 2  # the rest of the pipeline was not applied twice
    assert snap.neighbours == [b"t" * 60] * 6


async def test_redis_failure_is_a_storage_error() -> None:
    port = free_port()  # nothing listens there
    storage = RedisStorage(f"redis://:hunter2@127.0.0.1:{port}/0?timeout=1")
    store = redis_risk_store(storage)
    try:
        attempts = (
            store.start,
            lambda: store.load(FULL_KEYS, NOW),
            lambda: store.save(KEYS, FULL_UPDATE),
        )
        for attempt in attempts:
            with pytest.raises(StorageError) as caught:
                await attempt()
            message = str(caught.value)
            assert f"127.0.0.1:{port}" in message and "***" in message
            assert "hunter2" not in message
            assert "Error" in message  # the exception type says what went wrong
    finally:
        await storage.close()


async def test_redis_reply_error_is_a_storage_error(remote: RedisRiskStore) -> None:
    store = remote
    await store.client.set(store.key(KEYS.principal), "not a hash")
    with pytest.raises(StorageError, match="WRONGTYPE"):
        await store.load(KEYS, NOW)
    with pytest.raises(StorageError, match="WRONGTYPE"):
        await store.save(KEYS, update(principal=counters(req=1)))


async def test_redis_unreadable_state_is_a_storage_error(remote: RedisRiskStore) -> None:
    await remote.client.set(remote.key(KEYS.principal) + ":band", "no band here")
    with pytest.raises(StorageError, match="ValueError"):
        await remote.load(KEYS, NOW)


async def test_redis_gate_keeps_round_trips_within_the_pool(redis_url: str) -> None:
    # redis-py's pool refuses a third connection rather than wait: the storage's gate queues
    storage = RedisStorage(redis_url + "?timeout=5&max_connections=2")
    store = redis_risk_store(storage, gate=asyncio.Semaphore(2))
    try:
        await store.start()
        saves = (store.save(KEYS, update(principal=counters(req=1))) for _ in range(40))
        await asyncio.gather(*saves)
        loads = await asyncio.gather(*(store.load(KEYS, NOW) for _ in range(40)))
        assert {snap.principal[REQ] for snap in loads} == {40.0}  # no write lost to a race
    finally:
        await storage.close()


# -- the same snapshots from every store, for random traffic ---------------------------------

principals = st.sampled_from(["a:one", "k:" + "c" * 32, "i:192.0.2.1"])
steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 7.0, 30.0, 61.0, 400.0, 2000.0]),  # seconds since the last
        principals,
        st.sampled_from(["s:192.0.2.0/24", "s:198.51.100.0/24"]),
        st.sampled_from([None, "f:01", "f:02"]),
        st.lists(st.sampled_from(["t:1", "t:2", "t:3"]), max_size=3, unique=True),
        st.fixed_dictionaries(
            {
                "principal": st.lists(
                    st.sampled_from([0.0, 0.0, 1.0, 0.25, 3.5, 1e4]),
                    min_size=len(PRINCIPAL),
                    max_size=len(PRINCIPAL),
                ),
                "max_tokens": st.sampled_from([-1, 0, 4096]),
                "temperature": st.sampled_from([-1.0, 0.0, 0.7]),
                "seen": st.booleans(),
                "ring": st.sampled_from([None, b"\x01" * 52, b"\x02" * 52, b"\x03" * 7]),
                "spread_bit": st.sampled_from([None, 0, 13, SPREAD_BITS - 1]),
                "band": st.sampled_from([None, Band(0, NOW), Band(2, NOW + 0.5)]),
                "subnet": st.sampled_from([[], [1.0, 0.5, 0.25], [1.0, 0.0, 1.0]]),
                "subnet_bit": st.sampled_from([None, 1, COHORT_BITS - 1]),
                "fingerprint": st.sampled_from([[], [1.0, 0.75, 0.0]]),
                "fingerprint_bit": st.sampled_from([None, 2]),
                "template": st.sampled_from([None, b"T1" * 30, b"T2" * 30]),
            }
        ),
    ),
    min_size=1,
    max_size=25,
)
_prefixes = itertools.count()


def test_random_updates_read_the_same_everywhere(remote_url: str) -> None:

    @settings(max_examples=15, deadline=None)
    @given(steps=steps)
    def check(steps: list[tuple[Any, ...]]) -> None:
        asyncio.run(compare(remote_url, steps))

    check()


async def compare(url: str, steps: list[tuple[Any, ...]]) -> None:
    """Apply ``steps`` to a memory store and a Redis one; every load must agree."""
    memory = MemoryRiskStore(half_life=HALF_LIFE, window=WINDOW, ttl=1e6, max_subjects=100)
    # the database is shared between examples: each takes a prefix of its own
    storage = RedisStorage(url + f"&prefix=p{next(_prefixes)}:")
    remote = RedisRiskStore(
        storage.client,
        prefix=storage.prefix,
        uri=storage.uri,
        half_life=HALF_LIFE,
        window=WINDOW,
        ttl=1e6,
    )
    try:
        await remote.start()
        now = NOW
        for gap, principal, subnet, fingerprint, templates, fields in steps:
            now += gap
            keys = Keys(principal, subnet, fingerprint, tuple(templates))
            # ``known``: Redis holds no hash for a principal written without counters (the
            # engine's writes always count a request or a refusal); memory holds a state
            assert_same(await remote.load(keys, now), await memory.load(keys, now), False)
            change = Update(now, **fields)
            await memory.save(keys, change)
            await remote.save(keys, change)
            assert_same(await remote.load(keys, now), await memory.load(keys, now), False)
        for later in (now + 1, now + WINDOW, now + 3 * WINDOW):
            keys = Keys("a:one", "s:192.0.2.0/24", "f:01", ("t:1", "t:2", "t:3"))
            assert_same(await remote.load(keys, later), await memory.load(keys, later), False)
    finally:
        await storage.close()


async def test_a_waiting_caller_gives_up_on_a_busy_gate(redis_url: str) -> None:
    """A hung server must become a StorageError (on_storage_error), not an endless queue."""
    storage = RedisStorage(redis_url + "?timeout=5")
    gate = asyncio.Semaphore(1)
    store = redis_risk_store(storage, gate=gate, queue_timeout=0.01)
    try:
        await gate.acquire()  # every connection busy
        with pytest.raises(StorageError, match="every connection busy"):
            await store.load(KEYS, NOW)
        gate.release()
        await store.load(KEYS, NOW)  # and the gate is whole again
        assert not gate.locked()
    finally:
        await storage.close()


async def test_a_changed_half_life_reads_and_rescales_what_the_old_one_wrote(
    redis_url: str,
) -> None:
    """A policy whose half_life changed (or a rolling deploy running two) must neither read
    the old sums with the wrong weight nor add to them with it."""
    storage = RedisStorage(redis_url + "?timeout=5")
    try:
        hourly = redis_risk_store(storage, half_life=3600.0, ttl=10**6)
        await hourly.start()
        await hourly.save(KEYS, update(principal=counters(req=8)))
        slower = redis_risk_store(storage, half_life=6 * 3600.0, ttl=10**6)
        later = NOW + 40 * 3600.0  # forty of the old half-lives
        assert (await slower.load(KEYS, later)).principal[REQ] == near(8 * 2.0**-40)
        await slower.save(KEYS, update(later, principal=counters(req=1)))
        after = await slower.load(KEYS, later + 6 * 3600.0)  # one new half-life on
        assert after.principal[REQ] == near((8 * 2.0**-40 + 1) / 2)
    finally:
        await storage.close()


async def test_a_flush_stamping_a_state_of_bits_alone_leaves_it_expiring(
    remote: RedisRiskStore,
) -> None:
    """A principal written with no counter nor field (a bit only) and stamped by a flush: the
    stamp goes in before the state's expiry is renewed, so its hash expires with the rest (it
    went in after: a hash holding the stamp alone never expired)."""
    update = Update(NOW, [0.0] * len(PRINCIPAL), seen=False, spread_bit=3)
    await remote.sync([(KEYS, update)], NOW, [], [], [], worker="w1", batch="b1")
    ttl = await remote.client.pttl(remote.key(KEYS.principal))
    assert 0 < ttl <= math.ceil(TTL * 1000)


async def test_a_counter_made_infinite_is_refused_and_nothing_written(
    remote: RedisRiskStore,
) -> None:
    """Redis refused an infinite sum (HINCRBYFLOAT) before counters were summed in the script:
    still refused, and the state left as it was, not stored as "inf"."""
    await remote.save(KEYS, Update(NOW, counters(req=1)))
    with pytest.raises(StorageError):
        await remote.save(KEYS, Update(NOW, counters(req=math.inf)))
    assert (await remote.load(KEYS, NOW)).principal[REQ] == 1.0
    # refused where the landmark is due to move too: the counters are not rescaled without it
    other = KEYS._replace(principal="k:" + "c" * 32)
    await remote.save(other, Update(NOW, counters(req=2.0**80)))
    later = NOW + 70 * HALF_LIFE
    with pytest.raises(StorageError):
        await remote.save(other, Update(later, counters(req=math.inf)))
    assert (await remote.load(other, later)).principal[REQ] == near(2.0**10)


async def test_a_cohort_flush_sets_thousands_of_bits(remote: RedisRiskStore) -> None:
    """One BITFIELD a bitmap, sent in parts: Lua's unpack stops at ~8,000 values."""
    journal = [
        (KEYS, Update(NOW, [0.0] * len(PRINCIPAL), seen=False, subnet=[], subnet_bit=bit))
        for bit in range(2500)
    ]
    await remote.sync(journal, NOW, [], [], [], worker="w1", batch="b2")
    members = await remote.client.get(remote.key(KEYS.subnet) + f":m:{int(NOW // WINDOW)}")
    assert members == b"\xff" * (2500 // 8) + b"\xf0"
