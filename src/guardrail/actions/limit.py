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
from guardrail.backends.base import Outcome
from guardrail.limits import CompiledLimit, LimitHit, tightest, whole_seconds


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
    current = []
    for lim, state in zip(limits, outcome.states, strict=True):
        wait = state.retry_after if state.retry_after > 0 else state.reset_after
        current.append(f'"{lim.label}";r={state.remaining};t={whole_seconds(wait)}')
    speaker = tightest(limits, outcome)
    lim, state = limits[speaker], outcome.states[speaker]
    reset = state.retry_after if state.retry_after > 0 else state.reset_after
    return [
        (b"ratelimit-policy", policy),
        (b"ratelimit", ", ".join(current).encode()),
        (b"x-ratelimit-limit-requests", str(lim.burst).encode()),
        (b"x-ratelimit-remaining-requests", str(state.remaining).encode()),
        (b"x-ratelimit-reset-requests", openai_duration(reset).encode()),
    ]


async def send_limited(
    send: Send,
    *,
    hit: LimitHit,
    request_id: str,
    headers: Headers,
) -> None:
    retry_after = hit.retry_after
    subject = "globally" if hit.per == "global" else f"per {hit.per.replace('_', ' ')}"
    detail = (
        f"Rate limit of {hit.rate} {subject} reached. "
        f"Retry after {retry_after} second{'s' if retry_after != 1 else ''}."
    )
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
