"""What a worker already knows it will refuse, so that it answers before reading the body.

Two memos, learnt from the answers that the storage and the risk engine gave earlier requests,
and consulted before a request's body is read (one memo lookup per limit, and none while
both are empty; no I/O: the usual path keeps its round trips):

- *Refused*: a request bucket (a route's limit that every request costs the same) refused
  until ``t``. GCRA admits nothing of that cost before ``t``: other requests only push a
  bucket's TAT later, and request buckets are never settled. Exact, but for a bucket that
  the storage drops (the memory backend's LRU, a flushed Redis): then a refusal outlasts it by
  at most one ``retry_after``, which for a request bucket is at most ``cost * interval``.
- *Bands*: a principal whose last full assessment put it in a band that refuses (challenge,
  block). Hysteresis holds a band for its ``cooldown`` whatever the score does, so in that
  time the band can only rise; the memo is still kept at most ``RECHECK`` seconds, after which
  the next request is assessed in full again (its evidence counted, the band renewed or left),
  and a band wiped meanwhile (state deleted by an operator, evicted) is refused that much
  longer at most.

Each keeps the latest expiry it holds (``latest``): once that is past, nothing it remembers
refuses, so the middleware skips it altogether (as cheap as an empty memo; entries are
otherwise dropped only when their subject returns), and the next ``learn`` starts it afresh.

Both are bounded (``MAX_ENTRIES``, ``MAX_BANDED``; the oldest dropped first) and keyed by the
hash of what they remember (SipHash, keyed per process): an attacker rotating keys, or sending
long account ids, neither grows them nor makes them hold its strings. Forgetting is always safe:
the request is then decided the usual way, its body read.
"""

from __future__ import annotations

from collections import OrderedDict

from guardrail.backends.base import BucketState, Outcome, refused_state
from guardrail.identity import Subject
from guardrail.limits import CompiledLimit, CompiledRoute
from guardrail.signals.engine import Assessment
from guardrail.signals.state import Keys

#: Entries of each memo, per worker: refused buckets (~100 bytes each), and principals in a
#: refusing band (~500 bytes each, and there are few).
MAX_ENTRIES = 16_384
MAX_BANDED = 4_096
#: Seconds a principal's band is believed without a new full assessment.
RECHECK = 10.0
#: The bands refused whatever the request (a challenge unless it shows a clearance).
REFUSING = frozenset(("challenge", "block"))


class Refused:
    """Request buckets refused until a time, by the hash of (subject key, bucket name)."""

    __slots__ = ("latest", "max_entries", "until")

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.until: OrderedDict[int, float] = OrderedDict()
        self.latest = float("-inf")  # no entry refuses at or after this

    def __len__(self) -> int:
        return len(self.until)

    def learn(self, route: CompiledRoute, subject: Subject, outcome: Outcome, now: float) -> None:
        """Remember the route's request buckets that refused ``outcome`` (the route's own
        limits come first in it; token buckets are not remembered: a smaller reservation may
        pass where this one did not)."""
        if now >= self.latest and self.until:
            self.until.clear()  # every entry has expired: none is worth its room
        for lim, state in zip(route.charged, outcome.states, strict=False):
            if state.retry_after > 0:
                key = hash((lim.subject_key(subject), lim.name))
                until = self.until[key] = now + state.retry_after
                if until > self.latest:
                    self.latest = until
                self.until.move_to_end(key)  # the oldest dropped first: the least recently learnt
                if len(self.until) > self.max_entries:
                    self.until.popitem(last=False)

    def refusing(
        self, route: CompiledRoute, subject: Subject, now: float
    ) -> tuple[CompiledLimit, BucketState] | None:
        """The route's request limit known to refuse ``subject`` longest at ``now``, and its
        state as the storage would report it."""
        found: tuple[CompiledLimit, float] | None = None
        until_of = self.until
        for lim in route.charged:
            key = hash((lim.subject_key(subject), lim.name))
            until = until_of.get(key)
            if until is None:
                continue
            if until <= now:
                del until_of[key]
            elif found is None or until > found[1]:
                found = (lim, until)
        if found is None:
            return None
        lim, until = found
        interval, cost = lim.interval, lim.cost
        tau = lim.burst * interval
        # retry_after = TAT + cost*interval - tau - now, so the TAT as the refusal left it:
        tat_after = until - now + tau - cost * interval
        return lim, refused_state(tat_after, tat_after + cost * interval, interval, tau)


class Bands:
    """Principals in a refusing band, by the hash of the principal: the assessment that put
    it there (its score and signals, for the audit record; nothing that holds client strings)
    and until when it is believed."""

    __slots__ = ("hold", "known", "latest", "max_entries")

    def __init__(self, cooldown: float, max_entries: int = MAX_BANDED) -> None:
        self.hold = min(RECHECK, cooldown)
        self.max_entries = max_entries
        self.known: OrderedDict[int, tuple[Assessment, float]] = OrderedDict()
        self.latest = float("-inf")  # no principal is believed in a band at or after this

    def __len__(self) -> int:
        return len(self.known)

    def learn(self, assessment: Assessment, now: float) -> None:
        """Where a full assessment placed its principal (after hysteresis)."""
        threshold = assessment.threshold
        if threshold is None or threshold.action not in REFUSING:
            if self.known:
                self.known.pop(hash(assessment.keys.principal), None)
            return
        if self.hold > 0:
            if now >= self.latest and self.known:
                self.known.clear()  # every entry has expired
            key = hash(assessment.keys.principal)
            kept = Assessment(
                _NO_KEYS, assessment.score, assessment.values, assessment.points, threshold, None
            )
            self.known[key] = (kept, now + self.hold)
            self.latest = max(self.latest, now + self.hold)
            self.known.move_to_end(key)
            if len(self.known) > self.max_entries:
                self.known.popitem(last=False)

    def band(self, principal: str, now: float) -> Assessment | None:
        """The assessment that put ``principal`` in a refusing band it is still known to be in."""
        key = hash(principal)
        known = self.known.get(key)
        if known is None:
            return None
        if known[1] <= now:
            del self.known[key]
            return None
        return known[0]


_NO_KEYS = Keys("", "", None, ())
