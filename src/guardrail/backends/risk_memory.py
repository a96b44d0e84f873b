"""Risk state in process: the embedded default, read and written on every request.

The whole risk engine has about 60 µs per request, so the store is plain attribute access on
``__slots__`` objects: forward decay turns a decayed increment into one multiply-add on a
float32 counter, and a principal, ring included, fits in under a kilobyte.
"""

from __future__ import annotations

import logging
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import ip_network
from itertools import compress
from math import exp2
from struct import Struct
from typing import Any

from guardrail.signals.state import (
    BUCKET_SIZE,
    C_BEH,
    C_REQ,
    C_WAN,
    COHORT,
    COHORT_BITS,
    GN,
    GQ,
    GS,
    HOUR0,
    PRINCIPAL,
    PRM,
    REQ,
    RING_SIZE,
    SPREAD_BITS,
    Band,
    Keys,
    Snapshot,
    Standing,
    Update,
)

logger = logging.getLogger("guardrail")

#: Half-lives the store's landmark may lag ``now`` before it moves to ``now``. Every state
#: takes the store's landmark when next written (renormalised once if it had an older one), so
#: weights stay under 2^32, far inside float32's 2^128, and the landmark float is one object
#: for all states instead of 24 bytes each. (state.py's bound is 64 half-lives.)
RENORMALISE_AFTER = 32.0
#: The LRU order is kept to within this many seconds: a state written again within them is not
#: moved to the recent end again (nor its ``touched`` time renewed), which spares every request
#: of a busy principal three linked-list moves and their cache misses. Expiry (``ttl``, hours)
#: and eviction may come up to this much early.
LRU_SLACK = 1.0
#: A network's share of the principals (a sixteenth of ``max_subjects``, NETWORK_FLOOR at
#: least): new principals from one subnet beyond it share one overflow state for the subnet
#: (``OVERFLOW`` + its key) instead of evicting the rest of the world's. A flood of random keys
#: from one network so holds at most its share, and what it does still adds up in one state.
#: That state is written, never read: a principal sent to it is assessed as new (from empty
#: state and its own request), or a flood that bands it would refuse every newcomer of the
#: network, neighbours behind the same /24 or CGNAT included. A network's principals count
#: while they live: expired ones are forgotten once it reaches its share. No share at all when
#: it would be the whole store (small stores: tests, simulations), nor for a subnet that is no
#: network (``unknown``: a proxy on a unix socket; there every client is that subnet).
NETWORK_SHARE = 16
NETWORK_FLOOR = 64
OVERFLOW = "o:"
#: Principals in a band (throttle, challenge, block) are kept apart from the rest, up to this
#: fraction of ``max_subjects``: only another banded principal evicts one, never a flood of
#: fresh ones.
BANDED_SHARE = 2
#: A subnet reaching its share is said in the log at most this often (seconds): behind a proxy
#: that guardrail does not trust, every client is the proxy's subnet.
WARN_EVERY = 60.0
#: Distinct request parameters kept as shared objects: a float or a large int costs 24-28
#: bytes per principal, and clients send a handful of values (temperature 0.7, 1024 tokens…).
_MAX_INTERNED = 1024

#: A principal's float32 counters are followed by its standing (``Standing``): the last
#: assessment's score and behaviour score, and its time as an offset from the landmark. Three
#: floats here cost 12 bytes; as attributes they would cost 96.
_SCORE, _MANNER, _SCORED = range(len(PRINCIPAL), len(PRINCIPAL) + 3)
_PRINCIPAL_ZEROS = array("f", [0.0] * len(PRINCIPAL) + [0.0, 0.0, float("-inf")])
_DECAYED = len(PRINCIPAL)
_new = tuple.__new__
_COHORT_ZEROS = array("f", bytes(4 * len(COHORT)))
_PRINCIPAL_INDEXES = range(len(PRINCIPAL))
#: Single-bit masks, shared: a bitmap with one member costs no int object of its own.
_BITS = tuple(1 << bit for bit in range(max(SPREAD_BITS, COHORT_BITS)))


# A capped list of opaque entries (a ring, a template bucket), newest first, is one bytes blob
# of fixed-width entries, split on load by a precompiled struct: one object instead of one per
# entry plus a container (measured: a full ring 457 bytes against 792 as a tuple, a full bucket
# 1001 against 2256 as a deque). Its layout is None while it is empty, and should entries of
# unequal length arrive: the blob then holds them length-prefixed (slower, and never expected).


class _Layout:
    """How a blob of ``width``-byte entries splits: one precompiled unpack per count."""

    __slots__ = ("unpack", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.unpack: tuple[Callable[[bytes], tuple[Any, ...]], ...] = tuple(
            Struct(f"{width}s" * count).unpack for count in range(max(RING_SIZE, BUCKET_SIZE) + 1)
        )


#: One layout per entry width seen; sketches come in one or two widths, so few are kept.
_LAYOUTS: dict[int, _Layout] = {}
_MAX_LAYOUTS = 16
_FRAME = Struct("<I")  # an entry's length, when entries are of unequal length


@lru_cache(maxsize=256)
def _is_network(subnet: str) -> bool:
    """Whether a ``Keys.subnet`` names an IP network (identity makes anything that is no
    address its own subnet); asked once per network that is new to the store."""
    try:
        ip_network(subnet.removeprefix("s:"), strict=False)
    except ValueError:
        return False
    return True


def network_share(max_subjects: int) -> int:
    """How many principals one subnet may hold in a store of ``max_subjects`` (0: no share),
    its overflow state included."""
    share = max(max_subjects // NETWORK_SHARE, NETWORK_FLOOR)
    return share if share < max_subjects else 0


class _Network:
    """The principals a subnet holds (each principal counts for the subnet it was created
    or started over from, until evicted or swept as expired): one per subnet, shared by its
    principals, gone with the last of them."""

    __slots__ = ("count", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.count = 0


class _Principal:
    # ``last_seen`` and ``touched`` are usually one float object.
    __slots__ = (
        "band",
        "counters",
        "epoch",
        "landmark",
        "last_seen",
        "layout",
        "max_tokens",
        "network",
        "ring",
        "spread",
        "spread_prev",
        "synced",
        "temperature",
        "touched",
    )

    def __init__(self, landmark: float, now: float, epoch: int, network: _Network | None) -> None:
        self.network = network
        self.reset(landmark, now, epoch)

    def reset(self, landmark: float, now: float, epoch: int) -> None:
        self.counters = _PRINCIPAL_ZEROS[:]
        self.landmark = landmark
        self.touched = now
        self.last_seen: float | None = None
        self.max_tokens = -1
        self.temperature = -1.0
        self.ring = b""
        self.layout: _Layout | None = None
        self.epoch = epoch
        self.spread = 0
        self.spread_prev = 0
        self.band: Band | None = None
        self.synced = 0.0  # when it last took Redis's copy; 0: never (risk_shared.py)


class _Overflow(_Principal):
    """A subnet's overflow state: a principal's layout (no extra memory), told apart by its
    type. It gathers the counters of the principals sent to it, but no band or standing: no
    one is assessed from it."""

    __slots__ = ()


class _Cohort:
    __slots__ = ("counters", "epoch", "landmark", "members", "members_prev", "synced", "touched")

    def __init__(self, landmark: float, now: float, epoch: int) -> None:
        self.reset(landmark, now, epoch)

    def reset(self, landmark: float, now: float, epoch: int) -> None:
        self.counters = _COHORT_ZEROS[:]
        self.landmark = landmark
        self.touched = now
        self.epoch = epoch
        self.members = 0
        self.members_prev = 0
        self.synced = 0.0


class _Bucket:
    __slots__ = ("entries", "layout", "touched")

    def __init__(self, now: float) -> None:
        self.touched = now
        self.entries = b""
        self.layout: _Layout | None = None


class MemoryRiskStore:
    """Risk state in dicts, at most ``max_subjects`` of each kind (principals, cohorts,
    template buckets), the least recently written evicted first; principals in a band apart
    (up to a ``BANDED_SHARE``), and each subnet's principals held to its ``network_share``.

    Neither method awaits, so under asyncio each runs whole: a save is never interleaved with
    another request's. State untouched for more than ``ttl`` reads as absent and starts over
    when written; it is not swept, the LRU bounds what lingers.
    """

    def __init__(self, *, half_life: float, window: float, ttl: float, max_subjects: int) -> None:
        if half_life <= 0 or window <= 0 or ttl <= 0:
            raise ValueError("half_life, window and ttl must be positive")
        if max_subjects < 1:
            raise ValueError("max_subjects must be at least 1")
        self.half_life = half_life
        self.window = window
        self.ttl = ttl
        self.max_subjects = max_subjects
        self._rate = 1.0 / half_life
        self._span = RENORMALISE_AFTER * half_life
        self._epoch = 0  # the last epoch computed: every state written in it shares the int
        self._landmark = float("-inf")  # set by the first save
        self._floats: dict[float, float] = {}
        self._ints: dict[int, int] = {}
        self.share = network_share(max_subjects)
        self._banded_cap = max_subjects // BANDED_SHARE
        self._principals: OrderedDict[str, _Principal] = OrderedDict()  # in no band
        self._banded: OrderedDict[str, _Principal] = OrderedDict()
        self._networks: dict[str, _Network] = {}
        self._warned = float("-inf")
        self._cohorts: OrderedDict[str, _Cohort] = OrderedDict()  # subnets and fingerprints
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        principals = len(self._principals) + len(self._banded)
        return principals + len(self._cohorts) + len(self._buckets)

    def sizes(self) -> dict[str, int]:
        """States held, by kind: each kind is bounded by ``max_subjects`` on its own
        (principals in a band are some of the principals)."""
        return {
            "principals": len(self._principals) + len(self._banded),
            "banded principals": len(self._banded),
            "cohorts": len(self._cohorts),
            "template buckets": len(self._buckets),
        }

    def held(self, subnet: str) -> int:
        """Principals created from ``subnet`` (a ``Keys.subnet``) still held, its overflow
        state included (expired ones too, until the subnet reaches its share: ``_sweep``)."""
        network = self._networks.get(subnet)
        return 0 if network is None else network.count

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._principals.clear()
        self._banded.clear()
        self._networks.clear()
        self._cohorts.clear()
        self._buckets.clear()

    def standing(self, principal: str, now: float) -> Standing | None:
        p = self._principals.get(principal) or self._banded.get(principal)
        if p is None or now - p.touched > self.ttl:
            return None
        counters = p.counters
        landmark = p.landmark
        epoch = int(now // self.window)
        spread = _seen(p.epoch, p.spread, p.spread_prev, epoch)
        band = p.band
        return _new(  # Standing(...), minus NamedTuple's Python-level __new__
            Standing,
            (
                counters[PRM] * exp2((landmark - now) * self._rate),
                p.last_seen,
                p.max_tokens,
                p.temperature,
                spread,
                0 if band is None else band.level,
                counters[_SCORE],
                counters[_MANNER],
                landmark + counters[_SCORED],
            ),
        )

    async def load(self, keys: Keys, now: float) -> Snapshot:
        ttl = self.ttl
        epoch = int(now // self.window)
        # A principal without state of its own is new, even where its subnet's new principals
        # share the overflow state (see NETWORK_SHARE).
        p = self._principals.get(keys.principal) or self._banded.get(keys.principal)
        known = p is not None and now - p.touched <= ttl
        if not known:
            principal = _PRINCIPAL_ZEROS.tolist()[:_DECAYED]
            last_seen, max_tokens, temperature = None, -1, -1.0
            ring: list[bytes] = []
            spread, band = 0, None
        else:
            assert p is not None
            factor = exp2((p.landmark - now) * self._rate)
            principal = [v * factor for v in p.counters.tolist()[:_DECAYED]]
            last_seen, max_tokens, temperature = p.last_seen, p.max_tokens, p.temperature
            ring = list(_split(p.ring, p.layout)) if keys.templates else []
            spread = _seen(p.epoch, p.spread, p.spread_prev, epoch)
            band = p.band
        cohorts = self._cohorts
        subnet, subnet_members = _load_cohort(cohorts.get(keys.subnet), now, epoch, self)
        fingerprint = keys.fingerprint
        if fingerprint is None:
            fingerprint_counters, fingerprint_members = _COHORT_ZEROS.tolist(), 0
        else:
            fingerprint_counters, fingerprint_members = _load_cohort(
                cohorts.get(fingerprint), now, epoch, self
            )
        neighbours = self._neighbours(keys.templates, now)
        return Snapshot(
            principal,
            last_seen,
            max_tokens,
            temperature,
            ring,
            spread,
            band,
            subnet,
            subnet_members,
            fingerprint_counters,
            fingerprint_members,
            neighbours,
            known,
        )

    async def save(self, keys: Keys, update: Update) -> None:
        now = update.now
        create = update.create
        landmark, epoch, weight = self._clock(now)
        p = self._principal(keys.principal, now, landmark, epoch, keys.subnet, create)
        if p is not None:
            self._apply(keys, p, update, landmark, epoch, weight)
        if update.subnet or update.subnet_bit is not None:
            self._save_cohort(
                keys.subnet, landmark, now, epoch, weight, update.subnet, update.subnet_bit
            )
        fingerprint = keys.fingerprint
        if fingerprint is not None and (update.fingerprint or update.fingerprint_bit is not None):
            self._save_cohort(
                fingerprint,
                landmark,
                now,
                epoch,
                weight,
                update.fingerprint,
                update.fingerprint_bit,
                create,
            )
        if update.template is not None:
            self._push_template(keys.templates, update.template, now, create)

    def _apply(
        self,
        keys: Keys,
        p: _Principal,
        update: Update,
        landmark: float,
        epoch: int,
        weight: float,
    ) -> None:
        """``save``'s part on the principal's state ``p``."""
        now = update.now
        increments = update.principal
        if any(increments):
            counters = p.counters
            for i in compress(_PRINCIPAL_INDEXES, increments):
                counters[i] += increments[i] * weight
        self._note(p, now, update.seen, update.max_tokens, update.temperature)
        if p.__class__ is not _Overflow:  # the overflow's newcomers: their own band, score
            if update.band is not None:
                self._band(keys, p, update.band)
            if update.score >= 0:
                counters = p.counters
                counters[_SCORE] = update.score
                counters[_MANNER] = update.manner
                counters[_SCORED] = now - landmark
        if update.ring is not None:
            p.ring, p.layout = _push(p.ring, p.layout, update.ring, RING_SIZE)
        if update.spread_bit is not None:
            p.epoch, p.spread, p.spread_prev = _marked(
                p.epoch, p.spread, p.spread_prev, epoch, update.spread_bit
            )

    def _band(self, keys: Keys, p: _Principal, band: Band) -> None:
        """Set ``p``'s band; entering one or leaving it moves it between the segments."""
        was = p.band is not None and p.band.level > 0
        p.band = band
        if was == (band.level > 0) or not self._banded_cap:
            return
        self._segment(keys.principal, p, band.level > 0)

    def _segment(self, key: str, p: _Principal, banded: bool) -> None:
        """Move ``p`` into the banded segment or out of it, as its most recent entry. A
        banded segment over its cap loses its least recently written: only a banded principal
        evicts one."""
        source, target = (
            (self._principals, self._banded) if banded else (self._banded, self._principals)
        )
        if source.pop(key, None) is not p:
            return
        target[key] = p
        if banded and len(target) > self._banded_cap:
            self._forget(target.popitem(last=False)[1])

    def push_template(self, keys: Keys, entry: bytes, now: float) -> None:
        """Put ``entry`` on every template bucket of ``keys`` (a request decided from its
        standing, and then admitted: see ``RiskEngine.commit``)."""
        self._push_template(keys.templates, entry, now, True)

    def fold(
        self,
        keys: Keys,
        now: float,
        gap: float | None,
        hour: int,
        max_tokens: int,
        temperature: float,
        spread_bit: int,
        member_bit: int,
        cohort: list[float],
        prompt: bool = False,
        ring: bytes | None = None,
        template: bytes | None = None,
    ) -> None:
        """``save`` of what a request decided from its principal's standing adds (see
        ``RiskEngine``), in place and without an Update: half the cost, on most requests.
        ``gap``: since the principal's last request, if within a session; ``cohort``: the
        COHORT increments for its subnet and fingerprint; ``prompt``: a prompt was analysed
        (and found nothing), ``ring`` and ``template`` its sketch, if it has one. The
        principal has a standing, so it is there. A fold comes before the limits are charged,
        and only an admitted request may create state: a fingerprint cohort is updated if
        there (else created by the principal's next full assessment), and the caller passes
        ``template`` only for an admitted request (``push_template``)."""
        landmark, epoch, weight = self._clock(now)
        p = self._principal(keys.principal, now, landmark, epoch, keys.subnet, True)
        assert p is not None
        counters = p.counters
        counters[REQ] += weight
        if gap is not None:
            counters[GN] += weight
            counters[GS] += gap * weight
            counters[GQ] += gap * gap * weight
        counters[HOUR0 + hour] += weight
        if prompt:
            counters[PRM] += weight
        self._note(p, now, True, max_tokens, temperature)
        if epoch != p.epoch or not p.spread >> spread_bit & 1:
            p.epoch, p.spread, p.spread_prev = _marked(
                p.epoch, p.spread, p.spread_prev, epoch, spread_bit
            )
        if ring is not None:
            p.ring, p.layout = _push(p.ring, p.layout, ring, RING_SIZE)
        self._save_cohort(keys.subnet, landmark, now, epoch, weight, cohort, member_bit)
        if keys.fingerprint is not None:
            self._save_cohort(
                keys.fingerprint, landmark, now, epoch, weight, cohort, member_bit, False
            )
        if template is not None:
            self._push_template(keys.templates, template, now, True)

    # -- shared through Redis (risk_shared.py) ----------------------------------------------

    def _own(self, key: str, now: float) -> _Principal | None:
        """A principal's own state, live (not its subnet's overflow state)."""
        p = self._principals.get(key) or self._banded.get(key)
        if p is None or p.__class__ is _Overflow or now - p.touched > self.ttl:
            return None
        return p

    def holds(self, key: str, kind: int, now: float) -> bool:
        """Whether a state is held here, live: a principal's own (``kind`` 0), a cohort (1),
        a template bucket (2)."""
        if kind == 0:
            return self._own(key, now) is not None
        state = self._cohorts.get(key) if kind == 1 else self._buckets.get(key)
        return state is not None and now - state.touched <= self.ttl

    def synced(self, key: str, kind: int, now: float, within: float) -> bool:
        """Whether this copy of a principal (``kind`` 0) or cohort (1) took Redis's less than
        ``within`` seconds ago: a copy created afresh (first seen here, or evicted and seen
        again) holds only what this worker saw, whatever Redis's stamp says."""
        state = self._own(key, now) if kind == 0 else self._cohorts.get(key)
        # a clock stepped back is no reason to trust the copy longer
        return state is not None and 0.0 <= now - state.synced < within

    def unsync(self, key: str, kind: int, now: float) -> None:
        """This copy may have missed Redis's (a flush whose reply was lost): read it back."""
        state = self._own(key, now) if kind == 0 else self._cohorts.get(key)
        if state is not None:
            state.synced = 0.0

    def held_principal(self, key: str, now: float) -> list[float] | None:
        """A principal's counters at ``now`` (None: not held, expired, or sent to its
        subnet's overflow state): what a flush compares Redis's copy with."""
        p = self._own(key, now)
        if p is None:
            return None
        factor = exp2((p.landmark - now) * self._rate)
        return [v * factor for v in p.counters.tolist()[:_DECAYED]]

    def held_cohort(self, key: str, now: float) -> list[float] | None:
        c = self._cohorts.get(key)
        if c is None or now - c.touched > self.ttl:
            return None
        factor = exp2((c.landmark - now) * self._rate)
        return [v * factor for v in c.counters.tolist()]

    def absorb_principal(
        self, key: str, now: float, correction: list[float], remote: Remote, own_band: bool
    ) -> None:
        """Make a principal's state what Redis holds (``remote``, read at ``now``) plus what
        this process wrote since: ``correction`` (Redis's counters less this store's, both at
        ``now``) is added, bits are OR-ed, the ring is ``remote``'s with the entries pushed
        since in front (``remote.newer``), the band is Redis's unless one was set here since
        (``own_band``). Only a principal held here with its own state is changed."""
        p = self._own(key, now)
        if p is None:
            return
        p.synced = now
        landmark, epoch, weight = self._clock(now)
        if p.landmark is not landmark:
            p.landmark = _renormalise_principal(p.counters, p.landmark, landmark, self._rate)
        _correct(p.counters, correction, weight)
        p.epoch, p.spread, p.spread_prev = _merged(
            p.epoch, p.spread, p.spread_prev, epoch, remote.current, remote.previous
        )
        seen = remote.last_seen
        if seen is not None and (p.last_seen is None or seen > p.last_seen) and seen <= now + SKEW:
            p.last_seen = remote.last_seen
            if remote.max_tokens >= 0:
                p.max_tokens = _intern(self._ints, remote.max_tokens)
            if remote.temperature >= 0:
                p.temperature = _intern(self._floats, remote.temperature)
        if remote.entries:  # none: Redis lost them (this copy's, newer included, are kept)
            p.ring, p.layout = _pushed_all(remote.entries, remote.newer, RING_SIZE)
        if remote.band is not None and not own_band and remote.band != p.band:
            self._band(Keys(key, "", None, ()), p, remote.band)

    def absorb_cohort(self, key: str, now: float, correction: list[float], remote: Remote) -> None:
        c = self._cohorts.get(key)
        if c is None:
            return
        c.synced = now
        landmark, epoch, weight = self._clock(now)
        if c.landmark is not landmark:
            c.landmark = _renormalise(c.counters, c.landmark, landmark, self._rate)
        _correct(c.counters, correction, weight)
        c.epoch, c.members, c.members_prev = _merged(
            c.epoch, c.members, c.members_prev, epoch, remote.current, remote.previous
        )

    def absorb_bucket(self, key: str, now: float, remote: Remote) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        bucket.entries, bucket.layout = _pushed_all(remote.entries, remote.newer, BUCKET_SIZE)

    def _note(
        self, p: _Principal, now: float, seen: bool, max_tokens: int, temperature: float
    ) -> None:
        """What a request notes on its principal besides counters (``save`` and ``fold``)."""
        if seen and (p.last_seen is None or now > p.last_seen):
            p.last_seen = now
        # Clients repeat their parameters: most requests change neither.
        if max_tokens >= 0 and max_tokens != p.max_tokens:
            p.max_tokens = _intern(self._ints, max_tokens)
        if temperature >= 0 and temperature != p.temperature:
            p.temperature = _intern(self._floats, temperature)

    def comparables(self, keys: Keys, now: float) -> tuple[list[bytes], list[bytes]]:
        """The principal's ring and the entries of ``keys.templates``: what an analysed
        prompt is compared with (``load``'s, without the rest)."""
        p = self._principals.get(keys.principal) or self._banded.get(keys.principal)
        ring = [] if p is None or now - p.touched > self.ttl else list(_split(p.ring, p.layout))
        return ring, self._neighbours(keys.templates, now)

    def _neighbours(self, templates: tuple[str, ...], now: float) -> list[bytes]:
        neighbours: list[bytes] = []
        buckets = self._buckets
        for template in templates:
            bucket = buckets.get(template)
            if bucket is not None and now - bucket.touched <= self.ttl:
                neighbours += _split(bucket.entries, bucket.layout)
        return neighbours

    def _push_template(
        self, templates: tuple[str, ...], entry: bytes, now: float, create: bool
    ) -> None:
        """Put ``entry`` first in each of the ``templates`` buckets, at most BUCKET_SIZE kept
        (only in those that exist, unless ``create``)."""
        buckets = self._buckets
        ttl = self.ttl
        for name in templates:
            bucket = buckets.get(name)
            if bucket is None:
                if not create:
                    continue
                bucket = buckets[name] = _Bucket(now)
                if len(buckets) > self.max_subjects:
                    buckets.popitem(last=False)
            elif now - bucket.touched > ttl:
                buckets.move_to_end(name)
                bucket.entries, bucket.layout = b"", None
                bucket.touched = now
            elif now - bucket.touched >= LRU_SLACK:
                buckets.move_to_end(name)
                bucket.touched = now
            bucket.entries, bucket.layout = _push(bucket.entries, bucket.layout, entry, BUCKET_SIZE)

    def _clock(self, now: float) -> tuple[float, int, float]:
        """The landmark and the window epoch a write at ``now`` uses (both shared objects), and
        the weight of an increment at ``now`` against that landmark."""
        epoch = int(now // self.window)
        if epoch == self._epoch:
            epoch = self._epoch
        else:
            self._epoch = epoch
        if now - self._landmark > self._span:
            self._landmark = now
        landmark = self._landmark
        return landmark, epoch, exp2((now - landmark) * self._rate)

    def _principal(
        self, key: str, now: float, landmark: float, epoch: int, subnet: str, create: bool
    ) -> _Principal | None:
        """The principal's state to write at ``now`` (a new one only if ``create``; None if
        none), renewed or reset if expired, as the most recently used; its counters relative
        to ``landmark``."""
        segment = self._principals
        p = segment.get(key)
        if p is None:
            segment = self._banded
            p = segment.get(key)
            if p is None:
                return self._new(key, now, landmark, epoch, subnet, create)
        if now - p.touched > self.ttl:
            if segment is self._banded:
                self._segment(key, p, False)
            segment = self._principals
            segment.move_to_end(key)
            p.reset(landmark, now, epoch)
            network = p.network
            if self.share and (network is None or network.key != subnet):
                # starting over, it counts for the network it comes from now (an overflow
                # state's key names its network: never moved)
                self._forget(p)
                p.network = network = self._network(subnet)
                if network is not None:
                    network.count += 1
        elif now - p.touched >= LRU_SLACK:
            segment.move_to_end(key)
            p.touched = now
        if p.landmark is not landmark:
            p.landmark = _renormalise_principal(p.counters, p.landmark, landmark, self._rate)
        return p

    def _new(
        self, key: str, now: float, landmark: float, epoch: int, subnet: str, create: bool
    ) -> _Principal | None:
        """A principal unknown to the store: its own new state, or its subnet's overflow
        state once the subnet holds its share (``network_share``)."""
        network = None
        kind = _Principal
        if self.share:
            network = self._networks.get(subnet)
            if network is not None and network.count >= self.share - 1:
                self._sweep(now)  # its expired principals no longer count
                network = self._networks.get(subnet)
            if network is not None and network.count >= self.share - 1:
                overflow = OVERFLOW + subnet
                if overflow in self._principals:
                    return self._principal(overflow, now, landmark, epoch, subnet, create)
                key, kind = overflow, _Overflow  # the subnet's last place
                if create and now - self._warned >= WARN_EVERY:
                    self._warned = now
                    logger.warning(
                        "guardrail: subnet %s holds its share of the risk state (%d "
                        "principals): its new principals share one state. A proxy's subnet? "
                        "Then list it in identity.client_ip.trusted_proxies",
                        subnet.removeprefix("s:"),
                        self.share,
                    )
        if not create:
            return None
        if network is None and self.share:
            network = self._network(subnet)
        principals = self._principals
        p = principals[key] = kind(landmark, now, epoch, network)
        if network is not None:
            network.count += 1
        if len(principals) + len(self._banded) > self.max_subjects:
            self._forget(principals.popitem(last=False)[1])
        return p

    def _network(self, subnet: str) -> _Network | None:
        """The count of a subnet's principals, new if need be; None for a subnet that is no
        network (``unknown``...), which has no share: its clients need not be neighbours."""
        network = self._networks.get(subnet)
        if network is None and _is_network(subnet):
            network = self._networks[subnet] = _Network(subnet)
        return network

    def _forget(self, p: _Principal) -> None:
        """An evicted (or expired) principal no longer counts for its subnet."""
        network = p.network
        if network is not None:
            p.network = None
            network.count -= 1
            if not network.count:
                del self._networks[network.key]

    def _sweep(self, now: float) -> None:
        """Forget the expired principals, the least recently written of each segment (both
        are in the order they were written, to within LRU_SLACK): what a subnet holds counts
        its live principals. Asked only when a subnet is at its share; each principal is
        swept once."""
        ttl = self.ttl
        for segment in (self._principals, self._banded):
            while segment:
                p = next(iter(segment.values()))
                if now - p.touched <= ttl:
                    break
                segment.popitem(last=False)
                self._forget(p)

    def _save_cohort(
        self,
        key: str,
        landmark: float,
        now: float,
        epoch: int,
        weight: float,
        increments: list[float],
        member: int | None,
        create: bool = True,
    ) -> None:
        cohorts = self._cohorts
        c = cohorts.get(key)
        if c is None:
            if not create:
                return
            c = cohorts[key] = _Cohort(landmark, now, epoch)
            if len(cohorts) > self.max_subjects:
                cohorts.popitem(last=False)
        elif now - c.touched > self.ttl:
            cohorts.move_to_end(key)
            c.reset(landmark, now, epoch)
        elif now - c.touched >= LRU_SLACK:
            cohorts.move_to_end(key)
            c.touched = now
        if increments:
            if c.landmark is not landmark:
                c.landmark = _renormalise(c.counters, c.landmark, landmark, self._rate)
            counters = c.counters
            requests, behaviour, wander = increments  # COHORT
            counters[C_REQ] += requests * weight
            counters[C_BEH] += behaviour * weight
            counters[C_WAN] += wander * weight
        if member is not None and (epoch != c.epoch or not c.members >> member & 1):
            c.epoch, c.members, c.members_prev = _marked(
                c.epoch, c.members, c.members_prev, epoch, member
            )


#: Seconds another worker's clock may run ahead of this one's: a last-seen time further ahead
#: (a worker whose clock stepped forward; Redis keeps the latest) is not taken, or this
#: worker's next requests would come "before" it and count no gap until its clock caught up.
SKEW = 60.0


@dataclass(slots=True)
class Remote:
    """A state as Redis holds it (read at one time), for ``absorb_*``: counters are not here,
    the caller turns them into a correction."""

    current: int = 0  # bits of the window of the time it was read
    previous: int = 0  # and of the window before
    entries: Sequence[bytes] = ()  # a ring or a bucket, newest first
    newer: Sequence[bytes] = ()  # pushed here since it was read, newest first
    last_seen: float | None = None
    max_tokens: int = -1
    temperature: float = -1.0
    band: Band | None = None
    restored: Sequence[float] = ()  # the counters' part a repair put back (``Update.restore``)


def _correct(counters: array[float], correction: list[float], weight: float) -> None:
    for i, value in enumerate(correction):
        if value:
            # float32 here and float64 in Redis differ by rounding: never below zero
            counters[i] = max(counters[i] + value * weight, 0.0)


def _merged(
    state_epoch: int,
    current: int,
    previous: int,
    epoch: int,
    their_current: int,
    their_previous: int,
) -> tuple[int, int, int]:
    """A bitmap pair with another copy's (read in window ``epoch``) OR-ed in."""
    if epoch == state_epoch:
        return epoch, current | their_current, previous | their_previous
    if epoch == state_epoch + 1:
        return epoch, their_current, current | their_previous
    if epoch > state_epoch:
        return epoch, their_current, their_previous
    return state_epoch, current, previous  # read behind this store's clock: nothing newer


def _pushed_all(
    entries: Sequence[bytes], newer: Sequence[bytes], cap: int
) -> tuple[bytes, _Layout | None]:
    """A list's blob holding ``newer`` then ``entries``, at most ``cap`` (as ``_push`` keeps
    them)."""
    kept = (*newer, *entries)[:cap]
    if not kept:
        return b"", None
    width = len(kept[0])
    if all(len(e) == width for e in kept):
        layout = _layout(width)
        if layout is not None:
            return b"".join(kept), layout
    return b"".join(_FRAME.pack(len(e)) + e for e in kept), None


def _seen(state_epoch: int, current: int, previous: int, epoch: int) -> int:
    """A distinct-count bitmap pair read in window ``epoch``: this window and the one before
    (``_marked`` writes them)."""
    if epoch == state_epoch:
        return current | previous
    if epoch == state_epoch + 1:
        return current
    if epoch == state_epoch - 1:  # a reader behind the writers' clock: the window it knows
        return previous
    return 0


def _marked(
    state_epoch: int, current: int, previous: int, epoch: int, bit: int
) -> tuple[int, int, int]:
    """A distinct-count bitmap pair (the state's window and the one before) with ``bit`` set
    in window ``epoch``: ``(state epoch, current, previous)`` after."""
    mask = _BITS[bit] if bit < len(_BITS) else 1 << bit
    if epoch == state_epoch:
        return state_epoch, current | mask, previous
    if epoch == state_epoch + 1:
        return epoch, mask, current
    if epoch > state_epoch:
        return epoch, mask, 0
    if epoch == state_epoch - 1:  # a writer behind the others' clock: the window it knows
        return state_epoch, current, previous | mask
    return state_epoch, current, previous


def _load_cohort(
    c: _Cohort | None, now: float, epoch: int, store: MemoryRiskStore
) -> tuple[list[float], int]:
    if c is None or now - c.touched > store.ttl:
        return _COHORT_ZEROS.tolist(), 0
    factor = exp2((c.landmark - now) * store._rate)
    members = _seen(c.epoch, c.members, c.members_prev, epoch)
    return [v * factor for v in c.counters.tolist()], members


def _renormalise(counters: array[float], old: float, new: float, rate: float) -> float:
    """Rescale a cohort's counters from landmark ``old`` to ``new`` (same values); returns
    ``new``."""
    factor = exp2((old - new) * rate)
    counters[:] = array("f", [v * factor for v in counters.tolist()])
    return new


def _renormalise_principal(counters: array[float], old: float, new: float, rate: float) -> float:
    """``_renormalise`` for a principal's counters, which its standing follows: the score and
    the manner are no counters, and when it was scored is a time relative to the landmark."""
    factor = exp2((old - new) * rate)
    values = counters.tolist()
    values[:_DECAYED] = [v * factor for v in values[:_DECAYED]]
    values[_SCORED] += old - new
    counters[:] = array("f", values)
    return new


def _intern(values: dict[Any, Any], value: Any) -> Any:
    shared = values.get(value)
    if shared is None:
        if len(values) < _MAX_INTERNED:
            values[value] = value
        return value
    return shared


def _split(blob: bytes, layout: _Layout | None) -> Sequence[bytes]:
    if layout is not None:
        return layout.unpack[len(blob) // layout.width](blob)
    entries = []
    offset = 0
    while offset < len(blob):
        (size,) = _FRAME.unpack_from(blob, offset)
        offset += _FRAME.size
        entries.append(blob[offset : offset + size])
        offset += size
    return entries


def _push(
    blob: bytes, layout: _Layout | None, entry: bytes, cap: int
) -> tuple[bytes, _Layout | None]:
    """``entry`` put first, at most ``cap`` kept (a principal's ring, a template bucket)."""
    if layout is not None and len(entry) == layout.width:  # the usual case: one width
        keep = layout.width * (cap - 1)
        return (entry + blob if len(blob) <= keep else entry + blob[:keep]), layout
    entries = (entry, *_split(blob, layout)[: cap - 1])
    width = len(entry)
    if all(len(e) == width for e in entries):
        layout = _layout(width)
        if layout is not None:
            return b"".join(entries), layout
    return b"".join(_FRAME.pack(len(e)) + e for e in entries), None


def _layout(width: int) -> _Layout | None:
    layout = _LAYOUTS.get(width)
    if layout is None and width and len(_LAYOUTS) < _MAX_LAYOUTS:
        layout = _LAYOUTS[width] = _Layout(width)
    return layout
