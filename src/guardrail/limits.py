"""Routes and their token buckets, compiled once from the policy for the hot path.

A request walks: match a route → turn each of its limits into a bucket charge for the request's
subject → the storage decides all of them at once (all-or-nothing) → the tightest bucket speaks
for the response headers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guardrail.backends.base import EPSILON, BucketCharge, BucketState, Outcome
from guardrail.identity import Subject
from guardrail.metering import Meter
from guardrail.policy import PASS, REFUSE, Limit, Route
from guardrail.policy_types import import_meter


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    per: str
    name: str  # bucket name inside the subject: "<route>:<index>"
    label: str  # the policy's name in RateLimit-Policy, unique within its route
    rate: str  # as written in the policy, for audit records
    interval: float  # seconds per unit of cost
    burst: int
    cost: int
    tokens: bool  # cost: tokens: charged the request's token reservation (see budgets.py)
    window: int  # RateLimit-Policy w=: seconds an empty bucket takes to refill (q= is burst)

    def subject_key(self, subject: Subject) -> str:
        # A request without the identity a limit is keyed on falls back to the next coarser one,
        # so leaving out a header never escapes the limit.
        per = self.per
        if per == "account":
            if subject.account is not None:
                return "account:" + subject.account
            per = "api_key"
        if per == "api_key":
            if subject.api_key is not None:
                return "api_key:" + subject.api_key
            return "ip:" + (subject.ip_key or subject.ip)
        if per == "ip":
            return "ip:" + (subject.ip_key or subject.ip)
        if per == "subnet":
            return "subnet:" + subject.subnet
        return "global"

    def charge(self, subject: Subject) -> BucketCharge:
        return BucketCharge(
            self.subject_key(subject), self.name, self.interval, self.burst, self.cost
        )


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    path: re.Pattern[str]
    methods: frozenset[str] | None
    exempt: bool
    inspect: str | None
    meter: Meter | None  # what reads the inspected body and its response (inspect)
    by_path: bool  # inspect: openai: the request's path names the shape (meter_for_path)
    inspect_max_bytes: int
    inspect_timeout: float  # seconds the body may take to arrive
    headers: bool
    limits: tuple[CompiledLimit, ...]
    charged: tuple[CompiledLimit, ...]  # request limits: each request costs its `cost`
    metered: tuple[CompiledLimit, ...]  # token limits: each request costs its tokens
    default_max_tokens: int  # the output reserved for a request that names no max_tokens
    ratelimit_policy: bytes  # the RateLimit-Policy header value: charged, then metered
    requests_policy: bytes  # the same without the token limits (a request that reserved none)

    def charges(self, subject: Subject) -> list[BucketCharge]:
        # Runs on every request: the common identities are inlined rather than asked of each
        # limit, and tuple.__new__ skips NamedTuple's Python-level __new__.
        out = []
        for lim in self.charged:
            per = lim.per
            if per == "ip":
                key = "ip:" + (subject.ip_key or subject.ip)
            elif per == "subnet":
                key = "subnet:" + subject.subnet
            elif per == "api_key" and subject.api_key is not None:
                key = "api_key:" + subject.api_key
            else:
                key = lim.subject_key(subject)
            out.append(_new(BucketCharge, (key, lim.name, lim.interval, lim.burst, lim.cost)))
        return out


_new = tuple.__new__


def token_charges(
    limits: Sequence[CompiledLimit], subject: Subject, tokens: int
) -> list[BucketCharge]:
    """The charges of ``tokens`` against token limits."""
    return [
        _new(BucketCharge, (lim.subject_key(subject), lim.name, lim.interval, lim.burst, tokens))
        for lim in limits
    ]


def compile_limit(name: str, limit: Limit, label: str) -> CompiledLimit:
    """``name``: the bucket's name within its subject, unique across routes and tiers."""
    burst = limit.capacity
    interval = limit.rate.seconds / limit.rate.amount
    tokens = limit.cost == "tokens"
    return CompiledLimit(
        per=limit.per,
        name=name,
        label=label,
        rate=limit.rate.text,
        interval=interval,
        burst=burst,
        cost=1 if tokens else int(limit.cost),
        tokens=tokens,
        window=max(1, math.ceil(burst * interval)),
    )


def ratelimit_policy(limits: Sequence[CompiledLimit]) -> bytes:
    """The RateLimit-Policy header value (draft-ietf-httpapi-ratelimit-headers): ``q`` is the
    burst, ``w`` the seconds an empty bucket takes to refill. Fixed per route, so built once."""
    return ", ".join(f'"{lim.label}";q={lim.burst};w={lim.window}' for lim in limits).encode()


def _labels(limits: Sequence[Limit]) -> list[str]:
    base = [f"{lim.per}-tokens" if lim.cost == "tokens" else lim.per for lim in limits]
    return [name if base.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(base)]


def compile_route(route: Route) -> CompiledRoute:
    compiled = tuple(
        compile_limit(f"{route.name}:{i}", lim, label)
        for i, (lim, label) in enumerate(zip(route.limits, _labels(route.limits), strict=True))
    )
    charged = tuple(lim for lim in compiled if not lim.tokens)
    metered = tuple(lim for lim in compiled if lim.tokens)
    return CompiledRoute(
        name=route.name,
        path=route.match.path,
        methods=route.match.methods,
        exempt=route.exempt,
        inspect=route.inspect,
        meter=None if route.inspect is None else import_meter(route.inspect),
        by_path=route.inspect == "openai",
        inspect_max_bytes=route.inspect_max_bytes,
        inspect_timeout=route.inspect_timeout,
        headers=route.headers,
        limits=compiled,
        charged=charged,
        metered=metered,
        default_max_tokens=route.default_max_tokens,
        ratelimit_policy=ratelimit_policy((*charged, *metered)),
        requests_policy=ratelimit_policy(charged),
    )


class RouteTable:
    """First match wins: the path regex is anchored at the start, methods optional.

    ``unmatched`` (the policy's key) says what a request no route matches gets: ``default``,
    the route whose limits it takes, or ``refuse`` (a 404), or neither (pass: served as is).
    """

    def __init__(self, routes: Sequence[Route], unmatched: str = PASS) -> None:
        self.routes = tuple(compile_route(r) for r in routes)
        self.refuse = unmatched == REFUSE
        self.default = next((r for r in self.routes if r.name == unmatched), None)
        if unmatched not in (PASS, REFUSE) and self.default is None:
            raise ValueError(f"unmatched: {unmatched!r} names no route")  # the policy refuses it

    def match(self, path: str, method: str) -> CompiledRoute | None:
        # Django and Werkzeug (Quart) serve `post` as POST; h11 and Twisted pass it as sent
        method = method.upper()
        for route in self.routes:
            if route.path.match(path) and (route.methods is None or method in route.methods):
                return route
        return None


def tightest(limits: Sequence[CompiledLimit], outcome: Outcome) -> int:
    """Index of the bucket that speaks for the response: the refusing one, else the emptiest."""
    states = outcome.states
    if not outcome.allowed:
        return max(range(len(states)), key=lambda i: states[i].retry_after)
    return min(range(len(states)), key=lambda i: states[i].remaining / limits[i].burst)


def whole_seconds(seconds: float) -> int:
    # 1e-6 absorbs float noise so that exactly 2.0 s does not round up to 3.
    return max(0, math.ceil(seconds - 1e-6))


def exceeds(lim: CompiledLimit, tokens: int) -> bool:
    """Whether a request costing its limit's ``cost`` (or ``tokens``, on a token limit) is larger
    than the bucket even full: no wait will ever admit it. GCRA's own test on a full bucket
    (``gcra``: cost * interval beyond burst * interval, with its slack)."""
    interval = lim.interval
    return (tokens if lim.tokens else lim.cost) * interval > lim.burst * interval + EPSILON


def as_reported(limits: Sequence[CompiledLimit], outcome: Outcome, tokens: int) -> Outcome:
    """A refusal as its rate-limit headers report it: a bucket the request can never fit waits
    forever (``math.inf``), which the headers show as the bucket's own state (what remains,
    when it is full), not as a wait after which it would refuse again. Refusals only: an
    admitted request fitted every bucket."""
    if outcome.allowed or not any(exceeds(lim, tokens) for lim in limits):
        return outcome
    states = tuple(
        state._replace(retry_after=math.inf) if exceeds(lim, tokens) else state
        for lim, state in zip(limits, outcome.states, strict=True)
    )
    return Outcome(False, states)


@dataclass(frozen=True, slots=True)
class LimitHit:
    """The bucket that decided (refused, or came closest to refusing)."""

    per: str
    rate: str
    remaining: int
    # whole seconds, rounded up; 0 when admitted; None when no wait admits the request (it is
    # larger than the bucket: ``exceeds``)
    retry_after: int | None
    burst: int
    tokens: int | None = None  # a token limit: the tokens the request asked to reserve

    def as_dict(self) -> dict[str, Any]:
        hit = {
            "per": self.per,
            "rate": self.rate,
            "remaining": self.remaining,
            "retry_after": self.retry_after,
        }
        if self.tokens is not None:
            hit["tokens"] = self.tokens
        if self.retry_after is None:
            hit["capacity"] = self.burst  # what the request outgrew
        return hit


def limit_hit(
    limits: Sequence[CompiledLimit], outcome: Outcome, tokens: int = 0
) -> LimitHit | None:
    if not outcome.states:
        return None
    if not outcome.allowed:
        # A bucket the request can never fit speaks first, whatever the others would have it
        # wait for: waiting for them would only meet this refusal again.
        for lim, state in zip(limits, outcome.states, strict=True):
            if exceeds(lim, tokens):
                return LimitHit(
                    lim.per,
                    lim.rate,
                    state.remaining,
                    None,
                    lim.burst,
                    tokens if lim.tokens else None,
                )
    speaker = tightest(limits, outcome)
    lim, state = limits[speaker], outcome.states[speaker]
    retry_after = 0 if outcome.allowed else max(1, whole_seconds(state.retry_after))
    return LimitHit(
        lim.per,
        lim.rate,
        state.remaining,
        retry_after,
        lim.burst,
        tokens if lim.tokens else None,
    )


__all__ = [
    "BucketState",
    "CompiledLimit",
    "CompiledRoute",
    "LimitHit",
    "RouteTable",
    "as_reported",
    "compile_route",
    "exceeds",
    "limit_hit",
    "tightest",
    "token_charges",
    "whole_seconds",
]
