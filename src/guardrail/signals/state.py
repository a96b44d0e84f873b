"""What the risk engine keeps between requests, and the contract every risk store honours.

Everything is a *commutative* update, so that workers on many hosts can apply theirs to one
Redis without losing any to a race: decayed counters are kept in forward-decay form (an
increment ``x`` at time ``t`` adds ``x · 2^((t - L)/h)`` to the stored sum, for a landmark
``L`` kept with them; the value at ``now`` is the sum times ``2^(-(now - L)/h)``), distinct
counts are bits OR-ed into per-window bitmaps, recent prompts are pushed onto capped lists.
Reads may be a request stale under concurrency; no increment is ever lost. A few fields are
last-write-wins by nature (the hysteresis band, the last max_tokens and temperature) and
last_seen keeps the latest time written.

Four kinds of state, each keyed by a string the engine builds:

- a *principal* (the most specific identity of a request: account, else API key hash, else IP):
  ``PRINCIPAL`` counters, its last-seen time and last request parameters, a ring of its recent
  prompt sketches, the subnets it was seen from (a bitmap per window), its hysteresis band.
  Only a request the limits admit creates one (``Update.create``): refused requests would
  otherwise let one client buy state without bound;
- a *subnet* and a client *fingerprint*: ``COHORT`` counters and the principals seen in it
  (a bitmap per window);
- a *template bucket* (one per sketch value, and one per frame of a prompt that asks for
  reasoning): the recent prompt sketches of every principal that had that value among its
  smallest, or sent that frame from that network, for the cross-account index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

#: Decayed counters of a principal, in this order in ``Snapshot.principal`` and
#: ``Update.principal``. Hour counters ``h0``…``h23`` follow (UTC hour of each request).
PRINCIPAL = (
    "req",  # requests
    "prm",  # prompts long enough to sketch
    "tpl",  # prompts near-duplicate (not identical) of one in the principal's own ring
    "rsn",  # prompts matching a reasoning-extraction pattern
    "xac",  # prompts near-duplicate of another principal's recent prompt
    "shp",  # requests with an extraction-shaped parameter set (logprobs, n>1, sweeps…)
    "ref",  # answers 403/429/4xx
    "fch",  # failed challenges
    "gn",  # inter-arrival gaps counted
    "gs",  # their sum (seconds)
    "gq",  # their sum of squares
    "trs",  # prompts that both ask for reasoning and are near-duplicates (own or others')
    "pas",  # challenges passed
    "frm",  # prompts asking for reasoning in a frame that other principals on the network sent
    *(f"h{hour}" for hour in range(24)),
)
(REQ, PRM, TPL, RSN, XAC, SHP, REF, FCH, GN, GS, GQ, TRS, PAS, FRM) = range(14)
HOUR0 = 14  # index of h0

#: Decayed counters of a subnet or a fingerprint cohort.
COHORT = (
    "req",  # requests from the cohort
    "beh",  # sum over those requests of the sender's behaviour score (0-1)
    "wan",  # sum over those requests of the sender's network-spread value (0-1)
)
C_REQ, C_BEH, C_WAN = range(3)

#: Recent prompt sketches kept per principal, and per template bucket.
RING_SIZE = 8
BUCKET_SIZE = 8
#: Bits of the distinct-count bitmaps (linear counting): subnets per principal, principals
#: per cohort.
SPREAD_BITS = 64
COHORT_BITS = 256


class Band(NamedTuple):
    """Hysteresis state: the threshold band a principal is in and since when it held."""

    level: int  # index into the policy's thresholds + 1; 0 is no band
    held: float  # last time the score was at or above the band's exit line


class Keys(NamedTuple):
    """The state one request touches."""

    principal: str  # "a:<account>" | "k:<key hash>" | "i:<ip>"
    subnet: str  # "s:<cidr>"
    fingerprint: str | None  # "f:<hex>"; None: no fingerprint (no headers to take one from)
    templates: tuple[str, ...]  # template bucket ids ("t:<hex>"); empty without a sketch


@dataclass(slots=True)
class Snapshot:
    """The state as read at ``now``: counters already decayed to ``now``."""

    principal: list[float]  # len(PRINCIPAL)
    last_seen: float | None  # None: never seen (or expired)
    last_max_tokens: int  # -1: none seen
    last_temperature: float  # -1.0: none seen
    ring: list[bytes]  # newest first, at most RING_SIZE packed sketches (may be left empty
    # when Keys.templates is: without a sketch there is nothing to compare)
    spread: int  # subnet bitmap over the current and previous window, OR-ed
    band: Band | None
    subnet: list[float]  # len(COHORT)
    subnet_members: int  # principal bitmap of the subnet, current | previous window
    fingerprint: list[float]  # len(COHORT); zeros when Keys.fingerprint is None
    fingerprint_members: int
    neighbours: list[bytes]  # entries of every template bucket, each a packed (tag, sketch)
    known: bool = True  # the principal had state (False: this request would create it)


class Standing(NamedTuple):
    """What a store that keeps state in process can tell of a principal without I/O: enough
    for the engine to decide a request from the principal's last assessment."""

    evidence: float  # prompts analysed (decayed)
    last_seen: float | None
    last_max_tokens: int  # -1: none seen
    last_temperature: float  # -1.0: none seen
    spread: int  # subnet bitmap over the current and previous window, OR-ed
    level: int  # hysteresis band (0: none)
    score: float  # the last assessment's score
    manner: float  # the last assessment's behaviour score (what it adds to its cohorts)
    scored: float  # when that assessment ran (-inf: never)


@dataclass(slots=True)
class Update:
    """What one request adds. Zero increments may be skipped by a store."""

    now: float
    principal: list[float]  # increments, len(PRINCIPAL)
    max_tokens: int = -1  # the request's, if any (replaces last_max_tokens when >= 0)
    temperature: float = -1.0  # likewise
    seen: bool = True  # False for after-the-fact updates (refusals): last_seen is left alone
    ring: bytes | None = None  # pushed on the principal's ring
    spread_bit: int | None = None  # set in the principal's subnet bitmap (current window)
    band: Band | None = None  # replaces the band when not None
    subnet: list[float] = field(default_factory=list)  # increments, len(COHORT) or empty
    subnet_bit: int | None = None  # the principal's bit in the subnet's member bitmap
    fingerprint: list[float] = field(default_factory=list)
    fingerprint_bit: int | None = None
    template: bytes | None = None  # pushed on every template bucket of Keys.templates
    score: float = -1.0  # a full assessment's score and behaviour score, and its time, are
    manner: float = 0.0  # kept for ``standing`` when >= 0 (stores without one may drop them)
    # False: a request the limits refused, which buys no state: the principal, its fingerprint
    # cohort and template buckets are written only if they exist (a subnet, one per network,
    # always is)
    create: bool = True
    # True: a shared store's repair after Redis lost the state (evicted, failed over):
    # ``principal`` and ``subnet`` are what one worker held less what Redis counted since,
    # which the counters' restored part is raised to, not added to: every worker that held the
    # state repairs the same loss, and it must count once (Redis only)
    restore: bool = False
    # How long ``band`` holds against a lower one (the policy's cooldown). A store several
    # writers share (Redis) keeps a band against a lower one whose ``held`` is within it: the
    # engine steps down only once a band's hold has run out, so such a write comes from a copy
    # that had not seen the band yet. 0: the last write wins (one writer, as in memory).
    hold: float = 0.0


class RiskStore(Protocol):
    """Where risk state lives. Parameters fixed at construction: ``half_life`` (seconds) decays
    every counter; ``window`` (seconds) is the span of one distinct-count bitmap (two are
    read); state untouched for ``ttl`` seconds may be forgotten; template-bucket entries older
    than ``window`` may be dropped; the memory store keeps at most ``max_subjects`` of each
    kind of state, the least recently written evicted first. Bits are below SPREAD_BITS or
    COHORT_BITS, and ``ttl`` is at least ``2 * window`` (bitmaps must not outlive the rest)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, keys: Keys, now: float) -> Snapshot:
        """Read everything ``keys`` names, decayed to ``now``; absent state reads as zeros."""
        ...

    async def save(self, keys: Keys, update: Update) -> None:
        """Apply ``update`` at ``update.now``, commutatively (see the module docstring); state
        that is not there is created only if ``update.create``."""
        ...


@runtime_checkable
class LocalRiskStore(RiskStore, Protocol):
    """A store in process (memory): it can tell a principal's standing without I/O, and fold
    a request decided from that standing straight into the state."""

    def standing(self, principal: str, now: float) -> Standing | None:
        """None: the principal is unknown (or expired)."""
        ...

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
        """What ``save`` would apply for such a request: one request, its gap (within a
        session) and hour, one prompt if ``prompt``; its parameters; ``spread_bit`` in the
        principal's subnet bitmap; ``cohort`` (COHORT increments) and ``member_bit`` in its
        subnet and fingerprint (if that cohort exists: the limits have not spoken yet);
        ``ring`` pushed on its ring, ``template`` on every bucket of ``keys.templates``."""
        ...

    def push_template(self, keys: Keys, entry: bytes, now: float) -> None:
        """Push ``entry`` on every bucket of ``keys.templates`` (a folded request's, once
        admitted)."""
        ...

    def comparables(self, keys: Keys, now: float) -> tuple[list[bytes], list[bytes]]:
        """``load(keys, now)``'s ring and neighbours."""
        ...
