"""The throttle action: a slower tier.

Its limits are charged on top of the route's (a throttled subject must fit both), its
``delay`` is awaited before the app is called, its ``max_tokens`` and ``strip`` rewrite the
inspected body, and its ``stream_rate`` paces the events of a streamed response (relay.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import Send

from guardrail.actions.problem import Headers, send_problem
from guardrail.limits import CompiledLimit, compile_limit, ratelimit_policy
from guardrail.metering import Meter
from guardrail.policy import Tier


@dataclass(frozen=True, slots=True)
class CompiledTier:
    name: str
    charged: tuple[CompiledLimit, ...]  # request limits
    metered: tuple[CompiledLimit, ...]  # token limits: charged on routes that meter tokens
    delay: float
    max_tokens: int | None  # the output cap written into inspected bodies
    strip: frozenset[str]  # logprobs, n
    pace: float  # seconds between streamed events; 0: not paced
    header: tuple[bytes, bytes] | None  # Guardrail-Tier, when the tier says header: true

    @property
    def rewrites(self) -> bool:
        return self.max_tokens is not None or bool(self.strip)


def compile_tier(name: str, tier: Tier) -> CompiledTier:
    # Bucket names: a route's are "<route>:<n>", so "<n>" after "#" can never be one of them
    limits = tuple(
        compile_limit(
            f"tier:{name}#{index}",
            limit,
            f"tier-{name}-{limit.per}" + ("-tokens" if limit.cost == "tokens" else ""),
        )
        for index, limit in enumerate(tier.limits)
    )
    rate = tier.stream_rate
    return CompiledTier(
        name=name,
        charged=tuple(lim for lim in limits if not lim.tokens),
        metered=tuple(lim for lim in limits if lim.tokens),
        delay=tier.delay or 0.0,
        max_tokens=tier.max_tokens,
        strip=frozenset(tier.strip),
        pace=0.0 if rate is None else rate.seconds / rate.amount,
        header=(b"guardrail-tier", name.encode()) if tier.header else None,
    )


def tier_policy(route_limits: Sequence[CompiledLimit], tier: CompiledTier) -> bytes:
    """RateLimit-Policy over the route's and the tier's limits together."""
    return ratelimit_policy([*route_limits, *tier.charged, *tier.metered])


def rewrite(body: dict[str, Any], tier: CompiledTier, meter: Meter) -> bytes | None:
    """The body the app gets under ``tier`` (``body`` is changed in place), or None when the
    request already complies and goes on byte for byte."""
    changed = False
    if tier.max_tokens is not None:
        changed = meter.cap(body, tier.max_tokens)
    if tier.strip and meter.strip(body, tier.strip):
        changed = True
    if not changed:
        return None
    # json, not orjson: orjson would write NaN (which json, and so the app, accepts) as null.
    # ASCII output also carries a lone surrogate escape through as it came.
    return json.dumps(body, separators=(",", ":")).encode()


async def send_uninspectable(send: Send, *, limit: int, request_id: str, headers: Headers) -> None:
    """413: the tier has to rewrite a body larger than the route lets guardrail read."""
    await send_problem(
        send,
        413,
        problem="request-too-large",
        title="Content Too Large",
        detail=(
            f"This request body is over {limit} bytes, the most guardrail reads on this route, "
            "and requests from this client are served with limited output. Send a smaller body."
        ),
        error_type="invalid_request_error",
        request_id=request_id,
        headers=headers,
    )
