"""The built-in risk signals: name, how many points each adds at full strength, what it measures.

A signal's value is a number from 0 to 1; it adds ``value x points x weight`` to the score
(``weight`` from the policy, 1 by default). No signal is worth 50 points at weight 1, the lowest
threshold of the example policy: one odd habit alone never mitigates anyone, evidence has to
agree.
"""

from __future__ import annotations

from typing import NamedTuple


class SignalInfo(NamedTuple):
    name: str
    points: float
    scope: str  # "identity": the principal's own behaviour; "cohort": across identities
    description: str


SIGNALS: tuple[SignalInfo, ...] = (
    SignalInfo(
        "request_volume",
        15,
        "identity",
        "sustained request rate (decayed over half_life) against the route's tightest limit",
    ),
    SignalInfo(
        "timing_regularity",
        15,
        "identity",
        "steady inter-arrival times (low coefficient of variation): scripts tick, people burst",
    ),
    SignalInfo(
        "round_the_clock",
        10,
        "identity",
        "activity in nearly every hour of the day (busy hours out of 24): people sleep",
    ),
    SignalInfo(
        "prompt_templating",
        20,
        "identity",
        "share of prompts that are near-duplicates, but not copies, of the identity's recent "
        "ones (requests for reasoning cut out; a follow-up in its conversation's words is not one)",
    ),
    SignalInfo(
        "reasoning_extraction",
        20,
        "identity",
        "share of prompts asking for chain of thought, hidden reasoning or the system prompt "
        "(in the user turn or in the system or developer message)",
    ),
    SignalInfo(
        "templated_reasoning",
        25,
        "identity",
        "share of prompts that ask for reasoning inside a template (the identity's own or "
        "others'): a quarter and more is a script filling one in; a closing phrase is no template",
    ),
    SignalInfo(
        "shared_frames",
        40,
        "cohort",
        "share of the requests for reasoning whose opening or closing eight words other "
        "identities on the same network sent too: one extraction instruction spread over a "
        "team of accounts (a stock phrase closing one's own questions is no frame)",
    ),
    SignalInfo(
        "cross_account_templates",
        25,
        "cohort",
        "share of prompts that are near copies (not exact copies) of other identities' recent "
        "prompts: one template filled in by many accounts",
    ),
    SignalInfo(
        "subnet_cohort",
        30,
        "cohort",
        "many identities on one subnet that act in concert or hop between subnets (not a NAT)",
    ),
    SignalInfo(
        "network_spread",
        25,
        "identity",
        "distinct subnets one identity comes from: rotating proxies, not a laptop and a phone",
    ),
    SignalInfo(
        "fingerprint_cohort",
        25,
        "cohort",
        "many identities sharing one client fingerprint (user agent, header names, SDK headers) "
        "that act in concert or hop across subnets; a member carries it as far as it does so "
        "itself, unless the build is the campaign's own",
    ),
    SignalInfo(
        "request_shape",
        10,
        "identity",
        "extraction-shaped parameters: logprobs, n > 1, temperature sweeps, "
        "a pinned large max_tokens",
    ),
    SignalInfo(
        "refusals",
        15,
        "identity",
        "share of answers that were the app's 4xx or a route limit's 429 (never the engine's own "
        "throttle or 403s)",
    ),
    SignalInfo(
        "failed_challenges",
        30,
        "identity",
        "challenges failed recently (each counts; three or more is full strength)",
    ),
    SignalInfo(
        "passed_challenges",
        -30,
        "identity",
        "a challenge passed recently takes points off (its weight sets how many)",
    ),
)

BY_NAME: dict[str, SignalInfo] = {signal.name: signal for signal in SIGNALS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
