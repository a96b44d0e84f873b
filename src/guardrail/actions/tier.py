"""The throttle action: a slower tier. Its limits are charged on top of the route's (a
throttled subject must fit both), and its ``delay`` is awaited before the app is called."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from guardrail.limits import CompiledLimit, compile_limit, ratelimit_policy
from guardrail.policy import Tier


@dataclass(frozen=True, slots=True)
class CompiledTier:
    name: str
    limits: tuple[CompiledLimit, ...]  # request limits only; token limits come with budgets
    delay: float
    header: tuple[bytes, bytes] | None  # Guardrail-Tier, when the tier says header: true


def compile_tier(name: str, tier: Tier) -> CompiledTier:
    # Bucket names: a route's are "<route>:<n>", so "<n>" after "#" can never be one of them
    limits = tuple(
        compile_limit(f"tier:{name}#{index}", limit, f"tier-{name}-{limit.per}")
        for index, limit in enumerate(tier.limits)
    )
    return CompiledTier(
        name=name,
        limits=tuple(lim for lim in limits if not lim.tokens),
        delay=tier.delay or 0.0,
        header=(b"guardrail-tier", name.encode()) if tier.header else None,
    )


def tier_policy(route_limits: Sequence[CompiledLimit], tier: CompiledTier) -> bytes:
    """RateLimit-Policy over the route's and the tier's limits together."""
    return ratelimit_policy([*route_limits, *tier.limits])
