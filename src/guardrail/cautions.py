"""Settings that load but leave a way around guardrail: ``guardrail check`` prints them as
warnings (the policy is still accepted) and the middleware logs them once at startup.

Each caution is a function of the policy that yields ``(key path, value, what it leaves open
and the fix)``; ``cautions`` locates each in the policy's file. A new caution is one more
function in ``CAUTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from guardrail.errors import PolicyIssue
from guardrail.policy_yaml import KeyPath, render_path

if TYPE_CHECKING:
    from guardrail.policy import Policy

Caution = tuple[KeyPath, object, str]


def _captcha_fails_open(policy: Policy) -> Iterator[Caution]:
    for name in ("hcaptcha", "turnstile"):
        captcha = getattr(policy.challenges, name, None)
        if captcha is not None and captcha.on_error == "open":
            yield (
                ("challenges", name, "on_error"),
                "open",
                "pow or closed: with open, a siteverify that is down or slow (or made slow) "
                "passes every challenge answered with any token",
            )


#: Seconds beyond which a body deadline no longer bounds what stalled clients hold.
SLOW_BODY = 60.0


def _bodies_wait_long(policy: Policy) -> Iterator[Caution]:
    for index, route in enumerate(policy.routes):
        if route.inspect is not None and route.inspect_timeout > SLOW_BODY:
            yield (
                ("routes", index, "inspect_timeout"),
                route.inspect_timeout,
                f"at most {SLOW_BODY:g}s: a client may hold a connection and up to "
                "inspect_max_bytes this long for every request it starts and never finishes",
            )


CAUTIONS: tuple[Callable[[Policy], Iterator[Caution]], ...] = (
    _captcha_fails_open,
    _bodies_wait_long,
)


def cautions(policy: Policy) -> list[PolicyIssue]:
    """Every caution of ``policy``, located in its file where the key is written there."""
    found = []
    for caution in CAUTIONS:
        for path, value, advice in caution(policy):
            line = policy.line_of(path)
            found.append(PolicyIssue(policy.source, line, render_path(path), value, advice))
    return found
