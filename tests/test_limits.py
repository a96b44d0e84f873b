"""limits.py: the route table (first match wins; ``unmatched:`` names the route for the rest),
which bucket speaks for a refusal, and a request larger than a whole bucket (no wait admits it:
it says so instead of a Retry-After)."""

from __future__ import annotations

import math

import pytest

from guardrail import Policy
from guardrail.backends.base import BucketCharge, BucketState, Outcome
from guardrail.backends.memory import MemoryStorage
from guardrail.errors import PolicyError
from guardrail.limits import (
    CompiledLimit,
    RouteTable,
    as_reported,
    compile_limit,
    exceeds,
    limit_hit,
)
from guardrail.policy import Limit

POLICY = """
version: 1
routes:
  - name: health
    match: {path: "^/health$"}
    exempt: true
  - name: chat
    match: {path: "^/v1/chat/completions$", methods: [POST]}
    limits: [{per: ip, rate: 10/minute, burst: 3}]
"""


def table(unmatched: str = "") -> RouteTable:
    policy = Policy.from_string(POLICY + (f"unmatched: {unmatched}\n" if unmatched else ""))
    return RouteTable(policy.routes, policy.unmatched)


def test_first_match_wins_and_methods_count() -> None:
    routes = table()
    assert routes.match("/v1/chat/completions", "POST").name == "chat"  # type: ignore[union-attr]
    assert routes.match("/v1/chat/completions", "GET") is None
    assert routes.match("/chat/completions", "POST") is None


def test_a_method_matches_whatever_its_case() -> None:
    # Django and Quart serve `post` as POST: it must not dodge a POST-only route
    assert routes_named(table().match("/v1/chat/completions", "post")) == "chat"


def routes_named(route: object) -> str | None:
    return getattr(route, "name", None)


def test_pass_is_the_default() -> None:
    routes = table()
    assert routes.default is None and not routes.refuse


def test_a_default_route_is_the_named_one_with_its_buckets() -> None:
    routes = table("chat")
    assert routes.default is routes.routes[1]
    assert [lim.name for lim in routes.default.charged] == ["chat:0"]  # shared with /v1/...
    assert not routes.refuse


def test_refuse() -> None:
    routes = table("refuse")
    assert routes.refuse and routes.default is None


def test_a_route_name_the_policy_lacks_is_refused() -> None:
    policy = Policy.from_string(POLICY)
    with pytest.raises(ValueError, match="names no route"):
        RouteTable(policy.routes, "caht")


def limit(name: str, **spec: object) -> CompiledLimit:
    return compile_limit(name, Limit.model_validate({"per": "api_key", **spec}), name)


REQUESTS = limit("requests", rate="1/second", burst=1)
TOKENS = limit("tokens", rate="1000/minute", burst=1000, cost="tokens")
TIER_TOKENS = limit("tier", rate="100/minute", burst=100, cost="tokens")


def refused(*states: BucketState) -> Outcome:
    return Outcome(False, states)


FULL = BucketState(1000, 0.0, 72.0)  # a full budget refusing 2,200 tokens: 1,200 * 60 ms
EMPTY = BucketState(0, 30.0, 30.0)  # a request bucket that admits again in 30 s
FITS = BucketState(1, 0.0, 0.0)  # a request bucket that would have admitted


@pytest.mark.parametrize(
    ("lim", "tokens", "expected"),
    [
        (TOKENS, 1000, False),  # exactly the budget: fits a full bucket
        (TOKENS, 1001, True),
        (REQUESTS, 5000, False),  # a request limit costs its cost, not the tokens
        (limit("weighted", rate="10/minute", burst=10, cost=10), 0, False),
    ],
)
def test_exceeds_compares_the_request_with_the_whole_bucket(
    lim: CompiledLimit, tokens: int, expected: bool
) -> None:
    assert exceeds(lim, tokens) is expected


def test_a_request_larger_than_the_budget_gets_no_retry_after() -> None:
    hit = limit_hit((REQUESTS, TOKENS), refused(FITS, FULL), tokens=2200)
    assert hit is not None
    assert (hit.retry_after, hit.tokens, hit.burst, hit.remaining) == (None, 2200, 1000, 1000)
    assert hit.as_dict() == {
        "per": "api_key",
        "rate": "1000/minute",
        "remaining": 1000,
        "retry_after": None,
        "tokens": 2200,
        "capacity": 1000,
    }


def test_the_bucket_it_can_never_fit_speaks_even_when_another_asks_a_longer_wait() -> None:
    # Waiting 30 s for the request bucket would only meet the budget's refusal again.
    short = BucketState(1000, 0.0, 0.06)  # 1,001 tokens: one over, a 60 ms "wait"
    hit = limit_hit((REQUESTS, TOKENS), refused(EMPTY, short), tokens=1001)
    assert hit is not None and hit.retry_after is None and hit.tokens == 1001


def test_a_tier_budget_counts_like_the_routes() -> None:
    fits_route = BucketState(1000, 0.0, 0.0)
    over_tier = BucketState(100, 0.0, 12.0)  # 300 tokens against a tier budget of 100
    hit = limit_hit((REQUESTS, TOKENS, TIER_TOKENS), refused(FITS, fits_route, over_tier), 300)
    assert hit is not None and (hit.retry_after, hit.rate, hit.burst) == (None, "100/minute", 100)


def test_an_ordinary_refusal_still_says_how_long_to_wait() -> None:
    hit = limit_hit((REQUESTS, TOKENS), refused(EMPTY, BucketState(0, 50.0, 0.5)), tokens=500)
    assert hit is not None and hit.retry_after == 30
    assert "capacity" not in hit.as_dict()
    admitted = limit_hit((REQUESTS,), Outcome(True, (FITS,)))
    assert admitted is not None and admitted.retry_after == 0


def test_the_headers_report_the_budget_it_outgrew_as_it_is_not_as_a_wait() -> None:
    outcome = refused(EMPTY, FULL)
    reported = as_reported((REQUESTS, TOKENS), outcome, tokens=2200)
    assert reported.states == (EMPTY, FULL._replace(retry_after=math.inf))
    assert not reported.allowed
    # Nothing to change: the same object back (refusals that fit, and admissions)
    ordinary = refused(EMPTY, BucketState(0, 50.0, 0.5))
    assert as_reported((REQUESTS, TOKENS), ordinary, tokens=500) is ordinary
    admitted = Outcome(True, (FITS,))
    assert as_reported((REQUESTS,), admitted, tokens=0) is admitted


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"rate": "10/minute", "cost": 11}, "a cost of at most 10"),
        ({"rate": "10/minute", "burst": 2, "cost": 3}, "a cost of at most 2"),
        ({"rate": "0/minute"}, "above zero"),
        ({"rate": "10/minute", "burst": 0}, "a whole number from 1"),
    ],
)
def test_a_request_limit_no_request_could_pass_is_refused_with_the_policy(
    spec: dict[str, object], expected: str
) -> None:
    """The other ways to a bucket no request fits (a cost over the capacity, a zero rate or
    burst) never load: only a token reservation can outgrow its budget at run time."""
    text = (
        "version: 1\nsecret: env:GUARDRAIL_TEST_SECRET\nroutes:\n"
        "  - {name: r, match: {path: /}, limits: [{per: ip, "
        + ", ".join(f"{k}: {v}" for k, v in spec.items())
        + "}]}\n"
    )
    with pytest.raises(PolicyError) as raised:
        Policy.from_string(text)
    assert expected in str(raised.value)


async def test_exceeds_is_the_storages_own_test_on_a_full_bucket() -> None:
    """At a rate so fast that one unit is within GCRA's slack, one over the burst still passes
    a full bucket: not a request that can never pass."""
    fast = limit("fast", rate=f"{2**53}/day", burst=10, cost="tokens")
    larger = 10 + int(2e-6 / fast.interval)
    for tokens in (11, larger):
        full = MemoryStorage()  # an empty store: every bucket full
        charge = BucketCharge("api_key:k", fast.name, fast.interval, fast.burst, tokens)
        admitted = (await full.charge([charge], 1_800_000_000.0)).allowed
        assert exceeds(fast, tokens) is not admitted
    assert not exceeds(fast, 11) and exceeds(fast, larger)
