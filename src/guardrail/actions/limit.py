"""The limit action: 429 with every rate-limit header dialect clients look for.

RateLimit / RateLimit-Policy follow draft-ietf-httpapi-ratelimit-headers (structured fields,
``q`` quota and ``w`` window per policy, ``r`` remaining and ``t`` seconds per current state);
``x-ratelimit-*-requests`` follow OpenAI's headers, which its SDKs and many clients read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from starlette.types import Send

from guardrail.actions.problem import Headers, send_problem
from guardrail.actions.tier import CompiledTier
from guardrail.backends.base import Outcome
from guardrail.limits import (
    CompiledLimit,
    CompiledRoute,
    LimitHit,
    ratelimit_policy,
    whole_seconds,
)


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    total = whole_seconds(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def ratelimit_headers(policy: bytes, limits: Sequence[CompiledLimit], outcome: Outcome) -> Headers:
    """The RateLimit entries of every bucket, and OpenAI's headers for the tightest request
    limit and the tightest token limit apart: the refusing bucket, else the emptiest. One pass:
    it runs on every response of a route with ``headers: true``."""
    current = []
    # per dialect (requests, tokens): [index of the emptiest, its fill, index of the longest
    # wait, that wait]; the first of equals speaks, as ``tightest`` has it
    best: list[list[float]] = [[-1, 2.0, -1, 0.0], [-1, 2.0, -1, 0.0]]
    states = outcome.states
    for i, (lim, state) in enumerate(zip(limits, states, strict=True)):
        retry = state.retry_after
        # inf: the request can never fit this bucket (``as_reported``); it tells its own state
        wait = retry if 0 < retry < math.inf else state.reset_after
        current.append(f'"{lim.label}";r={state.remaining};t={whole_seconds(wait)}')
        group = best[lim.tokens]
        fill = state.remaining / lim.burst
        if group[0] < 0 or fill < group[1]:
            group[0], group[1] = i, fill
        if retry > group[3]:
            group[2], group[3] = i, retry
    headers = [(b"ratelimit-policy", policy), (b"ratelimit", ", ".join(current).encode())]
    for names, (emptiest, _, longest, _) in zip((_REQUESTS, _TOKENS), best, strict=True):
        if emptiest < 0:
            continue  # no limit of this kind
        speaker = int(longest if not outcome.allowed and longest >= 0 else emptiest)
        lim, state = limits[speaker], states[speaker]
        retry = state.retry_after
        reset = retry if 0 < retry < math.inf else state.reset_after
        headers += [
            (names[0], str(lim.burst).encode()),
            (names[1], str(state.remaining).encode()),
            (names[2], openai_duration(reset).encode()),
        ]
    return headers


_REQUESTS = (
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
)
_TOKENS = (
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
)


class RateLimitPolicies:
    """RateLimit-Policy values, built once per shape: a route's own (with its token limits
    when the request reserved tokens), or a route's and a tier's together."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str, bool], bytes] = {}

    def __call__(
        self,
        route: CompiledRoute,
        tier: CompiledTier | None,
        limits: Sequence[CompiledLimit],
        metered: bool,
    ) -> bytes:
        if tier is None:
            return route.ratelimit_policy if metered else route.requests_policy
        key = (route.name, tier.name, metered)  # (route, tier, metered) always build alike
        policy = self._built.get(key)
        if policy is None:
            policy = self._built[key] = ratelimit_policy(limits)
        return policy


async def send_limited(
    send: Send,
    *,
    hit: LimitHit,
    request_id: str,
    headers: Headers,
) -> None:
    retry_after = hit.retry_after
    subject = "globally" if hit.per == "global" else f"per {hit.per.replace('_', ' ')}"
    if retry_after is None:
        await _send_exceeding(send, hit, subject, request_id, headers)
        return
    if hit.tokens is None:
        detail = f"Rate limit of {hit.rate} {subject} reached."
    else:
        detail = (
            f"Token budget of {hit.rate} {subject} reached: this request needs {hit.tokens} "
            f"tokens (prompt and max_tokens), {hit.remaining} remain."
        )
    detail += f" Retry after {retry_after} second{'s' if retry_after != 1 else ''}."
    await send_problem(
        send,
        429,
        problem="quota-exceeded",
        title="Too Many Requests",
        detail=detail,
        error_type="rate_limit_exceeded",
        request_id=request_id,
        headers=[
            (b"retry-after", str(retry_after).encode()),
            (b"guardrail-action", b"limit"),
            *headers,
        ],
        extra={"retry_after": retry_after},
    )


async def _send_exceeding(
    send: Send, hit: LimitHit, subject: str, request_id: str, headers: Headers
) -> None:
    """A request larger than a whole bucket: no wait admits it, so nothing says to wait. SDKs
    retry a 429 by themselves (the OpenAI SDKs after its Retry-After, up to two minutes);
    ``x-should-retry: false`` is what they obey to stop. Still a 429 with the error code
    ``rate_limit_exceeded``, as OpenAI answers a request too large for its tokens-per-minute
    limit; the problem type tells a client that waiting will not help."""
    if hit.tokens is None:
        detail = (
            f"Rate limit of {hit.rate} {subject}: this request costs more than the {hit.burst} "
            "the limit holds at most, so it can never pass."
        )
    else:
        detail = (
            f"Token budget of {hit.rate} {subject}: this request needs {hit.tokens} tokens "
            f"(prompt and max_tokens) and the budget holds at most {hit.burst}, so it can "
            "never pass. Lower max_tokens or shorten the prompt."
        )
    await send_problem(
        send,
        429,
        problem="request-exceeds-budget",
        title="Too Many Requests",
        detail=detail,
        error_type="rate_limit_exceeded",
        request_id=request_id,
        headers=[(b"x-should-retry", b"false"), (b"guardrail-action", b"limit"), *headers],
        extra={"retry_after": None},
    )


async def send_unavailable(send: Send, *, request_id: str, headers: Headers) -> None:
    """on_storage_error: fail_closed — the limiter cannot decide, so nothing is served."""
    await send_problem(
        send,
        503,
        problem="storage-unavailable",
        title="Service Unavailable",
        detail="The rate-limit store is unavailable; the request was not served. Retry shortly.",
        error_type="service_unavailable",
        request_id=request_id,
        headers=[(b"retry-after", b"1"), *headers],
    )
