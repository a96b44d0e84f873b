"""What a worker knows it will refuse before reading a body (early.py): exact for request
buckets, bounded in time for bands, bounded in size for both."""

from __future__ import annotations

import pytest

from guardrail.backends.base import BucketState, Outcome
from guardrail.backends.memory import MemoryStorage
from guardrail.early import RECHECK, Bands, Refused
from guardrail.identity import Subject
from guardrail.limits import RouteTable
from guardrail.policy import Policy
from guardrail.signals.engine import ORDER, Assessment
from guardrail.signals.state import Keys

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: inference
    match: {path: /v1/}
    inspect: openai
    limits:
      - {per: api_key, rate: 10/minute, burst: 3}
      - {per: ip, rate: 30/minute, burst: 10, cost: 2}
      - {per: api_key, rate: 1000/minute, cost: tokens}
thresholds:
  - {score: 50, action: throttle, tier: slow}
  - {score: 75, action: challenge}
  - {score: 95, action: block}
tiers:
  slow:
    limits: [{per: api_key, rate: 1/minute}]
"""
T0 = 1_800_000_000.0


def subject(key: str = "k:one") -> Subject:
    return Subject(api_key=key, account=None, ip="203.0.113.7", subnet="203.0.113.0/24")


@pytest.fixture
def policy() -> Policy:
    return Policy.from_string(POLICY)


async def test_a_refused_request_bucket_is_refused_exactly_as_the_storage_would(policy: Policy):
    route = RouteTable(policy.routes).routes[0]
    storage, refusals, who = MemoryStorage(), Refused(), subject()
    for _ in range(3):
        assert (await storage.charge(route.charges(who), T0)).allowed
    refused = await storage.charge(route.charges(who), T0)
    assert not refused.allowed
    refusals.learn(route, who, refused, T0)
    assert len(refusals) == 1  # the api_key bucket; the ip bucket had room
    for later in (0.0, 1.0, 5.9):
        found = refusals.refusing(route, who, T0 + later)
        assert found is not None
        lim, state = found
        storage_says = await storage.charge(route.charges(who), T0 + later)
        assert lim is route.charged[0] and not storage_says.allowed
        assert state.remaining == storage_says.states[0].remaining
        assert state.retry_after == pytest.approx(storage_says.states[0].retry_after)
        assert state.reset_after == pytest.approx(storage_says.states[0].reset_after)
    assert refusals.refusing(route, who, T0 + 6.0) is None  # one unit back: admitted again
    assert (await storage.charge(route.charges(who), T0 + 6.0)).allowed
    assert len(refusals) == 0  # the expired entry is gone
    assert refusals.refusing(route, subject("k:other"), T0) is None


async def test_a_costlier_bucket_and_the_longest_refusal_speak(policy: Policy):
    route = RouteTable(policy.routes).routes[0]
    storage, refusals, who = MemoryStorage(), Refused(), subject()
    for i in range(5):  # the ip bucket (burst 10, cost 2) empties with the api_key's
        await storage.charge(route.charges(subject(f"k:{i}")), T0)
    refused = await storage.charge(route.charges(who), T0)
    assert not refused.allowed
    refusals.learn(route, who, refused, T0)
    found = refusals.refusing(route, who, T0)
    assert found is not None and found[0] is route.charged[1]
    assert found[1].retry_after == pytest.approx(refused.states[1].retry_after)


def test_token_buckets_are_not_remembered(policy: Policy):
    route = RouteTable(policy.routes).routes[0]
    # the route's request buckets admitted; the token bucket (third) refused this reservation
    outcome = Outcome(False, (BucketState(2, 6, 0), BucketState(9, 2, 0), BucketState(0, 9, 4)))
    refusals = Refused()
    refusals.learn(route, subject(), outcome, T0)
    assert len(refusals) == 0


async def test_a_reservation_larger_than_its_budget_teaches_nothing(policy: Policy):
    """No wait admits it, and it says nothing of the subject's next, smaller request: the
    storage's real refusal leaves the memo empty (and skipped: ``latest`` unmoved)."""
    route = RouteTable(policy.routes).routes[0]
    storage, refusals, who = MemoryStorage(), Refused(), subject()
    budget = route.metered[0]  # 1000/minute: at most 1,000 tokens at once
    larger = [*route.charges(who), budget.charge(who)._replace(cost=1001)]
    outcome = await storage.charge(larger, T0)
    assert not outcome.allowed and outcome.states[2].retry_after > 0
    refusals.learn(route, who, outcome, T0)
    assert len(refusals) == 0 and refusals.latest == float("-inf")
    smaller = [*route.charges(who), budget.charge(who)._replace(cost=1000)]
    assert (await storage.charge(smaller, T0)).allowed


def test_refusals_are_bounded_the_oldest_dropped_first(policy: Policy):
    route = RouteTable(policy.routes).routes[0]
    outcome = Outcome(False, (BucketState(0, 12, 6), BucketState(9, 2, 0)))
    refusals = Refused(max_entries=100)
    for i in range(1000):  # an attacker rotating keys
        refusals.learn(route, subject(f"k:{i}"), outcome, T0)
    assert len(refusals) == 100
    assert refusals.refusing(route, subject("k:0"), T0) is None  # forgotten: decided as usual
    assert refusals.refusing(route, subject("k:999"), T0) is not None


def assessment(policy: Policy, level: int, principal: str = "k:one") -> Assessment:
    threshold = policy.thresholds[level - 1] if level else None
    keys = Keys(principal, "s:203.0.113.0/24", "f:ab", ("t:1",))
    score = [0.0, 60.0, 80.0, 99.0][level]
    return Assessment(keys, score, [0.5] * len(ORDER), [1.0] * len(ORDER), threshold, None)


def test_a_refusing_band_is_believed_for_a_while_then_rechecked(policy: Policy):
    bands = Bands(cooldown=900.0)
    bands.learn(assessment(policy, 3), T0)
    known = bands.band("k:one", T0 + RECHECK - 0.1)
    assert known is not None and known.threshold is not None
    assert (known.threshold.action, known.score) == ("block", 99.0)
    assert known.signals  # what the audit record of an early 403 shows
    assert known.keys.principal == ""  # no client string kept
    assert bands.band("k:two", T0) is None
    assert bands.band("k:one", T0 + RECHECK) is None  # the next request is assessed in full
    assert len(bands) == 0


def test_a_band_that_does_not_refuse_forgets_the_principal(policy: Policy):
    bands = Bands(cooldown=900.0)
    bands.learn(assessment(policy, 2), T0)
    assert bands.band("k:one", T0) is not None  # challenge
    bands.learn(assessment(policy, 1), T0 + 1)  # stepped down to throttle
    assert bands.band("k:one", T0 + 1) is None
    bands.learn(assessment(policy, 3), T0 + 2)
    bands.learn(assessment(policy, 0), T0 + 3)  # out of every band
    assert bands.band("k:one", T0 + 3) is None


def test_bands_never_outlast_the_cooldown_and_are_bounded(policy: Policy):
    assert Bands(cooldown=2.0).hold == 2.0
    none = Bands(cooldown=0.0)  # no hysteresis: a band holds only as long as its score
    none.learn(assessment(policy, 3), T0)
    assert len(none) == 0
    bands = Bands(cooldown=900.0, max_entries=10)
    for i in range(100):
        bands.learn(assessment(policy, 3, f"k:{i}"), T0)
    assert len(bands) == 10 and bands.band("k:99", T0) is not None


def test_the_latest_expiry_says_when_nothing_remembered_refuses(policy: Policy):
    """The middleware skips the memos once ``now`` is past ``latest``: that must never skip an
    entry still refusing, and the next lesson drops the expired ones."""
    route = RouteTable(policy.routes).routes[0]
    refusals = Refused()
    assert refusals.latest <= T0  # never refused: skipped
    short = Outcome(False, (BucketState(0, 6, 2), BucketState(9, 2, 0)))
    long = Outcome(False, (BucketState(0, 12, 8), BucketState(9, 2, 0)))
    refusals.learn(route, subject("k:long"), long, T0)
    refusals.learn(route, subject("k:short"), short, T0 + 1)  # a later, shorter refusal
    assert refusals.latest == T0 + 8
    for at in (T0, T0 + 2.9, T0 + 7.9):
        assert at < refusals.latest and refusals.refusing(route, subject("k:long"), at)
    assert refusals.refusing(route, subject("k:long"), T0 + 8) is None
    assert refusals.latest <= T0 + 8  # past it: nothing can refuse, the check is skipped
    assert len(refusals) == 1  # k:short's entry, expired, waits until the next lesson ...
    refusals.learn(route, subject("k:new"), short, T0 + 20)
    assert len(refusals) == 1 and refusals.latest == T0 + 22  # ... which drops it

    bands = Bands(cooldown=900.0)
    assert bands.latest <= T0
    bands.learn(assessment(policy, 3, "k:a"), T0)
    bands.learn(assessment(policy, 3, "k:b"), T0 - 1)  # a request that began earlier
    assert bands.latest == T0 + RECHECK
    assert bands.band("k:b", T0 + RECHECK - 1.1) is not None
    assert bands.latest <= T0 + RECHECK
    bands.learn(assessment(policy, 3, "k:c"), T0 + 60)
    assert len(bands) == 1  # the expired a and b dropped
    assert bands.band("k:c", T0 + 60) is not None
