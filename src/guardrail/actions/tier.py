"""The throttle action: a slower tier.

Its limits are charged on top of the route's (a throttled subject must fit both), its
``delay`` is awaited before the app is called, its ``max_tokens`` and ``strip`` rewrite the
inspected body, and its ``stream_rate`` paces the events of a streamed response (relay.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.types import Send

from guardrail.actions.problem import Headers, send_problem
from guardrail.limits import CompiledLimit, compile_limit
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


def rewrite(
    raw: bytes | None, tier: CompiledTier, meter: Meter
) -> tuple[bytes, dict[str, Any]] | None:
    """The body the app gets under ``tier`` (as bytes, and parsed), or None when the request
    already complies and goes on byte for byte. ``ValueError`` (its message says why) when
    guardrail cannot read the body: too large to have been read, or not a JSON object
    (compressed, say). Such a body must not pass uncapped."""
    if raw is None:
        raise ValueError("larger than the most guardrail reads on this route")
    try:
        # json, not orjson: it keeps integers past 2**64 exact and reads NaN and lone
        # surrogates as the app's json would; it writes them back the same way (ASCII output
        # carries a lone surrogate escape through as it came).
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        changed = tier.max_tokens is not None and meter.cap(body, tier.max_tokens)
        if tier.strip and meter.strip(body, tier.strip):
            changed = True
        if not changed:
            return None
        return json.dumps(body, separators=(",", ":")).encode(), body
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError("not a JSON object guardrail can read") from exc


async def send_unrewritable(
    send: Send, *, reason: str, status: int, request_id: str, headers: Headers
) -> None:
    """413 or 415: the tier has to rewrite a body guardrail cannot read."""
    await send_problem(
        send,
        status,
        problem="request-too-large" if status == 413 else "unreadable-request",
        title="Content Too Large" if status == 413 else "Unsupported Media Type",
        detail=(
            f"This request body is {reason}, and requests from this client are served with "
            "limited output, which guardrail writes into the body. Send a plain JSON body"
            + (" that is smaller." if status == 413 else ".")
        ),
        error_type="invalid_request_error",
        request_id=request_id,
        headers=headers,
    )
